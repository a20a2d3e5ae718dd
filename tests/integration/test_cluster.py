"""The cluster runtime on localhost, on real parts: redis-server, GNU screen, RPyC over TLS.

One cluster (its own name, ports and certificate folder) serves the whole module: it is
started and stopped through the `manage_cluster` console script as a user would, jobs
run through `mapreduce run` and `ClusterManager.run`, servers and Redis are killed with
real signals. The finalizer kills whatever is left, by this cluster's names only.
"""
from __future__ import annotations

import gzip
import json
import os
import signal
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest
import redis
import rpyc
from cluster_helpers import MANAGE, Cluster, master_of, wait_until, word_counts_of
from integration_helpers import (
    MAPREDUCE,
    REPO,
    items_to_dict,
    make_job,
    write_lines,
)

from cluster import sample_data
from cluster.config import ClusterConfig
from cluster.exceptions import JobFailed
from cluster.master.manager import ClusterManager
from cluster.node import location
from cluster.node.security import init_secrets
from cluster.node.services import tls_connect


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("cluster")
    with master_of(Cluster(root)) as c:
        yield c


@pytest.fixture(scope="module")
def words(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("cluster_words")
    expected = sample_data.generate("words", str(out), size_mb=2, files=5, seed=21)
    return out / "input", expected


def word_count_job(name: str, input_dir: Path, map_function: str = "words") -> dict:
    return make_job(name, "testjobs", [input_dir], map_function, "sum_values", combine_function_name="sum_values")


def in_map_of(beat: dict | None, job_name: str) -> bool:
    """Whether a heartbeat says its server maps `job_name` (not a phase left from an earlier job)."""
    return bool(beat) and beat.get("job") == job_name and beat.get("phase") == "map"


def slow_input(folder: Path, files: int = 2, sleep: float = 20.0) -> Path:
    for i in range(files):
        write_lines(folder / f"part-{i}.txt", [f"SLOW {sleep} x", *(f"w{j} w{j % 7}" for j in range(50))])
    return folder


def run_in_thread(manager: ClusterManager, job: dict) -> tuple[threading.Thread, dict]:
    outcome: dict = {}

    def target() -> None:
        try:
            outcome["result"] = manager.run(job)
        except BaseException as exc:  # noqa: B036 - the test inspects it
            outcome["error"] = exc
    t = threading.Thread(target=target, daemon=True)
    t.start()
    return t, outcome


def result_of(thread: threading.Thread, outcome: dict, seconds: float, what: str):
    """The run's result, once its thread ended (within `seconds`: else `what` happened)."""
    thread.join(seconds)
    assert not thread.is_alive(), what
    result = outcome.get("result")
    assert result is not None, outcome
    return result


def published(cluster, job_name: str) -> dict:
    """The job's published output as `mapreduce output` prints it, as {key: value}."""
    return items_to_dict(json.loads(line) for line in cluster.cli(MAPREDUCE, "output", job_name).stdout.splitlines())


def test_start_brings_every_server_up_and_a_second_start_changes_nothing(cluster):
    first = cluster.cli(MANAGE, "start")
    assert "created the certificates" in first.stdout
    for s in ("S_0", "S_1"):
        assert any(line.split()[:1] == [s] and " up " in line for line in first.stdout.splitlines()), first.stdout
    assert sorted(cluster.sessions()) == sorted(f"{cluster.name}_{r}" for r in ("management", "S_0", "S_1"))
    pids = {s: cluster.beat(s)["pid"] for s in ("S_0", "S_1")}
    second = cluster.cli(MANAGE, "start")
    assert "already running; nothing changed" in second.stdout
    assert {s: cluster.beat(s)["pid"] for s in ("S_0", "S_1")} == pids
    status = json.loads(cluster.cli(MANAGE, "status", "--json").stdout)
    assert [r["server"] for r in status["servers"] if r["up"]] == ["S_0", "S_1"]
    assert status["locations"][0]["redis"] == "up" and status["locations"][0]["disk_free"] > 0


def test_word_count_on_the_cluster_is_exact(cluster, words, tmp_path):
    job_file = tmp_path / "wc.json"
    job_file.write_text(json.dumps(word_count_job("wc", words[0])))
    run = cluster.cli(MAPREDUCE, "run", str(job_file), "--json", "--no-progress")
    counters = json.loads(run.stdout)["counters"]
    assert counters["files"] == 5 and counters["records_out"] == len(words[1]["counts"])
    assert published(cluster, "wc") == words[1]["counts"]


def test_validate_plans_on_every_location_and_a_failed_file_fails_the_run(cluster, words, tmp_path):
    job_file = tmp_path / "v.json"
    job_file.write_text(json.dumps(word_count_job("v", words[0])))
    r = cluster.cli(MAPREDUCE, "validate", str(job_file), "--cluster")
    assert r.stdout.startswith("plan: 5 input files, ") and "over 2 servers" in r.stdout, r.stdout
    assert "  S_0: " in r.stdout and "  S_1: " in r.stdout
    job_file.write_text(json.dumps(word_count_job("v", tmp_path / "nowhere")))
    r = cluster.cli(MAPREDUCE, "validate", str(job_file), "--cluster", check=False)
    assert r.returncode == 1 and "on localhost: " in r.stderr and str(tmp_path / "nowhere") in r.stderr, r.stderr
    job_file.write_text(json.dumps({**word_count_job("v", words[0]), "auxiliary_data_name_mapper": "nope"}))
    r = cluster.cli(MAPREDUCE, "validate", str(job_file), "--cluster", check=False)
    assert r.returncode == 1 and "on localhost: auxiliary data " in r.stderr and "nope.data not found" in r.stderr
    r = cluster.cli(MAPREDUCE, "run", str(job_file), "--no-progress", check=False)  # refused before any server starts
    assert r.returncode == 1 and "auxiliary data not found: on localhost: " in r.stderr, r.stderr

    cut = tmp_path / "cut"
    write_lines(cut / "a.txt", [f"w{i} w{i % 5}" for i in range(500)])
    gz = cut / "b.txt.gz"
    data = gzip.compress("".join(f"x{i} y{i}\n" for i in range(20000)).encode())
    gz.write_bytes(data[: len(data) // 2])
    job_file.write_text(json.dumps(word_count_job("cut", cut)))
    r = cluster.cli(MAPREDUCE, "run", str(job_file), "--no-progress", check=False)
    assert r.returncode == 1 and f"{gz}: gzip data ends early (truncated)" in r.stderr, r.stderr
    assert "phase map" in r.stderr and "Traceback" not in r.stderr
    assert not (Path(cluster.config.base_dir) / "cut" / "reduce").exists()
    gz.write_bytes(gzip.compress(b"fixed now\n"))
    run = cluster.cli(MAPREDUCE, "run", str(job_file), "--json", "--no-progress")  # the cluster is ready again
    assert json.loads(run.stdout)["counters"]["files"] == 2


def test_a_map_print_reaches_the_server_window_and_its_log(cluster, tmp_path):
    marker = uuid.uuid4().hex
    for i in range(4):
        write_lines(tmp_path / "in" / f"f{i}.txt", [f"PRINT {marker}-{i}", "a b c"])
    cluster.manager().run(make_job("printer", "testjobs", [tmp_path / "in"], "print_marker", "sum_values"))
    windows = ""
    for s in ("S_0", "S_1"):
        copy = tmp_path / f"{s}.hardcopy"
        subprocess.run(["screen", "-S", f"{cluster.name}_{s}", "-X", "hardcopy", "-h", str(copy)], check=True,
                       timeout=10)
        wait_until(copy.exists, 10, f"screen hardcopy of {s}")
        windows += copy.read_text(errors="replace")
    logs = "".join(Path(location.log_path(cluster.config, s)).read_text() for s in ("S_0", "S_1"))
    for i in range(4):
        assert f"PRINT {marker}-{i}" in windows
        assert f"PRINT {marker}-{i}" in logs


def test_only_clients_of_the_cluster_are_served_and_secrets_are_private(cluster):
    ports = [cluster.config.management_port, *(cluster.config.server_port(s) for s in ("S_0", "S_1"))]
    for port in ports:
        with pytest.raises((EOFError, ConnectionError, OSError)):
            conn = rpyc.classic.connect("127.0.0.1", port)
            conn.modules.os.getpid()
    other = ClusterConfig.from_dict({"cluster_name": cluster.name + "other"})
    foreign, _ = init_secrets(other)  # a real cluster CA, but another cluster's
    for port in ports:
        with pytest.raises((EOFError, ConnectionError, OSError)):
            conn = tls_connect("127.0.0.1", port, foreign, timeout=5)
            conn.root.ping()
    with socket.create_connection(("127.0.0.1", cluster.config.redis_port), timeout=5) as sock:
        sock.sendall(b"PING\r\n")
        assert sock.recv(200).startswith(b"-NOAUTH")
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=cluster.config.redis_port, socket_timeout=5).ping()
    private = [*Path(cluster.env["XDG_CONFIG_HOME"], "cluster", cluster.name).iterdir(),
               *Path(cluster.config.code_dir, "secrets").iterdir(), Path(cluster.config.code_dir, "cluster.cfg"),
               Path(location.location_redis(cluster.config, "localhost").conf_path)]
    assert len(private) >= 12
    for path in private:
        assert os.stat(path).st_mode & 0o777 == 0o600, path
    assert os.stat(Path(cluster.config.code_dir, "secrets")).st_mode & 0o777 == 0o700


def test_a_map_error_names_server_phase_file_and_line_and_the_cluster_stays_ready(cluster, words, tmp_path):
    write_lines(tmp_path / "in" / "ok.txt", ["a b", "c d"])
    write_lines(tmp_path / "in" / "bad.txt", ["fine", "still fine", "BOOM here"])
    job = make_job("boom", "testjobs", [tmp_path / "in"], "fail_on_boom", "sum_values")
    with pytest.raises(JobFailed) as err:
        cluster.manager().run(job)
    text = str(err.value)
    assert "phase map" in text and "bad.txt line 3" in text and "boom" in text
    assert err.value.server in ("S_0", "S_1") and err.value.phase == "map"
    assert not Path(cluster.config.base_dir, "boom", "reduce").exists()
    result = cluster.manager().run(word_count_job("wc_after_error", words[0]))
    assert result.counters["records_out"] == len(words[1]["counts"])


def test_kill_9_of_a_server_in_map_costs_an_attempt_not_the_run(cluster, words, tmp_path):
    job = word_count_job("killed", slow_input(tmp_path / "in", sleep=3), "slow_lines")
    manager = cluster.manager()
    thread, outcome = run_in_thread(manager, job)
    victim = wait_until(lambda: next((s for s in ("S_0", "S_1") if in_map_of(cluster.beat(s), "killed")), None),
                        30, "a server in the map phase")
    old_pid = cluster.beat(victim)["pid"]
    os.kill(old_pid, signal.SIGKILL)
    result = result_of(thread, outcome, 90, "the run did not end after a server was killed")
    [retried] = result.counters["retried_tasks"]
    assert retried["server"] == victim and retried["phase"] == "map" and retried["attempt"] == 2
    assert "heartbeat" in retried["reason"]
    assert cluster.beat(victim)["pid"] != old_pid  # started again, in its screen session
    expected = word_counts_of(tmp_path / "in")
    assert published(cluster, "killed") == expected and result.counters["files"] == 2


def test_a_redis_that_dies_mid_map_is_started_again_and_the_job_succeeds(cluster, words, tmp_path):
    job = word_count_job("redis_dies", slow_input(tmp_path / "in", sleep=5), "slow_lines")
    manager = cluster.manager()
    thread, outcome = run_in_thread(manager, job)
    wait_until(lambda: any(in_map_of(cluster.beat(s), "redis_dies") for s in ("S_0", "S_1")), 30,
               "a server in the map phase")
    old = cluster.redis_pid()
    os.kill(old, signal.SIGKILL)
    result = result_of(thread, outcome, 120, "the run hangs after Redis died")
    [retried] = result.counters["retried_tasks"]
    assert retried["phase"] == "map" and "the Redis of localhost" in retried["server"]
    assert cluster.redis_pid() not in (None, old)
    expected = word_counts_of(tmp_path / "in")
    assert published(cluster, "redis_dies") == expected


def test_a_runner_killed_mid_mapreduce_is_cleaned_up_by_the_next_one(cluster, tmp_path):
    job = word_count_job("orphaned", slow_input(tmp_path / "in", sleep=60), "slow_lines")
    job["run_once"] = True
    (tmp_path / "job.json").write_text(json.dumps(job))
    cluster.cli(MAPREDUCE, "submit", str(tmp_path / "job.json"))
    with open(tmp_path / "runner.out", "wb") as out:
        runner = subprocess.Popen([str(MAPREDUCE), "runner", "--config", str(cluster.config_path)], env=cluster.env,
                                  stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: all((cluster.beat(s) or {}).get("phase") == "map" and cluster.beat(s)["job"] == "orphaned"
                               for s in ("S_0", "S_1")), 90, "both servers in the map phase of the Runner's job")
        runner.kill()
        runner.wait(10)
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()
    assert (cluster.beat("S_0") or {}).get("job") == "orphaned"  # the servers still work for the dead Runner
    slow_input(tmp_path / "in", sleep=0.01)
    started = time.monotonic()
    rerun = cluster.cli(MAPREDUCE, "runner", "--once", timeout=120)
    assert "the servers dropped its run(s)" in rerun.stdout and "job orphaned succeeded" in rerun.stdout, rerun.stdout
    assert time.monotonic() - started < 60
    history = json.loads(cluster.cli(MAPREDUCE, "history", "orphaned", "--json").stdout)
    assert [r["status"] for r in history][:2] == ["succeeded", "interrupted"]
    got = published(cluster, "orphaned")
    assert got["x"] == 2 and got["w0"] == 2 * 9  # w0 once as a first word, 8 times as a second, per file


def test_stop_and_kill_leave_nothing_behind_and_start_works_after_each(cluster, words, tmp_path):
    redis_pid = cluster.redis_pid()
    stopped = cluster.cli(MANAGE, "stop")
    assert "2 server(s) stopped" in stopped.stdout and "management server stopped" in stopped.stdout
    assert cluster.sessions() == [] and cluster.redis_pid() is None
    assert not Path(f"/proc/{redis_pid}").exists() or "Z" in Path(f"/proc/{redis_pid}/stat").read_text().split()[2]
    job_file = tmp_path / "wc.json"
    job_file.write_text(json.dumps(word_count_job("stopped", words[0])))
    run = cluster.cli(MAPREDUCE, "run", str(job_file), check=False)
    assert run.returncode == 1 and "no running cluster" in run.stderr and "manage_cluster start" in run.stderr
    cluster.cli(MANAGE, "start")
    assert len(cluster.sessions()) == 3
    killed = cluster.cli(MANAGE, "kill")
    assert "ended" in killed.stdout
    assert cluster.sessions() == [] and cluster.redis_pid() is None
    cluster.cli(MANAGE, "start")
    result = cluster.manager().run(word_count_job("after_kill", words[0]))
    assert result.counters["records_out"] == len(words[1]["counts"])
    cluster.cli(MANAGE, "kill")
    assert cluster.sessions() == []


def test_a_job_script_on_the_cluster_equals_the_local_run(cluster, tmp_path):
    cluster.cli(MANAGE, "start")
    sample_data.generate("telemetry", str(tmp_path / "t"), size_mb=1, files=6, seed=8)
    filter_path = tmp_path / "filter.json"
    filter_path.write_text(json.dumps({"version": 1, "dimensions": [
        {"field_name": name, "allowed_values": "*"} for name in ("reason", "app", "channel", "version")]
        + [{"field_name": "build", "allowed_values": {"min": "2014030"}},
           {"field_name": "date", "allowed_values": "*"}]}))
    script = REPO / "examples" / "telemetry" / "channel_os.py"
    outputs = {}
    for mode, extra in (("local", ["--num-mappers", "2", "--num-reducers", "2"]), ("cluster", ["--cluster"])):
        out = tmp_path / f"{mode}.txt"
        proc = subprocess.run(
            [str(REPO / ".venv" / "bin" / "python"), "-m", "cluster.job", str(script), "--input-filter",
             str(filter_path), "--data-dir", str(tmp_path / "t" / "input"), "--work-dir", str(tmp_path / f"w-{mode}"),
             "--output", str(out), "--config", str(cluster.config_path), *extra],
            capture_output=True, text=True, env=cluster.env, cwd=REPO, timeout=180)
        assert proc.returncode == 0, proc.stderr
        assert "6 files" in proc.stderr, proc.stderr
        outputs[mode] = sorted(out.read_text().splitlines())
    expected = json.loads((tmp_path / "t" / "EXPECTED.json").read_text())["by_channel_os"]
    assert outputs["cluster"] == outputs["local"] == sorted(f"{k}\t{v}" for k, v in expected.items())
