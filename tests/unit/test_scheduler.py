"""The queue and the run history in SQLite: order, replacement, groups, history, estimates, and
several processes submitting at once."""
from __future__ import annotations

import datetime as dt
import multiprocessing
import sqlite3

import pytest

from cluster.exceptions import JobSpecError
from cluster.job_spec import get_script_template
from cluster.scheduling.store import RunStatus, Scheduler


def script(name: str, **extra) -> dict:
    job = get_script_template()
    job.update(job_name=name, script_location="/bin/true.py", **extra)
    return job


@pytest.fixture
def scheduler(tmp_path) -> Scheduler:
    return Scheduler(path=str(tmp_path / "master" / "queue.sqlite"))


def test_jobs_come_out_highest_priority_first_then_in_submission_order(scheduler):
    scheduler.submit_job(script("low", job_priority=1))
    scheduler.submit_job(script("none"))
    scheduler.submit_job(script("high", job_priority=10))
    scheduler.submit_job(script("low2", job_priority=1))
    assert [j["job_name"] for j in scheduler.list_jobs()] == ["high", "low", "low2", "none"]
    assert scheduler.get_job("high")["job_priority"] == 10 and scheduler.get_job("missing") is None


def test_a_job_of_the_same_name_replaces_the_queued_one_and_says_so(scheduler):
    assert scheduler.submit_job(script("a", script_arguments=["1"])) is False
    assert scheduler.submit_job(script("a", script_arguments=["2"])) is True
    assert [j["script_arguments"] for j in scheduler.list_jobs()] == [["2"]]


def test_an_invalid_job_is_refused_and_nothing_is_queued(scheduler):
    with pytest.raises(JobSpecError, match="timeout_minutes must be more than 0"):
        scheduler.submit_job(script("bad", timeout_minutes=-1))
    assert scheduler.list_jobs() == []


def test_delete_one_job_or_a_whole_group(scheduler):
    for name in ("a", "b", "c"):
        scheduler.submit_job(script(name, group_name="pipe" if name != "c" else None))
    assert scheduler.delete_job("c") is True and scheduler.delete_job("c") is False
    assert scheduler.delete_group("pipe") == ["a", "b"]
    assert scheduler.list_jobs() == []


def test_history_runtimes_and_the_estimate(scheduler):
    job = script("timed")
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    for i, seconds in enumerate([10, 12, 400, 11]):  # one slow outlier
        run = scheduler.record_start(job, started=t0 + dt.timedelta(hours=i))
        scheduler.record_end(run, RunStatus.SUCCEEDED, counters={"records_in": i},
                             ended=t0 + dt.timedelta(hours=i, seconds=seconds))
    failed = scheduler.record_start(job, started=t0 + dt.timedelta(hours=5))
    scheduler.record_end(failed, RunStatus.FAILED, phase="map", exception="ValueError: boom")
    assert scheduler.runtimes("timed") == [10, 12, 400, 11]
    assert scheduler.estimate_next_runtime("timed") == 11.5  # the median ignores the outlier
    assert scheduler.estimate_next_runtime("never") is None
    runs = scheduler.history("timed")
    assert [r["status"] for r in runs] == ["failed", "succeeded", "succeeded", "succeeded", "succeeded"]
    assert runs[0]["phase"] == "map" and runs[0]["exception"] == "ValueError: boom"
    assert runs[1]["counters"] == {"records_in": 3}
    assert scheduler.last_start("timed") == t0 + dt.timedelta(hours=5)


def test_only_the_last_fifty_successful_runs_count(scheduler):
    job = script("many")
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    for i in range(60):
        run = scheduler.record_start(job, started=t0 + dt.timedelta(hours=i))
        scheduler.record_end(run, RunStatus.SUCCEEDED, ended=t0 + dt.timedelta(hours=i, seconds=i))
    assert scheduler.runtimes("many") == [float(i) for i in range(10, 60)]


def test_an_interrupted_run_is_found_and_does_not_count_as_the_last_run(scheduler):
    job = script("cut")
    run = scheduler.record_start(job, runner_pid=4242)
    scheduler.record_process_group(run, 4243)
    (left,) = scheduler.unfinished_runs()
    assert (left["id"], left["runner_pid"], left["process_group"]) == (run, 4242, 4243)
    scheduler.record_end(run, RunStatus.INTERRUPTED, note="the Runner died during this run")
    assert scheduler.unfinished_runs() == [] and scheduler.last_start("cut") is None


def _submit_many(path: str, worker: int, count: int) -> None:
    s = Scheduler(path=path)
    for i in range(count):
        s.submit_job(script(f"w{worker}-{i}", job_priority=i % 5))


def test_four_processes_submitting_fifty_jobs_each_at_once_lose_none(tmp_path):
    path = str(tmp_path / "queue.sqlite")
    Scheduler(path=path)
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_submit_many, args=(path, w, 50)) for w in range(4)]
    for p in procs:
        p.start()
    reader = Scheduler(path=path)
    seen_while_writing = len(reader.list_jobs())  # a reader works while the writers write
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    names = [j["job_name"] for j in reader.list_jobs()]
    assert len(names) == 200 and len(set(names)) == 200 and seen_while_writing <= 200
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_resubmitted_job_gets_a_new_submission_number_even_when_it_held_the_last(scheduler):
    scheduler.submit_job(script("x", run_once=True))
    [first] = scheduler.queued()
    scheduler.submit_job(script("x", run_once=True, script_arguments=["new"]))
    [second] = scheduler.queued()
    assert second.seq > first.seq
    # the Runner's "unless it was submitted again meanwhile" checks keep the new submission
    assert scheduler.delete_if_unchanged("x", first.seq) is False
    assert scheduler.clear_force_run("x", first.seq) is False
    assert scheduler.get_job("x")["script_arguments"] == ["new"]
    assert scheduler.delete_if_unchanged("x", second.seq) is True and scheduler.get_job("x") is None


def test_force_run_takes_a_new_submission_number_so_a_force_during_a_run_is_kept(scheduler):
    scheduler.submit_job(script("nightly"))
    before = scheduler.queued()[0].seq
    assert scheduler.force_run("nightly") and not scheduler.force_run("missing")
    entry = scheduler.queued()[0]
    assert entry.job["force_run"] is True and entry.seq > before
    assert scheduler.force_run("nightly")  # pressed again while the forced run runs
    assert not scheduler.clear_force_run("nightly", entry.seq)  # the end of that run leaves the new force
    assert scheduler.get_job("nightly")["force_run"] is True


def test_progress_latest_runs_and_one_run(scheduler):
    a = scheduler.record_start(script("a"))
    scheduler.record_end(a, RunStatus.FAILED, exception="boom")
    a2 = scheduler.record_start(script("a"))
    b = scheduler.record_start(script("b"))
    scheduler.record_progress(a2, "map", {"S_0": {"files": 2, "files_done": 1}})
    latest = scheduler.latest_runs()
    assert (latest["a"]["id"], latest["b"]["id"]) == (a2, b)
    assert latest["a"]["progress"] == {"phase": "map", "servers": {"S_0": {"files": 2, "files_done": 1}}}
    scheduler.record_end(a2, RunStatus.SUCCEEDED)
    scheduler.record_progress(a2, "reduce", {})  # a late report after the end changes nothing
    assert scheduler.get_run(a2)["progress"]["phase"] == "map" and scheduler.get_run(999) is None
    assert [r["id"] for r in scheduler.unfinished_runs()] == [b]


def test_the_runner_lock_holder_is_seen_without_taking_the_lock(scheduler):
    from cluster.layout import flock_holder, take_flock

    assert flock_holder(scheduler.runner_lock_path) is None
    fh, _ = take_flock(scheduler.runner_lock_path, " for the test")
    try:
        assert flock_holder(scheduler.runner_lock_path) == __import__("os").getpid()
    finally:
        fh.close()
    assert flock_holder(scheduler.runner_lock_path) is None


def test_a_bad_input_filter_is_refused_when_submitted(tmp_path):
    from cluster.config import ClusterConfig
    from cluster.exceptions import JobSpecError
    from cluster.job_spec import get_mapreduce_job_template
    from cluster.scheduling.store import Scheduler

    scheduler = Scheduler(ClusterConfig.from_dict({"compute_dir": str(tmp_path / "c"),
                                                   "local_working_dir": str(tmp_path / "m")}))
    job = get_mapreduce_job_template()
    job.update(job_name="j", project_name="p", input_dirs=["/d"], map_function_name="map",
               reduce_function_name="reduce", job_script="x.py", input_filter={"version": 1})
    with pytest.raises(JobSpecError, match="input_filter is not a valid dimensions filter"):
        scheduler.submit_job(job)
    assert scheduler.list_jobs() == []
