"""A real Dask cluster for the tests: `dask scheduler` and `dask worker` processes on loopback ports."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from integration_helpers import REPO, free_port, wait_for_port

DASK = REPO / ".venv" / "bin" / "dask"


class DaskProcesses:
    """A scheduler and `workers` single-threaded workers (each under its nanny, which restarts a killed
    worker), started in their own process groups and stopped by pid whatever happens."""

    def __init__(self, folder: Path, workers: int = 2, memory_limit: str = "2GiB") -> None:
        self.folder = folder
        self.port = free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.procs: list[subprocess.Popen] = []
        env = dict(os.environ, PYTHONPATH=str(REPO), DASK_DISTRIBUTED__WORKER__DAEMON="False")
        folder.mkdir(parents=True, exist_ok=True)
        self._start([str(DASK), "scheduler", "--host", "127.0.0.1", "--port", str(self.port), "--no-dashboard"],
                    env, "scheduler")
        if not wait_for_port(self.port, timeout=30, alive=lambda: self.procs[0].poll() is None):
            self.stop()
            raise RuntimeError(f"dask scheduler did not start: {self.log('scheduler')}")
        for i in range(workers):
            self._start([str(DASK), "worker", self.address, "--nthreads", "1", "--nworkers", "1",
                         "--memory-limit", memory_limit, "--no-dashboard", "--host", "127.0.0.1",
                         "--name", f"w{i}", "--local-directory", str(folder / f"w{i}"), "--death-timeout", "30"],
                        env, f"worker-{i}")

    def _start(self, argv: list[str], env: dict, name: str) -> None:
        with open(self.folder / f"{name}.log", "wb") as log:
            self.procs.append(subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                                               stdin=subprocess.DEVNULL, start_new_session=True))

    def log(self, name: str) -> str:
        path = self.folder / f"{name}.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def client(self):
        from distributed import Client

        client = Client(self.address, timeout=30)
        client.wait_for_workers(len(self.procs) - 1, timeout=60)
        return client

    def stop(self) -> None:
        """SIGTERM to each process group we started (nanny and worker alike), SIGKILL after 10 s."""
        for p in reversed(self.procs):
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 10
        for p in self.procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait()
