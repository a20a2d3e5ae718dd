"""Word count end to end: exact counts with and without a combiner, 2 and 3 servers, gz input,
compressed and rotated output, auxiliary data for the mapper."""
from __future__ import annotations

import gzip
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from integration_helpers import make_job as _make_job
from integration_helpers import (
    output_dict,
    output_files,
    read_file_items,
    read_output,
    run_job,
    server_of,
    write_auxiliary,
)

from cluster.exceptions import ClusterError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def wc_job(name: str, input_dir: Path, **extra) -> dict:
    return _make_job(name, "word_count", [input_dir], "word_count", "sum_counts", **extra)


@pytest.mark.parametrize(("data", "servers", "combiner"), [
    ("words_plain", 2, None),
    ("words_plain", 2, "sum_counts"),
    ("words_plain", 3, None),
    ("words_gz", 2, None),
    ("words_gz", 3, "sum_counts"),
])
def test_word_count_is_exact(request, wc_config, data, servers, combiner):
    input_dir, expected = request.getfixturevalue(data)
    if data == "words_gz":
        assert any(p.suffix == ".gz" for p in input_dir.iterdir()), "the gz data set must hold .gz files"
    result = run_job(wc_config, wc_job("wc", input_dir, combine_function_name=combiner), servers=servers)

    assert output_dict(result) == expected["counts"]
    c = result.counters
    assert c["files"] == 4
    assert c["map_items_out"] == expected["total_words"]
    assert c["records_out"] == len(expected["counts"])
    assert c["files_failed"] == 0 and c["bad_lines"] == 0
    if combiner:
        assert c["combine_calls"] > 0
        assert c["spilled_items"] < c["map_items_out"], "the combiner must shrink what is shuffled"
    else:
        assert c["combine_calls"] == 0
        assert c["spilled_items"] == c["map_items_out"]
    files = output_files(result.output_dir)
    assert {server_of(p) for p in files} == {f"S_{i}" for i in range(servers)}, "every server reduces a share"
    for path, items in read_output(result.output_dir).items():
        keys = [k for k, _ in items]
        assert keys == sorted(keys), f"{path.name}: keys not in ascending order"


def test_compressed_output_is_gzip_and_rotates(wc_config, words_plain):
    input_dir, expected = words_plain
    job = wc_job("wc_gz", input_dir, compress=True, max_number_dumped_items_reducer=100)
    result = run_job(wc_config, job)
    files = output_files(result.output_dir)
    assert files and all(p.name.endswith(".gz") for p in files)
    for p in files:
        with gzip.open(p, "rb") as fh:  # a real gzip stream, complete to its end
            fh.read()
    assert output_dict(result) == expected["counts"]

    for server, phases in result.per_server.items():
        mine = [p for p in files if server_of(p) == server]
        records = phases["reduce"]["records_out"]
        assert len(mine) == math.ceil(records / 100), f"{server}: {records} items should make "\
            f"{math.ceil(records / 100)} files of at most 100, got {len(mine)}"
        sizes = [len(read_file_items(p)) for p in mine]
        assert all(s == 100 for s in sizes[:-1]) and 0 < sizes[-1] <= 100, sizes
    assert sum(len(read_file_items(p)) for p in files) == len(expected["counts"])


def test_plain_output_is_not_compressed(wc_config, words_plain):
    input_dir, expected = words_plain
    result = run_job(wc_config, wc_job("wc_plain", input_dir, compress=False))
    for p in output_files(result.output_dir):
        assert not p.name.endswith(".gz")
        assert p.read_bytes()[:2] != b"\x1f\x8b"
    assert output_dict(result) == expected["counts"]


def test_auxiliary_data_for_the_mapper(wc_config, words_plain):
    input_dir, expected = words_plain
    top = [w for w, _ in expected["top"][:5]]
    rare = sorted(expected["counts"], key=lambda w: (expected["counts"][w], w))[:3]
    absent = "notawordinthedata"  # longer than any generated word
    write_auxiliary(wc_config, "wanted_words", {"words": top + rare + [absent]})
    job = _make_job("wc_filtered", "word_count", [input_dir], "word_count_filtered", "sum_counts",
                    auxiliary_data_name_mapper="wanted_words")
    result = run_job(wc_config, job)
    assert output_dict(result) == {w: expected["counts"][w] for w in top + rare}


def test_missing_auxiliary_data_is_named(wc_config, words_plain):
    job = _make_job("wc_noaux", "word_count", [words_plain[0]], "word_count_filtered", "sum_counts",
                    auxiliary_data_name_mapper="no_such_aux")
    with pytest.raises(ClusterError, match="no_such_aux"):
        run_job(wc_config, job)


def test_a_script_without_a_main_guard_can_run_the_executor(tmp_path):
    """Workers are fresh `python -m cluster.executors.local_worker` processes: they never re-import the
    caller's script."""
    data = tmp_path / "in"
    data.mkdir()
    (data / "a.txt").write_text("x y x\n" * 50)
    script = tmp_path / "job_script.py"
    script.write_text(f'''
import json
from cluster.config import ClusterConfig
from cluster.job_spec import get_mapreduce_job_template
from cluster.executors.local import LocalExecutor
from cluster.engine.reading import iter_lines
import os
config = ClusterConfig.from_dict({{"compute_dir": {str(tmp_path / "compute")!r},
                                  "projects_dir": {os.path.join(REPO, "projects")!r}}})
job = get_mapreduce_job_template()
job.update(job_name="noguard", project_name="word_count", input_dirs=[{str(data)!r}],
           map_function_name="word_count", reduce_function_name="sum_counts")
result = LocalExecutor(config, servers=2).run(job)
items = [json.loads(l) for f in sorted(os.listdir(result.output_dir))
         for l in iter_lines(os.path.join(result.output_dir, f))]
print(json.dumps(dict(items), sort_keys=True))
''')
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"x": 100, "y": 50}
