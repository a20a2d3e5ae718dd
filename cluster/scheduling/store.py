"""The Scheduler: the job queue and the run history, in SQLite in `local_working_dir`.

Every write is one `BEGIN IMMEDIATE` transaction, so several submitters and a Runner
can use the queue at once (WAL mode: readers never wait for a writer). Jobs are stored
as the JSON of their validated dict; a job with the same `job_name` replaces the old one.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import os
import sqlite3
import statistics
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from cluster.config import ClusterConfig
from cluster.engine.partitions import filter_problems
from cluster.exceptions import ClusterBusy, ClusterError, JobCancelled, JobSpecError, JobTimedOut
from cluster.job_spec import (  # noqa: F401 - the templates are part of the Scheduler's API
    get_file_transfer_template,
    get_mapreduce_job_template,
    get_script_template,
    validate_job,
)
from cluster.scheduling.schedule import utc_now

log = logging.getLogger(__name__)
RUNTIMES_KEPT = 50
# a job's schedule reference: the start of its latest run that did not end interrupted or refused
_LAST_START = ("SELECT started_at FROM runs WHERE job_name = {name} AND status NOT IN (?, ?) "
               "ORDER BY id DESC LIMIT 1")
_LAST_END = ("SELECT ended_at FROM runs WHERE job_name = {name} AND status NOT IN (?, ?) AND ended_at IS NOT NULL "
             "ORDER BY id DESC LIMIT 1")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    name TEXT PRIMARY KEY,
    job TEXT NOT NULL,
    priority REAL NOT NULL,
    group_name TEXT,
    submitted_at TEXT NOT NULL,
    seq INTEGER NOT NULL,
    failures INTEGER NOT NULL DEFAULT 0,
    retry_at TEXT,
    held TEXT
);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_name TEXT NOT NULL,
    job_type TEXT NOT NULL,
    started_at TEXT NOT NULL,
    ended_at TEXT,
    status TEXT NOT NULL,
    phase TEXT,
    exception TEXT,
    counters TEXT,
    runner_pid INTEGER,
    process_group INTEGER,
    note TEXT,
    log_path TEXT,
    progress TEXT,
    source TEXT,
    cancel_requested TEXT
);
CREATE INDEX IF NOT EXISTS runs_by_job ON runs (job_name, id);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


@dataclass(frozen=True)
class QueuedJob:
    """A job on the queue, with its submission number (a resubmission gets a new one)."""

    job: dict[str, Any]
    seq: int
    submitted_at: dt.datetime
    last_start: dt.datetime | None = None  # of its latest run that did not end interrupted
    last_end: dt.datetime | None = None
    failures: int = 0                     # failed runs in a row, since its last success or submission
    retry_at: dt.datetime | None = None   # a retry (or a refused run) waits until then, whatever the schedule
    held: str | None = None               # why it runs no more until force_run or a new submission

    @property
    def name(self) -> str:
        return self.job["job_name"]

    @property
    def reference(self) -> dt.datetime:
        """What its schedule counts from: its last run's start, else its submission."""
        return self.last_start or self.submitted_at


class RunStatus(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    INTERRUPTED = "interrupted"  # the Runner died during the run; the job stays queued and runs again
    REFUSED = "refused"          # the cluster ran another job: not an attempt; tried again shortly
    CANCELLED = "cancelled"      # stopped by `mapreduce cancel` or the dashboard's Stop button


NOT_ATTEMPTS = (RunStatus.INTERRUPTED.value, RunStatus.REFUSED.value)  # runs a schedule does not count


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).isoformat(timespec="milliseconds")


def parse_time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


def outcome_of(exc: BaseException) -> tuple[RunStatus, str | None, str]:
    """How a run that raised `exc` is recorded: (status, phase, error). A refusal by a busy cluster
    and a cancel are not failures; an error of our own code or a library keeps its traceback."""
    if isinstance(exc, ClusterBusy):
        return RunStatus.REFUSED, None, str(exc)
    if isinstance(exc, JobCancelled):
        return RunStatus.CANCELLED, exc.phase, str(exc)
    if isinstance(exc, ClusterError):
        status = RunStatus.TIMED_OUT if isinstance(exc, JobTimedOut) else RunStatus.FAILED
        return status, getattr(exc, "phase", None), str(exc)
    return RunStatus.FAILED, None, "".join(traceback.format_exception(exc))


def run_is_orphaned(run: dict[str, Any], runner_pid: int | None) -> bool:
    """Whether a run still marked running has lost the process that runs it: a Runner's run once another
    Runner (`runner_pid`, or none) holds the queue; a `mapreduce run` or job script's once its process
    has ended."""
    if run.get("source") in (None, "runner"):
        return run.get("runner_pid") is not None and run["runner_pid"] != runner_pid
    pid = run.get("runner_pid")
    if not pid:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


@dataclass
class RecordedRun:
    """A run in the history while it runs: its id, its cancel check, the counters to record at its end."""

    run_id: int | None
    cancelled: Callable[[], str | None] | None
    counters: dict[str, Any] = field(default_factory=dict)


def _time_or_none(text: str | None) -> dt.datetime | None:
    return parse_time(text) if text else None


def _run_row(row: sqlite3.Row) -> dict[str, Any]:
    """A runs row as a dict, its JSON columns parsed."""
    out = dict(row)
    for key in ("counters", "progress"):
        out[key] = json.loads(out[key]) if out.get(key) else None
    return out


class Scheduler:
    """The queue and history of one master (one `local_working_dir`)."""

    def __init__(self, config: ClusterConfig | None = None, path: str | None = None):
        if path is None:
            if config is None:
                raise ValueError("Scheduler needs a config or a database path")
            path = os.path.join(config.local_working_dir, "queue.sqlite")
        self.path = path
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        for wait in (0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 0):  # two processes opening a new queue at once
            try:
                self._setup()
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or not wait:
                    raise
                time.sleep(wait)

    def _setup(self) -> None:
        """The schema, and columns a queue made by an older version lacks (idempotent)."""
        with self._connection() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)
            columns = {r[1] for r in db.execute("PRAGMA table_info(runs)")}
            for column in ("log_path", "progress", "source", "cancel_requested"):  # a queue made before these
                if column not in columns:
                    db.execute(f"ALTER TABLE runs ADD COLUMN {column} TEXT")
            job_columns = {r[1] for r in db.execute("PRAGMA table_info(jobs)")}
            for column, kind in (("failures", "INTEGER NOT NULL DEFAULT 0"), ("retry_at", "TEXT"),
                                 ("held", "TEXT")):  # a queue made before retries
                if column not in job_columns:
                    db.execute(f"ALTER TABLE jobs ADD COLUMN {column} {kind}")

    @property
    def runner_lock_path(self) -> str:
        """The flock a Runner of this queue holds (one Runner per queue)."""
        return os.path.join(os.path.dirname(os.path.abspath(self.path)), "runner.lock")

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        db.row_factory = sqlite3.Row
        try:
            yield db
        finally:
            db.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One transaction that takes the write lock at once (no upgrade deadlocks between writers)."""
        with self._connection() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    # --- the queue ------------------------------------------------------------------------
    def submit_job(self, job: dict[str, Any]) -> bool:
        """Queue a validated job; return True when it replaced a queued job of the same name."""
        job = validate_job(job)
        problems = filter_problems(job["input_filter"]) if job.get("input_filter") else []
        if problems:  # checked here, where the queue takes it, not hours later in a run
            raise JobSpecError(problems, job.get("job_name"))
        try:
            text = json.dumps(job)
        except (TypeError, ValueError) as exc:
            raise JobSpecError([f"the job is not JSON-serializable: {exc}"], job.get("job_name")) from None
        with self._write() as db:
            replaced = db.execute("DELETE FROM jobs WHERE name = ?", (job["job_name"],)).rowcount > 0
            # a submission number never comes back (not even for the job that held the highest):
            # "unless it was submitted again meanwhile" checks depend on it
            seq = self._next_seq(db)
            row = (job["job_name"], text, float(job.get("job_priority") or 0), job.get("group_name"),
                   _iso(utc_now()), seq)
            db.execute("INSERT INTO jobs (name, job, priority, group_name, submitted_at, seq) "
                       "VALUES (?, ?, ?, ?, ?, ?)", row)
        return replaced

    @staticmethod
    def _next_seq(db: sqlite3.Connection) -> int:
        """A new submission number (inside a write transaction)."""
        return db.execute("INSERT INTO counters (name, value) VALUES ('submissions', "
                          "(SELECT COALESCE(MAX(seq), 0) + 1 FROM jobs)) ON CONFLICT (name) DO UPDATE "
                          "SET value = value + 1 RETURNING value").fetchone()[0]

    def delete_job(self, name: str) -> bool:
        """Take a job off the queue; return whether it was there."""
        with self._write() as db:
            return db.execute("DELETE FROM jobs WHERE name = ?", (name,)).rowcount > 0

    def delete_group(self, group_name: str) -> list[str]:
        """Take every job of a group off the queue; return their names."""
        with self._write() as db:
            names = [r[0] for r in db.execute("SELECT name FROM jobs WHERE group_name = ? ORDER BY seq",
                                              (group_name,))]
            db.execute("DELETE FROM jobs WHERE group_name = ?", (group_name,))
        return names

    def list_jobs(self) -> list[dict[str, Any]]:
        """The queued jobs, highest job_priority first (then in submission order)."""
        with self._connection() as db:
            rows = db.execute("SELECT job FROM jobs ORDER BY priority DESC, seq").fetchall()
        return [json.loads(r[0]) for r in rows]

    def queued(self) -> list[QueuedJob]:
        """The queue as the Runner reads it: jobs in priority order with their submission number."""
        with self._connection() as db:
            rows = db.execute(f"SELECT job, seq, submitted_at, ({_LAST_START.format(name='jobs.name')}), "
                              f"({_LAST_END.format(name='jobs.name')}), failures, retry_at, held FROM jobs "
                              "ORDER BY priority DESC, seq", (*NOT_ATTEMPTS, *NOT_ATTEMPTS)).fetchall()
        return [QueuedJob(json.loads(r[0]), r[1], parse_time(r[2]), _time_or_none(r[3]), _time_or_none(r[4]),
                          r[5], _time_or_none(r[6]), r[7]) for r in rows]

    def set_retry_state(self, name: str, seq: int, *, failures: int, retry_at: dt.datetime | None,
                        held: str | None) -> bool:
        """After a run: its failures in a row, when it may run again, why it is held; unless the job was
        submitted again (or forced) meanwhile, which starts it afresh."""
        with self._write() as db:
            return db.execute("UPDATE jobs SET failures = ?, retry_at = ?, held = ? WHERE name = ? AND seq = ?",
                              (failures, _iso(retry_at) if retry_at else None, held, name, seq)).rowcount > 0

    def retry_states(self) -> dict[str, dict[str, Any]]:
        """Each queued job's retry state: {"failures", "retry_at", "held"} (for `queue` and the dashboard)."""
        with self._connection() as db:
            rows = db.execute("SELECT name, failures, retry_at, held FROM jobs").fetchall()
        return {r[0]: {"failures": r[1], "retry_at": r[2], "held": r[3]} for r in rows}

    def force_run(self, name: str) -> bool:
        """Make a queued job due at once, whatever its schedule; return whether it was queued.

        Like a submission it takes a new submission number, so a force asked for while the job
        runs is not cleared by the end of that run: the job runs again. One transaction."""
        with self._write() as db:
            if db.execute("SELECT 1 FROM jobs WHERE name = ?", (name,)).fetchone() is None:
                return False
            seq = self._next_seq(db)
            db.execute("UPDATE jobs SET job = json_set(job, '$.force_run', json('true')), seq = ?, failures = 0, "
                       "retry_at = NULL, held = NULL WHERE name = ?", (seq, name))
        return True

    def clear_force_run(self, name: str, seq: int) -> bool:
        """A forced run happened: clear force_run, unless the job was submitted again meanwhile."""
        with self._write() as db:
            row = db.execute("SELECT job FROM jobs WHERE name = ? AND seq = ?", (name, seq)).fetchone()
            if row is None:
                return False
            job = json.loads(row[0])
            job["force_run"] = False
            db.execute("UPDATE jobs SET job = ? WHERE name = ? AND seq = ?", (json.dumps(job), name, seq))
        return True

    def delete_if_unchanged(self, name: str, seq: int) -> bool:
        """Take a run_once job off the queue after its success, unless it was submitted again meanwhile."""
        with self._write() as db:
            return db.execute("DELETE FROM jobs WHERE name = ? AND seq = ?", (name, seq)).rowcount > 0

    def get_job(self, name: str) -> dict[str, Any] | None:
        with self._connection() as db:
            row = db.execute("SELECT job FROM jobs WHERE name = ?", (name,)).fetchone()
        return json.loads(row[0]) if row else None

    def submitted_at(self, name: str) -> dt.datetime | None:
        with self._connection() as db:
            row = db.execute("SELECT submitted_at FROM jobs WHERE name = ?", (name,)).fetchone()
        return parse_time(row[0]) if row else None

    # --- the history ----------------------------------------------------------------------
    def record_start(self, job: dict[str, Any], *, runner_pid: int | None = None,
                     started: dt.datetime | None = None, source: str = "runner") -> int:
        """A run begins; return its id. `source`: who started it (the Runner, `mapreduce run`, a job
        script); `runner_pid`: the process that runs it (a later Runner closes runs whose process died)."""
        with self._write() as db:
            run_id = db.execute(
                "INSERT INTO runs (job_name, job_type, started_at, status, runner_pid, source) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (job["job_name"], job["job_type"], _iso(started or utc_now()), RunStatus.RUNNING.value,
                 runner_pid, source)).lastrowid
            assert run_id is not None  # an INSERT sets it
            return run_id

    @contextmanager
    def recorded_run(self, job: dict[str, Any], source: str) -> Iterator[RecordedRun]:
        """Record a run started outside the Runner (`mapreduce run`, a job script) from its start to its
        end, so the history has every run and `mapreduce cancel` reaches it. A history that cannot be
        written is said once and the run goes on unrecorded."""
        try:
            run_id = self.record_start(job, runner_pid=os.getpid(), source=source)
        except sqlite3.Error as exc:
            log.warning("this run is not recorded in the history %s: %s", self.path, exc)
            yield RecordedRun(None, None)
            return
        record = RecordedRun(run_id, lambda: self.cancel_reason(run_id))
        try:
            yield record
        except KeyboardInterrupt:
            self.record_end(run_id, RunStatus.INTERRUPTED, note=f"stopped with Ctrl-C ({source})")
            raise
        except BaseException as exc:
            status, phase, error = outcome_of(exc)
            self.record_end(run_id, status, phase=phase, exception=error)
            raise
        self.record_end(run_id, RunStatus.SUCCEEDED, counters=record.counters)

    def request_cancel(self, job_name: str, by: str) -> list[int]:
        """Ask the running run(s) of a job to stop; return their ids (the process that runs each sees
        the request within about a second)."""
        with self._write() as db:
            ids = [r[0] for r in db.execute("SELECT id FROM runs WHERE job_name = ? AND status = ?",
                                            (job_name, RunStatus.RUNNING.value))]
            db.executemany("UPDATE runs SET cancel_requested = ? WHERE id = ?", [(by, i) for i in ids])
        return ids

    def cancel_reason(self, run_id: int) -> str | None:
        """Who asked a run to stop (None: nobody)."""
        with self._connection() as db:
            row = db.execute("SELECT cancel_requested FROM runs WHERE id = ?", (run_id,)).fetchone()
        return row[0] if row else None

    def record_process_group(self, run_id: int, pgid: int, log_path: str | None = None) -> None:
        """The process group of a script run and where its output goes (one transaction)."""
        with self._write() as db:
            db.execute("UPDATE runs SET process_group = ?, log_path = COALESCE(?, log_path) WHERE id = ?",
                       (pgid, log_path, run_id))

    def record_end(self, run_id: int, status: RunStatus, *, phase: str | None = None,
                   exception: str | None = None, counters: dict | None = None, note: str | None = None,
                   ended: dt.datetime | None = None) -> None:
        with self._write() as db:
            db.execute("UPDATE runs SET ended_at = ?, status = ?, phase = ?, exception = ?, counters = ?, note = ? "
                       "WHERE id = ?", (_iso(ended or utc_now()), status.value, phase, exception,
                                        json.dumps(counters, default=str) if counters is not None else None,
                                        note, run_id))

    def record_progress(self, run_id: int, phase: str, per_server: dict[str, dict]) -> None:
        """The latest counters of a running run's current phase, per server (for the dashboard)."""
        text = json.dumps({"phase": phase, "servers": per_server}, default=str)
        with self._write() as db:
            db.execute("UPDATE runs SET progress = ? WHERE id = ? AND status = ?",
                       (text, run_id, RunStatus.RUNNING.value))

    def get_run(self, run_id: int) -> dict[str, Any] | None:
        with self._connection() as db:
            row = db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        return _run_row(row) if row else None

    def latest_runs(self) -> dict[str, dict[str, Any]]:
        """Each job's latest run (of every job that ever ran), by job name."""
        with self._connection() as db:
            rows = db.execute("SELECT * FROM runs WHERE id IN (SELECT MAX(id) FROM runs GROUP BY job_name)")
            return {r["job_name"]: _run_row(r) for r in rows}

    def unfinished_runs(self) -> list[dict[str, Any]]:
        """Runs still marked running (a Runner that died mid-run left them)."""
        with self._connection() as db:
            rows = db.execute("SELECT * FROM runs WHERE status = ? ORDER BY id", (RunStatus.RUNNING.value,))
            return [_run_row(r) for r in rows]

    def history(self, name: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """The latest runs (of one job, or of all), newest first."""
        with self._connection() as db:
            if name is None:
                rows = db.execute("SELECT * FROM runs ORDER BY id DESC LIMIT ?", (limit,))
            else:
                rows = db.execute("SELECT * FROM runs WHERE job_name = ? ORDER BY id DESC LIMIT ?", (name, limit))
            return [_run_row(r) for r in rows]

    def prune(self, days: float, now: dt.datetime | None = None) -> int:
        """Delete the records of runs that ended more than `days` ago (running ones stay); return how many."""
        cutoff = _iso((now or utc_now()) - dt.timedelta(days=days))
        with self._write() as db:
            return db.execute("DELETE FROM runs WHERE status != ? AND ended_at IS NOT NULL AND ended_at < ?",
                              (RunStatus.RUNNING.value, cutoff)).rowcount

    def last_start(self, name: str) -> dt.datetime | None:
        """When the job's latest run that did not end interrupted started (its schedule's reference)."""
        with self._connection() as db:
            row = db.execute(_LAST_START.format(name="?"), (name, *NOT_ATTEMPTS)).fetchone()
        return parse_time(row[0]) if row else None

    def runtimes(self, name: str) -> list[float]:
        """Seconds of the job's last RUNTIMES_KEPT successful runs, oldest first."""
        with self._connection() as db:
            rows = db.execute("SELECT started_at, ended_at FROM runs WHERE job_name = ? AND status = ? "
                              "ORDER BY id DESC LIMIT ?", (name, RunStatus.SUCCEEDED.value, RUNTIMES_KEPT)).fetchall()
        return [(parse_time(e) - parse_time(s)).total_seconds() for s, e in reversed(rows)]

    def estimate_next_runtime(self, name: str) -> float | None:
        """Seconds the job's next run should take: the median of its kept runtimes (None: never succeeded).

        The median, not the mean: one run slowed by a busy cluster should not move the estimate."""
        times = self.runtimes(name)
        return statistics.median(times) if times else None
