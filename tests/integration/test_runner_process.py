"""The Runner as a user runs it (`mapreduce runner`), stopped by real signals: SIGTERM finishes
the current job, SIGKILL loses nothing, and one queue has one Runner at a time."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import textwrap
import time
from pathlib import Path

import pytest
from integration_helpers import MAPREDUCE, make_config, process_alive

from cluster.job_spec import get_script_template
from cluster.scheduling.store import Scheduler


@pytest.fixture
def env(tmp_path) -> dict:
    cfg = make_config(tmp_path / "compute")
    ini = tmp_path / "cluster.cfg"
    ini.write_text(cfg.to_ini())
    return {"config": cfg, "env": dict(os.environ, CLUSTER_CONFIG=str(ini)), "tmp": tmp_path}


def submit(env: dict, name: str, body: str, **extra) -> None:
    script = env["tmp"] / f"{name}.py"
    script.write_text(textwrap.dedent(body))
    job = get_script_template()
    job.update(job_name=name, script_location=str(script), **extra)
    path = env["tmp"] / f"{name}.json"
    path.write_text(json.dumps(job))
    subprocess.run([str(MAPREDUCE), "submit", str(path)], env=env["env"], check=True, capture_output=True)


def start_runner(env: dict, *args: str) -> subprocess.Popen:
    log = open(env["tmp"] / "runner.out", "ab")
    try:
        return subprocess.Popen([str(MAPREDUCE), "runner", "--local", *args], env=env["env"], stdout=log,
                                stderr=subprocess.STDOUT)
    finally:
        log.close()


@pytest.fixture
def runners():
    """Runner processes a test starts; killed at the end whatever happened."""
    started: list[subprocess.Popen] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
            p.wait()


def wait_for(path: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear within {timeout}s"
        time.sleep(0.05)


def test_sigkill_mid_job_loses_nothing_and_the_work_is_done_once(env, runners):
    tmp = env["tmp"]
    submit(env, "ingest", f"""
        import os, pathlib, subprocess, time
        tmp = pathlib.Path({str(tmp)!r})
        if not (tmp / "attempted").exists():
            (tmp / "attempted").write_text("1")
            child = subprocess.Popen(["sleep", "600"])
            (tmp / "pids").write_text(f"{{os.getpid()}} {{child.pid}}")
            time.sleep(600)
        with open(tmp / "done.txt", "a") as fh:
            fh.write("done\\n")
    """, run_once=True, timeout_minutes=5)
    first = start_runner(env)
    runners.append(first)
    wait_for(tmp / "pids")
    pids = [int(p) for p in (tmp / "pids").read_text().split()]
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    assert all(process_alive(p) for p in pids), "the script should outlive a Runner killed outright"
    second = start_runner(env, "--once")
    runners.append(second)
    assert second.wait(120) == 0, (tmp / "runner.out").read_text()
    deadline = time.monotonic() + 10
    while any(process_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(process_alive(p) for p in pids), "the restarted Runner left the dead run's processes running"
    assert (tmp / "done.txt").read_text() == "done\n"  # done once, not twice
    runs = Scheduler(env["config"]).history("ingest")
    assert [r["status"] for r in runs] == ["succeeded", "interrupted"]
    assert "stopped its leftover process(es)" in runs[1]["note"] and "runs again" in runs[1]["note"]
    assert Scheduler(env["config"]).get_job("ingest") is None  # run_once: left after its success
    out = (tmp / "runner.out").read_text()
    assert "was interrupted" in out and "job ingest succeeded" in out


def test_sigterm_finishes_the_current_job_then_exits_and_one_queue_has_one_runner(env, runners):
    tmp = env["tmp"]
    submit(env, "steady", f"""
        import pathlib, time
        tmp = pathlib.Path({str(tmp)!r})
        (tmp / "started").write_text("1")
        time.sleep(2)
        (tmp / "finished").write_text("1")
    """, run_once=True)
    runner = start_runner(env)
    runners.append(runner)
    wait_for(tmp / "started")
    other = subprocess.run([str(MAPREDUCE), "runner", "--once", "--local"], env=env["env"], capture_output=True,
                           text=True, timeout=60)
    assert other.returncode == 1 and "another Runner already works the queue" in other.stderr
    assert f"pid {runner.pid}" in other.stderr
    runner.send_signal(signal.SIGTERM)
    assert runner.wait(60) == 0
    assert (tmp / "finished").exists()
    out = (tmp / "runner.out").read_text()
    assert "SIGTERM: finishing the current job" in out and "job steady succeeded" in out
    assert "the Runner stopped" in out
    assert [r["status"] for r in Scheduler(env["config"]).history("steady")] == ["succeeded"]


def test_init_runner_screen_keeps_a_runner_in_screen(env):
    session = f"test_runner_{os.getpid()}_{time.monotonic_ns()}"
    script = Path(__file__).resolve().parents[2] / "init" / "runner_screen.sh"
    run_env = dict(env["env"], CLUSTER_RUNNER_SESSION=session)

    def sh(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", str(script), *args], env=run_env, capture_output=True, text=True, timeout=60)
    try:
        assert "no Runner works the queue" in sh("status").stdout
        assert sh("start", "--local").returncode == 0
        deadline = time.monotonic() + 30
        while "pid" not in sh("status").stdout:
            assert time.monotonic() < deadline, "the Runner did not start in screen"
            time.sleep(0.2)
        refused = sh("start", "--local")
        assert refused.returncode == 1 and "already works this queue" in refused.stderr
        assert "sent SIGTERM" in sh("stop").stdout
        deadline = time.monotonic() + 30
        while "pid" in sh("status").stdout:
            assert time.monotonic() < deadline, "the Runner did not stop on SIGTERM"
            time.sleep(0.2)
        assert "the Runner stopped" in (Path(env["config"].local_working_dir) / "runner.log").read_text()
    finally:
        subprocess.run(["screen", "-S", session, "-X", "quit"], capture_output=True)
