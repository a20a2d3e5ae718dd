"""The defects found by trying the cluster as an operator would (issue 16, part 0), each with the
test that failed before its fix: runs at the same moment, a long C call in user code, a killed
management server, a killed client, a restarted Redis."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import redis
from cluster_helpers import MANAGE, wait_until
from cluster_helpers import word_counts_of as expected_counts
from fault_helpers import in_phase, job_file, kill_if_running, run_cli, slow_input, word_count_job
from integration_helpers import MAPREDUCE, items_to_dict, write_lines

from cluster.layout import JobLayout


def output_of(cluster, job_name: str) -> dict:
    lines = cluster.cli(MAPREDUCE, "output", job_name).stdout.splitlines()
    return items_to_dict(json.loads(line) for line in lines)


def leftovers(cluster, job_name: str) -> list[str]:
    """What a run left between phases in the job's folder (spills, received files, merge runs, staging)."""
    layout = JobLayout(cluster.config.base_dir, cluster.config.auxiliary_dir, job_name)
    found = []
    for sub in ("map", "spill", "sort", "staging"):
        for root, _, files in os.walk(os.path.join(layout.job_dir, sub)):
            found += [os.path.join(root, f) for f in files]
    return found


def run_keys(cluster, job_name: str) -> list[bytes]:
    client = cluster.manager().redis("localhost")
    try:
        return sorted(client.scan_iter(match=f"cluster:{cluster.name}:job:{job_name}:*")) + sorted(
            k for k in client.scan_iter(match=f"cluster:{cluster.name}:run:*"))
    finally:
        client.close()


def test_two_runs_started_at_the_same_moment_one_runs_the_other_is_refused_at_once(cluster, tmp_path):
    """Before: the servers dropped the first run for the second, and its client hung forever."""
    jobs = [job_file(tmp_path, word_count_job(name, slow_input(tmp_path / name, sleep=3)))
            for name in ("first", "second")]
    procs = [run_cli(cluster, j) for j in jobs]
    started = time.monotonic()
    ends: dict[int, float] = {}
    results = []
    for i, p in enumerate(procs):
        out, err = p.communicate(timeout=120)
        ends[i] = time.monotonic() - started
        results.append((p.returncode, out, err))
    codes = sorted(r[0] for r in results)
    assert codes == [0, 1], results
    won = next(i for i, r in enumerate(results) if r[0] == 0)
    lost = 1 - won
    names = ["first", "second"]
    assert f"is running job {names[won]!r}" in results[lost][2] and "error:" in results[lost][2], results[lost]
    assert ends[lost] < 15, f"the refused run took {ends[lost]:.0f}s to say so"
    assert output_of(cluster, names[won]) == expected_counts(tmp_path / names[won])


def test_a_manual_run_beside_a_running_job_is_refused_naming_it(cluster, tmp_path):
    running = job_file(tmp_path, word_count_job("long_one", slow_input(tmp_path / "long", sleep=6)))
    first = run_cli(cluster, running)
    try:
        wait_until(lambda: in_phase(cluster, "long_one", "map"), 60, "the first job in its map phase")
        beside = job_file(tmp_path, word_count_job("beside", slow_input(tmp_path / "b", sleep=0)))
        t0 = time.monotonic()
        second = cluster.cli(MAPREDUCE, "run", str(beside), check=False)
        assert time.monotonic() - t0 < 15
        assert second.returncode == 1 and "is running job 'long_one'" in second.stderr, second.stderr
        out, err = first.communicate(timeout=120)
        assert first.returncode == 0, err
    finally:
        kill_if_running(first)
    assert output_of(cluster, "long_one") == expected_counts(tmp_path / "long")


def test_a_long_c_call_in_a_map_function_does_not_look_like_a_dead_server(cluster, tmp_path):
    """Before: a 200 MB line's str.split held the interpreter lock for 11 s, the heartbeat thread
    could not beat, and the run failed with 'stopped sending heartbeats' while the server was alive.
    Here one C call holds the lock for 8 s (the heartbeat's time to live is 5 s)."""
    folder = tmp_path / "gil"
    write_lines(folder / "a.txt", ["GIL 8 x", *(f"w{j} w{j % 5}" for j in range(200))])
    write_lines(folder / "b.txt", [f"v{j}" for j in range(100)])
    job = job_file(tmp_path, word_count_job("long_call", folder, map_function="hold_gil_on_marker"))
    seen_busy: list[float] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            for s in ("S_0", "S_1"):
                beat = cluster.beat(s) or {}
                if beat.get("busy_seconds"):
                    seen_busy.append(beat["busy_seconds"])
            time.sleep(0.5)
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        done = cluster.cli(MAPREDUCE, "run", str(job), check=False, timeout=180)
    finally:
        stop.set()
        watcher.join()
    assert done.returncode == 0, done.stderr
    assert output_of(cluster, "long_call") == expected_counts(folder)
    assert seen_busy and max(seen_busy) >= 3, "the heartbeat never said the server was busy in a long call"


def test_a_killed_management_server_fails_the_run_within_seconds_and_strands_nothing(cluster, tmp_path):
    """Before: nothing noticed until the commit, 55 s later: a raw traceback, the output left in staging/."""
    folder = slow_input(tmp_path / "in", sleep=0)
    good = job_file(tmp_path, word_count_job("mgmt", folder))
    cluster.cli(MAPREDUCE, "run", str(good))
    before = output_of(cluster, "mgmt")
    slow_input(folder, sleep=40)
    proc = run_cli(cluster, good)
    try:
        wait_until(lambda: in_phase(cluster, "mgmt", "map", every=True), 60, "both servers in the map phase")
        client = cluster.manager().redis("localhost")
        pid = int(client.get(f"cluster:{cluster.name}:management:localhost:alive"))
        client.close()
        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        out, err = proc.communicate(timeout=60)
        took = time.monotonic() - killed
    finally:
        kill_if_running(proc)
    assert proc.returncode == 1 and "error:" in err and "management server of localhost stopped" in err, err
    assert "Traceback" not in err
    assert took < 15, f"noticed after {took:.0f}s"
    wait_until(lambda: not leftovers(cluster, "mgmt"), 15, "the servers to remove what the run left")
    restarted = cluster.cli(MANAGE, "start")
    assert "management server" in restarted.stdout
    assert output_of(cluster, "mgmt") == before


def test_a_killed_client_leaves_no_spills_or_keys_and_the_next_job_starts_at_once(cluster, tmp_path):
    """Before: 201 MB of spill files stayed until the job ran again, and the run's keys had no expiry."""
    folder = tmp_path / "orphan"
    write_lines(folder / "a.txt", ["SLEEP_60", *(f"w{j} w{j % 9}" for j in range(5000))])
    write_lines(folder / "b.txt", [f"v{j} w{j % 3}" for j in range(5000)])
    job = job_file(tmp_path, word_count_job("orphan", folder, map_function="words",
                                            reduce_function="sum_values_sleep_on_key"))
    client = run_cli(cluster, job)
    try:
        wait_until(lambda: in_phase(cluster, "orphan", "reduce"), 60, "a server in the reduce phase")
        assert leftovers(cluster, "orphan"), "the run has written nothing to clean up: the test proves nothing"
        client.send_signal(signal.SIGKILL)
        client.wait(10)
    finally:
        kill_if_running(client)
    killed = time.monotonic()
    nxt = job_file(tmp_path, word_count_job("next_one", slow_input(tmp_path / "next", sleep=0)))
    done = cluster.cli(MAPREDUCE, "run", str(nxt), check=False, timeout=120)
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - killed < 20, "the next job waited for the dead client's run"
    wait_until(lambda: not leftovers(cluster, "orphan"), 20, "the servers to remove the orphaned run's files")
    assert run_keys(cluster, "orphan") == []


def test_every_key_a_run_makes_expires(cluster, tmp_path):
    job = job_file(tmp_path, word_count_job("ttl", slow_input(tmp_path / "ttl", sleep=4)))
    proc = run_cli(cluster, job)
    try:
        wait_until(lambda: in_phase(cluster, "ttl", "map"), 60, "a server in the map phase")
        client = cluster.manager().redis("localhost")
        keys = [k for k in client.scan_iter(match=f"cluster:{cluster.name}:*")
                if b":server:" not in k]  # a server's own command list and heartbeat are not a run's
        ttls = {k: client.ttl(k) for k in keys}
        client.close()
        assert keys and all(t > 0 for t in ttls.values()), ttls
        proc.communicate(timeout=120)
        assert proc.returncode == 0
    finally:
        kill_if_running(proc)


def test_start_after_a_redis_restart_says_what_it_did(cluster, tmp_path):
    """Before: it said it started the servers too (they were running, and only reconnected)."""
    pids = {s: cluster.beat(s)["pid"] for s in ("S_0", "S_1")}
    os.kill(cluster.redis_pid(), signal.SIGKILL)
    wait_until(lambda: _redis_down(cluster), 10, "Redis to go")
    out = cluster.cli(MANAGE, "start").stdout
    assert f"started redis-server :{cluster.config.redis_port}" in out, out
    assert "S_0, S_1 were running and reconnected to Redis" in out, out
    assert "started S_" not in out and ", S_0" not in out.split("were running")[0].split(";")[0], out
    assert {s: cluster.beat(s)["pid"] for s in ("S_0", "S_1")} == pids
    job = job_file(tmp_path, word_count_job("after_redis", slow_input(tmp_path / "r", sleep=0)))
    done = cluster.cli(MAPREDUCE, "run", str(job), check=False)
    assert done.returncode == 0, done.stderr


def _redis_down(cluster) -> bool:
    try:
        cluster.manager().redis("localhost").ping()
        return False
    except redis.ConnectionError:
        return True


def test_the_fault_suite_runs_on_its_own_cluster(cluster):
    assert Path(cluster.config_path).is_file() and cluster.sessions()
    assert subprocess.run(["screen", "-ls"], capture_output=True, text=True).stdout.count(cluster.name) == 3


def test_a_runner_job_refused_by_a_busy_cluster_is_not_a_failed_try(cluster, tmp_path):
    """A manual run has the servers: the Runner's job is refused at once, recorded as refused (not a
    try: no group removed, no retry spent), and runs when the cluster is free."""
    manual = run_cli(cluster, job_file(tmp_path, word_count_job("manual", slow_input(tmp_path / "m", sleep=6))))
    try:
        wait_until(lambda: in_phase(cluster, "manual", "map"), 60, "the manual run in its map phase")
        queued = word_count_job("queued", slow_input(tmp_path / "q", sleep=0), group_name="nightly")
        cluster.cli(MAPREDUCE, "submit", str(job_file(tmp_path, queued)))
        once = cluster.cli(MAPREDUCE, "runner", "--once", check=False, timeout=120)
        assert once.returncode == 1 and "queued (refused)" in once.stderr, once.stdout + once.stderr
        manual.communicate(timeout=120)
        assert manual.returncode == 0
    finally:
        kill_if_running(manual)
    history = json.loads(cluster.cli(MAPREDUCE, "history", "queued", "--json").stdout)
    assert history[0]["status"] == "refused" and "is running job 'manual'" in history[0]["exception"]
    queue = json.loads(cluster.cli(MAPREDUCE, "queue", "--json").stdout)
    assert [j["job_name"] for j in queue] == ["queued"]  # its group stayed
    assert queue[0]["queue_state"]["failures"] == 0 and queue[0]["queue_state"]["retry_at"]
