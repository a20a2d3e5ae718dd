"""Failures end to end: a map or reduce function that raises, bad records, a corrupt .gz input,
and a worker process killed by a signal. A failed job names where it failed and publishes nothing."""
from __future__ import annotations

import collections
import gzip
import os
import re
import signal
import threading
import time
from pathlib import Path

import pytest
from integration_helpers import (
    TEST_PROJECTS,
    make_config,
    make_job,
    output_dict,
    output_files,
    run_job,
    write_auxiliary,
    write_lines,
)

from cluster import defaults
from cluster.exceptions import JobFailed
from cluster.executors.local import LocalExecutor
from cluster.progress import format_counters


def word_lines(n: int, seed: int = 0) -> list[str]:
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"]
    return [" ".join(words[(seed + i * 3 + j) % len(words)] for j in range(1 + i % 5)) for i in range(n)]


def counts_of(lines) -> dict[str, int]:
    return dict(collections.Counter(w for line in lines for w in line.split()))


@pytest.fixture
def boom_input(tmp_path) -> tuple[Path, Path]:
    """(folder, the file with 'BOOM' on line 37); a clean file beside it."""
    folder = tmp_path / "boom"
    write_lines(folder / "clean.txt", word_lines(300))
    lines = word_lines(100, seed=1)
    lines[36] = "BOOM goes line 37"
    return folder, write_lines(folder / "sub" / "boom.txt", lines)


def test_map_error_names_server_phase_file_line_and_traceback(config, boom_input):
    folder, boom = boom_input
    job = make_job("map_fails", "testjobs", [folder], "fail_on_boom", "sum_values")
    with pytest.raises(JobFailed) as info:
        run_job(config, job)
    err = info.value
    msg = str(err)
    assert err.server in ("S_0", "S_1") and f"server {err.server}" in msg
    assert err.phase == "map" and "phase map" in msg
    assert str(boom) in msg
    assert "line 37" in msg
    assert "Traceback (most recent call last)" in msg
    assert "ValueError: this line goes boom: BOOM goes line 37" in msg
    assert "fail_on_boom" in msg and "map_functions.py" in msg
    job_dir = Path(config.base_dir) / "map_fails"
    assert not (job_dir / "reduce").exists(), "a failed job must publish no output"
    assert not (job_dir / "staging").exists() or not any((job_dir / "staging").iterdir())


def test_failed_run_leaves_previous_output_unchanged(config, boom_input):
    folder, boom = boom_input
    clean = folder.parent / "clean_only"
    clean.mkdir()
    os.link(folder / "clean.txt", clean / "clean.txt")
    good = run_job(config, make_job("keep", "testjobs", [clean], "fail_on_boom", "sum_values"))
    before = {p.name: p.read_bytes() for p in output_files(good.output_dir)}
    assert output_dict(good) == counts_of(word_lines(300))

    with pytest.raises(JobFailed, match="line 37"):
        run_job(config, make_job("keep", "testjobs", [folder], "fail_on_boom", "sum_values"))
    assert {p.name: p.read_bytes() for p in output_files(good.output_dir)} == before


def test_bad_records_are_counted_not_fatal(config, tmp_path):
    lines = word_lines(200)
    bad_at = [5, 50, 51, 120, 199]
    for i in bad_at:
        lines[i] = "BAD " + lines[i]
    path = write_lines(tmp_path / "bad" / "a.txt", lines)
    write_lines(tmp_path / "bad" / "b.txt", word_lines(150, seed=3))
    result = run_job(config, make_job("bad_records", "testjobs", [tmp_path / "bad"], "bad_record_on_bad",
                                      "sum_values", max_bad_fraction=0.02))
    assert result.counters["bad_lines"] == len(bad_at)
    assert result.counters["bad_lines_by_file"] == {str(path): len(bad_at)}
    assert f"{len(bad_at):>10,}  {path}" in format_counters(result)
    assert sorted(result.counters["bad_line_examples"]) == sorted(f"{path}:{i + 1}: line starts with BAD"
                                                                  for i in bad_at)
    good = [line for line in lines if not line.startswith("BAD")] + word_lines(150, seed=3)
    assert output_dict(result) == counts_of(good)


@pytest.mark.parametrize("limit, fails", [(0, True), (None, True), (0.02, False), (1, False)])
def test_the_bad_record_limit(config, tmp_path, limit, fails):
    """5 bad records of 350 (1.4%): over the default 0.01 and over 0, within 0.02 and 1."""
    lines = word_lines(200)
    for i in (5, 50, 51, 120, 199):
        lines[i] = "BAD " + lines[i]
    path = write_lines(tmp_path / "bad" / "a.txt", lines)
    write_lines(tmp_path / "bad" / "b.txt", word_lines(150, seed=3))
    extra = {} if limit is None else {"max_bad_fraction": limit}
    job = make_job("limit", "testjobs", [tmp_path / "bad"], "bad_record_on_bad", "sum_values", **extra)
    if not fails:
        assert run_job(config, job).counters["bad_lines"] == 5
        return
    with pytest.raises(JobFailed) as info:
        run_job(config, job)
    message = str(info.value)
    assert info.value.phase == "map" and "5 of 350 records (1.43%) are bad" in message
    assert f"{path}: 5 bad" in message and f"{path}:6: line starts with BAD" in message
    assert not (Path(config.base_dir) / "limit" / "reduce").exists()


def test_reduce_error_names_the_key(config, tmp_path):
    write_lines(tmp_path / "r" / "a.txt", word_lines(100) + ["boom and more boom"])
    write_lines(tmp_path / "r" / "b.txt", word_lines(100, seed=2))
    job = make_job("reduce_fails", "testjobs", [tmp_path / "r"], "fail_on_boom", "fail_on_boom_key")
    with pytest.raises(JobFailed) as info:
        run_job(config, job)
    msg = str(info.value)
    assert info.value.phase == "reduce" and "phase reduce" in msg
    assert info.value.server in ("S_0", "S_1") and f"server {info.value.server}" in msg
    assert "key 'boom'" in msg
    assert "RuntimeError: reduce cannot take key boom" in msg
    assert "Traceback (most recent call last)" in msg
    assert not (Path(config.base_dir) / "reduce_fails" / "reduce").exists()


def test_a_truncated_gz_fails_the_job_and_names_it(config, tmp_path):
    folder = tmp_path / "gz"
    write_lines(folder / "plain.txt", word_lines(400))
    damaged = word_lines(5000, seed=7)
    gz = folder / "damaged.txt.gz"
    with gzip.open(gz, "wt") as fh:
        fh.write("\n".join(damaged) + "\n")
    data = gz.read_bytes()
    gz.write_bytes(data[: len(data) // 2])  # truncated: no end of stream, no trailer
    with pytest.raises(JobFailed) as info:
        run_job(config, make_job("corrupt", "testjobs", [folder], "fail_on_boom", "sum_values"))
    message = str(info.value)
    assert info.value.phase == "map" and f"{gz}: gzip data ends early (truncated)" in message
    assert "nothing was published" in message
    assert not (Path(config.base_dir) / "corrupt" / "reduce").exists()


def _children_of_this_process() -> set[int]:
    kids: set[int] = set()
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        try:
            kids.update(int(x) for x in (task / "children").read_text().split())
        except OSError:
            continue
    return kids


def _start_sleeper(config, tmp_path, job_name: str) -> tuple[threading.Thread, dict, str, int]:
    """Run a job in a thread whose worker on b.txt sleeps on a SLEEP line; return once it sleeps:
    (thread, outcome dict, its server, its pid)."""
    folder = tmp_path / "sleepy"
    write_lines(folder / "a.txt", word_lines(2000))
    write_lines(folder / "b.txt", word_lines(10) + ["SLEEP here"] + word_lines(10))
    pid_dir = tmp_path / "pids"
    pid_dir.mkdir()
    write_auxiliary(config, "sleeper", {"pid_dir": str(pid_dir)})
    job = make_job(job_name, "testjobs", [folder], "sleep_on_marker", "sum_values",
                   auxiliary_data_name_mapper="sleeper")
    outcome: dict = {}

    def target() -> None:
        try:
            outcome["result"] = LocalExecutor(config, servers=2).run(job)
        except BaseException as exc:  # noqa: B036 - handed to the test thread
            outcome["error"] = exc

    runner = threading.Thread(target=target, daemon=True)
    runner.start()
    deadline = time.monotonic() + 30
    pid_files: list[Path] = []
    while not pid_files and time.monotonic() < deadline and runner.is_alive():
        pid_files = [p for p in pid_dir.iterdir() if p.suffix == ".pid"]
        time.sleep(0.05)
    assert pid_files, f"the sleeping worker never started: {outcome}"
    name, pid_text = pid_files[0].read_text().split()
    assert name.startswith(f"cluster-{job_name}-S_"), name
    pid = int(pid_text)
    assert pid in _children_of_this_process(), "the worker must be a child process of the executor"
    return runner, outcome, name.rsplit("-", 1)[1], pid


def test_worker_killed_by_sigkill_fails_the_job_naming_it(config, tmp_path):
    runner, outcome, server, pid = _start_sleeper(config, tmp_path, "killed")
    os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()
    runner.join(timeout=20)
    waited = time.monotonic() - killed_at
    assert not runner.is_alive(), "the executor did not notice the killed worker within 20 s"
    assert waited < 10, f"noticed after {waited:.1f}s"
    err = outcome.get("error")
    assert isinstance(err, JobFailed), f"expected JobFailed, got {outcome!r}"
    assert err.server == server and f"server {server}" in str(err)
    assert err.phase == "map"
    assert str(pid) in str(err) and "signal" in str(err)
    assert not (Path(config.base_dir) / "killed" / "reduce").exists()
    assert not _live_workers(), "every worker process must be gone after the failure"

    # the next run of the job starts clean: nothing the killed run left is counted
    folder = tmp_path / "sleepy"
    again = run_job(config, make_job("killed", "testjobs", [folder], "bad_record_on_bad", "sum_values"))
    assert output_dict(again) == counts_of((folder / "a.txt").read_text().splitlines()
                                           + (folder / "b.txt").read_text().splitlines())


def test_stopped_worker_fails_the_job_by_heartbeat_timeout(config, tmp_path, monkeypatch):
    """A worker that stops (SIGSTOP: alive, but silent) fails the phase naming it, after the
    heartbeat timeout (shortened here from its default so the test stays quick)."""
    monkeypatch.setattr(defaults, "HEARTBEAT_TIMEOUT_SECONDS", 3.0)
    runner, outcome, server, pid = _start_sleeper(config, tmp_path, "stopped")
    os.kill(pid, signal.SIGSTOP)
    stopped_at = time.monotonic()
    try:
        runner.join(timeout=30)
    finally:
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
    waited = time.monotonic() - stopped_at
    assert not runner.is_alive(), "the executor waited on a silent worker for 30 s"
    err = outcome.get("error")
    assert isinstance(err, JobFailed), f"expected JobFailed, got {outcome!r}"
    assert err.server == server and f"server {server}" in str(err) and "heartbeat" in str(err)
    assert err.phase == "map"
    assert waited < 15, f"failed after {waited:.1f}s"
    assert not (Path(config.base_dir) / "stopped" / "reduce").exists()
    assert not _live_workers(), "every worker process must be gone after the failure"


def _live_workers() -> list[int]:
    """Worker processes (`python -m cluster.executors.local_worker` children) of this process that are still alive."""
    deadline = time.monotonic() + 5
    while True:
        live = []
        for pid in _children_of_this_process():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if b"cluster.engine.task" in cmdline and state != "Z":
                live.append(pid)
        if not live or time.monotonic() > deadline:
            return live
        time.sleep(0.1)


@pytest.mark.parametrize(("map_function", "hint"), [
    ("returns_a_number", "must return an iterable of (key, value) items"),
    ("list_keys", "keys must be hashable"),
    ("triples", "of length 3"),
])
def test_map_function_misuse_gets_a_clear_message(config, tmp_path, map_function, hint):
    write_lines(tmp_path / "m" / "a.txt", word_lines(20))
    write_lines(tmp_path / "m" / "b.txt", word_lines(20, seed=4))
    with pytest.raises(JobFailed) as info:
        run_job(config, make_job("misuse", "testjobs", [tmp_path / "m"], map_function, "sum_values"))
    msg = str(info.value)
    assert hint in msg
    assert info.value.phase == "map" and str(tmp_path / "m") in msg
    # every line is bad, so the first bad line is line 1: named alone or in a range of lines
    where = re.search(r"lines? (\d+)(?:-(\d+))?", msg)
    assert where and int(where.group(1)) == 1, msg[:400]
    if map_function == "triples":  # malformed pairs are located to their exact line
        assert info.value.report.get("line_number") == 1 and "lines 1-" not in msg, msg[:400]


@pytest.mark.parametrize("memory", [
    pytest.param("256M", id="combine-at-end"),
    # regression: a combiner raising while mapping once reached the master unnamed
    pytest.param("1M", id="combine-while-mapping"),
])
def test_combiner_error_names_the_combine_function(tmp_path, memory):
    """A combiner that raises fails the job with a message naming it, whether it ran at the end of
    the map phase or while mapping (when the held items passed the memory budget)."""
    config = make_config(tmp_path / "compute", TEST_PROJECTS, memory=memory)
    write_lines(tmp_path / "c" / "a.txt", word_lines(20000))
    write_lines(tmp_path / "c" / "b.txt", word_lines(20000, seed=3))
    job = make_job("combine_fails", "testjobs", [tmp_path / "c"], "fail_on_boom", "sum_values",
                   combine_function_name="fail_combine")
    with pytest.raises(JobFailed) as info:
        run_job(config, job)
    msg = str(info.value)
    assert info.value.phase == "map"
    assert "combine function 'fail_combine'" in msg, msg[:500]
    assert "KeyError" in msg and "combiner cannot combine" in msg
    assert not (Path(config.base_dir) / "combine_fails" / "reduce").exists()


def test_reduce_error_names_the_key_none(config, tmp_path):
    """None is a legal key: the message must name it (regression: None once meant 'no key')."""
    write_lines(tmp_path / "n" / "a.txt", word_lines(30))
    write_lines(tmp_path / "n" / "b.txt", word_lines(30, seed=1))
    job = make_job("none_key_fails", "testjobs", [tmp_path / "n"], "words_and_none", "fail_on_none_key")
    with pytest.raises(JobFailed) as info:
        run_job(config, job)
    msg = str(info.value)
    assert info.value.phase == "reduce" and "RuntimeError: reduce refuses this group" in msg
    assert "key None" in msg, msg[:300]


def test_combiner_oserror_while_mapping_gz_is_not_a_corrupt_file(tmp_path):
    """An OSError from the combiner is the combiner's failure, not a corrupt input file: the job
    must fail naming it, or (if the combiner is retried) count every record. (Regression: it was
    once counted as a corrupt .gz file, and the rest of the file silently skipped.)"""
    config = make_config(tmp_path / "compute", TEST_PROJECTS, memory="1M")
    folder = tmp_path / "c"
    folder.mkdir()
    lines = {"a.txt.gz": word_lines(20000, seed=0), "b.txt.gz": word_lines(20000, seed=3)}
    for name, text in lines.items():
        with gzip.open(folder / name, "wt") as fh:
            fh.write("\n".join(text) + "\n")
    job = make_job("combine_oserror", "testjobs", [folder], "fail_on_boom", "sum_values",
                   combine_function_name="combine_oserror_once")
    try:
        result = run_job(config, job)
    except JobFailed as exc:
        assert "combiner could not write its scratch file" in str(exc)
        return
    assert result.counters["files_failed"] == 0, result.counters["failed_files"]
    assert output_dict(result) == counts_of(lines["a.txt.gz"] + lines["b.txt.gz"])
