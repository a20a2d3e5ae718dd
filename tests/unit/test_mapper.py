"""The map phase and its inputs: choosing files, locks, hold_state (cluster.engine.inputs), the Mapper."""
from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys

import pytest

from cluster.engine.inputs import HoldState, assign_files, is_locked, list_input_files
from cluster.engine.mapper import Mapper, read_previous_output
from cluster.exceptions import BadRecord, InputError
from cluster.layout import JobLayout


# --- assign_files ------------------------------------------------------------------------
def loads(plan: dict, sizes: dict) -> dict:
    return {s: sum(max(sizes[f], 1) for f in fs) for s, fs in plan.items()}


def test_assign_files_largest_first_to_the_least_loaded():
    files = [("/d/a", 10), ("/d/b", 9), ("/d/c", 8), ("/d/d", 7), ("/d/e", 6), ("/d/f", 5), ("/d/g", 1)]
    plan = assign_files(files, ["S_0", "S_1", "S_2"])
    assert plan == {"S_0": ["/d/a", "/d/f", "/d/g"], "S_1": ["/d/b", "/d/e"], "S_2": ["/d/c", "/d/d"]}


def test_assign_files_is_balanced_and_complete():
    sizes = {f"/in/part-{i:04d}": (i * 7919) % 1000 + 1 for i in range(300)}
    servers = [f"S_{i}" for i in range(7)]
    plan = assign_files(sorted(sizes.items()), servers)
    assigned = [f for fs in plan.values() for f in fs]
    assert sorted(assigned) == sorted(sizes)
    load = loads(plan, sizes)
    assert max(load.values()) - min(load.values()) <= max(sizes.values())
    assert list(plan) == servers


def test_assign_files_ignores_input_order_and_counts_empty_files():
    files = [(f"/x/{i}", 100 if i % 3 else 0) for i in range(30)]
    a = assign_files(files, ["A", "B"])
    b = assign_files(list(reversed(files)), ["A", "B"])
    assert a == b
    assert [len(a["A"]), len(a["B"])] == [15, 15]  # empty files weigh 1, so they spread too


def test_assign_files_with_no_files_or_one_server():
    assert assign_files([], ["S_0", "S_1"]) == {"S_0": [], "S_1": []}
    assert assign_files([("/b", 1), ("/a", 5)], ["S_0"]) == {"S_0": ["/a", "/b"]}


def test_assign_files_is_the_same_in_another_process():
    # equal sizes everywhere: only the tie-break decides, and it must not use the salted hash()
    files = [(f"/data/in/file-{i:03d}.txt", 1000 * (i % 4)) for i in range(60)]
    servers = ["S_0", "S_1", "S_2", "S_3", "S_4"]
    code = ("import json, sys; from cluster.engine.inputs import assign_files; "
            "files, servers = json.loads(sys.stdin.read()); "
            "print(json.dumps(assign_files([tuple(f) for f in files], servers)))")
    for seed in ("123", "4242"):
        out = subprocess.run([sys.executable, "-c", code], input=json.dumps([files, servers]),
                             capture_output=True, text=True, check=True,
                             env={**os.environ, "PYTHONHASHSEED": seed}).stdout
        assert json.loads(out) == assign_files(files, servers)


# --- list_input_files --------------------------------------------------------------------
def test_list_input_files_skips_hidden_and_tmp(tmp_path):
    top = tmp_path / "in"
    (top / "sub" / "deeper").mkdir(parents=True)
    (top / ".hidden_dir").mkdir()
    (top / "a.txt").write_text("abc")
    (top / "sub" / "b.gz").write_bytes(b"12345")
    (top / "sub" / "deeper" / "c").write_text("")
    (top / ".hidden").write_text("x")
    (top / "sub" / ".also_hidden").write_text("x")
    (top / ".hidden_dir" / "inside.txt").write_text("x")
    (top / "partial.tmp").write_text("x")
    other = tmp_path / "other"
    other.mkdir()
    (other / "z.txt").write_text("zz")
    assert list_input_files([str(top), str(other), str(top)]) == [
        (str(top / "a.txt"), 3), (str(top / "sub" / "b.gz"), 5),
        (str(top / "sub" / "deeper" / "c"), 0), (str(other / "z.txt"), 2)]


def test_list_input_files_empty_dir(tmp_path):
    assert list_input_files([str(tmp_path)]) == []


def test_list_input_files_missing_dir_raises(tmp_path):
    (tmp_path / "ok").mkdir()
    missing1, missing2 = str(tmp_path / "nope1"), str(tmp_path / "nope2")
    with pytest.raises(InputError) as info:
        list_input_files([missing1, str(tmp_path / "ok"), missing2])
    assert f"input_dirs not found on this machine: {missing1}, {missing2}" in str(info.value)


# --- is_locked ---------------------------------------------------------------------------
HOLDER = ("import fcntl, sys\n"
          "fh = open(sys.argv[1], 'ab')\n"
          "fcntl.flock(fh, fcntl.LOCK_EX)\n"
          "print('locked', flush=True)\n"
          "sys.stdin.read()\n")


def test_is_locked_while_another_process_holds_the_lock(tmp_path):
    path = tmp_path / "being-written.txt"
    path.write_text("partial")
    assert is_locked(str(path)) is False
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        assert is_locked(str(path)) is True
        assert is_locked(str(path)) is True  # checking does not take or break the lock
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)
        proc.stdout.close()
    assert proc.returncode == 0
    assert is_locked(str(path)) is False


def test_is_locked_leaves_no_lock_behind(tmp_path):
    path = tmp_path / "f"
    path.write_text("x")
    assert is_locked(str(path)) is False
    with open(path, "rb") as fh:  # an exclusive lock is still free after the check
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fh, fcntl.LOCK_UN)


# --- HoldState ---------------------------------------------------------------------------
@pytest.fixture
def layout(tmp_path):
    return JobLayout(str(tmp_path / "data"), str(tmp_path / "aux"), "job1")


def make_files(tmp_path, names):
    paths = []
    for n in names:
        p = tmp_path / "in" / n
        p.parent.mkdir(exist_ok=True)
        p.write_text(n * 3)
        paths.append(str(p))
    return paths


def test_hold_state_counts_only_committed_runs(tmp_path, layout):
    a, b, c = make_files(tmp_path, ["a", "b", "c"])
    hs = HoldState(layout)
    assert hs.mapped() == set()
    hs.record("run1", "S_0", [a])
    hs.record("run1", "S_1", [b])
    assert hs.mapped() == set()  # pending until the job succeeds
    hs.commit("run1")
    assert hs.mapped() == {a, b}
    assert sorted(os.listdir(layout.state_dir)) == ["run1-S_0.json", "run1-S_1.json"]
    with open(os.path.join(layout.state_dir, "run1-S_0.json")) as fh:
        assert json.load(fh) == {a: 3}
    # a new HoldState (another process) reads the same state
    assert HoldState(layout).mapped() == {a, b}
    hs.record("run2", "S_0", [c])
    hs.discard("run2")
    assert hs.mapped() == {a, b}
    assert sorted(os.listdir(layout.state_dir)) == ["run1-S_0.json", "run1-S_1.json"]


def test_hold_state_commit_and_discard_touch_only_their_run(tmp_path, layout):
    a, b = make_files(tmp_path, ["a", "b"])
    hs = HoldState(layout)
    hs.record("r1", "S_0", [a])
    hs.record("r2", "S_0", [b])
    hs.commit("r2")
    assert hs.mapped() == {b}
    assert "r1-S_0.pending" in os.listdir(layout.state_dir)
    hs.discard("r1")
    assert sorted(os.listdir(layout.state_dir)) == ["r2-S_0.json"]
    hs.commit("r1")  # nothing left to commit: no change
    assert hs.mapped() == {b}


def test_hold_state_without_a_state_dir(layout):
    hs = HoldState(layout)
    hs.commit("r")
    hs.discard("r")
    assert hs.mapped() == set()
    assert not os.path.exists(layout.state_dir)


def test_hold_state_records_missing_files_as_none(tmp_path, layout):
    hs = HoldState(layout)
    gone = str(tmp_path / "gone")
    hs.record("r", "S_0", [gone])
    hs.commit("r")
    with open(os.path.join(layout.state_dir, "r-S_0.json")) as fh:
        assert json.load(fh) == {gone: None}
    assert hs.mapped() == {gone}


# --- previous output ---------------------------------------------------------------------
def test_read_previous_output_turns_lines_back_into_items():
    assert read_previous_output('["word", 3]\n', None) == [("word", 3)]
    assert read_previous_output('[["a", [1, "b"]], {"v": [1]}]', None) == [(("a", (1, "b")), {"v": [1]})]
    assert read_previous_output("[7, null]", None) == [(7, None)]
    key = read_previous_output('[[1, 2], 0]', None)[0][0]
    assert type(key) is tuple


@pytest.mark.parametrize("line", ['{"a": 1}', "[1, 2, 3]", "[1]", '"text"', "5"])
def test_read_previous_output_rejects_non_pairs(line):
    with pytest.raises(BadRecord, match=r"\[key, value\] pairs"):
        read_previous_output(line, None)


def test_read_previous_output_not_json_is_a_bad_record():
    with pytest.raises(BadRecord):
        read_previous_output('["truncated", ', None)


def test_list_input_files_follows_symlinked_folders_once(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (real / "a.txt").write_text("x\n")
    top = tmp_path / "in"
    top.mkdir()
    (top / "b.txt").write_text("y\n")
    os.symlink(real, top / "linked")
    os.symlink(top, top / "loop")  # a cycle must not be walked forever
    names = sorted(os.path.basename(p) for p, _ in list_input_files([str(top)]))
    assert names == ["a.txt", "b.txt"]


class _CountingShuffler:
    """Stands in for the Shuffler: counts the mapper's checkpoints."""

    def __init__(self):
        self.flushes = 0
        self.items = []

    def add(self, items):
        self.items += items or ()

    def maybe_flush(self):
        self.flushes += 1


def test_checkpoints_run_even_when_those_lines_are_sampled_out(tmp_path):
    path = tmp_path / "many.txt"
    path.write_text("".join(f"w{i}\n" for i in range(10 * 1024)))
    shuffler = _CountingShuffler()
    mapper = Mapper(server_id="S_0", job={"job_name": "j", "map_function_name": "f", "downsample": 0.01},
                    map_function=lambda line, aux: [(line.strip(), 1)], auxiliary_data=None,
                    shuffler=shuffler, counters={})
    mapper.run([str(path)])
    assert shuffler.flushes >= 10, "memory checks and progress must not depend on which lines are sampled"
    assert mapper.counters["records_in"] + mapper.counters["records_sampled_out"] == 10 * 1024
    assert mapper.counters["records_in"] == len(shuffler.items)


@pytest.mark.parametrize("error", [BrokenPipeError(32, "Broken pipe"), RuntimeError("a bug in the progress report")])
def test_an_error_of_the_progress_report_is_not_taken_for_a_broken_input(tmp_path, error):
    import lz4.frame

    path = tmp_path / "in.lz4"
    path.write_bytes(lz4.frame.compress("".join(f"w{i}\n" for i in range(5000)).encode()))

    def progress():
        raise error

    mapper = Mapper(server_id="S_0", job={"job_name": "j", "map_function_name": "f"},
                    map_function=lambda line, aux: [(line.strip(), 1)], auxiliary_data=None,
                    shuffler=_CountingShuffler(), counters={}, progress=progress)
    with pytest.raises(type(error)) as info:
        mapper.run([str(path)])
    assert info.value is error
    assert mapper.counters["files_failed"] == 0


def test_after_a_failed_file_the_rest_are_decoded_to_name_them_too(tmp_path):
    import gzip

    first = tmp_path / "a.bin"
    first.write_bytes(b"\0" * 100)
    whole = gzip.compress("".join(f"line {i}\n" for i in range(200_000)).encode())
    cut = tmp_path / "b.gz"
    cut.write_bytes(whole[: len(whole) * 3 // 4])  # its start decodes: only reading it through finds the cut
    good = tmp_path / "c.txt"
    good.write_text("fine\n")
    shuffler = _CountingShuffler()
    mapper = Mapper(server_id="S_0", job={"job_name": "j", "map_function_name": "f"},
                    map_function=lambda line, aux: [(line.strip(), 1)], auxiliary_data=None,
                    shuffler=shuffler, counters={})
    mapper.run([str(first), str(cut), str(good)])
    c = mapper.counters
    assert [f["path"] for f in c["failed_files"]] == [str(first), str(cut)]
    assert "truncated" in c["failed_files"][1]["reason"]
    assert not shuffler.items, "nothing is mapped once the job is known to fail"
    assert c["input_bytes_done"] == c["input_bytes_total"] == sum(p.stat().st_size for p in (first, cut, good))
