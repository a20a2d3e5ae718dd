"""Reduce output files (OutputWriter), publishing a run (commit_output), and the sort phase."""
from __future__ import annotations

import gzip
import json
import os

import pytest

from cluster.engine import codec
from cluster.engine.reducer import OUTPUT_SUFFIX, OutputWriter, Reducer, commit_output, discard_run
from cluster.exceptions import OutputError
from cluster.layout import SPILL_SUFFIX, JobLayout


def read_lines(path) -> list:
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


# --- OutputWriter ------------------------------------------------------------------------
def test_rotation_every_max_items(tmp_path):
    w = OutputWriter(str(tmp_path / "out"), "S_0-r1", max_items=10, compress=False)
    items = [[f"k{i}", i] for i in range(27)]
    assert w.write_many(items[:7], key="a") == 7
    assert w.write_many(items[7:18], key="b") == 11
    assert w.write_many([], key="c") == 0
    assert w.write_many(iter(items[18:]), key="d") == 9
    w.close()
    names = [os.path.basename(p) for p in w.files]
    assert names == [f"S_0-r1-{n:05d}{OUTPUT_SUFFIX}" for n in range(3)]
    assert sorted(os.listdir(tmp_path / "out")) == names
    assert [len(read_lines(p)) for p in w.files] == [10, 10, 7]
    assert [x for p in w.files for x in read_lines(p)] == items
    assert w.items == 27
    assert w.bytes == sum(os.path.getsize(p) for p in w.files)


def test_exactly_max_items_makes_one_file(tmp_path):
    w = OutputWriter(str(tmp_path), "p", max_items=5, compress=False)
    w.write_many([[i] for i in range(5)])
    w.close()
    assert len(w.files) == 1


def test_nothing_written_makes_no_file(tmp_path):
    w = OutputWriter(str(tmp_path / "o"), "p", max_items=5, compress=True)
    w.close()
    assert w.files == [] and os.listdir(tmp_path / "o") == []


def test_gzip_output_is_readable(tmp_path):
    w = OutputWriter(str(tmp_path), "S_1-r", max_items=4, compress=True)
    items = [["ünï", {"n": i, "t": [1, 2]}] for i in range(9)]
    w.write_many(items)
    w.close()
    assert [os.path.basename(p) for p in w.files] == [f"S_1-r-{n:05d}.jsonl.gz" for n in range(3)]
    assert [x for p in w.files for x in read_lines(p)] == items
    with gzip.open(w.files[0], "rb") as fh:
        assert fh.read().decode().splitlines()[0] == '["ünï",{"n":0,"t":[1,2]}]'
    assert w.bytes == len("".join(json.dumps(i, ensure_ascii=False, separators=(",", ":")) + "\n"
                                  for i in items).encode())


def test_tuples_are_written_as_json_arrays(tmp_path):
    w = OutputWriter(str(tmp_path), "p", max_items=100, compress=False)
    w.write_many([(("a", 1), 2), ("b", None)])
    w.close()
    with open(w.files[0], encoding="utf-8") as fh:
        assert fh.read() == '[["a",1],2]\n["b",null]\n'


@pytest.mark.parametrize("bad", [{1, 2}, b"bytes", object()])
def test_non_json_value_raises_output_error_naming_the_key(tmp_path, bad):
    w = OutputWriter(str(tmp_path), "p", max_items=100, compress=False)
    w.write_many([["ok", 1]], key="first")
    with pytest.raises(OutputError) as info:
        w.write_many([["fine", 2], ["bad", bad]], key=("the", "key"))
    msg = str(info.value)
    assert "(key ('the', 'key'))" in msg
    assert "is not JSON" in msg
    w.close()
    assert read_lines(w.files[0]) == [["ok", 1]]  # nothing of the failed call was written


def test_unencodable_string_raises_output_error(tmp_path):
    w = OutputWriter(str(tmp_path), "p", max_items=100, compress=False)
    with pytest.raises(OutputError, match="key 'k'"):
        w.write_many([["bad \udc80 name", 1]], key="k")
    w.close()


# --- commit_output -----------------------------------------------------------------------
@pytest.fixture
def layout(tmp_path):
    return JobLayout(str(tmp_path / "data"), str(tmp_path / "aux"), "job")


def stage(layout: JobLayout, run_id: str, names: dict) -> None:
    os.makedirs(layout.staging_dir(run_id), exist_ok=True)
    for name, text in names.items():
        with open(os.path.join(layout.staging_dir(run_id), name), "w") as fh:
            fh.write(text)


def leave_intermediate(layout: JobLayout) -> None:
    for d in (layout.map_dir("S_0"), layout.spill_dir("S_0"), layout.sort_dir("S_0")):
        os.makedirs(d)
        with open(os.path.join(d, "x" + SPILL_SUFFIX), "w") as fh:
            fh.write("x")


def listing(folder) -> dict:
    return {n: open(os.path.join(folder, n)).read() for n in sorted(os.listdir(folder))}


def test_first_commit_publishes_the_staged_files(layout):
    stage(layout, "r1", {"S_0-r1-00000.jsonl": "a\n", "S_1-r1-00000.jsonl": "b\n"})
    leave_intermediate(layout)
    out = commit_output(layout, "r1", replace=False)
    assert out == layout.output_dir
    assert listing(out) == {"S_0-r1-00000.jsonl": "a\n", "S_1-r1-00000.jsonl": "b\n"}
    assert sorted(os.listdir(layout.job_dir)) == ["reduce"]  # map, spill, sort, staging all gone


def test_commit_replace_takes_the_place_of_the_old_output(layout):
    stage(layout, "r1", {"S_0-r1-00000.jsonl": "old\n"})
    commit_output(layout, "r1", replace=True)
    stage(layout, "r2", {"S_0-r2-00000.jsonl": "new\n", "S_0-r2-00001.jsonl": "new2\n"})
    leave_intermediate(layout)
    commit_output(layout, "r2", replace=True)
    assert listing(layout.output_dir) == {"S_0-r2-00000.jsonl": "new\n", "S_0-r2-00001.jsonl": "new2\n"}
    assert sorted(os.listdir(layout.job_dir)) == ["reduce"]  # no .reduce-old-* left behind
    assert layout.output_files() == [os.path.join(layout.output_dir, n)
                                     for n in ("S_0-r2-00000.jsonl", "S_0-r2-00001.jsonl")]


def test_commit_without_replace_adds_beside(layout):
    stage(layout, "r1", {"S_0-r1-00000.jsonl": "one\n"})
    commit_output(layout, "r1", replace=False)
    stage(layout, "r2", {"S_0-r2-00000.jsonl": "two\n"})
    commit_output(layout, "r2", replace=False)
    assert listing(layout.output_dir) == {"S_0-r1-00000.jsonl": "one\n", "S_0-r2-00000.jsonl": "two\n"}
    assert sorted(os.listdir(layout.job_dir)) == ["reduce"]


def test_commit_of_an_empty_run_replaces_with_nothing(layout):
    stage(layout, "r1", {"S_0-r1-00000.jsonl": "one\n"})
    commit_output(layout, "r1", replace=True)
    commit_output(layout, "r2", replace=True)  # a run that produced no output
    assert os.listdir(layout.output_dir) == []


def test_discard_run_keeps_the_previous_output(layout):
    stage(layout, "r1", {"S_0-r1-00000.jsonl": "one\n"})
    commit_output(layout, "r1", replace=True)
    stage(layout, "r2", {"S_0-r2-00000.jsonl": "half"})
    leave_intermediate(layout)
    discard_run(layout, "r2")
    assert listing(layout.output_dir) == {"S_0-r1-00000.jsonl": "one\n"}
    assert sorted(os.listdir(layout.job_dir)) == ["reduce"]


# --- sort phase --------------------------------------------------------------------------
def test_sort_phase_with_runs_of_different_key_types(layout):
    folder = layout.map_dir("S_0")
    os.makedirs(folder)
    runs = [[(i, 1) for i in range(3000)], [(str(i), 1) for i in range(3000)], [(i, 1) for i in range(3000)]]
    for n, items in enumerate(runs):
        with open(os.path.join(folder, f"S_{n}-000001{SPILL_SUFFIX}"), "wb") as fh:
            codec.dump_items(fh, sorted(items), 2048)

    def count(group, aux):
        return [[group[0][0], len(group)]]

    job = {"max_number_dumped_items_reducer": 100_000, "compress": False, "reduce_function_name": "count"}
    reducer = Reducer(server_id="S_0", layout=layout, run_id="r1", job=job, reduce_function=count,
                      auxiliary_data=None, memory_budget=1024 ** 2, counters={})
    reducer.sort()
    reducer.reduce()
    out = [x for p in sorted(os.listdir(layout.staging_dir("r1")))
           for x in read_lines(os.path.join(layout.staging_dir("r1"), p))]
    assert len(out) == 6000
    assert {k: n for k, n in out if isinstance(k, int)} == {i: 2 for i in range(3000)}


@pytest.mark.parametrize("item", [("k", float("nan")), ("k", float("inf"))])
def test_nan_and_infinity_are_not_json(tmp_path, item):
    w = OutputWriter(str(tmp_path), "S_0-r", 10, False)
    with pytest.raises(OutputError, match="not JSON"):
        w.write_many([item], key="k")
    w.close()


@pytest.mark.parametrize("returned", ["a string", {"a": 1}, b"bytes"])
def test_a_reduce_result_that_is_not_a_list_of_items_is_refused(tmp_path, returned):
    w = OutputWriter(str(tmp_path), "S_0-r", 10, False)
    with pytest.raises(OutputError, match="must return an iterable of output items"):
        w.write_many(returned, key="k")
    w.close()


def test_rotation_across_many_chunks_keeps_every_item(tmp_path):
    w = OutputWriter(str(tmp_path), "S_0-r", 3000, False)
    assert w.write_many(([i, i] for i in range(10_001)), key="k") == 10_001
    w.close()
    lines = [json.loads(line) for f in sorted(os.listdir(tmp_path)) for line in open(tmp_path / f)]
    assert lines == [[i, i] for i in range(10_001)] and len(w.files) == 4
