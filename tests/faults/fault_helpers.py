"""Helpers of the fault suite: job files, slow inputs, `mapreduce run` as a user starts it, phases."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

from cluster_helpers import Cluster
from integration_helpers import MAPREDUCE, make_job, write_lines


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


def run_cli(c: Cluster, job: Path, timeout: float = 180) -> subprocess.Popen:
    """`mapreduce run JOB` as a user starts it (its output in a pipe)."""
    return subprocess.Popen([str(MAPREDUCE), "run", str(job), "--config", str(c.config_path)], env=c.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def in_phase(c: Cluster, job_name: str, phase: str, servers=("S_0", "S_1"), every: bool = False) -> bool:
    beats = [c.beat(s) or {} for s in servers]
    hits = [b.get("job") == job_name and b.get("phase") == phase for b in beats]
    return all(hits) if every else any(hits)


def kill_if_running(proc: subprocess.Popen) -> None:
    """SIGKILL a process a test started, if it is still there (a finalizer: whatever the test did)."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()
