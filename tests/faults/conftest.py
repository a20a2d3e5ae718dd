"""Fixtures of the fault suite: a cluster on localhost (real redis-server, screen, RPyC over TLS)
that the tests break with real signals, and helpers that watch it recover."""
from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from cluster_helpers import MANAGE, Cluster, master_of
from integration_helpers import MAPREDUCE, make_job, write_lines


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("faults")
    with master_of(Cluster(root)) as c:
        c.cli(MANAGE, "start")
        yield c


def wait_until(predicate, timeout: float = 30.0, what: str = "condition"):
    """Poll `predicate` every 0.1 s until it is true (return it) or `timeout` passes (fail naming `what`)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def word_count_job(name: str, input_dir: Path, map_function: str = "slow_lines",
                   reduce_function: str = "sum_values", **extra) -> dict:
    return make_job(name, "testjobs", [input_dir], map_function, reduce_function, **extra)


def job_file(folder: Path, job: dict) -> Path:
    path = folder / f"{job['job_name']}.json"
    path.write_text(json.dumps(job))
    return path


def slow_input(folder: Path, sleep: float, files: int = 2, lines: int = 50) -> Path:
    """`files` files whose first line makes slow_lines sleep `sleep` seconds."""
    for i in range(files):
        write_lines(folder / f"part-{i}.txt", [f"SLOW {sleep} x", *(f"w{j} w{j % 7}" for j in range(lines))])
    return folder


def expected_counts(folder: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for path in sorted(folder.iterdir()):
        for word in path.read_text().split():
            counts[word] = counts.get(word, 0) + 1
    return counts


def run_cli(c: Cluster, job: Path, timeout: float = 180) -> subprocess.Popen:
    """`mapreduce run JOB` as a user starts it (its output in a pipe)."""
    return subprocess.Popen([str(MAPREDUCE), "run", str(job), "--config", str(c.config_path)], env=c.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def in_phase(c: Cluster, job_name: str, phase: str, servers=("S_0", "S_1"), every: bool = False) -> bool:
    beats = [c.beat(s) or {} for s in servers]
    hits = [b.get("job") == job_name and b.get("phase") == phase for b in beats]
    return all(hits) if every else any(hits)
