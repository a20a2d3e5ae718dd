"""What one server does in one phase: `ServerTask`, one server's part of one run of a job.

The same mapper, shuffler and reducer whether the server is a local worker process
(`executors/local_worker.py`) or a cluster server (`node/server.py`, commands through Redis).
"""
from __future__ import annotations

import contextlib
import cProfile
import logging
import os
import resource
import shutil
import threading
import time
import traceback
from collections.abc import Callable
from enum import StrEnum
from typing import Any

from cluster import defaults
from cluster.config import ClusterConfig
from cluster.engine import functions
from cluster.engine.mapper import FileMapFunction, Mapper, load_auxiliary_data, read_previous_output
from cluster.engine.reducer import Reducer
from cluster.engine.shuffler import Shuffler
from cluster.engine.store import StoreOptions, store_options
from cluster.engine.transport import LocalTransport, Transport
from cluster.exceptions import ClusterError, JobAborted, ShuffleError, UserFunctionError
from cluster.layout import ATTEMPT_MARK, JobLayout

log = logging.getLogger(__name__)


class Phase(StrEnum):
    MAP = "map"
    SORT = "sort"
    REDUCE = "reduce"


class Report(StrEnum):
    PROGRESS = "progress"
    DONE = "done"
    ERROR = "error"
    HEARTBEAT = "heartbeat"


def peak_rss_bytes() -> int:
    """This process's peak resident memory since it started its program (Linux's VmHWM: getrusage's
    ru_maxrss is inherited across fork and exec, so a worker started by a big process would report
    its parent's peak)."""
    try:
        with open("/proc/self/status", "rb") as fh:
            for line in fh:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def error_report(exc: BaseException, server_id: str, phase: str) -> dict[str, Any]:
    """A JSON-serializable description of a failure, for the master."""
    report: dict[str, Any] = {"server": server_id, "phase": phase, "type": type(exc).__name__, "message": str(exc),
              "traceback": traceback.format_exc()}
    if isinstance(exc, UserFunctionError):
        report.update(input_file=exc.input_file, line_number=exc.line_number,
                      key=repr(exc.key) if exc.has_key else None, traceback=exc.traceback)
    return report


def map_inputs(*, server_id: str, job: dict, files: list[str], previous_output: list[str],
               map_fn: Callable | FileMapFunction, combine_fn: Callable | None, aux_map: Any, aux_reduce: Any,
               partitions: list[str], spill_dir: str, transport: Transport, memory_budget_bytes: int,
               counters: dict, progress: Callable[[], None] | None = None, store: StoreOptions | None = None,
               file_prefix: str | None = None) -> None:
    """One map task: the files (and the previous output, never sampled) through the map function into
    a Shuffler, whose spills `transport` takes to the partitions' reducers. What every executor's map
    runs."""
    shuffler = Shuffler(
        server_id=server_id, partitions=partitions, spill_dir=spill_dir, transport=transport,
        memory_budget_bytes=memory_budget_bytes,
        max_items_per_file=job.get("max_number_dumped_items_shuffler") or defaults.MAX_NUMBER_DUMPED_ITEMS_SHUFFLER,
        combine=combine_fn, combine_name=job.get("combine_function_name") or "combine",
        auxiliary_data=aux_reduce, counters=counters, file_prefix=file_prefix)
    mapper = Mapper(server_id=server_id, job=job, map_function=map_fn, auxiliary_data=aux_map,
                    shuffler=shuffler, counters=counters, progress=progress, store=store)
    mapper.run(files)
    mapper.run(previous_output, map_function=read_previous_output, sample=False)
    shuffler.close()


class ServerTask:
    """One server's share of one run of a mapreduce job."""

    def __init__(self, *, config: ClusterConfig, job: dict, run_id: str, server_id: str,
                 partitions: list[str], inputs: dict[str, list[str]], projects_root: str,
                 transport: Transport | None = None, on_progress=None,
                 cancelled: threading.Event | None = None, isolate: bool = False, profile_dir: str | None = None,
                 attempt: int | None = None):
        self.config = config
        self.job = job
        self.run_id = run_id
        self.server_id = server_id
        self.partitions = partitions
        self.inputs = inputs
        self.layout = JobLayout(config.base_dir, config.auxiliary_dir, job["job_name"])
        self.transport = transport or LocalTransport(self.layout)
        self.on_progress = on_progress
        self.cancelled = cancelled
        self.profile_dir = profile_dir
        self.attempt = attempt  # of this server's map (a cluster's; its spill files carry it)
        self.accepted: dict[str, int] | None = None  # the map attempt that counts, per sender (from sort on)
        self.counters: dict[str, dict] = {p.value: {} for p in Phase}
        self._last_progress = 0.0
        self._reducer: Reducer | None = None
        self._phase = Phase.MAP
        self.map_fn, self.combine_fn, self.reduce_fn = functions.load_job_functions(projects_root, job, isolate=isolate)

    def progress(self, force: bool = False) -> None:
        """Report counters (at most every PROGRESS_EVERY_SECONDS); stop here if the run was aborted."""
        if self.cancelled is not None and self.cancelled.is_set():
            raise JobAborted(f"server {self.server_id}: run {self.run_id} was aborted")
        now = time.monotonic()
        if self.on_progress and (force or now - self._last_progress >= defaults.PROGRESS_EVERY_SECONDS):
            self._last_progress = now
            self.on_progress(self._phase.value, self.counters[self._phase.value])

    def run_phase(self, phase: Phase, accepted: dict[str, int] | None = None) -> dict:
        """Run one phase to the end; return its counters. `accepted` (sort, on the cluster): which map
        attempt of each server counts; spill files of other attempts are dropped."""
        self._phase = phase
        if accepted is not None:
            self.accepted = accepted
        counters = self.counters[phase.value]
        started = time.monotonic()
        profiler = cProfile.Profile() if self.profile_dir else None
        try:
            if profiler is not None:
                profiler.enable()
            getattr(self, "_" + phase.value)(counters)
        except ShuffleError as exc:
            raise ClusterError(f"server {self.server_id}, phase {phase.value}: {exc}") from exc
        finally:
            if profiler is not None:
                profiler.disable()
                assert self.profile_dir is not None  # the profiler is made only with it
                os.makedirs(self.profile_dir, exist_ok=True)
                profiler.dump_stats(os.path.join(self.profile_dir, f"{phase.value}-{self.server_id}.prof"))
        counters["seconds"] = round(time.monotonic() - started, 3)
        counters["peak_rss_bytes"] = peak_rss_bytes()
        self.progress(force=True)
        return counters

    def _map(self, counters: dict) -> None:
        shutil.rmtree(self.layout.spill_dir(self.server_id), ignore_errors=True)  # an earlier attempt's
        for d in self.layout.server_dirs(self.server_id):
            os.makedirs(d, exist_ok=True)
        map_inputs(server_id=self.server_id, job=self.job, files=self.inputs.get("files", []),
                   previous_output=self.inputs.get("previous_output", []), map_fn=self.map_fn,
                   combine_fn=self.combine_fn,
                   aux_map=load_auxiliary_data(self.layout, self.job.get("auxiliary_data_name_mapper")),
                   aux_reduce=load_auxiliary_data(self.layout, self.job.get("auxiliary_data_name_reducer")),
                   partitions=self.partitions, spill_dir=self.layout.spill_dir(self.server_id),
                   transport=self.transport, memory_budget_bytes=self.config.server_memory_budget,
                   counters=counters, progress=self.progress, store=store_options(self.config.s3_endpoint_url),
                   file_prefix=None if self.attempt is None else f"{self.server_id}{ATTEMPT_MARK}{self.attempt}")

    def _reducer_for(self, counters: dict) -> Reducer:
        if self._reducer is None:
            self._reducer = Reducer(
                server_id=self.server_id, layout=self.layout, run_id=self.run_id, job=self.job,
                reduce_function=self.reduce_fn,
                auxiliary_data=load_auxiliary_data(self.layout, self.job.get("auxiliary_data_name_reducer")),
                memory_budget=self.config.server_memory_budget, counters=counters, progress=self.progress)
        self._reducer.counters = counters
        return self._reducer

    def _sort(self, counters: dict) -> None:
        self._reducer_for(counters).sort(self.accepted)

    def _reduce(self, counters: dict) -> None:
        self._reducer_for(counters).reduce(self.accepted)

    def close(self) -> None:
        if self._reducer is not None:
            self._reducer.close()

    def discard(self) -> None:
        """Remove what this server's part of a dropped run left on disk (its spills, received files,
        merge runs and staged output); the published output is not touched."""
        self.close()
        for d in self.layout.server_dirs(self.server_id):
            shutil.rmtree(d, ignore_errors=True)
        staging = self.layout.staging_dir(self.run_id)
        mine = f"{self.server_id}-{self.run_id}"
        for name in os.listdir(staging) if os.path.isdir(staging) else []:
            if name.startswith(mine):
                os.unlink(os.path.join(staging, name))
        with contextlib.suppress(OSError):  # the last server of the location out removes the folder
            os.rmdir(staging)
