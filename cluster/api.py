"""Running a job from Python: `cluster.run_job(job, config=None, executor="local")`."""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from cluster.config import ClusterConfig
from cluster.exceptions import ConfigError

if TYPE_CHECKING:
    from cluster.executors.base import Executor, JobResult

EXECUTORS = ("local", "cluster")


def make_executor(kind: str, config: ClusterConfig, *, servers: int | None = None,
                  on_progress: Callable[[str, dict[str, dict]], None] | None = None, **options: Any) -> Executor:
    """The executor of `kind`: "local" (worker processes on this machine, `servers` of them; `options`
    go to LocalExecutor) or "cluster" (the running cluster's servers). The one place that choice is made."""
    if kind == "local":
        from cluster.executors.local import LocalExecutor

        return LocalExecutor(config, servers=servers, on_progress=on_progress, **options)
    if kind == "cluster":
        if servers is not None or options:
            raise ConfigError("servers (and reducers, worker_log_level, profile_dir) are the local executor's "
                              "settings; a cluster has number_of_servers_per_location servers on each location")
        from cluster.executors.cluster import ClusterExecutor
        from cluster.master.manager import ClusterManager

        return ClusterExecutor(ClusterManager(config), on_progress=on_progress)
    raise ConfigError(f"unknown executor {kind!r}: one of {', '.join(EXECUTORS)}")


def run_job(job: dict[str, Any], config: ClusterConfig | None = None, executor: str = "local", *,
            servers: int | None = None, timeout_minutes: float | None = None,
            on_progress: Callable[[str, dict[str, dict]], None] | None = None) -> JobResult:
    """Run one mapreduce job to the end and return its JobResult (output_dir, counters, per_server).

    `job`: a job dict (only the keys without a default are needed); `config`: a ClusterConfig (default:
    `ClusterConfig.load()`: $CLUSTER_CONFIG, ~/.config/cluster/cluster.cfg, built-in defaults);
    `executor`: "local" (worker processes here, `servers` of them) or "cluster" (the running cluster).
    Raises a ClusterError subclass (JobSpecError, JobFailed, ...) when the job cannot run or fails."""
    config = config if config is not None else ClusterConfig.load(None)
    return make_executor(executor, config, servers=servers, on_progress=on_progress).run(
        job, timeout_minutes=timeout_minutes)
