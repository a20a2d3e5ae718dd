"""The Runner's retry policy, on a frozen clock: retries spaced by the backoff, then no more; a
failing job never re-run within its delay; min_interval_minutes; `runner --once` says when a job
failed; the queue takes concurrent submissions whole."""
from __future__ import annotations

import datetime as dt
import json
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from fault_helpers import kill_if_running
from integration_helpers import MAPREDUCE, REPO, make_config

from cluster import get_script_template
from cluster.scheduling.runner import Runner
from cluster.scheduling.store import RunStatus

T0 = dt.datetime(2026, 12, 2, 8, 0, tzinfo=dt.UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += dt.timedelta(**delta)


@pytest.fixture
def cfg(tmp_path):
    return make_config(tmp_path / "compute")


@pytest.fixture
def cfg_file(cfg, tmp_path) -> str:
    path = tmp_path / "cluster.cfg"
    path.write_text(cfg.to_ini())
    return str(path)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def runner(cfg, clock):
    return Runner(cfg, local=True, servers=2, echo=lambda m: None, clock=clock, rng=random.Random(7))


@pytest.fixture
def script(tmp_path) -> tuple[Path, Path]:
    """A script that appends its first argument to a log and exits with its second."""
    log = tmp_path / "runs.log"
    path = tmp_path / "append.py"
    path.write_text(textwrap.dedent("""
        import sys
        with open(sys.argv[1], "a") as fh:
            fh.write(sys.argv[2] + "\\n")
        sys.exit(int(sys.argv[3]))
    """))
    return path, log


def job(name: str, script: tuple[Path, Path], code: int, **extra) -> dict:
    j = get_script_template()
    j.update(job_name=name, script_location=str(script[0]), script_arguments=[str(script[1]), name, str(code)],
             **extra)
    return j


def runs_of(log: Path) -> int:
    return len(log.read_text().split()) if log.exists() else 0


def test_a_failing_job_with_retries_2_runs_3_times_spaced_by_the_backoff_then_no_more(runner, clock, script):
    runner.scheduler.submit_job(job("flaky", script, 1, retries=2, retry_delay_minutes=10))
    tried_at = []
    for _ in range(24 * 60):  # a day, a round a minute
        if runner.run_round():
            tried_at.append(clock.now)
        clock.advance(minutes=1)
    assert runs_of(script[1]) == 3 and len(tried_at) == 3
    gaps = [(b - a).total_seconds() / 60 for a, b in zip(tried_at, tried_at[1:], strict=False)]
    assert 5 <= gaps[0] <= 11 and 10 <= gaps[1] <= 21, gaps  # 10 min then 20, each a random half to whole
    history = runner.scheduler.history("flaky")
    assert [r["status"] for r in history] == [RunStatus.FAILED.value] * 3
    assert "try 1 of 3 failed; the next at" in history[2]["note"]
    assert "try 3 of 3 failed; it stays queued, failed" in history[0]["note"]
    state = runner.scheduler.retry_states()["flaky"]
    assert state["held"] and state["retry_at"] is None
    assert runner.scheduler.force_run("flaky")  # a person's word runs it again, with its retries afresh
    runner.run_round()
    assert runs_of(script[1]) == 4 and runner.scheduler.retry_states()["flaky"]["failures"] == 1


def test_an_unscheduled_failing_job_is_never_run_again_within_its_delay(runner, clock, script):
    """Before: a failing job without a schedule ran again about every 2 s, forever."""
    runner.scheduler.submit_job(job("broken", script, 3, retries=1, retry_delay_minutes=60))
    runner.run_round()
    retry_at = dt.datetime.fromisoformat(runner.scheduler.retry_states()["broken"]["retry_at"])
    assert T0 + dt.timedelta(minutes=30) <= retry_at <= T0 + dt.timedelta(minutes=60)
    while clock.now < retry_at - dt.timedelta(seconds=2):
        assert runner.run_round() == [], f"re-run at {clock.now} before its retry time {retry_at}"
        clock.advance(seconds=20)
    clock.now = retry_at
    assert [o.status for o in runner.run_round()] == [RunStatus.FAILED]
    for _ in range(100):  # the last try is spent: never again, however many rounds
        clock.advance(hours=1)
        assert runner.run_round() == []
    assert runs_of(script[1]) == 2


def test_a_scheduled_job_retries_then_waits_for_its_next_time(runner, clock, script):
    start = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0) + dt.timedelta(minutes=1)  # after submission
    clock.now = start
    at = start + dt.timedelta(minutes=30)
    runner.scheduler.submit_job(job("daily", script, 1, retries=1, retry_delay_minutes=4,
                                    schedule_frequency="daily", time_of_day=f"{at:%H:%M}"))
    starts = []
    for _ in range(2 * 24 * 60):
        if runner.run_round():
            starts.append(clock.now)
        clock.advance(minutes=1)
    day = dt.timedelta(days=1)
    assert [s - start for s in starts][:1] == [dt.timedelta(minutes=30)]
    assert dt.timedelta(minutes=2) <= starts[1] - starts[0] <= dt.timedelta(minutes=4)  # the retry
    assert starts[2] - starts[0] == day and len(starts) == 4  # then tomorrow's run and its retry
    assert runner.scheduler.retry_states()["daily"]["held"] is None


def test_a_succeeding_unscheduled_job_waits_its_min_interval(runner, clock, script):
    runner.scheduler.submit_job(job("steady", script, 0, min_interval_minutes=30))
    starts = []
    for _ in range(120):
        if runner.run_round():
            starts.append(clock.now)
        clock.advance(minutes=1)
    assert len(starts) >= 3
    assert all(b - a >= dt.timedelta(minutes=30) for a, b in zip(starts, starts[1:], strict=False)), starts


def test_runner_once_exits_1_when_a_job_failed(cfg, cfg_file, script):
    from cluster.scheduling.store import Scheduler

    Scheduler(cfg).submit_job(job("fails", script, 1))
    Scheduler(cfg).submit_job(job("works", script, 0))
    proc = subprocess.run([str(MAPREDUCE), "runner", "--once", "--local", "--config", cfg_file],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "not every job succeeded in this round: fails (failed)" in proc.stderr
    queue = json.loads(subprocess.run([str(MAPREDUCE), "queue", "--json", "--config", cfg_file],
                                      capture_output=True, text=True, timeout=60, check=True).stdout)
    assert {j["job_name"]: bool(j["queue_state"]["held"]) for j in queue} == {"fails": True, "works": False}
    table = subprocess.run([str(MAPREDUCE), "queue", "--config", cfg_file], capture_output=True, text=True,
                           timeout=60, check=True).stdout
    assert "held: failed 1 time(s) in a row (force-run or submit it again)" in table


def test_4_x_50_concurrent_submits_are_200_queued_jobs(cfg, cfg_file, script):
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(REPO)!r})
        from cluster import ClusterConfig, get_script_template
        from cluster.scheduling.store import Scheduler
        s = Scheduler(ClusterConfig.from_file({cfg_file!r}))
        for i in range(50):
            j = get_script_template()
            j.update(job_name=f"j{{sys.argv[1]}}_{{i}}", script_location={str(script[0])!r})
            s.submit_job(j)
    """)
    procs = [subprocess.Popen([sys.executable, "-c", code, str(k)]) for k in range(4)]
    assert [p.wait(120) for p in procs] == [0] * 4
    from cluster.scheduling.store import Scheduler

    names = [j["job_name"] for j in Scheduler(cfg).list_jobs()]
    assert len(names) == 200 and len(set(names)) == 200


def test_history_prune_deletes_old_ended_runs_only(cfg, cfg_file, runner, clock, script):
    from cluster.scheduling.store import Scheduler

    s = Scheduler(cfg)
    old = s.record_start(job("old", script, 0), started=T0 - dt.timedelta(days=40))
    s.record_end(old, RunStatus.SUCCEEDED, ended=T0 - dt.timedelta(days=40))
    recent = s.record_start(job("recent", script, 0))
    s.record_end(recent, RunStatus.FAILED)
    running = s.record_start(job("running", script, 0), started=T0 - dt.timedelta(days=90))
    out = subprocess.run([str(MAPREDUCE), "history", "--prune", "30", "--config", cfg_file], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0 and "deleted the records of 1 run(s)" in out.stdout, out.stderr
    assert sorted(r["id"] for r in s.history()) == sorted([recent, running])


def test_a_runner_killed_with_3_jobs_queued_does_each_jobs_work_once_after_restart(cfg, cfg_file, tmp_path):
    """SIGKILL of the Runner while the first of 3 run_once jobs runs: the next Runner stops what the
    killed run left (its script, in a session of its own, outlived the Runner) and runs every job, so
    each one's work (written at its end) is done exactly once."""
    import os
    import signal
    import time

    from cluster.scheduling.store import Scheduler

    log = tmp_path / "work.log"
    started = tmp_path / "started"
    script = tmp_path / "work.py"
    script.write_text(textwrap.dedent(f"""
        import sys, time
        open({str(started)!r}, "a").write(sys.argv[1] + "\\n")
        time.sleep(float(sys.argv[2]))
        open({str(log)!r}, "a").write(sys.argv[1] + "\\n")
    """))
    s = Scheduler(cfg)
    for name, prio in (("first", 3), ("second", 2), ("third", 1)):
        j = get_script_template()
        j.update(job_name=name, script_location=str(script), script_arguments=[name, "4"], run_once=True,
                 job_priority=prio)
        s.submit_job(j)
    runner = subprocess.Popen([str(MAPREDUCE), "runner", "--local", "--config", cfg_file],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not (started.exists() and started.read_text().split() == ["first"]):
            assert time.monotonic() < deadline, "the first job never started"
            time.sleep(0.1)
        os.kill(runner.pid, signal.SIGKILL)
        runner.wait(10)
    finally:
        kill_if_running(runner)
    again = subprocess.run([str(MAPREDUCE), "runner", "--once", "--local", "--config", cfg_file],
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stdout + again.stderr
    time.sleep(5)  # the killed run's script would have written by now, had it been left running
    assert sorted(log.read_text().split()) == ["first", "second", "third"]
    statuses = {r["job_name"]: r["status"] for r in reversed(s.history())}
    assert statuses == {"first": "succeeded", "second": "succeeded", "third": "succeeded"}
    assert [r["status"] for r in s.history("first")] == ["succeeded", "interrupted"]
    assert s.list_jobs() == []
