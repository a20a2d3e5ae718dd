"""The Runner: works through the Scheduler's queue, round after round, and records every run.

A round runs every due job once, highest `job_priority` first; the queue is read again
before each pick, so a job submitted during a round is seen at once. A job without a
schedule is due every round; a scheduled one when its next UTC time has passed since its
last run. `force_run` makes a job due now whatever its schedule, and lets a job submitted
again with it run again in the same round; the Runner clears it after the forced run.

A failed or timed-out run is retried on the job's policy (`retries`, `retry_delay_minutes`:
exponential backoff with jitter), each try in the history. After the last try the job's whole
`group_name` leaves the queue (later steps of a pipeline must not run on missing data); a job
without a group waits for its next scheduled time, or, unscheduled, stays queued as failed
(held) until `force_run` or a new submission. An unscheduled job that succeeded waits
`min_interval_minutes` before its next run. A run refused because the cluster runs another
job is no try: the job is tried again BUSY_RETRY_SECONDS later. A successful `run_once` job
leaves the queue.

Durability: one Runner per queue (an flock on `runner.lock`). A run is recorded before it
starts; a Runner that restarts after being killed stops what the dead run left behind (a
script's processes, a mapreduce run's servers), marks the run interrupted and runs the job
again. SIGTERM (or a first Ctrl-C) finishes the current job, then exits.
"""
from __future__ import annotations

import datetime as dt
import logging
import os
import random
import signal
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from cluster import defaults
from cluster.config import ClusterConfig
from cluster.exceptions import ClusterError, RunnerBusy
from cluster.job_spec import JobType
from cluster.layout import take_flock
from cluster.scheduling.schedule import is_due, retry_delay, utc_now
from cluster.scheduling.store import QueuedJob, RunStatus, Scheduler, outcome_of, run_is_orphaned

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    """What one run of a job came to."""

    job_name: str
    run_id: int
    status: RunStatus
    seconds: float
    error: str | None = None
    removed: list[str] = field(default_factory=list)


class Runner:
    """Runs the queue of one master: mapreduce jobs on the cluster (or, with `local`, on this
    machine's worker processes), script jobs and file transfers."""

    def __init__(self, config: ClusterConfig, *, scheduler: Scheduler | None = None, local: bool = False,
                 servers: int | None = None, dask: str | None = None, clock: Callable[[], dt.datetime] = utc_now,
                 echo: Callable[[str], None] | None = None, rng: random.Random | None = None):
        from cluster.api import executor_kind

        self.config = config
        self.scheduler = scheduler or Scheduler(config)
        self.executor = executor_kind(config, local=local, dask=dask)  # where mapreduce jobs run
        self.dask = dask
        self.servers = servers
        self.clock = clock
        self.echo = echo or log.info
        self.rng = rng or random.Random()
        self.stopping = False  # a plain flag: signal handlers set it, the loop reads it
        self._interrupts = 0

    # --- the loop ---------------------------------------------------------------------------
    def serve(self, once: bool = False) -> list[Outcome]:
        """Run rounds until stopped (SIGTERM, SIGHUP, Ctrl-C, `request_stop`); with `once`, one round.
        Return the last round's outcomes."""
        outcomes: list[Outcome] = []
        with self.exclusive():
            self.recover()
            while not self.stopping:
                try:
                    outcomes = self.run_round()
                except sqlite3.Error as exc:  # a locked or full queue database: say so, wait, try again
                    log.error("the queue in %s cannot be used (%s); trying again in %ss", self.scheduler.path,
                              exc, defaults.RUNNER_IDLE_SECONDS * 5)
                    outcomes = []
                    self._idle(defaults.RUNNER_IDLE_SECONDS * 5)
                if once:
                    break
                if not any(o.status is RunStatus.SUCCEEDED for o in outcomes):
                    self._idle(defaults.RUNNER_IDLE_SECONDS)
        self.echo("the Runner stopped")
        return outcomes

    def _idle(self, seconds: float) -> None:
        """Wait before looking at the queue again; a stop request ends the wait within 0.1 s."""
        deadline = time.monotonic() + seconds
        while not self.stopping and time.monotonic() < deadline:
            time.sleep(0.1)

    def request_stop(self) -> None:
        """Finish the current job, then leave the loop (a flag: safe to call from a signal handler)."""
        self.stopping = True

    def install_signal_handlers(self) -> None:
        """SIGTERM and SIGHUP (the terminal or screen window closed): finish the current job and exit.
        Ctrl-C: the same; a second Ctrl-C stops at once (the run is recorded as interrupted and its
        job stays queued)."""
        def say(text: str) -> None:  # os.write: no buffered stream's lock, which the main thread may hold
            os.write(sys.stdout.fileno(), f"{utc_now():%Y-%m-%d %H:%M:%S} {text}\n".encode())

        def on_stop(signum: int, frame: Any) -> None:
            self.request_stop()
            say(f"{signal.Signals(signum).name}: finishing the current job, then stopping")

        def on_int(signum: int, frame: Any) -> None:
            self._interrupts += 1
            if self._interrupts > 1:
                raise KeyboardInterrupt
            self.request_stop()
            say("Ctrl-C: finishing the current job, then stopping (press it again to stop at once)")

        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGHUP, on_stop)
        signal.signal(signal.SIGINT, on_int)

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the queue's Runner lock (released by the kernel however this process ends)."""
        folder = os.path.dirname(self.scheduler.runner_lock_path)
        fh, holder = take_flock(self.scheduler.runner_lock_path, f" since {utc_now():%Y-%m-%d %H:%M:%S} UTC")
        if fh is None:
            raise RunnerBusy(f"another Runner already works the queue in {folder} ({holder}); "
                             "stop it first, or give this one another local_working_dir")
        try:
            yield
        finally:
            fh.close()

    # --- rounds -----------------------------------------------------------------------------
    def run_round(self) -> list[Outcome]:
        """Run every due job once (forced ones again if submitted again); return what happened."""
        ran: dict[str, int] = {}
        outcomes: list[Outcome] = []
        while not self.stopping:
            entry = self.next_job(ran)
            if entry is None:
                break
            ran[entry.name] = entry.seq
            outcomes.append(self.run_job(entry))
        return outcomes

    def next_job(self, ran: dict[str, int]) -> QueuedJob | None:
        """The highest-priority due job that has not run in this round (`ran`: name -> submission)."""
        now = self.clock()
        for entry in self.scheduler.queued():
            forced = bool(entry.job.get("force_run"))
            if entry.name in ran and not (forced and entry.seq != ran[entry.name]):
                continue
            if forced or self.is_due(entry, now):
                return entry
        return None

    @staticmethod
    def is_due(entry: QueuedJob, now: dt.datetime) -> bool:
        """Whether a queued job (not forced) runs now: never while held; a retry (or a refused run) at its
        time whatever the schedule; else by its schedule, an unscheduled job min_interval_minutes
        after its last run."""
        if entry.held:
            return False
        if entry.retry_at is not None:
            return now >= entry.retry_at
        if not is_due(entry.job, entry.reference, now):
            return False
        gap = float(entry.job.get("min_interval_minutes") or 0)
        if entry.job.get("schedule_frequency") is None and gap and entry.last_end is not None:
            return now >= entry.last_end + dt.timedelta(minutes=gap)
        return True

    # --- one run ----------------------------------------------------------------------------
    def run_job(self, entry: QueuedJob) -> Outcome:
        """Run one queued job, record it, and apply run_once / force_run / group removal."""
        job, name = entry.job, entry.name
        run_id = self.scheduler.record_start(job, runner_pid=os.getpid(), started=self.clock())
        self.echo(f"run {run_id}: job {name} ({job['job_type']}) started")
        started = time.monotonic()
        status, phase, error, counters = RunStatus.SUCCEEDED, None, None, None
        try:
            counters = self._execute(job, run_id)
        except KeyboardInterrupt:
            self.scheduler.record_end(run_id, RunStatus.INTERRUPTED, ended=self.clock(),
                                      note="stopped by a second Ctrl-C; the job stays queued and runs again")
            raise
        except Exception as exc:  # recorded (a bug in our code or a library with its traceback); the Runner goes on
            status, phase, error = outcome_of(exc)
        seconds = time.monotonic() - started
        timeout = job.get("timeout_minutes")
        if status is RunStatus.FAILED and timeout is not None and seconds > 60 * timeout:
            status = RunStatus.TIMED_OUT  # e.g. several locations timed out at once
        phase = phase or self._default_phase(job)
        note, removed = self._after_run(entry, status)
        self.scheduler.record_end(run_id, status, phase=phase, exception=error, counters=counters, note=note,
                                  ended=self.clock())
        if status is RunStatus.SUCCEEDED:
            self.echo(f"run {run_id}: job {name} succeeded in {seconds:.1f}s" + (f" ({note})" if note else ""))
        else:
            self.echo(f"run {run_id}: job {name} {status.value.replace('_', ' ')} after {seconds:.1f}s "
                      f"(phase {phase}): {error.splitlines()[0] if error else ''}" +
                      (f"\n  {note}" if note else ""))
        return Outcome(name, run_id, status, seconds, error, removed)

    def _execute(self, job: dict[str, Any], run_id: int) -> dict[str, Any]:
        job_type = JobType(job["job_type"])
        timeout = job.get("timeout_minutes")

        def cancelled() -> str | None:
            return self.scheduler.cancel_reason(run_id)
        if job_type is JobType.MAPREDUCE:
            progress = self._progress_recorder(run_id)
            from cluster.api import make_executor

            options = {"address": self.dask} if self.dask else {}
            executor = make_executor(self.executor, self.config, on_progress=progress,
                                     servers=self.servers if self.executor == "local" else None, **options)
            result = executor.run(job, timeout_minutes=timeout, cancelled=cancelled)
            return {"output_dir": result.output_dir, "mapreduce_run": result.run_id, **result.counters}
        if job_type is JobType.SCRIPT:
            from cluster.scheduling.script_runs import run_mark, run_script_job

            return run_script_job(self.config, job, run_id, mark=run_mark(self.scheduler.path, run_id),
                                  on_started=lambda pgid, log: self.scheduler.record_process_group(run_id, pgid, log),
                                  cancelled=cancelled)
        from cluster.scheduling.file_transfer import FileTransfer

        return FileTransfer(self.config, timeout_minutes=timeout, cancelled=cancelled).run(job)

    def _progress_recorder(self, run_id: int) -> Callable[[str, dict[str, dict]], None]:
        """An on_progress callback that keeps a run's per-server counters in the history (at most
        every RUN_PROGRESS_EVERY_SECONDS, and at each new phase) for the dashboard."""
        last: dict[str, Any] = {"at": 0.0, "phase": None}  # when the last was recorded (float), its phase

        def record(phase: str, per_server: dict[str, dict]) -> None:
            now = time.monotonic()
            if phase == last["phase"] and now - last["at"] < defaults.RUN_PROGRESS_EVERY_SECONDS:
                return
            last.update(at=now, phase=phase)
            try:
                self.scheduler.record_progress(run_id, phase, per_server)
            except sqlite3.Error as exc:  # progress is for watching: the run goes on without it
                log.warning("run %s: cannot record its progress in %s: %s", run_id, self.scheduler.path, exc)
        return record

    @staticmethod
    def _default_phase(job: dict[str, Any]) -> str | None:
        if job["job_type"] == JobType.SCRIPT.value:
            return "script"
        if job["job_type"] == JobType.FILE_TRANSFER.value:
            return job.get("transfer_type")
        return None

    def _after_run(self, entry: QueuedJob, status: RunStatus) -> tuple[str | None, list[str]]:
        """What the queue does after a run (retry, hold, group removal, run_once); returns the history
        note and the jobs removed."""
        job, name = entry.job, entry.name
        if job.get("force_run"):  # a force is for one run, whatever its end
            self.scheduler.clear_force_run(name, entry.seq)
        now = self.clock()
        if status is RunStatus.SUCCEEDED:
            self.scheduler.set_retry_state(name, entry.seq, failures=0, retry_at=None, held=None)
            if job.get("run_once"):
                gone = self.scheduler.delete_if_unchanged(name, entry.seq)
                return ("run_once: left the queue" if gone else None), []
            return None, []
        if status is RunStatus.REFUSED:
            at = now + dt.timedelta(seconds=defaults.BUSY_RETRY_SECONDS)
            self.scheduler.set_retry_state(name, entry.seq, failures=entry.failures, retry_at=at, held=entry.held)
            return f"not a try: it runs when the cluster is free (next look at {at:%H:%M:%S} UTC)", []
        scheduled = job.get("schedule_frequency") is not None
        if status is RunStatus.CANCELLED:  # a person's word: no retry, no group removal
            self.scheduler.set_retry_state(name, entry.seq, failures=0, retry_at=None,
                                           held=None if scheduled else "it was cancelled")
            return ("cancelled; it runs again at its next scheduled time" if scheduled else
                    f"cancelled; it stays queued until `mapreduce force-run {name}` or a new submission"), []
        failures, tries = entry.failures + 1, int(job.get("retries") or 0) + 1
        if failures < tries:
            at = now + retry_delay(job, failures, self.rng)
            self.scheduler.set_retry_state(name, entry.seq, failures=failures, retry_at=at, held=None)
            return f"try {failures} of {tries} failed; the next at {at:%Y-%m-%d %H:%M:%S} UTC", []
        held = None if scheduled else f"failed {tries} time(s) in a row"
        self.scheduler.set_retry_state(name, entry.seq, failures=0 if scheduled else failures, retry_at=None,
                                       held=held)
        ended = f"try {failures} of {tries} failed" if tries > 1 else "it failed"
        group = job.get("group_name")
        if not group:
            if scheduled:
                return f"{ended}; it runs again at its next scheduled time", []
            return (f"{ended}; it stays queued, failed, until `mapreduce force-run {name}` or a new submission"), []
        removed = self.scheduler.delete_group(group)
        return (f"{ended}; group {group!r} left the queue: {', '.join(removed) or '(already empty)'}; fix the cause, "
                "then submit the group's jobs again"), removed

    # --- after a crash ---------------------------------------------------------------------
    def recover(self) -> list[int]:
        """Close the runs a dead Runner left open: stop what they left running, mark them interrupted.

        Their jobs stay queued (a run_once job leaves only after success), so the next round runs
        them again; their schedules ignore interrupted runs."""
        from cluster.scheduling.script_runs import run_mark, stop_leftover_run

        closed = []
        for run in self.scheduler.unfinished_runs():
            if run.get("source") not in (None, "runner") and not run_is_orphaned(run, os.getpid()):
                continue  # a `mapreduce run` still running beside this Runner
            did = [f"the Runner (pid {run['runner_pid']}) ended during this run"]
            if run["job_type"] == JobType.SCRIPT.value:
                pids = stop_leftover_run(run_mark(self.scheduler.path, run["id"]))
                did.append(f"stopped its leftover process(es) {', '.join(map(str, pids))}" if pids
                           else "none of its processes was left")
            if run["job_type"] == JobType.MAPREDUCE.value and self.executor == "cluster":
                from cluster.master.manager import ClusterManager

                try:
                    dropped = ClusterManager(self.config).drop_runs_of(run["job_name"])
                    did.append(f"the servers dropped its run(s) {', '.join(dropped)}" if dropped
                               else "no server held it any more")
                except ClusterError as exc:  # a cluster that is down holds nothing; say so in the history
                    did.append(f"could not ask the servers to drop it ({exc})")
            did.append("the job stays queued and runs again")
            self.scheduler.record_end(run["id"], RunStatus.INTERRUPTED, ended=self.clock(), note="; ".join(did))
            self.echo(f"run {run['id']}: job {run['job_name']} was interrupted: {'; '.join(did)}")
            closed.append(run["id"])
        return closed


