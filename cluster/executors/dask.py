"""The Dask executor: the same jobs on a Dask distributed cluster (`mapreduce run JOB --dask ADDRESS`).

The lifecycle is base.py's. A run connects a `distributed.Client` to the scheduler at ADDRESS (or,
for `--dask local`, to a LocalCluster of number_of_servers_per_location worker processes it starts),
checks that every worker runs the client's Python and package, and sends the project's files and
the auxiliary data once. The map phase is one task per batch of input files (by size), each running
the engine's Mapper and Shuffler and returning one sorted spill per reduce partition; the reduce
phase is one task per partition (the workers' threads at the start of the run), running DiskSort
and Reducer under the worker's memory limit. The spills move between tasks through Dask, which
recomputes what a lost worker held; the client publishes the output only when every task succeeded.
On Dask the sort is part of each reduce task (the summary's sort time is within reduce).
"""
from __future__ import annotations

import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError
from contextlib import contextmanager
from typing import Any

from cluster import defaults
from cluster.config import ClusterConfig
from cluster.engine.inputs import assign_files, choose_inputs
from cluster.engine.mapper import load_auxiliary_data
from cluster.engine.store import store_options
from cluster.engine.task import Phase
from cluster.exceptions import ConfigError, JobFailed, MissingExtra
from cluster.executors import dask_tasks
from cluster.executors.base import (
    Plan,
    Progress,
    ThisMachineExecutor,
    discard_output,
    failure_from_report,
    publish_output,
)

log = logging.getLogger(__name__)
LOCAL = "local"


@contextmanager
def _dask_logs_quiet() -> Iterator[None]:
    """Dask's own INFO lines (connections, workers coming and going) only when our logging asks for
    INFO: a run's output is our summary, not the scheduler's chatter."""
    loggers = [logging.getLogger(name) for name in ("distributed", "dask")]
    saved = [lg.level for lg in loggers]
    if logging.getLogger().getEffectiveLevel() > logging.INFO:
        for lg in loggers:
            lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, saved, strict=True):
            lg.setLevel(level)


def _distributed() -> Any:
    try:
        import distributed
    except ImportError as exc:
        raise MissingExtra("the Dask executor", "dask", exc.name or "distributed") from None
    return distributed


class DaskExecutor(ThisMachineExecutor):
    """Runs mapreduce jobs as tasks on the Dask cluster whose scheduler is at `address` ("local":
    a LocalCluster started for the run)."""

    description = "the Dask executor"

    def __init__(self, config: ClusterConfig, address: str, on_progress: Progress | None = None) -> None:
        super().__init__(config, on_progress)
        if not address:
            raise ConfigError("the Dask executor needs a scheduler address (--dask tcp://HOST:8786, or --dask local "
                              "for a cluster on this machine; or the config key dask_scheduler)")
        self.address = address
        self.store = store_options(config.s3_endpoint_url)  # what tasks need to reach the input's store
        self._client: Any = None
        self._local_cluster: Any = None
        self._map_ids: list[str] = []
        self._partitions: list[str] = []
        self._futures: dict[str, Any] = {}
        self._map_results: dict[str, Any] = {}
        self._reduced: dict[str, list[str]] = {}
        self._shared: dict[str, Any] = {}
        self._sizes: dict[str, int] = {}
        self._plan: Plan = {}

    @property
    def server_ids(self) -> list[str]:
        return self._map_ids + self._partitions

    def check(self, job: dict) -> None:
        _distributed()
        super().check(job)

    @contextmanager
    def session(self) -> Iterator[None]:
        with _dask_logs_quiet():
            yield from self._session()

    def _session(self) -> Iterator[None]:
        distributed = _distributed()
        self._futures, self._map_results, self._reduced = {}, {}, {}
        if self.address == LOCAL:
            self._local_cluster = distributed.LocalCluster(
                n_workers=self.config.number_of_servers_per_location, threads_per_worker=1, processes=True,
                dashboard_address=None, silence_logs=logging.WARNING)
            address = self._local_cluster.scheduler_address
        else:
            address = self.address
        try:
            try:
                # not the process's default client: a job script's own Client (or a second run in this
                # process) must not pick up ours, nor we theirs
                self._client = distributed.Client(address, timeout=defaults.DASK_CONNECT_TIMEOUT_SECONDS,
                                                  set_as_default=False)
            except OSError as exc:
                raise ConfigError(f"cannot reach the Dask scheduler at {address}: {exc} (start one with "
                                  "`dask scheduler`, or check the address)") from None
            self._check_workers()
            yield
        finally:
            if self._client is not None:
                self._client.close()
                self._client = None
            if self._local_cluster is not None:
                self._local_cluster.close()
                self._local_cluster = None

    def _check_workers(self) -> None:
        """Every worker must run this Python, this package and this code: a task runs the workers' copy."""
        client = self._client
        try:
            client.wait_for_workers(1, timeout=defaults.DASK_CONNECT_TIMEOUT_SECONDS)
        except TimeoutError:
            raise ConfigError(f"the Dask scheduler at {client.scheduler.address} has no workers (start some with "
                              f"`dask worker {client.scheduler.address}`)") from None
        mine = dask_tasks.versions()
        differ = []
        for worker, theirs in client.run(dask_tasks.versions).items():
            wrong = [f"{k} {theirs.get(k)} (here {v})" for k, v in mine.items() if theirs.get(k) != v]
            if wrong:
                differ.append(f"{worker}: {', '.join(wrong)}")
        if differ:
            raise ConfigError("these Dask workers do not run what this client runs (install the same Python and "
                              "the same mapreduce-cluster on the workers, then restart them):\n  "
                              + "\n  ".join(differ))

    def _threads(self) -> int:
        return max(1, sum(w["nthreads"] for w in self._client.scheduler_info(n_workers=-1)["workers"].values()))

    def plan(self, job: dict) -> tuple[Plan, dict[str, Any]]:
        layout = self._layout(job)
        layout.clear_intermediate()
        files, previous, notes = choose_inputs(job, layout, self.store)
        self._sizes = dict(files)
        threads = self._threads()
        total = sum(size for _, size in files)
        # a whole number of rounds over the threads (5 equal tasks on 2 threads take 3 tasks' time)
        rounds = max(1, math.ceil(total / (threads * defaults.DASK_MAP_BATCH_BYTES)))
        batches = max(1, min(len(files), threads * rounds))
        self._map_ids = [f"M_{i:04d}" for i in range(batches)]
        # at least one per thread; more for big inputs, so no reduce task takes more than a share of a worker
        partitions = max(threads, math.ceil(total / defaults.DASK_PARTITION_INPUT_BYTES))
        self._partitions = [f"P_{i:03d}" for i in range(partitions)]
        sizes = dict(files)
        plan: Plan = {m: {"files": fs, "bytes": sum(sizes[f] for f in fs)}
                      for m, fs in assign_files(files, self._map_ids).items()}
        for m, fs in assign_files(previous, self._map_ids).items():
            plan[m]["previous_output"] = fs
        return plan, notes

    def start(self, job: dict, run_id: str, plan: Plan, per_server: dict[str, dict[str, dict]]) -> None:
        layout = self._layout(job)
        client = self._client
        project = dask_tasks.bundle_project(self.config.projects_dir, job["project_name"])
        aux_map = load_auxiliary_data(layout, job.get("auxiliary_data_name_mapper"))
        aux_reduce = load_auxiliary_data(layout, job.get("auxiliary_data_name_reducer"))
        staging = layout.staging_dir(run_id)
        os.makedirs(staging, exist_ok=True)
        spec = {"job": job, "run_id": run_id, "partitions": self._partitions, "staging": staging,
                "memory_budget": self.config.server_memory_budget, "store": self.store,
                "versions": dask_tasks.versions()}  # a worker that joins later is checked by each task
        # each one task of this run (a scheduler is shared), fetched once by each worker that needs it, not
        # sent with every task; not scattered: Dask's memory manager keeps one copy of scattered data once
        # no waiting task needs it, and that copy dies with its worker (a map run again could not start)
        values = {"spec": spec, "project": project, "aux_map": aux_map, "aux_reduce": aux_reduce}
        self._shared = {k: client.submit(dask_tasks.held, v, key=f"{k}-{run_id}", pure=False)
                        for k, v in values.items()}
        self._plan = plan

    def run_phase(self, job: dict, run_id: str, phase: Phase, per_server: dict[str, dict[str, dict]]) -> None:
        if phase is Phase.MAP:
            self._run_map(job, run_id, per_server)
        elif phase is Phase.REDUCE:
            self._run_reduce(job, run_id, per_server)
        # Phase.SORT: each reduce task sorts its partition first

    def _run_map(self, job: dict, run_id: str, per_server: dict[str, dict[str, dict]]) -> None:
        s = self._shared
        retries = defaults.DASK_TASK_RETRIES
        client = self._client
        for m in self._map_ids:
            files = {f: self._sizes.get(f) for f in self._plan[m]["files"]}  # a recomputed task checks them
            self._map_results[m] = client.submit(
                dask_tasks.map_task, m, s["spec"], files, self._plan[m].get("previous_output", []), s["project"],
                s["aux_map"], s["aux_reduce"], key=f"map-{m}-{run_id}", retries=retries, pure=False)
        # what the client waits on: the map results without their spills (those stay on the workers)
        summaries = {m: client.submit(dask_tasks.map_summary, f, key=f"mapsum-{m}-{run_id}", pure=False)
                     for m, f in self._map_results.items()}
        self._futures.update({f"map-{m}": f for m, f in self._map_results.items()})

        def done(m: str, result: dict) -> None:
            per_server[m]["map"] = result["counters"]
            self.report_progress("map", per_server)

        self._await(job, "map", summaries, done)

    def _run_reduce(self, job: dict, run_id: str, per_server: dict[str, dict[str, dict]]) -> None:
        s = self._shared
        client = self._client
        futures = {}
        for p in self._partitions:
            spills = [client.submit(dask_tasks.partition_of, self._map_results[m], p, key=f"part-{m}-{p}-{run_id}")
                      for m in self._map_ids]
            futures[p] = client.submit(dask_tasks.reduce_task, p, s["spec"], s["project"], s["aux_reduce"], *spills,
                                       key=f"reduce-{p}-{run_id}", retries=defaults.DASK_TASK_RETRIES, pure=False)
        self._futures.update({f"reduce-{p}": f for p, f in futures.items()})
        # the reduce tasks hold what they need (Dask recomputes a lost map result they wait for); held here,
        # a map result would be computed again after a worker is lost even when nothing needs it any more
        for m in self._map_ids:
            self._futures.pop(f"map-{m}", None)
        self._map_results = {}

        def done(p: str, result: dict) -> None:
            per_server[p].update(result["counters"])
            self._reduced[p] = result["files"]
            # let go of it: a worker lost from now on must not make Dask reduce this partition again
            self._futures.pop(f"reduce-{p}", None)
            self.report_progress("reduce", per_server)

        self._await(job, "reduce", futures, done)

    def _await(self, job: dict, phase: str, futures: dict[str, Any], done: Callable[[str, dict], None]) -> None:
        """Wait for every task of a phase, handing each result to `done` as it comes; raise on the
        first failure, past the deadline, or when the cluster has had no worker for a while."""
        distributed = _distributed()
        name = job["job_name"]
        by_future = {f: k for k, f in futures.items()}
        pending = set(futures.values())
        no_workers_since: float | None = None
        fetches: dict[str, int] = {}  # a task's results that could not be fetched
        while pending:
            self.deadline.check(name, phase)
            try:
                # distributed.wait waits through the current client, else the newest one in the process;
                # on another client's event loop it fails ('bound to a different event loop')
                with self._client.as_current():
                    finished, pending = distributed.wait(list(pending), timeout=self.deadline.remaining(1.0),
                                                         return_when="FIRST_COMPLETED")
            except TimeoutError:
                no_workers_since = self._check_workers_left(name, phase, no_workers_since)
                continue
            except CancelledError as exc:  # the scheduler dropped a task of ours (its reasons are in exc)
                raise JobFailed(name, f"the Dask scheduler at {self.address} cancelled tasks of this run: "
                                f"{exc}", phase=phase) from None
            for future in finished:
                task = by_future[future]
                if future.status in ("lost", "pending"):  # its result died with a worker (since the wait
                    pending.add(future)                     # returned, too): Dask computes it again
                    continue
                try:
                    if future.status != "finished":
                        error = future.exception()
                        raise JobFailed(name, f"Dask task {task} failed: {type(error).__name__}: {error}"
                                        + (" (a worker died running it too often; see the workers' logs)"
                                           if type(error).__name__ == "KilledWorker" else ""),
                                        server=task, phase=phase)
                    result = future.result()
                except CancelledError:
                    raise JobFailed(name, f"Dask task {task} was cancelled: the connection to the scheduler at "
                                    f"{self.address} was lost, or someone cancelled it", server=task,
                                    phase=phase) from None
                except JobFailed:
                    raise
                except Exception as exc:  # fetching a result from a worker that died as it was asked (Dask
                    # computes it again)
                    fetches[task] = fetches.get(task, 0) + 1
                    if fetches[task] > defaults.DASK_TASK_RETRIES:
                        raise JobFailed(name, f"the result of Dask task {task} could not be fetched "
                                        f"{fetches[task]} times: {type(exc).__name__}: {exc}", server=task,
                                        phase=phase) from exc
                    log.warning("fetching the result of %s failed (%s: %s); waiting for it again", task,
                                type(exc).__name__, exc)
                    time.sleep(0.5 * fetches[task])  # a moment for the scheduler to see the worker gone
                    pending.add(future)
                    continue
                if "error" in result:
                    raise failure_from_report(name, result["error"])
                done(task, result)

    def _check_workers_left(self, name: str, phase: str, since: float | None) -> float | None:
        """Fail once the cluster has had no worker for DASK_NO_WORKERS_SECONDS (Dask would wait forever)."""
        if self._client.scheduler_info(n_workers=-1)["workers"]:
            return None
        now = time.monotonic()
        if since is None:
            log.warning("the Dask scheduler at %s has no workers; waiting up to %.0fs for one", self.address,
                        defaults.DASK_NO_WORKERS_SECONDS)
            return now
        if now - since > defaults.DASK_NO_WORKERS_SECONDS:
            raise JobFailed(name, f"the Dask scheduler at {self.address} has had no workers for "
                            f"{defaults.DASK_NO_WORKERS_SECONDS:.0f}s; start some (`dask worker {self.address}`) "
                            "and run the job again", phase=phase)
        return since

    def commit(self, job: dict, run_id: str, plan: Plan, per_server: dict[str, dict[str, dict]]) -> str:
        layout = self._layout(job)
        staging = layout.staging_dir(run_id)
        kept = [path for files in self._reduced.values() for path in files]  # only the attempts Dask kept
        if not job.get("output_url"):
            for path in kept:
                os.replace(path, os.path.join(staging, os.path.basename(path)))
        shutil.rmtree(os.path.join(staging, ".attempts"), ignore_errors=True)
        self._release()
        return publish_output(layout, job, run_id, {m: plan[m]["files"] for m in self._map_ids}, self.store,
                              on_store=kept if job.get("output_url") else None)

    def abort(self, job: dict, run_id: str) -> None:
        self._release(cancel=True)
        discard_output(self._layout(job), job, run_id, self.store)

    def _release(self, cancel: bool = False) -> None:
        """Let go of the run's tasks, so their results leave the workers' memory (`cancel`: stop the
        ones still running, after a failure; a lost scheduler must not hide that failure)."""
        futures = list(self._futures.values())
        self._futures, self._map_results, self._shared = {}, {}, {}
        if cancel and futures and self._client is not None:
            try:
                self._client.cancel(futures)
            except (OSError, TimeoutError, CancelledError) as exc:
                log.warning("could not cancel the run's Dask tasks: %s", exc)
