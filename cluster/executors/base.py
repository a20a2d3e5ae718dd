"""The lifecycle of a mapreduce job, once, for every executor.

`Executor.run` validates the job (the template fills in its defaults), loads its functions here
to fail fast, takes the job's lock, plans the inputs, starts the servers' part, runs the phases
map -> sort -> reduce (after map: failed files and the bad-record limit), commits the output
only when every server succeeded, and returns a `JobResult` with the servers' counters merged.
A failure anywhere aborts the run on every server and leaves the previous output as it was.

An executor only says how a phase reaches its servers and is awaited: `plan`, `start`,
`run_phase`, `commit`, `abort` and `finish` (local.py: worker processes through pipes;
cluster.py: the running cluster through each location's Redis).
"""
from __future__ import annotations

import logging
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any

from cluster import counters
from cluster.config import ClusterConfig
from cluster.counters import Merge
from cluster.engine import functions
from cluster.engine.inputs import HoldState
from cluster.engine.mapper import load_auxiliary_data, new_run_id
from cluster.engine.reading import input_problems
from cluster.engine.reducer import commit_output, discard_run
from cluster.engine.store import StoreOptions
from cluster.engine.store import size as store_size
from cluster.engine.store_output import StoreOutput
from cluster.engine.task import Phase
from cluster.exceptions import JobFailed
from cluster.job_spec import JobType, validate_job
from cluster.layout import JobLayout
from cluster.timing import Deadline

log = logging.getLogger(__name__)

Progress = Callable[[str, dict[str, dict]], None]  # (phase, {server: that phase's counters})
Plan = dict[str, dict[str, Any]]  # server -> {"files": [...], "bytes": n, "previous_output": [...]}

SUM_KEYS = counters.names(Merge.SUM)
LIST_KEYS = counters.names(Merge.LIST)
BY_KEY_KEYS = counters.names(Merge.SUM_BY_KEY)
PER_SERVER_KEYS = counters.names(Merge.PER_SERVER)


@dataclass
class JobResult:
    """What a finished run reports: where the output is and what was counted."""

    job_name: str
    run_id: str
    output_dir: str
    counters: dict[str, Any]
    per_server: dict[str, dict[str, dict]] = field(default_factory=dict)


def merge_counters(per_server: dict[str, dict[str, dict]]) -> dict[str, Any]:
    """The servers' counters merged into the job's, each as cluster/counters.py says: sums, lists one
    after another, counts by key, and per-server values (their largest over the phases)."""
    total: dict[str, Any] = {k: 0 for k in SUM_KEYS}
    total.update({k: [] for k in LIST_KEYS})
    total.update({k: {} for k in (*BY_KEY_KEYS, *PER_SERVER_KEYS)})
    total["seconds"] = {}
    for server, phases in per_server.items():
        for c in phases.values():
            for k in SUM_KEYS:
                if k in c:
                    total[k] += c[k]
            for k in LIST_KEYS:
                total[k] += c.get(k, [])
            for k in BY_KEY_KEYS:
                for key, n in c.get(k, {}).items():
                    total[k][key] = total[k].get(key, 0) + n
            for k in PER_SERVER_KEYS:
                if k in c:
                    total[k][server] = max(total[k].get(server, 0), c[k])
    return total


def check_map_phase(job: dict, per_server: dict[str, dict[str, dict]]) -> None:
    """After the map phase: a failed file, or more bad records than the job's max_bad_fraction, fails
    the job before anything is reduced or published."""
    problem = input_problems(merge_counters({s: {"map": p.get("map", {})} for s, p in per_server.items()}),
                             job.get("max_bad_fraction"))
    if problem:
        raise JobFailed(job["job_name"], problem, phase=Phase.MAP.value)


def publish_output(layout: JobLayout, job: dict, run_id: str, mapped: dict[str, list[str]],
                   store: StoreOptions | None = None, on_store: list[str] | None = None) -> str:
    """Publish a run's output (the local and the Dask executors), staged on this machine or already on
    the store (`on_store`: the reduce attempts' URLs that count); return where it is. With hold_state,
    what each task mapped is recorded, and counts from the moment the output is published."""
    if job.get("output_url"):
        published = StoreOutput(job["output_url"], store)
        staging = layout.staging_dir(run_id)
        local = [os.path.join(staging, f) for f in os.listdir(staging)] if os.path.isdir(staging) else []
        files = published.upload(run_id, local) + published.adopt(run_id, on_store or [])
        record = ({f: store_size(f, store) for fs in mapped.values() for f in fs}
                  if job.get("hold_state") else {})
        prefix = published.commit(run_id, files, record, replace=_replaces(job))
        discard_run(layout, run_id)  # the local staging copy
        return prefix
    hold = HoldState(layout, store)
    if job.get("hold_state"):
        for task, files in mapped.items():
            hold.record(run_id, task, files)
    output_dir = commit_output(layout, run_id, replace=_replaces(job))
    hold.commit(run_id)
    return output_dir


def _replaces(job: dict) -> bool:
    """Whether a run's output takes the place of the previous one (else it is added beside it)."""
    return bool(job.get("delete_job_data") or job.get("merge_previous_output"))


def discard_output(layout: JobLayout, job: dict, run_id: str, store: StoreOptions | None = None) -> None:
    """Drop what a failed run staged (on this machine, and on the store); the previous output stays."""
    discard_run(layout, run_id)
    HoldState(layout).discard(run_id)
    if job.get("output_url"):
        StoreOutput(job["output_url"], store).discard(run_id)


def failure_from_report(name: str, report: dict) -> JobFailed:
    """The master's exception for a server's error report (a user function's error already says where)."""
    message = report["message"]
    if report["type"] != "UserFunctionError":
        message = f"{report['type']}: {message}\n{report['traceback']}"
    err = JobFailed(name, message, server=report["server"], phase=report["phase"])
    err.report = report
    return err


class Executor(ABC):
    """Runs mapreduce jobs to the end; a subclass says where the servers are and how a phase reaches them."""

    #: how messages name this executor ("the local executor", "the cluster")
    description = "this executor"

    def __init__(self, config: ClusterConfig, on_progress: Progress | None = None) -> None:
        self.config = config
        self.on_progress = on_progress
        self.deadline = Deadline(None)
        self.retried: list[dict[str, Any]] = []  # a run's tasks that ran again: server, phase, attempt, reason

    @property
    @abstractmethod
    def server_ids(self) -> list[str]:
        """Every server that takes part in a run (the plan names what each maps)."""

    def run(self, job: dict, timeout_minutes: float | None = None,
            cancelled: Callable[[], str | None] | None = None) -> JobResult:
        """Run one mapreduce job to the end; raise JobFailed (or another ClusterError) if it fails, and
        JobTimedOut (the run dropped everywhere, nothing published) past `timeout_minutes`, JobCancelled
        once `cancelled()` says who cancelled it (asked about once a second while the run waits)."""
        job = validate_job(job)
        name = job["job_name"]
        if job["job_type"] != JobType.MAPREDUCE.value:
            raise JobFailed(name, f"{self.description} runs mapreduce jobs, not {job['job_type']} jobs (those run "
                            "through the Runner)")
        functions.load_job_functions(self.config.projects_dir, job)  # fail fast, before any server
        self.check(job)
        self.deadline = Deadline(timeout_minutes, cancelled)
        with self.lock(job), self.session():
            return self._run(job)

    def _run(self, job: dict) -> JobResult:
        plan, notes = self.plan(job)
        for path in notes.get("locked_files_skipped", []):
            log.warning("skipping %s: it is locked (still being written); it will be mapped next time", path)
        run_id = new_run_id()
        self.retried = []
        per_server: dict[str, dict[str, dict]] = {s: {} for s in self.server_ids}
        seconds: dict[str, float] = {}
        try:
            self.start(job, run_id, plan, per_server)
            for phase in Phase:
                started = time.monotonic()
                self.run_phase(job, run_id, phase, per_server)
                seconds[phase.value] = round(time.monotonic() - started, 3)
                if phase is Phase.MAP:
                    check_map_phase(job, per_server)
            output_dir = self.commit(job, run_id, plan, per_server)
        except BaseException:
            self.abort(job, run_id)
            raise
        finally:
            self.finish(job, run_id)
        counters = merge_counters(per_server)
        counters.update(notes)
        counters["seconds"] = seconds
        counters["retried_tasks"] = list(self.retried)
        return JobResult(job["job_name"], run_id, output_dir, counters, per_server)

    def report_progress(self, phase: str, per_server: dict[str, dict[str, dict]]) -> None:
        """Hand the phase's counters so far to the progress callback, if there is one."""
        if self.on_progress is not None:
            self.on_progress(phase, {s: per_server[s].get(phase, {}) for s in per_server})

    # --- what an executor says ---------------------------------------------------------------
    def check(self, job: dict) -> None:  # noqa: B027 - an optional hook
        """Checks that need no lock (the local executor: auxiliary data); raise to refuse the job."""

    @abstractmethod
    def lock(self, job: dict) -> AbstractContextManager:
        """Hold the job's lock for the run (two runs of one job never overlap)."""

    @contextmanager
    def session(self) -> Iterator[None]:
        """What the run holds open (the cluster: its Redis connections)."""
        yield

    @abstractmethod
    def plan(self, job: dict) -> tuple[Plan, dict[str, Any]]:
        """Which server maps which files, and notes for the counters (locked files, files already mapped)."""

    @abstractmethod
    def start(self, job: dict, run_id: str, plan: Plan, per_server: dict[str, dict[str, dict]]) -> None:
        """Give every server its part of the run."""

    @abstractmethod
    def run_phase(self, job: dict, run_id: str, phase: Phase, per_server: dict[str, dict[str, dict]]) -> None:
        """Send one phase to every server and wait until each reported it done (its counters into
        `per_server`); raise on the first failure, a dead server, or the deadline."""

    @abstractmethod
    def commit(self, job: dict, run_id: str, plan: Plan, per_server: dict[str, dict[str, dict]]) -> str:
        """Publish the run's output (and its hold_state record) everywhere; return the output folder."""

    @abstractmethod
    def abort(self, job: dict, run_id: str) -> None:
        """Drop the run everywhere and remove what it left; the previous output stays."""

    def finish(self, job: dict, run_id: str) -> None:  # noqa: B027 - an optional hook
        """Release what the run used, whether it succeeded or not."""


class ThisMachineExecutor(Executor):
    """An executor whose job folders (lock, staging, published output, hold_state) are this machine's
    base_dir, and whose auxiliary data is read here (the local and the Dask executors)."""

    def _layout(self, job: dict) -> JobLayout:
        return JobLayout(self.config.base_dir, self.config.auxiliary_dir, job["job_name"])

    def check(self, job: dict) -> None:
        layout = self._layout(job)
        for aux in ("auxiliary_data_name_mapper", "auxiliary_data_name_reducer"):
            load_auxiliary_data(layout, job.get(aux))

    def lock(self, job: dict) -> AbstractContextManager:
        return self._layout(job).lock()
