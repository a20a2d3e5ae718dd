"""The control plane in each location's Redis: key names, commands, reports, heartbeats.

The master pushes commands onto a server's list in that server's location Redis; the
server pops them (BLPOP), pushes `started`/`done`/`error` reports onto the run's report
list and its latest counters into the run's progress hash, and writes a heartbeat key
with a time to live every second, so a server that stops is seen as down by the key
expiring, on Redis's clock, whatever the machines' clocks say.
"""
from __future__ import annotations

from enum import StrEnum

import redis
import ujson

from cluster import defaults
from cluster.config import ClusterConfig
from cluster.node.security import ClusterSecrets


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
