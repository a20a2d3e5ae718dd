"""One redis-server per location: its config file, start, readiness, stop.

The password goes into a config file readable only by its owner (never on a command
line, where `ps` would show it); the server listens only on the location's cluster
address; it is stopped by the pid in its own pid file, after checking that this pid
really is that redis-server, so nothing else is ever signalled.
"""
from __future__ import annotations

import os
import signal
import subprocess
from dataclasses import dataclass

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from cluster.exceptions import RedisServerError, WaitTimedOut
from cluster.timing import wait_until


@dataclass(frozen=True)
class RedisServer:
    """Where one location's redis-server keeps its files, and how to reach it."""

    directory: str
    bind: str
    port: int

    @property
    def conf_path(self) -> str:
        return os.path.join(self.directory, f"redis-{self.port}.conf")

    @property
    def pid_path(self) -> str:
        return os.path.join(self.directory, f"redis-{self.port}.pid")

    @property
    def log_path(self) -> str:
        return os.path.join(self.directory, f"redis-{self.port}.log")

    def write_conf(self, password: str) -> None:
        """The server's config (0600: it holds the password)."""
        os.makedirs(self.directory, exist_ok=True)
        lines = [f"port {self.port}", f"bind {self.bind}", "protected-mode yes", f"requirepass {password}",
                 "daemonize yes", f"pidfile {self.pid_path}", f"logfile {self.log_path}",
                 f"dir {self.directory}", 'save ""', "appendonly no",
                 "proto-max-bulk-len 512mb"]
        fd = os.open(self.conf_path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write("\n".join(lines) + "\n")
        os.replace(self.conf_path + ".tmp", self.conf_path)

    def start(self, password: str, timeout: float = 10.0) -> int:
        """Start it (if it is not running already) and wait until it answers; return its pid."""
        running = self.pid()
        if running is not None:
            return running
        self.write_conf(password)
        try:
            subprocess.run(["redis-server", self.conf_path], check=True, capture_output=True, text=True,
                           timeout=timeout)
        except FileNotFoundError:
            raise RedisServerError("redis-server is not installed on this machine; run init/install.sh") from None
        except subprocess.CalledProcessError as exc:
            raise RedisServerError(f"redis-server on {self.bind}:{self.port} did not start: "
                                   f"{exc.stderr.strip() or exc.stdout.strip()} (log: {self.log_path})") from None
        self.wait_ready(password, timeout)
        pid = self.pid()
        if pid is None:
            raise RedisServerError(f"redis-server on {self.bind}:{self.port} answers but wrote no pid file "
                                   f"{self.pid_path}")
        return pid

    def client(self, password: str, timeout: float = 10.0, retries: int = 0) -> redis.Redis:
        """A client of this server: every call has a timeout, and retries are the caller's choice
        (redis-py's default retries with backoff would turn a refused password into seconds of waiting)."""
        return redis.Redis(host=self.bind, port=self.port, password=password, socket_timeout=timeout,
                           socket_connect_timeout=timeout, retry=Retry(ExponentialBackoff(), retries))

    def wait_ready(self, password: str, timeout: float = 10.0) -> None:
        last: list[Exception] = []

        def answers() -> bool:
            try:
                return bool(self.client(password, timeout=1.0).ping())
            except redis.ConnectionError as exc:
                last[:] = [exc]
                return False
        try:
            wait_until(answers, timeout, f"redis-server on {self.bind}:{self.port}", every=0.05)
        except WaitTimedOut:
            raise RedisServerError(f"redis-server on {self.bind}:{self.port} did not answer within {timeout:.0f}s: "
                                   f"{last[0] if last else 'no answer'} (log: {self.log_path})") from None

    def pid(self) -> int | None:
        """The pid of this redis-server when it runs, else None (a stale pid file is ignored)."""
        try:
            with open(self.pid_path) as fh:
                pid = int(fh.read().strip())
        except (FileNotFoundError, ValueError):
            return None
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                cmdline = fh.read().replace(b"\0", b" ").decode(errors="replace")
        except FileNotFoundError:
            return None
        # a daemonized redis-server shows its address as its title, e.g. "redis-server 127.0.0.1:46379"
        ours = "redis-server" in cmdline and (f":{self.port}" in cmdline or self.conf_path in cmdline)
        return pid if ours else None

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop it by its pid (never anything else); return whether it was running."""
        pid = self.pid()
        if pid is None:
            return False
        for sig in (signal.SIGTERM, signal.SIGKILL):
            os.kill(pid, sig)
            try:  # redis removes its pid file before it has exited: wait for the process
                wait_until(lambda: not _alive(pid), timeout, f"redis-server pid {pid} to exit", every=0.02)
                return True
            except WaitTimedOut:
                continue
        raise RedisServerError(f"redis-server pid {pid} ({self.bind}:{self.port}) did not exit after SIGKILL")


def _alive(pid: int) -> bool:
    """True while the process runs (a zombie waiting for its parent counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False
