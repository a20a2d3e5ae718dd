"""Task attempts on our cluster (3 servers): a server killed with SIGKILL during map, during sort and
during reduce is started again and its part runs again; the job succeeds with the exact output and
its summary shows the one retried task. A user's error is not retried."""
from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest
from cluster_helpers import MANAGE, Cluster, master_of, wait_until
from cluster_helpers import word_counts_of as expected_counts
from fault_helpers import job_file, word_count_job
from integration_helpers import MAPREDUCE, items_to_dict, write_lines

SERVERS = ("S_0", "S_1", "S_2")


@pytest.fixture(scope="module")
def cluster3(tmp_path_factory: pytest.TempPathFactory):
    # a small memory share: the servers spill (and send) while they map, not only at the end
    with master_of(Cluster(tmp_path_factory.mktemp("attempts"), servers=3, memory="8M")) as c:
        c.cli(MANAGE, "start")
        yield c


def output_of(cluster, job_name: str) -> dict:
    lines = cluster.cli(MAPREDUCE, "output", job_name).stdout.splitlines()
    return items_to_dict(json.loads(line) for line in lines)


def run_json(cluster, job: dict, tmp_path) -> tuple[threading.Thread, dict]:
    """`mapreduce run --json` in a thread; its result (or its failure) lands in the dict."""
    out: dict = {}
    path = job_file(tmp_path, job)

    def target() -> None:
        proc = cluster.cli(MAPREDUCE, "run", str(path), "--json", check=False, timeout=300)
        out["proc"] = proc
    t = threading.Thread(target=target, daemon=True)
    t.start()
    return t, out


def kill_when(cluster, job_name: str, phase: str, hold: float = 0.0) -> tuple[str, int]:
    """SIGKILL a server of the job once it has been in `phase` for `hold` seconds; return it and its pid."""
    since: dict[str, float] = {}

    def victim():
        now = time.monotonic()
        for s in SERVERS:
            beat = cluster.beat(s) or {}
            if beat.get("job") == job_name and beat.get("phase") == phase:
                if now - since.setdefault(s, now) >= hold:
                    return s, beat["pid"]
            else:
                since.pop(s, None)
        return None
    server, pid = wait_until(victim, 120, f"a server of {job_name} in its {phase} phase")
    os.kill(pid, signal.SIGKILL)
    return server, pid


def check_one_retry(cluster, out: dict, job_name: str, server: str, phase: str, expected: dict) -> None:
    proc = out["proc"]
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    [retried] = result["counters"]["retried_tasks"]
    assert (retried["server"], retried["phase"], retried["attempt"]) == (server, phase, 2), retried
    assert f"attempt 2 of server {server}'s {phase}" in proc.stderr  # said as it happens
    assert output_of(cluster, job_name) == expected
    wait_until(lambda: all(cluster.beat(s) for s in SERVERS), 30, "every server up")
    history = json.loads(cluster.cli(MAPREDUCE, "history", job_name, "--json").stdout)
    assert history[0]["status"] == "succeeded" and history[0]["counters"]["retried_tasks"] == [retried]


def test_kill_9_in_map_the_server_maps_again_and_nothing_counts_twice(cluster3, tmp_path):
    """The victim has sent spill files to every server before it dies (its map sleeps at the end of its
    file); its second attempt sends them again, and the receivers drop the first attempt's."""
    folder = tmp_path / "in"
    for i in range(3):
        write_lines(folder / f"p{i}.txt", [*(f"w{j} w{j % 11} s{i}_{j}" for j in range(40_000)), f"SLOW 4 x{i}"])
    job = word_count_job("kill_map", folder, map_function="slow_lines", reduce_function="sum_values")
    thread, out = run_json(cluster3, job, tmp_path)
    server, _ = kill_when(cluster3, "kill_map", "map", hold=1.0)
    thread.join(300)
    check_one_retry(cluster3, out, "kill_map", server, "map", expected_counts(folder))
    counters = json.loads(out["proc"].stdout)["counters"]
    assert counters["spill_files_dropped"] > 0, "the first attempt sent nothing: the test proves nothing"


def test_kill_9_in_sort_the_server_sorts_again(cluster3, tmp_path):
    """Many small runs (max_number_dumped_items_shuffler = 5) make the sort take seconds."""
    folder = tmp_path / "in"
    for i in range(3):
        write_lines(folder / f"p{i}.txt", [f"k{i}_{j} k{j % 997} k{j % 13}" for j in range(40_000)])
    job = word_count_job("kill_sort", folder, map_function="words", reduce_function="sum_values",
                         max_number_dumped_items_shuffler=5)
    thread, out = run_json(cluster3, job, tmp_path)
    server, _ = kill_when(cluster3, "kill_sort", "sort")
    thread.join(300)
    check_one_retry(cluster3, out, "kill_sort", server, "sort", expected_counts(folder))


def test_kill_9_in_reduce_the_server_reduces_again_from_its_received_files(cluster3, tmp_path):
    folder = tmp_path / "in"
    write_lines(folder / "a.txt", ["SLEEP_6", *(f"w{j} w{j % 9}" for j in range(3000))])
    write_lines(folder / "b.txt", [f"v{j} w{j % 3}" for j in range(3000)])
    job = word_count_job("kill_reduce", folder, map_function="words", reduce_function="sum_values_sleep_on_key")
    thread, out = run_json(cluster3, job, tmp_path)
    server, _ = kill_when(cluster3, "kill_reduce", "reduce", hold=1.5)  # the others are done by then
    thread.join(300)
    check_one_retry(cluster3, out, "kill_reduce", server, "reduce", expected_counts(folder))


def test_a_user_error_fails_at_once_and_is_not_retried(cluster3, tmp_path):
    folder = tmp_path / "in"
    write_lines(folder / "a.txt", ["fine words", "BOOM here", "more"])
    job = word_count_job("user_bug", folder, map_function="fail_on_boom", reduce_function="sum_values")
    proc = cluster3.cli(MAPREDUCE, "run", str(job_file(tmp_path, job)), check=False, timeout=120)
    assert proc.returncode == 1 and "line 2" in proc.stderr and "this line goes boom" in proc.stderr
    history = json.loads(cluster3.cli(MAPREDUCE, "history", "user_bug", "--json").stdout)
    assert len(history) == 1 and history[0]["status"] == "failed"
    assert "attempt 2 of server" not in proc.stderr


def test_redis_killed_during_reduce_the_run_goes_again_from_its_map_phase_by_phase(cluster3, tmp_path):
    """What was in Redis is gone (reports among it): every server goes through the run again, each
    phase on every server before the next, and every count is exact."""
    folder = tmp_path / "in"
    write_lines(folder / "a.txt", ["SLEEP_4", *(f"w{j} w{j % 9}" for j in range(20_000))])
    write_lines(folder / "b.txt", [f"v{j} w{j % 3}" for j in range(20_000)])
    write_lines(folder / "c.txt", [f"u{j} v{j % 5}" for j in range(20_000)])
    job = word_count_job("redis_in_reduce", folder, map_function="words", reduce_function="sum_values_sleep_on_key")
    thread, out = run_json(cluster3, job, tmp_path)
    wait_until(lambda: any((cluster3.beat(s) or {}).get("phase") == "reduce" for s in SERVERS), 120,
               "a server in its reduce phase")
    old = cluster3.redis_pid()
    os.kill(old, signal.SIGKILL)
    thread.join(300)
    proc = out["proc"]
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert [(r["phase"], r["attempt"]) for r in result["counters"]["retried_tasks"]] == [("reduce", 2)]
    assert cluster3.redis_pid() not in (None, old)
    assert output_of(cluster3, "redis_in_reduce") == expected_counts(folder)
