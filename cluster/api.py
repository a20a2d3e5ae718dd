"""Running a job from Python: `cluster.run_job(job, config=None, executor="local")`."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cluster.config import ClusterConfig
from cluster.exceptions import ConfigError

EXECUTORS = ("local", "cluster")


def make_executor(kind: str, config: ClusterConfig, *, servers: int | None = None,
                  on_progress: Callable[[str, dict[str, dict]], None] | None = None, **options: Any) -> Any:
    """The executor that runs mapreduce jobs `kind`-wise: "local" (worker processes on this machine,
    `servers` of them) or "cluster" (the running cluster's servers). The one place that choice is made."""
    if kind == "local":
        from cluster.local import LocalExecutor

        return LocalExecutor(config, servers=servers, on_progress=on_progress, **options)
    if kind == "cluster":
        if servers is not None:
            raise ConfigError("servers is a local executor's setting; a cluster has number_of_servers_per_location "
                              "servers on each location")
        from cluster.manage_cluster import ManageCluster

        return _ClusterExecutor(ManageCluster(config), on_progress)
    raise ConfigError(f"unknown executor {kind!r}: one of {', '.join(EXECUTORS)}")


class _ClusterExecutor:
    """The running cluster, with the executor's `run(job)`."""

    def __init__(self, manager: Any, on_progress: Callable | None) -> None:
        self.manager = manager
        self.on_progress = on_progress

    def run(self, job: dict, timeout_minutes: float | None = None) -> Any:
        return self.manager.run(job, on_progress=self.on_progress, timeout_minutes=timeout_minutes)


def run_job(job: dict[str, Any], config: ClusterConfig | None = None, executor: str = "local", *,
            servers: int | None = None, timeout_minutes: float | None = None,
            on_progress: Callable[[str, dict[str, dict]], None] | None = None) -> Any:
    """Run one mapreduce job to the end and return its JobResult (output_dir, counters, per_server).

    `job`: a job dict (only the keys without a default are needed); `config`: a ClusterConfig (default:
    `ClusterConfig.load()`: $CLUSTER_CONFIG, ~/.config/cluster/cluster.cfg, built-in defaults);
    `executor`: "local" (worker processes here, `servers` of them) or "cluster" (the running cluster).
    Raises a ClusterError subclass (JobSpecError, JobFailed, ...) when the job cannot run or fails."""
    config = config if config is not None else ClusterConfig.load(None)
    return make_executor(executor, config, servers=servers, on_progress=on_progress).run(
        job, timeout_minutes=timeout_minutes)
