"""A cluster on localhost for end-to-end tests: its own name, ports, certificates; driven
through the console scripts as a user would, and killed by its own names only."""
from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from integration_helpers import REPO, TEST_PROJECTS, free_port, free_port_block

from cluster.config import ClusterConfig
from cluster.master.manager import ClusterManager
from cluster.node import location

MANAGE = REPO / ".venv" / "bin" / "manage_cluster"
SERVERS = 2


class Cluster:
    """One test cluster: its config, its console scripts, its sessions, its Redis."""

    def __init__(self, root: Path, extra_config: str = "", env: dict[str, str] | None = None, servers: int = SERVERS,
                 memory: str = "256M"):
        self.root = root
        self.name = "t" + uuid.uuid4().hex[:8]
        self.servers = [f"S_{i}" for i in range(servers)]
        base = free_port_block(servers)
        self.config_path = root / "cluster.cfg"
        self.config_path.write_text(
            "[CLUSTER]\n"
            f"cluster_name = {self.name}\n"
            f"compute_dir = {root / 'compute'}\n"
            f"local_working_dir = {root / 'master'}\n"
            f"projects_dir = {TEST_PROJECTS}\n"
            f"number_of_servers_per_location = {servers}\n"
            f"base_port = {base}\n"
            f"management_port = {free_port()}\n"
            f"redis_port = {free_port()}\n"
            f"max_number_of_bytes_in_memory = {memory}\n"
            "poll_every = 0.2\n" + extra_config)
        self.env = dict(os.environ, XDG_CONFIG_HOME=str(root / "xdg"), **(env or {}))
        self.config = ClusterConfig.from_file(str(self.config_path))

    def cli(self, tool: Path, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        proc = subprocess.run([str(tool), *args, "--config", str(self.config_path)], capture_output=True,
                              text=True, env=self.env, timeout=timeout)
        if check:
            assert proc.returncode == 0, f"{tool.name} {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
        return proc

    def manager(self) -> ClusterManager:
        return ClusterManager(self.config)

    def sessions(self) -> list[str]:
        return [n for n in location.screen_sessions() if n.startswith(self.name + "_")]

    def redis_pid(self) -> int | None:
        return location.location_redis(self.config, "localhost").pid()

    def beat(self, server: str) -> dict | None:
        return self.manager().alive(self.manager().redis("localhost"), [server])[server]

    def kill(self) -> None:
        """End this cluster's screen sessions and redis-server (`manage_cluster kill`, by its names)."""
        subprocess.run([str(MANAGE), "kill", "--config", str(self.config_path)], env=self.env, capture_output=True,
                       timeout=60)


@contextmanager
def master_of(c: Cluster) -> Iterator[Cluster]:
    """This test process as the cluster's master (ClusterManager here finds its secrets); the cluster is
    killed by its own names afterwards, whatever happened."""
    saved = os.environ.get("XDG_CONFIG_HOME")
    os.environ["XDG_CONFIG_HOME"] = c.env["XDG_CONFIG_HOME"]
    try:
        yield c
    finally:
        try:
            c.kill()
        finally:
            if saved is None:
                os.environ.pop("XDG_CONFIG_HOME", None)
            else:
                os.environ["XDG_CONFIG_HOME"] = saved


def wait_until(predicate, timeout: float = 30.0, what: str = "condition"):
    """Poll `predicate` every 0.1 s until it is true (return it) or `timeout` passes (fail naming `what`)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def word_counts_of(folder: Path) -> dict[str, int]:
    """The exact word count of every file in a folder (what a word count job must output)."""
    counts: dict[str, int] = {}
    for path in sorted(folder.iterdir()):
        for word in path.read_text().split():
            counts[word] = counts.get(word, 0) + 1
    return counts
