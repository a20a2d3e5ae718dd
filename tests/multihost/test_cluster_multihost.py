"""The cluster across three hosts (network namespaces, each with its own sshd, its own compute
dir and its own screen sessions), started by the master in the root namespace over SSH.

Each host holds only its own share of the input, so an exact word count proves that every
location mapped its files and that spill files crossed between hosts through Redis.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest
from integration_helpers import EXAMPLE_PROJECTS, MAPREDUCE, REPO, TEST_PROJECTS, items_to_dict, make_job

from cluster import sample_data
from cluster.config import ClusterConfig
from cluster.exceptions import ClusterError, JobFailed
from cluster.manage_cluster import ManageCluster

MANAGE = REPO / ".venv" / "bin" / "manage_cluster"
SERVERS_PER_HOST = 2


@pytest.fixture(scope="module")
def cluster(hosts, tmp_path_factory: pytest.TempPathFactory):
    """A 3-location cluster config and a master environment (its own HOME with the hosts' keys)."""
    root = tmp_path_factory.mktemp("mh_master")
    projects = root / "projects"
    shutil.copytree(EXAMPLE_PROJECTS, projects)
    shutil.copytree(TEST_PROJECTS / "testjobs", projects / "testjobs")
    home = root / "home"
    (home / ".ssh").mkdir(parents=True)
    shutil.copy(hosts.known_hosts, home / ".ssh" / "known_hosts")
    name = "mh" + uuid.uuid4().hex[:6]
    cfg = root / "cluster.cfg"
    cfg.write_text("[CLUSTER]\n"
                   f"cluster_name = {name}\n"
                   f"locations = {','.join(hosts.ips)}\n"
                   f"number_of_servers_per_location = {SERVERS_PER_HOST}\n"
                   f"compute_dir = {hosts.compute_dir}\n"
                   f"local_working_dir = {root / 'master'}\n"
                   f"projects_dir = {projects}\n"
                   "ssh_user = root\n"
                   f"ssh_key_file = {hosts.key_file}\n"
                   "max_number_of_bytes_in_memory = 256M\n"
                   "poll_every = 0.2\n")
    env = {"HOME": str(home), "XDG_CONFIG_HOME": str(root / "xdg")}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # ManageCluster in this process: known_hosts and secrets of this master
    config = ClusterConfig.from_file(str(cfg))
    try:
        yield {"config": config, "path": cfg, "env": dict(os.environ, **env), "hosts": hosts}
    finally:
        try:
            ManageCluster(config).kill()
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


@pytest.fixture(scope="module")
def words(hosts, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Sample words spread over the hosts: file k lives only on host k % 3."""
    out = tmp_path_factory.mktemp("mh_words")
    expected = sample_data.generate("words", str(out), size_mb=3, files=9, seed=31)
    for k, f in enumerate(sorted((out / "input").iterdir())):
        dest = hosts.host_dirs[k % 3] / "input"
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy(f, dest / f.name)
    return expected


def cli(cluster, tool: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(tool), *args, "--config", str(cluster["path"])], capture_output=True, text=True,
                          env=cluster["env"], timeout=300)
    if check:
        assert proc.returncode == 0, f"{tool.name} {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def sessions_on(hosts, i: int, name: str) -> list[str]:
    out = hosts.run_on(i, "screen -ls").stdout
    return sorted(w.split(".", 1)[1] for w in out.split() if "." in w and w.split(".", 1)[1].startswith(name + "_"))


def test_start_over_ssh_brings_up_every_location(cluster, hosts):
    config = cluster["config"]
    out = cli(cluster, MANAGE, "start")
    assert "created the certificates" in out.stdout
    for i, ip in enumerate(hosts.ips):
        mine = config.servers_by_location()[ip]
        assert sessions_on(hosts, i, config.cluster_name) == sorted(
            f"{config.cluster_name}_{r}" for r in ["management", *mine])
        assert (hosts.host_dirs[i] / "code" / "cluster" / "process.py").is_file()  # pushed to that host only
    status = json.loads(cli(cluster, MANAGE, "status", "--json").stdout)
    assert [r["server"] for r in status["servers"] if r["up"]] == [f"S_{i}" for i in range(6)]
    assert [r["location"] for r in status["locations"] if r["redis"] == "up"] == hosts.ips


def test_word_count_across_hosts_is_exact_and_shuffles_through_redis(cluster, words):
    job = make_job("mh_wc", "word_count", [f"{cluster['config'].compute_dir}/input"], "word_count", "sum_counts",
                   combine_function_name="sum_counts")
    result = ManageCluster(cluster["config"]).run(job)
    assert result.counters["files"] == 9
    received = sum(c.get("map", {}).get("received_files", 0) for c in result.per_server.values())
    assert received > 0, "no spill file crossed between hosts"
    out = cli(cluster, MAPREDUCE, "output", "mh_wc")
    assert items_to_dict(json.loads(line) for line in out.stdout.splitlines()) == words["counts"]


def test_a_job_with_auxiliary_data_on_every_host(cluster, hosts, words):
    wanted = sorted(words["counts"])[::50]
    for d in hosts.host_dirs:
        (d / "auxiliary").mkdir(exist_ok=True)
        (d / "auxiliary" / "wanted.data").write_text(json.dumps({"words": wanted}))
    job = make_job("mh_aux", "word_count", [f"{cluster['config'].compute_dir}/input"], "word_count_filtered",
                   "sum_counts", auxiliary_data_name_mapper="wanted")
    ManageCluster(cluster["config"]).run(job)
    out = cli(cluster, MAPREDUCE, "output", "mh_aux")
    assert items_to_dict(json.loads(line) for line in out.stdout.splitlines()) == {
        w: words["counts"][w] for w in wanted}


def test_a_redis_that_dies_mid_shuffle_fails_the_job_cleanly(cluster, hosts, words):
    config = cluster["config"]
    slow = hosts.host_dirs[0] / "slow"
    slow.mkdir(exist_ok=True)
    (slow / "a.txt").write_text("".join(f"w{i} v{i % 13}\n" for i in range(4000)) + "SLOW 30 x\n")
    for d in hosts.host_dirs[1:]:
        (d / "slow").mkdir(exist_ok=True)
        (d / "slow" / "b.txt").write_text("".join(f"u{i} w{i % 17}\n" for i in range(4000)))
    job = make_job("mh_redis_dies", "testjobs", [f"{config.compute_dir}/slow"], "slow_lines", "sum_values",
                   max_number_dumped_items_shuffler=100)
    manager = ManageCluster(config)
    outcome: dict = {}

    def target() -> None:
        try:
            manager.run(job)
        except ClusterError as exc:
            outcome["error"] = exc
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    client = manager.redis(hosts.ips[1])
    deadline = time.monotonic() + 60
    while not any((manager.alive(client, [s])[s] or {}).get("phase") == "map" for s in ("S_2", "S_3")):
        assert time.monotonic() < deadline, "no server of host 1 reached the map phase"
        time.sleep(0.1)
    time.sleep(1.0)  # host 1's servers have finished mapping and wait on spill files from host 0
    pid = int(hosts.run_on(1, f"cat {config.working_dir}/redis/redis-{config.redis_port}.pid").stdout)
    hosts.run_on(1, f"kill -9 {pid}")
    thread.join(90)
    assert not thread.is_alive(), "the run hangs after a Redis died"
    err = outcome.get("error")
    assert isinstance(err, JobFailed) and "Redis" in str(err), outcome
    assert not (hosts.host_dirs[0] / "data" / "mh_redis_dies" / "reduce").exists()
    restarted = cli(cluster, MANAGE, "start")
    assert "redis-server" in restarted.stdout


def test_stop_leaves_nothing_on_any_host(cluster, hosts):
    config = cluster["config"]
    out = cli(cluster, MANAGE, "stop")
    assert out.stdout.count("management server stopped") == 3, out.stdout
    for i in range(3):
        assert sessions_on(hosts, i, config.cluster_name) == []
        pid_file = hosts.host_dirs[i] / "working" / "redis" / f"redis-{config.redis_port}.pid"
        assert not pid_file.exists()
    # the master's own compute dir view stays empty: every file lived on its host
    assert list(Path(config.compute_dir).iterdir()) == []
