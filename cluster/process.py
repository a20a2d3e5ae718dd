"""The per-server loop: take phase commands, run them, report state.

`ServerTask` is one server's part of one run of a job: the same mapper, shuffler
and reducer whether the server is a local worker process (`local.py`) or a
cluster server (commands through Redis). `local_worker_main` is the loop of a
local worker: commands arrive on a queue, reports (progress, done, error) and a
heartbeat go back on another.
"""
from __future__ import annotations

import logging
import os
import resource
import threading
import time
import traceback
from enum import Enum
from typing import Any

from cluster import defaults, functions
from cluster.config import ClusterConfig
from cluster.exceptions import ClusterError, UserFunctionError
from cluster.layout import JobLayout
from cluster.mapper import Mapper, load_auxiliary_data, read_previous_output
from cluster.reducer import Reducer
from cluster.shuffler import ShuffleError, Shuffler
from cluster.transport import LocalTransport, Transport

log = logging.getLogger(__name__)


class Phase(str, Enum):
    MAP = "map"
    SORT = "sort"
    REDUCE = "reduce"


class Report(str, Enum):
    PROGRESS = "progress"
    DONE = "done"
    ERROR = "error"
    HEARTBEAT = "heartbeat"


def peak_rss_bytes() -> int:
    """This process's peak resident memory."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def error_report(exc: BaseException, server_id: str, phase: str) -> dict[str, Any]:
    """A JSON-serializable description of a failure, for the master."""
    report = {"server": server_id, "phase": phase, "type": type(exc).__name__, "message": str(exc),
              "traceback": traceback.format_exc()}
    if isinstance(exc, UserFunctionError):
        report.update(input_file=exc.input_file, line_number=exc.line_number,
                      key=repr(exc.key) if exc.has_key else None, traceback=exc.traceback)
    return report


class ServerTask:
    """One server's share of one run of a mapreduce job."""

    def __init__(self, *, config: ClusterConfig, job: dict, run_id: str, server_id: str,
                 partitions: list[str], inputs: dict[str, list[str]], projects_root: str,
                 transport: Transport | None = None, on_progress=None):
        self.config = config
        self.job = job
        self.run_id = run_id
        self.server_id = server_id
        self.partitions = partitions
        self.inputs = inputs
        self.layout = JobLayout(config.base_dir, config.auxiliary_dir, job["job_name"])
        self.transport = transport or LocalTransport(self.layout)
        self.on_progress = on_progress
        self.counters: dict[str, dict] = {p.value: {} for p in Phase}
        self._last_progress = 0.0
        self._reducer: Reducer | None = None
        self._phase = Phase.MAP
        self.map_fn, self.combine_fn, self.reduce_fn = functions.load_job_functions(projects_root, job)

    def progress(self, force: bool = False) -> None:
        now = time.monotonic()
        if self.on_progress and (force or now - self._last_progress >= defaults.PROGRESS_EVERY_SECONDS):
            self._last_progress = now
            self.on_progress(self._phase.value, self.counters[self._phase.value])

    def run_phase(self, phase: Phase) -> dict:
        """Run one phase to the end; return its counters."""
        self._phase = phase
        counters = self.counters[phase.value]
        started = time.monotonic()
        try:
            getattr(self, "_" + phase.value)(counters)
        except ShuffleError as exc:
            raise ClusterError(f"server {self.server_id}, phase {phase.value}: {exc}") from exc
        counters["seconds"] = round(time.monotonic() - started, 3)
        counters["peak_rss_bytes"] = peak_rss_bytes()
        self.progress(force=True)
        return counters

    def _map(self, counters: dict) -> None:
        for d in self.layout.server_dirs(self.server_id):
            os.makedirs(d, exist_ok=True)
        aux_reduce = load_auxiliary_data(self.layout, self.job.get("auxiliary_data_name_reducer"))
        shuffler = Shuffler(
            server_id=self.server_id, partitions=self.partitions,
            spill_dir=self.layout.spill_dir(self.server_id), transport=self.transport,
            memory_budget=self.config.server_memory_budget,
            max_items_per_file=self.job.get("max_number_dumped_items_shuffler")
            or defaults.MAX_NUMBER_DUMPED_ITEMS_SHUFFLER,
            combine=self.combine_fn, combine_name=self.job.get("combine_function_name") or "combine",
            auxiliary_data=aux_reduce, counters=counters)
        mapper = Mapper(server_id=self.server_id, job=self.job, map_function=self.map_fn,
                        auxiliary_data=load_auxiliary_data(self.layout, self.job.get("auxiliary_data_name_mapper")),
                        shuffler=shuffler, counters=counters, progress=self.progress)
        mapper.run(self.inputs.get("files", []))
        mapper.run(self.inputs.get("previous_output", []), map_function=read_previous_output)
        shuffler.close()

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
        self._reducer_for(counters).sort()

    def _reduce(self, counters: dict) -> None:
        self._reducer_for(counters).reduce()

    def close(self) -> None:
        if self._reducer is not None:
            self._reducer.close()


def local_worker_main(config_values: dict, job: dict, run_id: str, server_id: str, partitions: list[str],
                      inputs: dict, commands, reports, log_level: int = logging.WARNING) -> None:
    """Entry point of a local worker process: run phases as the commands arrive."""
    logging.basicConfig(level=log_level, format=f"%(asctime)s {server_id} %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()

    def heartbeat() -> None:
        while not stop.wait(1.0):
            reports.put((Report.HEARTBEAT.value, server_id, None, None))

    threading.Thread(target=heartbeat, daemon=True, name="heartbeat").start()
    phase = "start"
    task = None
    try:
        config = ClusterConfig.from_dict(config_values, source="master", check_dirs=False)

        def send_progress(phase_name: str, counters: dict) -> None:
            reports.put((Report.PROGRESS.value, server_id, phase_name, dict(counters)))

        task = ServerTask(config=config, job=job, run_id=run_id, server_id=server_id, partitions=partitions,
                          inputs=inputs, projects_root=config.projects_dir, on_progress=send_progress)
        while True:
            command = commands.get()
            if command is None:
                break
            phase = command
            counters = task.run_phase(Phase(command))
            reports.put((Report.DONE.value, server_id, command, dict(counters)))
    except BaseException as exc:  # noqa: B036 - every failure must reach the master, then exit
        reports.put((Report.ERROR.value, server_id, phase, error_report(exc, server_id, phase)))
    finally:
        stop.set()
        if task is not None:
            task.close()
