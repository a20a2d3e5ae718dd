"""Helpers of the end-to-end tests: configs, jobs, runs, reading output back.

Every run goes through `LocalExecutor` with real worker processes (2 or 3 servers) and
reads the published output files back, so a test fails when any phase gets it wrong.
"""
from __future__ import annotations

import gzip
import os
import socket
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import ujson

from cluster.config import ClusterConfig
from cluster.executors.base import JobResult
from cluster.executors.local import LocalExecutor
from cluster.job_spec import get_mapreduce_job_template

REPO = Path(__file__).resolve().parents[2]
TEST_PROJECTS = REPO / "tests" / "projects"     # testjobs: the tests' own map/reduce functions
EXAMPLE_PROJECTS = REPO / "projects"           # word_count, telemetry: what a user starts from
MAPREDUCE = REPO / ".venv" / "bin" / "mapreduce"


def make_config(compute_dir: Path, projects_dir: Path = TEST_PROJECTS, memory: str = "256M",
                servers: int = 2) -> ClusterConfig:
    return ClusterConfig.from_dict({
        "compute_dir": str(compute_dir),
        "local_working_dir": str(compute_dir.parent / "master"),
        "projects_dir": str(projects_dir),
        "max_number_of_bytes_in_memory": memory,
        "number_of_servers_per_location": servers,
    })


def make_job(name: str, project: str, input_dirs: Iterable[str | Path], map_function: str,
             reduce_function: str, **extra: Any) -> dict:
    job = get_mapreduce_job_template()
    job.update(job_name=name, project_name=project, input_dirs=[str(d) for d in input_dirs],
               map_function_name=map_function, reduce_function_name=reduce_function)
    for key in extra:
        assert key in job, f"test bug: {key!r} is not a job key"
    job.update(extra)
    return job


def run_job(config: ClusterConfig, job: dict, servers: int = 2) -> JobResult:
    assert servers >= 2, "every end-to-end run uses at least 2 servers"
    return LocalExecutor(config, servers=servers).run(job)


def output_files(output_dir: str | Path) -> list[Path]:
    d = Path(output_dir)
    assert d.is_dir(), f"no output folder {d}"
    return sorted(p for p in d.iterdir() if not p.name.startswith("."))


def read_file_items(path: Path) -> list:
    """The items of one output file (ujson lines, gzip when the name ends .gz), in file order."""
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as fh:
        return [ujson.loads(line) for line in fh if line.strip()]


def read_output(output_dir: str | Path) -> dict[Path, list]:
    """Every output file's items, by file."""
    return {p: read_file_items(p) for p in output_files(output_dir)}


def tuplify(value: Any) -> Any:
    """JSON arrays back into tuples (a tuple key is written as an array)."""
    if isinstance(value, list):
        return tuple(tuplify(v) for v in value)
    return value


def items_to_dict(items: Iterable) -> dict:
    """[key, value] items into {key: value}; fails when a key appears twice (bad grouping)."""
    out: dict = {}
    for item in items:
        assert isinstance(item, list) and len(item) == 2, f"not a [key, value] item: {item!r}"
        key = tuplify(item[0])
        assert key not in out, f"key {key!r} appears more than once in the output"
        out[key] = item[1]
    return out


def output_dict(result_or_dir: JobResult | str | Path) -> dict:
    d = result_or_dir.output_dir if isinstance(result_or_dir, JobResult) else result_or_dir
    return items_to_dict(item for items in read_output(d).values() for item in items)


def server_of(path: Path) -> str:
    """Output files are named <server>-<run id>-<n>.jsonl[.gz]."""
    return path.name.split("-", 1)[0]


def write_lines(path: Path, lines: Iterable[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for line in lines:
            fh.write(line + "\n")
    return path


def write_auxiliary(config: ClusterConfig, name: str, data: Any) -> Path:
    os.makedirs(config.auxiliary_dir, exist_ok=True)
    path = Path(config.auxiliary_dir) / f"{name}.data"
    path.write_text(ujson.dumps(data))
    return path


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 10.0, alive: Callable[[], bool] | None = None) -> bool:
    """Wait until something accepts on 127.0.0.1:port; False on timeout or when `alive()` turns false."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            if time.monotonic() > deadline or (alive is not None and not alive()):
                return False
            time.sleep(0.05)


def free_port_block(n: int, low: int = 20000, high: int = 60000) -> int:
    """The first of `n` consecutive TCP ports free on loopback right now."""
    import random

    for _ in range(200):
        base = random.randrange(low, high - n)
        try:
            socks = []
            for port in range(base, base + n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no {n} consecutive free ports")


def process_alive(pid: int) -> bool:
    """Whether a process runs (a zombie, dead but not yet reaped, does not count)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
