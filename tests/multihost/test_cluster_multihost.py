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
from cluster.exceptions import ClusterError, TransferError
from cluster.job_spec import get_file_transfer_template, get_script_template
from cluster.master.manager import ClusterManager
from cluster.scheduling.file_transfer import FileTransfer
from cluster.scheduling.runner import Runner
from cluster.scheduling.store import Scheduler

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
    os.environ.update(env)  # ClusterManager in this process: known_hosts and secrets of this master
    config = ClusterConfig.from_file(str(cfg))
    try:
        yield {"config": config, "path": cfg, "env": dict(os.environ, **env), "hosts": hosts}
    finally:
        try:
            ClusterManager(config).kill()
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
        assert (hosts.host_dirs[i] / "code" / "cluster" / "engine" / "task.py").is_file()  # pushed, subpackages too
    status = json.loads(cli(cluster, MANAGE, "status", "--json").stdout)
    assert [r["server"] for r in status["servers"] if r["up"]] == [f"S_{i}" for i in range(6)]
    assert [r["location"] for r in status["locations"] if r["redis"] == "up"] == hosts.ips


def test_word_count_across_hosts_is_exact_and_shuffles_through_redis(cluster, words):
    job = make_job("mh_wc", "word_count", [f"{cluster['config'].compute_dir}/input"], "word_count", "sum_counts",
                   combine_function_name="sum_counts")
    result = ClusterManager(cluster["config"]).run(job)
    assert result.counters["files"] == 9
    received = result.counters["received_files"]  # counted when the receiving stops, at the sort
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
    ClusterManager(cluster["config"]).run(job)
    out = cli(cluster, MAPREDUCE, "output", "mh_aux")
    assert items_to_dict(json.loads(line) for line in out.stdout.splitlines()) == {
        w: words["counts"][w] for w in wanted}


def test_a_redis_that_dies_mid_shuffle_is_started_again_and_the_count_is_exact(cluster, hosts, words):
    """Host 1's Redis killed while host 0 still maps and sends to it: the master starts it again and
    the run again from its map (new map attempts: what the first sent is dropped); every count exact."""
    config = cluster["config"]
    slow = hosts.host_dirs[0] / "slow"
    slow.mkdir(exist_ok=True)
    (slow / "a.txt").write_text("".join(f"w{i} v{i % 13}\n" for i in range(4000)) + "SLOW 6 x\n")
    expected: dict = {}
    for i in range(4000):
        for w in (f"w{i}", f"v{i % 13}"):
            expected[w] = expected.get(w, 0) + 1
    expected["SLOW"], expected["6"], expected["x"] = 1, 1, 1
    for d in hosts.host_dirs[1:]:
        (d / "slow").mkdir(exist_ok=True)
        (d / "slow" / "b.txt").write_text("".join(f"u{i} w{i % 17}\n" for i in range(4000)))
        for i in range(4000):
            for w in (f"u{i}", f"w{i % 17}"):
                expected[w] = expected.get(w, 0) + 1
    job = make_job("mh_redis_dies", "testjobs", [f"{config.compute_dir}/slow"], "slow_lines", "sum_values",
                   max_number_dumped_items_shuffler=100)
    manager = ClusterManager(config)
    outcome: dict = {}

    def target() -> None:
        try:
            outcome["result"] = manager.run(job)
        except ClusterError as exc:
            outcome["error"] = exc
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    client = manager.redis(hosts.ips[0])
    deadline = time.monotonic() + 60
    # host 0 maps for 6 s and more (its SLOW line); host 1's few lines take a moment (too short a moment
    # to be seen in its heartbeats for sure)
    while not any((manager.alive(client, [s])[s] or {}).get("phase") == "map" for s in ("S_0", "S_1")):
        assert time.monotonic() < deadline, "no server of host 0 reached the map phase"
        time.sleep(0.1)
    time.sleep(1.5)  # host 1's servers have finished mapping and wait on spill files from host 0
    pid = int(hosts.run_on(1, f"cat {config.working_dir}/redis/redis-{config.redis_port}.pid").stdout)
    hosts.run_on(1, f"kill -9 {pid}")
    thread.join(180)
    assert not thread.is_alive(), "the run hangs after a Redis died"
    result = outcome.get("result")
    assert result is not None, outcome
    retried = result.counters["retried_tasks"]
    # the restart of the run, and perhaps first a receiver on another host that lost its connection to it
    assert any("the Redis of" in r["server"] for r in retried) and {r["phase"] for r in retried} == {"map"}, retried
    got = items_to_dict(json.loads(line) for line in cli(cluster, MAPREDUCE, "output", "mh_redis_dies")
                        .stdout.splitlines())
    assert got == expected


def _transfer(name: str, transfer_type: str, **keys) -> dict:
    job = get_file_transfer_template()
    job.update(job_name=name, transfer_type=transfer_type, **keys)
    return job


def test_file_transfers_spread_fetch_and_verify_files_across_hosts(cluster, hosts, tmp_path):
    config = cluster["config"]
    transfer = FileTransfer(config)
    src = tmp_path / "src"
    (src / "nested").mkdir(parents=True)
    sizes = [9000, 7000, 5000, 3000, 2000, 1000]
    for i, n in enumerate(sizes):
        (src / f"f{i}.txt").write_bytes(os.urandom(n))
    (src / "nested" / "deep.txt").write_text("deep\n")
    up = transfer.run(_transfer("up", "upload", input_dir=str(src), output_dir="spread"))
    assert up["files"] == 7 and up["files_skipped"] == 0
    on_host = [sorted(str(p.relative_to(d / "data" / "spread")) for p in (d / "data" / "spread").rglob("*")
                      if p.is_file()) for d in hosts.host_dirs]
    assert sorted(f for names in on_host for f in names) == sorted(["nested/deep.txt"] + [f"f{i}.txt" for i in
                                                                                         range(6)])
    assert all(on_host), f"some host got no file: {on_host}"  # each file on exactly one host, all hosts used
    again = transfer.run(_transfer("up", "upload", input_dir=str(src), output_dir="spread"))
    assert again["files"] == 0 and again["files_skipped"] == 7
    # bulk and compressed, then download both ways: everything comes back byte for byte
    bulk = transfer.run(_transfer("upb", "upload_bulk", input_dir=str(src), output_dir="bulk", compress=True))
    assert bulk["files"] == 7
    for ttype, folder in (("download", "spread"), ("download_bulk", "bulk")):
        dest = tmp_path / f"back-{ttype}"
        got = transfer.run(_transfer("down", ttype, input_dir=folder, output_dir=str(dest), compress=True))
        assert got["files"] == 7
        for f in src.rglob("*"):
            if f.is_file():
                assert (dest / f.relative_to(src)).read_bytes() == f.read_bytes()
        assert not [p for p in dest.rglob(".*")], "a staging file was left behind"
    # download with delete_files moves the files off the hosts
    moved = transfer.run(_transfer("mv", "download", input_dir="bulk", output_dir=str(tmp_path / "moved"),
                                   delete_files=True))
    assert moved["files_deleted"] == 7
    assert not [p for d in hosts.host_dirs for p in (d / "data" / "bulk").rglob("*") if p.is_file()]
    # auxiliary data lands on every host; bad JSON is refused before anything is sent
    aux = tmp_path / "lookup.json"
    aux.write_text(json.dumps({"weights": {"a": 1}}))
    transfer.run(_transfer("aux", "upload_auxiliary", input_file_name=str(aux), auxiliary_data_name="lookup"))
    for d in hosts.host_dirs:
        assert json.loads((d / "auxiliary" / "lookup.data").read_text()) == {"weights": {"a": 1}}
    aux.write_text("{not json")
    with pytest.raises(TransferError, match="not valid JSON"):
        transfer.run(_transfer("aux", "upload_auxiliary", input_file_name=str(aux), auxiliary_data_name="lookup"))
    # delete removes the folder everywhere, and refuses the cluster's own folders
    deleted = transfer.run(_transfer("rm", "delete", output_dir="spread"))
    assert deleted["files"] == 7 and not any((d / "data" / "spread").exists() for d in hosts.host_dirs)
    with pytest.raises(TransferError, match="refusing to delete"):
        transfer.run(_transfer("rm", "delete", output_dir=config.compute_dir))


def test_a_pipeline_from_the_queue_runs_on_the_cluster_across_hosts(cluster, hosts, tmp_path):
    """upload -> mapreduce -> download -> script -> upload_auxiliary -> mapreduce, one Runner round."""
    config = cluster["config"]
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    for i in range(6):
        (incoming / f"part-{i}.txt").write_text(f"apple banana apple x{i}\ncherry apple\n")
    post = tmp_path / "post.py"
    post.write_text(
        "import json, pathlib, sys\n"
        "from collections import Counter\n"
        "c = Counter()\n"
        "for f in pathlib.Path(sys.argv[1]).glob('*.jsonl'):\n"
        "    for line in f.read_text().splitlines():\n"
        "        k, v = json.loads(line)\n"
        "        c[k] += v\n"
        "pathlib.Path(sys.argv[2]).write_text(json.dumps({'weights': {w: 10 for w, _ in c.most_common(1)}}))\n")
    master = Path(config.local_working_dir)
    script = get_script_template()
    script.update(job_name="p4-post", script_location=str(post), job_priority=30, group_name="p",
                  script_arguments=[str(master / "p-counts"), str(master / "p-top.json")])
    runner = Runner(config, scheduler=Scheduler(path=str(tmp_path / "queue.sqlite")), echo=lambda m: None)
    s = runner.scheduler
    s.submit_job(_transfer("p1-upload", "upload", input_dir=str(incoming), output_dir="p-in", job_priority=60,
                           group_name="p"))
    s.submit_job(make_job("p2-count", "testjobs", [f"{config.base_dir}/p-in"], "words", "sum_values",
                          job_priority=50, group_name="p"))
    s.submit_job(_transfer("p3-download", "download", input_dir="p2-count/reduce", output_dir="p-counts",
                           job_priority=40, group_name="p"))
    s.submit_job(script)
    s.submit_job(_transfer("p5-aux", "upload_auxiliary", input_file_name="p-top.json", auxiliary_data_name="p-top",
                           job_priority=20, group_name="p"))
    s.submit_job(make_job("p6-weighted", "testjobs", [f"{config.base_dir}/p-in"], "weighted_words", "sum_values",
                          auxiliary_data_name_mapper="p-top", job_priority=10, group_name="p", run_once=True))
    outcomes = runner.run_round()
    assert [(o.job_name, o.status.value) for o in outcomes] == [
        (n, "succeeded") for n in ("p1-upload", "p2-count", "p3-download", "p4-post", "p5-aux", "p6-weighted")], \
        [o.error for o in outcomes]
    out = cli(cluster, MAPREDUCE, "output", "p6-weighted")
    weighted = items_to_dict(json.loads(line) for line in out.stdout.splitlines())
    assert weighted["apple"] == 18 * 10 and weighted["banana"] == 0 and weighted["x3"] == 0
    assert s.get_job("p6-weighted") is None  # run_once: done


def test_a_mapreduce_job_past_its_timeout_leaves_the_cluster_ready(cluster, hosts, tmp_path):
    config = cluster["config"]
    for d in hosts.host_dirs:
        (d / "slowt").mkdir(exist_ok=True)
        (d / "slowt" / "a.txt").write_text("a b\nSLOW 120 c\n")
    runner = Runner(config, scheduler=Scheduler(path=str(tmp_path / "queue.sqlite")), echo=lambda m: None)
    runner.scheduler.submit_job(make_job("mh_timeout", "testjobs", [f"{config.compute_dir}/slowt"], "slow_lines",
                                         "sum_values", timeout_minutes=0.1, run_once=True))
    started = time.monotonic()
    [outcome] = runner.run_round()
    assert outcome.status.value == "timed_out" and time.monotonic() - started < 40, outcome
    run = runner.scheduler.history("mh_timeout")[0]
    assert run["phase"] == "map" and "timeout of 0.1 minute(s)" in run["exception"]
    # the servers dropped the run (their SLOW lines were interrupted), so the next job runs at once
    job = make_job("mh_after_timeout", "testjobs", [f"{config.compute_dir}/input"], "words", "sum_values")
    result = ClusterManager(config).run(job, timeout_minutes=2)
    assert result.counters["files"] == 9


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
