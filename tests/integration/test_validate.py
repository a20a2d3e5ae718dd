"""Minimal job files and `mapreduce validate` / `submit` in depth, driven as a user drives the CLI."""
from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
from integration_helpers import EXAMPLE_PROJECTS
from test_cli import mapreduce  # the CLI as a user runs it


@pytest.fixture
def cfg(tmp_path) -> tuple[str, str]:
    path = tmp_path / "cluster.cfg"
    path.write_text("[CLUSTER]\n"
                    f"compute_dir = {tmp_path / 'compute'}\n"
                    f"local_working_dir = {tmp_path / 'master'}\n"
                    f"projects_dir = {EXAMPLE_PROJECTS}\n"
                    "max_number_of_bytes_in_memory = 64M\n"
                    "number_of_servers_per_location = 2\n")
    return "--config", str(path)


def write(path: Path, job: dict) -> str:
    path.write_text(json.dumps(job))
    return str(path)


def words(folder: Path) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "a.txt").write_text("the cat the dog\nthe end\n")
    (folder / "b.txt").write_text("a cat and a dog\n")
    return {"the": 3, "cat": 2, "dog": 2, "end": 1, "a": 2, "and": 1}


def test_a_six_key_job_file_runs(tmp_path, cfg):
    expected = words(tmp_path / "in")
    job = write(tmp_path / "wc.json", {"job_type": "mapreduce", "job_name": "wc6", "project_name": "word_count",
                                       "input_dirs": [str(tmp_path / "in")], "map_function_name": "word_count",
                                       "reduce_function_name": "sum_counts"})
    r = mapreduce("run", job, "--local", *cfg, "--no-progress", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = mapreduce("output", "wc6", *cfg, cwd=tmp_path).stdout.splitlines()
    assert dict(json.loads(line) for line in out) == expected


def test_a_map_only_job_outputs_every_item(tmp_path, cfg):
    words(tmp_path / "in")
    job = write(tmp_path / "m.json", {"job_type": "mapreduce", "job_name": "maponly", "project_name": "word_count",
                                      "input_dirs": [str(tmp_path / "in")], "map_function_name": "word_count"})
    assert mapreduce("run", job, "--local", *cfg, "--no-progress", cwd=tmp_path).returncode == 0
    items = [json.loads(line) for line in mapreduce("output", "maponly", *cfg, cwd=tmp_path).stdout.splitlines()]
    assert sorted(map(tuple, items)) == sorted((w, 1) for w in "the cat the dog the end a cat and a dog".split())


def test_minimal_script_and_transfer_jobs_validate(tmp_path, cfg):
    (tmp_path / "master").mkdir()
    (tmp_path / "master" / "post.py").write_text("print('hi')\n")
    script = write(tmp_path / "s.json", {"job_type": "script", "job_name": "post", "script_location": "post.py"})
    r = mapreduce("validate", script, *cfg, cwd=tmp_path)
    assert r.returncode == 0 and "job 'post' (script) is valid" in r.stdout, r.stderr
    transfer = write(tmp_path / "t.json", {"job_type": "file_transfer", "job_name": "get",
                                           "transfer_type": "download", "input_dir": "/data", "output_dir": "got"})
    r = mapreduce("validate", transfer, *cfg, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    bad = write(tmp_path / "b.json", {"job_type": "file_transfer", "job_name": "get", "transfer_type": "download"})
    r = mapreduce("validate", bad, *cfg, cwd=tmp_path)
    assert r.returncode == 1 and "needs input_dir" in r.stderr and "needs output_dir" in r.stderr
    assert "missing key" not in r.stderr


def test_validate_prints_the_plan(tmp_path, cfg):
    words(tmp_path / "in")
    job = write(tmp_path / "wc.json", {"job_type": "mapreduce", "job_name": "wc", "project_name": "word_count",
                                       "input_dirs": [str(tmp_path / "in")], "map_function_name": "word_count"})
    r = mapreduce("validate", job, *cfg, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "plan: 2 input files, 40 bytes over 2 servers"
    assert sorted(lines[1:3]) == ["  S_0: 1 files, 24 bytes", "  S_1: 1 files, 16 bytes"]


@pytest.mark.parametrize("change, named", [
    ({"map_function_name": "no_such_map"}, "no function 'no_such_map'"),
    ({"reduce_function_name": "no_such_reduce"}, "no function 'no_such_reduce'"),
    ({"project_name": "no_such_project"}, "project 'no_such_project' not found"),
    ({"input_dirs": ["/no/such/folder"]}, "input_dirs not found on this machine: /no/such/folder"),
    ({"auxiliary_data_name_mapper": "lookup"}, "auxiliary data 'lookup' not found"),
])
def test_validate_names_what_cannot_run(tmp_path, cfg, change, named):
    words(tmp_path / "in")
    job = {"job_type": "mapreduce", "job_name": "wc", "project_name": "word_count",
           "input_dirs": [str(tmp_path / "in")], "map_function_name": "word_count", **change}
    r = mapreduce("validate", write(tmp_path / "j.json", job), *cfg, cwd=tmp_path)
    assert r.returncode == 1 and named in r.stderr, r.stderr
    assert "cannot run (1 problem(s))" in r.stderr and "Traceback" not in r.stderr


def _tarball(path: Path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_submit_refuses_a_tarball_the_runner_would_refuse(tmp_path, cfg):
    (tmp_path / "master").mkdir()
    _tarball(tmp_path / "master" / "evil.tar.gz", {"run.sh": b"echo hi\n", "../escape.txt": b"x"})
    job = write(tmp_path / "a.json", {"job_type": "script", "job_name": "analysis", "code_tarball": "evil.tar.gz",
                                      "execution_commandline": "bash run.sh", "output_dir": "out"})
    for command in ("submit", "validate"):
        r = mapreduce(command, job, *cfg, cwd=tmp_path)
        assert r.returncode == 1 and "evil.tar.gz is refused" in r.stderr and "escape.txt" in r.stderr, r.stderr
    assert mapreduce("queue", *cfg, cwd=tmp_path).stdout.strip() == "the queue is empty"
    _tarball(tmp_path / "master" / "good.tar.gz", {"run.sh": b"echo hi\n"})
    job = write(tmp_path / "a.json", {"job_type": "script", "job_name": "analysis", "code_tarball": "good.tar.gz",
                                      "execution_commandline": "bash run.sh", "output_dir": "out"})
    r = mapreduce("submit", job, *cfg, cwd=tmp_path)
    assert r.returncode == 0 and "queued" in r.stdout, r.stderr


def test_submit_refuses_a_job_whose_function_is_missing(tmp_path, cfg):
    job = write(tmp_path / "j.json", {"job_type": "mapreduce", "job_name": "wc", "project_name": "word_count",
                                      "input_dirs": ["/on/the/locations"], "map_function_name": "nope"})
    r = mapreduce("submit", job, *cfg, cwd=tmp_path)
    assert r.returncode == 1 and "was not queued" in r.stderr and "no function 'nope'" in r.stderr


def test_run_max_bad_fraction_overrides_the_job_key(tmp_path, cfg):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.txt").write_bytes(b"good words here\ncaf\xe9 latin-1\nmore good words\n")
    job = write(tmp_path / "j.json", {"job_type": "mapreduce", "job_name": "bad", "project_name": "word_count",
                                      "input_dirs": [str(folder)], "map_function_name": "word_count",
                                      "reduce_function_name": "sum_counts"})
    r = mapreduce("run", job, "--local", *cfg, "--no-progress", cwd=tmp_path)
    assert r.returncode == 1 and "1 of 3 records (33.33%) are bad" in r.stderr, r.stderr
    assert f"{folder / 'a.txt'}:2: not UTF-8" in r.stderr
    r = mapreduce("run", job, "--local", *cfg, "--no-progress", "--max-bad-fraction", "0.5", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "bad lines by file:" in r.stdout and f"1  {folder / 'a.txt'}" in r.stdout
