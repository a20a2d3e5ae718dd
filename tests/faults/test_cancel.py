"""Cancel: `mapreduce cancel JOB` stops a running mapreduce job on the cluster (the Runner's, or a
`mapreduce run`'s) and a running script job with its whole process group; the run is recorded as
cancelled, the job stays queued, and the cluster takes the next job within seconds."""
from __future__ import annotations

import json
import os
import subprocess
import textwrap
import time

from cluster_helpers import wait_until
from fault_helpers import job_file, kill_if_running, run_cli, slow_input, word_count_job
from integration_helpers import MAPREDUCE

from cluster import get_script_template


def history(cluster, name: str) -> list[dict]:
    return json.loads(cluster.cli(MAPREDUCE, "history", name, "--json").stdout)


def start_runner(cluster, tmp_path) -> subprocess.Popen:
    out = open(tmp_path / "runner.out", "wb")  # noqa: SIM115 - the Runner writes it until stopped
    return subprocess.Popen([str(MAPREDUCE), "runner", "--config", str(cluster.config_path)], env=cluster.env,
                            stdout=out, stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_cancel_of_the_runners_mapreduce_job_frees_the_cluster_for_the_next(cluster, tmp_path):
    slow = word_count_job("long_job", slow_input(tmp_path / "slow", sleep=120), job_priority=10)
    after = word_count_job("next_job", slow_input(tmp_path / "fast", sleep=0), job_priority=1, run_once=True)
    for j in (slow, after):
        cluster.cli(MAPREDUCE, "submit", str(job_file(tmp_path, j)))
    runner = start_runner(cluster, tmp_path)
    try:
        wait_until(lambda: (cluster.beat("S_0") or {}).get("phase") == "map", 60, "the long job mapping")
        t0 = time.monotonic()
        out = cluster.cli(MAPREDUCE, "cancel", "long_job", timeout=90)
        assert "long_job': cancelled" in out.stdout and time.monotonic() - t0 < 20, out.stdout
        wait_until(lambda: [r["status"] for r in history(cluster, "next_job")] == ["succeeded"], 30,
                   "the next job to run and succeed")
        assert time.monotonic() - t0 < 30
    finally:
        stop(runner)
    run = history(cluster, "long_job")[0]
    assert run["status"] == "cancelled" and "mapreduce cancel" in run["exception"]
    queue = json.loads(cluster.cli(MAPREDUCE, "queue", "--json").stdout)
    assert [j["job_name"] for j in queue] == ["long_job"] and queue[0]["queue_state"]["held"] == "it was cancelled"
    wait_until(lambda: all((cluster.beat(s) or {}).get("run_id") is None for s in ("S_0", "S_1")), 10,
               "the servers free")
    cluster.cli(MAPREDUCE, "delete", "long_job")


def test_cancel_of_a_mapreduce_run_stops_that_client_and_the_history_names_its_source(cluster, tmp_path):
    client = run_cli(cluster, job_file(tmp_path, word_count_job("by_hand", slow_input(tmp_path / "h", sleep=120))))
    try:
        wait_until(lambda: history(cluster, "by_hand") and (cluster.beat("S_1") or {}).get("phase") == "map", 60,
                   "the run recorded and mapping")
        assert history(cluster, "by_hand")[0]["source"] == "mapreduce run (cluster)"
        cluster.cli(MAPREDUCE, "cancel", "by_hand", "--delete", timeout=90)
        out, err = client.communicate(timeout=60)
    finally:
        kill_if_running(client)
    assert client.returncode == 1 and "was cancelled" in err, err
    assert history(cluster, "by_hand")[0]["status"] == "cancelled"
    done = cluster.cli(MAPREDUCE, "run", str(job_file(tmp_path, word_count_job(
        "after_hand", slow_input(tmp_path / "a", sleep=0)))))
    assert history(cluster, "after_hand")[0]["status"] == "succeeded", done.stdout


def test_cancel_of_a_running_script_stops_its_whole_process_group(cluster, tmp_path):
    pids = tmp_path / "pids"
    script = tmp_path / "sleepy.py"
    script.write_text(textwrap.dedent(f"""
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        open({str(pids)!r}, "w").write(f"{{child.pid}}\\n")
        time.sleep(600)
    """))
    job = get_script_template()
    job.update(job_name="sleepy", script_location=str(script))
    cluster.cli(MAPREDUCE, "submit", str(job_file(tmp_path, job)))
    runner = start_runner(cluster, tmp_path)
    try:
        wait_until(lambda: pids.exists() and pids.read_text().strip(), 60, "the script and its child")
        child = int(pids.read_text())
        parent = history(cluster, "sleepy")[0]["process_group"]
        out = cluster.cli(MAPREDUCE, "cancel", "sleepy", timeout=90)
        assert "sleepy': cancelled" in out.stdout
        wait_until(lambda: not _alive(child) and not _alive(parent), 20, "the script's processes to end")
    finally:
        stop(runner)
    assert history(cluster, "sleepy")[0]["status"] == "cancelled"
    cluster.cli(MAPREDUCE, "delete", "sleepy")


def test_cancel_of_a_job_that_is_not_running_says_so(cluster):
    proc = cluster.cli(MAPREDUCE, "cancel", "nothing_runs", check=False)
    assert proc.returncode == 1 and "is not running" in proc.stderr


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as fh:  # a zombie has ended
        return fh.read().split()[2] != "Z"
