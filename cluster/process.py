"""The per-server loop: take phase commands, run them, report state.

`ServerTask` is one server's part of one run of a job: the same mapper, shuffler
and reducer whether the server is a local worker process (`executors/local.py`) or a
cluster server (`cluster_server.py`, commands through Redis). `local_worker_main` is the loop of a
local worker: commands arrive on a queue, reports (progress, done, error) and a
heartbeat go back on another.
"""
from __future__ import annotations

import cProfile
import gc
import logging
import marshal
import os
import resource
import signal
import sys
import threading
import time
import traceback
from enum import StrEnum
from typing import Any

from cluster import defaults, functions
from cluster.config import ClusterConfig
from cluster.exceptions import ClusterError, JobAborted, ShuffleError, UserFunctionError
from cluster.layout import JobLayout
from cluster.mapper import Mapper, load_auxiliary_data, read_previous_output
from cluster.reducer import Reducer
from cluster.shuffler import Shuffler
from cluster.transport import LocalTransport, Transport

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


class ServerTask:
    """One server's share of one run of a mapreduce job."""

    def __init__(self, *, config: ClusterConfig, job: dict, run_id: str, server_id: str,
                 partitions: list[str], inputs: dict[str, list[str]], projects_root: str,
                 transport: Transport | None = None, on_progress=None,
                 cancelled: threading.Event | None = None, isolate: bool = False, profile_dir: str | None = None):
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

    def run_phase(self, phase: Phase) -> dict:
        """Run one phase to the end; return its counters."""
        self._phase = phase
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
        mapper.run(self.inputs.get("previous_output", []), map_function=read_previous_output, sample=False)
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


class Channel:
    """Framed messages (marshal) over a pipe, safe to send from several threads."""

    def __init__(self, read_fd: int | None = None, write_fd: int | None = None):
        self._reader = os.fdopen(read_fd, "rb") if read_fd is not None else None
        self._writer = os.fdopen(write_fd, "wb") if write_fd is not None else None
        self._lock = threading.Lock()

    def send(self, message: Any) -> None:
        data = marshal.dumps(message)
        assert self._writer is not None  # a channel sends only when made with write_fd
        with self._lock:
            self._writer.write(len(data).to_bytes(4, "big") + data)
            self._writer.flush()

    def receive(self) -> Any:
        """The next message; EOFError when the other side closed the pipe."""
        assert self._reader is not None  # a channel receives only when made with read_fd
        head = self._reader.read(4)
        if len(head) < 4:
            raise EOFError("channel closed")
        data = self._reader.read(int.from_bytes(head, "big"))
        return marshal.loads(data)

    def close(self) -> None:
        for f in (self._reader, self._writer):
            if f is not None:
                try:
                    f.close()
                except OSError:
                    pass


def local_worker_main(commands: Channel, reports: Channel) -> None:
    """A local worker: the first command carries the task; then one phase per command."""
    start = commands.receive()
    server_id = start["server_id"]
    gc.set_threshold(*defaults.WORKER_GC_THRESHOLDS)
    logging.basicConfig(level=start.get("log_level", logging.WARNING),
                        format=f"%(asctime)s {server_id} %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()

    def heartbeat() -> None:
        while not stop.wait(1.0):
            try:
                reports.send((Report.HEARTBEAT.value, server_id, None, None))
            except OSError:  # the master died (a Runner killed mid-job): its workers must not outlive it
                log.error("%s: the master closed its pipe; stopping", server_id)
                os.kill(os.getpid(), signal.SIGTERM)
                return

    threading.Thread(target=heartbeat, daemon=True, name="heartbeat").start()
    phase = "start"
    task = None
    try:
        config = ClusterConfig.from_dict(start["config"], source="master", check_dirs=False)

        def send_progress(phase_name: str, counters: dict) -> None:
            reports.send((Report.PROGRESS.value, server_id, phase_name, counters))

        task = ServerTask(config=config, job=start["job"], run_id=start["run_id"], server_id=server_id,
                          partitions=start["partitions"], inputs=start["inputs"],
                          projects_root=config.projects_dir, on_progress=send_progress,
                          profile_dir=start.get("profile_dir"))
        while True:
            command = commands.receive()
            if command is None:
                break
            phase = command
            counters = task.run_phase(Phase(command))
            reports.send((Report.DONE.value, server_id, command, counters))
    except BaseException as exc:  # noqa: B036 - every failure must reach the master, then exit
        reports.send((Report.ERROR.value, server_id, phase, error_report(exc, server_id, phase)))
    finally:
        stop.set()
        if task is not None:
            task.close()


def main(argv: list[str] | None = None) -> None:
    """`python -m cluster.process CMD_FD REPORT_FD`: a local worker started by the local executor."""
    args = argv if argv is not None else sys.argv[1:]
    if len(args) != 2:
        raise SystemExit("usage: python -m cluster.process COMMAND_FD REPORT_FD (started by the local executor)")
    commands, reports = Channel(read_fd=int(args[0])), Channel(write_fd=int(args[1]))
    try:
        local_worker_main(commands, reports)
    finally:
        reports.close()


if __name__ == "__main__":
    main()
