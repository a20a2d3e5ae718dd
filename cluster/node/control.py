"""The control plane in each location's Redis: key names, commands, reports, heartbeats.

The master pushes commands onto a server's list in that server's location Redis; the
server pops them (BLPOP), pushes `started`/`done`/`error` reports onto the run's report
list and its latest counters into the run's progress hash, and writes a heartbeat key
with a time to live every second, so a server that stops is seen as down by the key
expiring, on Redis's clock, whatever the machines' clocks say.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from enum import StrEnum

import redis
import ujson

from cluster import defaults
from cluster.config import ClusterConfig
from cluster.exceptions import ClusterBusy
from cluster.node.security import ClusterSecrets

log = logging.getLogger(__name__)


class Command(StrEnum):
    START = "start"        # a run begins: the job, this server's inputs, every server's location
    PHASE = "phase"        # run one phase of the current run
    END = "end"            # the run is over (success): free its resources
    ABORT = "abort"        # the run failed elsewhere: stop the current phase, drop the run
    SHUTDOWN = "shutdown"  # finish nothing new and exit


class Reply(StrEnum):
    STARTED = "started"
    DONE = "done"
    ERROR = "error"


class Keys:
    """Every Redis key of one cluster's control plane."""

    def __init__(self, cluster_name: str):
        self.prefix = f"cluster:{cluster_name}"

    def commands(self, server_id: str) -> str:
        return f"{self.prefix}:server:{server_id}:commands"

    def alive(self, server_id: str) -> str:
        """The heartbeat: exists while the server beats (TTL), holds its status as JSON."""
        return f"{self.prefix}:server:{server_id}:alive"

    def management(self, host: str) -> str:
        """A location's management server beats here (TTL) while it runs."""
        return f"{self.prefix}:management:{host}:alive"

    def running(self) -> str:
        """The cluster's run lock (TTL, renewed by its master): which run has the servers."""
        return f"{self.prefix}:running"

    def master(self, run_id: str) -> str:
        """Exists while the master drives the run (TTL): servers drop a run whose master is gone."""
        return f"{self.prefix}:run:{run_id}:master"

    def reports(self, run_id: str) -> str:
        return f"{self.prefix}:run:{run_id}:reports"

    def progress(self, run_id: str) -> str:
        return f"{self.prefix}:run:{run_id}:progress"

    def run_patterns(self, job_name: str, run_id: str) -> list[str]:
        """Patterns matching every key one run left (control and shuffle)."""
        return [f"{self.prefix}:run:{run_id}:*", f"{self.prefix}:job:{job_name}:{run_id}:*"]


def redis_password(config: ClusterConfig, secrets: ClusterSecrets) -> str:
    """`redis_auth` from the config when set, else the cluster's generated password."""
    return config.redis_auth or secrets.redis_password()


def redis_client(config: ClusterConfig, host: str, password: str,
                 timeout: float = defaults.SHUFFLE_TIMEOUT_SECONDS) -> redis.Redis:
    """A client of one location's Redis; every call has a timeout, no silent retries."""
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return redis.Redis(host=host, port=config.redis_port, password=password, socket_timeout=timeout,
                       socket_connect_timeout=10.0, retry=Retry(NoBackoff(), 0))


def send_command(client: redis.Redis, keys: Keys, server_id: str, command: Command, **fields) -> None:
    client.rpush(keys.commands(server_id), ujson.dumps({"command": command.value, **fields}))


def delete_run_keys(client: redis.Redis, keys: Keys, job_name: str, run_id: str) -> int:
    """Delete what one run left in a Redis; return how many keys."""
    names: list[bytes | str] = []
    for pattern in keys.run_patterns(job_name, run_id):
        names.extend(client.scan_iter(match=pattern, count=1000))
    return client.delete(*names) if names else 0


# a key's time to live renewed, or the key deleted, only while it still holds this holder's token
_RENEW_IF_HELD = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end " \
                 "return 0"
_DELETE_IF_HELD = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"


def holder_is_dead(holder: dict) -> bool:
    """Whether the run lock's holder is a process of this machine that has ended."""
    if holder.get("host") != socket.gethostname():
        return False  # another machine's: its lock lapses by its time to live
    try:
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # another user's live process
    return False


def release_dead_holder(client: redis.Redis, keys: Keys, job_name: str) -> bool:
    """Delete the run lock when a process of this machine that has died holds it for `job_name` (a
    restarted Runner need not wait out its time to live); return whether it did."""
    held = client.get(keys.running())
    if held is None:
        return False
    holder = ujson.loads(held)
    if holder.get("job") != job_name or not holder_is_dead(holder):
        return False
    return bool(client.eval(_DELETE_IF_HELD, 1, keys.running(), held))


class RunLock:
    """The cluster's run lock: one run at a time has the servers (two would take each other's).

    A key in the first location's Redis, set only if absent, with a time to live that a thread
    renews while this master lives: a master that dies frees the cluster within `ttl` seconds.
    """

    def __init__(self, client: redis.Redis, keys: Keys, job_name: str, ttl: float) -> None:
        self.client = client
        self.key = keys.running()
        self.ttl = ttl
        self.value = ujson.dumps({"job": job_name, "host": socket.gethostname(), "pid": os.getpid(),
                                  "since": time.time(), "token": uuid.uuid4().hex})
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> dict | None:
        """Take the lock and keep it renewed; None when taken, else what the holder wrote."""
        for _ in range(3):  # the holder may let it go between the two calls
            if self.client.set(self.key, self.value, nx=True, px=int(self.ttl * 1000)):
                self._thread = threading.Thread(target=self._renew, daemon=True, name="run-lock")
                self._thread.start()
                return None
            held = self.client.get(self.key)
            if held is not None:
                return ujson.loads(held)
        return {"job": "?", "host": "?", "pid": 0, "since": time.time()}

    def take_again(self) -> None:
        """After a restart of the Redis that holds the lock (it came back empty): set it again, as this
        holder's; raise ClusterBusy when another run took it meanwhile."""
        if not self.client.set(self.key, self.value, nx=True, px=int(self.ttl * 1000)):
            held = self.client.get(self.key)
            if held != self.value.encode():
                raise ClusterBusy(f"the cluster's run lock was taken by another run after its Redis restarted: "
                                  f"{held!r}")
        self.lost.clear()

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                if not self.client.eval(_RENEW_IF_HELD, 1, self.key, self.value, int(self.ttl * 1000)):
                    self.lost.set()  # (a restarted Redis: the master sets it again, and this goes on)
            except redis.RedisError as exc:  # the key expires if this goes on; the run's own calls fail and say why
                log.warning("cannot renew the cluster's run lock %s: %s", self.key, exc)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        try:
            self.client.eval(_DELETE_IF_HELD, 1, self.key, self.value)
        except redis.RedisError as exc:
            log.warning("cannot release the cluster's run lock %s (it expires in %.0fs): %s", self.key, self.ttl, exc)
