"""Running a job from Python: `cluster.run_job(job, config=None, executor="local")`."""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from cluster.config import ClusterConfig
from cluster.exceptions import ConfigError

if TYPE_CHECKING:
    from cluster.executors.base import Executor, JobResult

EXECUTORS = ("local", "cluster", "dask")


def executor_kind(config: ClusterConfig, *, local: bool = False, dask: str | None = None) -> str:
    """Which executor a command runs mapreduce jobs on: "local" with --local, "dask" with --dask ADDRESS
    (or when the config names a dask_scheduler), else "cluster"."""
    if local and dask:
        raise ConfigError("--local and --dask exclude each other: run on this machine's workers, or on Dask")
    if local:
        return "local"
    return "dask" if dask or config.dask_scheduler else "cluster"


def make_executor(kind: str, config: ClusterConfig, *, servers: int | None = None,
                  on_progress: Callable[[str, dict[str, dict]], None] | None = None, **options: Any) -> Executor:
    """The executor of `kind`: "local" (worker processes on this machine, `servers` of them; `options`
    go to LocalExecutor), "cluster" (the running cluster's servers) or "dask" (the Dask scheduler at
    `options["address"]`, default the config's dask_scheduler; "local" starts a LocalCluster). The one
    place that choice is made."""
    if kind == "dask":
        address = options.pop("address", None) or config.dask_scheduler
        if servers is not None or options:
            raise ConfigError("servers (and reducers, worker_log_level, profile_dir) are the local executor's "
                              "settings; on Dask, every worker thread maps and reduces")
        from cluster.executors.dask import DaskExecutor

        return DaskExecutor(config, address or "", on_progress=on_progress)
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
            on_progress: Callable[[str, dict[str, dict]], None] | None = None,
            dask_address: str | None = None, cancelled: Callable[[], str | None] | None = None) -> JobResult:
    """Run one mapreduce job to the end and return its JobResult (output_dir, counters, per_server).

    `job`: a job dict (only the keys without a default are needed); `config`: a ClusterConfig (default:
    `ClusterConfig.load()`: $CLUSTER_CONFIG, ~/.config/cluster/cluster.cfg, built-in defaults);
    `executor`: "local" (worker processes here, `servers` of them), "cluster" (the running cluster) or
    "dask" (the scheduler at `dask_address`, default the config's dask_scheduler; "local" starts a
    LocalCluster, which, as Dask's processes do, needs the calling script's `if __name__ == "__main__":`).
    `cancelled`: asked about once a second while the run waits; when it returns a reason (who
    cancelled), the run is stopped everywhere and JobCancelled raised.
    Raises a ClusterError subclass (JobSpecError, JobFailed, ...) when the job cannot run or fails."""
    config = config if config is not None else ClusterConfig.load(None)
    options = {"address": dask_address} if dask_address else {}
    return make_executor(executor, config, servers=servers, on_progress=on_progress, **options).run(
        job, timeout_minutes=timeout_minutes, cancelled=cancelled)
