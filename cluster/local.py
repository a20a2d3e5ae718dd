"""The local executor: one location's servers as worker processes, no servers to start.

It plans the inputs, starts N worker processes (each a `ServerTask`), drives them
through map, sort and reduce, shows progress, and commits the output only when
every worker succeeded. A worker that raises, dies or falls silent fails the job
with a message naming it; the previous output is left as it was.
"""
from __future__ import annotations

import logging
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import cluster
from cluster import defaults, functions
from cluster.config import ClusterConfig
from cluster.dimensions import DimensionsFilter, select_local_files
from cluster.exceptions import JobFailed
from cluster.jobs import JobType, validate_job
from cluster.layout import JobLayout
from cluster.mapper import HoldState, assign_files, is_locked, list_input_files, load_auxiliary_data, new_run_id
from cluster.process import Channel, Phase, Report
from cluster.reading import input_problems
from cluster.reducer import commit_output, discard_run
from cluster.schedule import Deadline

log = logging.getLogger(__name__)

SUM_KEYS = ("files", "files_decompressed", "records_in", "records_sampled_out", "bytes_in", "bad_lines",
            "files_failed", "map_items_out", "combine_calls", "combine_items_in", "combine_items_out", "spill_files",
            "spilled_items", "spilled_bytes", "moved_bytes", "runs_in", "groups", "records_out",
            "output_files", "output_bytes", "input_bytes_total", "input_bytes_done", "items_reduced",
            "groups_on_disk")


@dataclass
class JobResult:
    """What a finished run reports: where the output is and what was counted."""

    job_name: str
    run_id: str
    output_dir: str
    counters: dict[str, Any]
    per_server: dict[str, dict[str, dict]] = field(default_factory=dict)


def plan_inputs(job: dict, servers: list[str], layout: JobLayout
                ) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Decide, once for the location, which server maps which file."""
    if job.get("input_filter"):
        dims_filter = DimensionsFilter(job["input_filter"], source=f"job {job['job_name']!r} input_filter")
        files = sorted(f for d in job["input_dirs"] for f in select_local_files(d, dims_filter))
    else:
        files = list_input_files(job["input_dirs"])
    notes: dict[str, Any] = {"locked_files_skipped": [], "files_already_mapped": 0,
                             "auxiliary_missing": missing_auxiliary_data(job, layout)}
    if job.get("hold_state"):
        seen = HoldState(layout).mapped()
        notes["files_already_mapped"] = sum(1 for f, _ in files if f in seen)
        files = [(f, s) for f, s in files if f not in seen]
    unlocked = []
    for f, s in files:
        if is_locked(f):
            notes["locked_files_skipped"].append(f)
        else:
            unlocked.append((f, s))
    sizes = dict(unlocked)
    plan: dict[str, dict[str, Any]] = {s: {"files": fs, "bytes": sum(sizes[f] for f in fs)}
                                       for s, fs in assign_files(unlocked, servers).items()}
    previous = []
    if job.get("merge_previous_output"):
        previous = [(p, os.path.getsize(p)) for p in layout.output_files()]
    for server, fs in assign_files(previous, servers).items():
        plan[server]["previous_output"] = fs
    return plan, notes


def missing_auxiliary_data(job: dict, layout: JobLayout) -> list[str]:
    """The auxiliary data files the job names that are not on this machine."""
    names = cast("set[str]", {job.get(k) for k in ("auxiliary_data_name_mapper", "auxiliary_data_name_reducer")}
                 - {None, ""})  # the names given (None and "" taken out)
    return sorted(p for p in map(layout.auxiliary_path, names) if not os.path.isfile(p))


def merge_counters(per_server: dict[str, dict[str, dict]]) -> dict[str, Any]:
    """Sum the servers' counters into one dict for the job."""
    total: dict[str, Any] = {k: 0 for k in SUM_KEYS}
    total["bad_line_examples"] = []
    total["failed_files"] = []
    total["bad_lines_by_file"] = {}
    total["seconds"] = {}
    total["peak_rss_bytes"] = {}
    for server, phases in per_server.items():
        for c in phases.values():
            for k in SUM_KEYS:
                if k in c:
                    total[k] += c[k]
            total["bad_line_examples"] += c.get("bad_line_examples", [])
            total["failed_files"] += c.get("failed_files", [])
            for path, n in c.get("bad_lines_by_file", {}).items():
                total["bad_lines_by_file"][path] = total["bad_lines_by_file"].get(path, 0) + n
            if "peak_rss_bytes" in c:
                total["peak_rss_bytes"][server] = max(total["peak_rss_bytes"].get(server, 0), c["peak_rss_bytes"])
    return total


class LocalExecutor:
    """Runs mapreduce jobs now, on this machine, with `servers` worker processes."""

    def __init__(self, config: ClusterConfig, servers: int | None = None,
                 on_progress: Callable[[str, dict[str, dict]], None] | None = None,
                 worker_log_level: int = logging.WARNING, reducers: int | None = None,
                 profile_dir: str | None = None):
        """`servers` workers map and `reducers` of them (default: all) reduce; with `profile_dir`,
        each worker writes a cProfile file per phase there (`<phase>-<server>.prof`)."""
        mappers = servers or config.number_of_servers_per_location
        reducers = reducers or mappers
        self.servers = [f"S_{i}" for i in range(max(mappers, reducers))]
        self.mappers = self.servers[:mappers]
        self.reducers = self.servers[:reducers]
        self.config_for_workers = config.with_overrides(number_of_servers_per_location=len(self.servers))
        self.config = config
        self.on_progress = on_progress
        self.worker_log_level = worker_log_level
        self.profile_dir = profile_dir

    def run(self, job: dict, timeout_minutes: float | None = None) -> JobResult:
        """Run one mapreduce job to the end; raise JobFailed (or a ClusterError) if it fails, and
        JobTimedOut (its workers stopped, nothing published) past `timeout_minutes`."""
        self._deadline = Deadline(timeout_minutes)
        job = validate_job(job)
        if job["job_type"] != JobType.MAPREDUCE.value:
            raise JobFailed(job.get("job_name", "?"), f"the local executor runs mapreduce jobs, not "
                            f"{job['job_type']} jobs (those run through the Runner)")
        config = self.config_for_workers
        name = job["job_name"]
        functions.load_job_functions(config.projects_dir, job)  # fail fast, before any worker starts
        layout = JobLayout(config.base_dir, config.auxiliary_dir, name)
        for aux in ("auxiliary_data_name_mapper", "auxiliary_data_name_reducer"):
            load_auxiliary_data(layout, job.get(aux))
        with layout.lock():
            return self._run_locked(config, job, layout)

    def _run_locked(self, config: ClusterConfig, job: dict, layout: JobLayout) -> JobResult:
        name = job["job_name"]
        layout.clear_intermediate()
        run_id = new_run_id()
        plan, notes = plan_inputs(job, self.mappers, layout)
        for s in self.servers:
            plan.setdefault(s, {"files": []})
        for f in notes["locked_files_skipped"]:
            log.warning("skipping %s: it is locked (still being written); it will be mapped next time", f)
        hold = HoldState(layout)
        try:
            per_server = self._drive(config, job, run_id, plan)
            if job.get("hold_state"):
                for s in self.servers:
                    hold.record(run_id, s, plan[s]["files"])
        except BaseException:
            discard_run(layout, run_id)
            hold.discard(run_id)
            raise
        replace = bool(job.get("delete_job_data") or job.get("merge_previous_output"))
        output_dir = commit_output(layout, run_id, replace=replace)
        hold.commit(run_id)
        counters = merge_counters(per_server)
        counters.update(notes)
        counters["seconds"] = self._phase_seconds
        return JobResult(name, run_id, output_dir, counters, per_server)

    def _start_worker(self, config: ClusterConfig, job: dict, run_id: str, server: str, inputs: dict,
                      reports: queue.Queue) -> tuple[subprocess.Popen, Channel]:
        """Start `python -m cluster.process` for one server, with a command pipe and a report pipe."""
        cmd_r, cmd_w = os.pipe()
        rep_r, rep_w = os.pipe()
        package_root = os.path.dirname(os.path.dirname(os.path.abspath(cluster.__file__)))
        env = dict(os.environ, CLUSTER_SERVER_ID=server, CLUSTER_JOB_NAME=job["job_name"],
                   PYTHONPATH=os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p))
        try:
            proc = subprocess.Popen([sys.executable, "-m", "cluster.process", str(cmd_r), str(rep_w)],
                                    pass_fds=(cmd_r, rep_w), env=env, stdin=subprocess.DEVNULL,
                                    process_group=0)  # a terminal's Ctrl-C goes to the master alone
        finally:
            os.close(cmd_r)
            os.close(rep_w)
        commands = Channel(write_fd=cmd_w)
        threading.Thread(target=_pump, args=(Channel(read_fd=rep_r), reports), daemon=True,
                         name=f"reports-{server}").start()
        commands.send({"server_id": server, "config": config.to_values(), "job": job, "run_id": run_id,
                       "partitions": self.reducers, "inputs": inputs, "log_level": self.worker_log_level,
                       "profile_dir": self.profile_dir})
        return proc, commands

    def _drive(self, config: ClusterConfig, job: dict, run_id: str, plan: dict) -> dict[str, dict[str, dict]]:
        reports: queue.Queue = queue.Queue()
        procs: dict[str, subprocess.Popen] = {}
        commands: dict[str, Channel] = {}
        per_server: dict[str, dict[str, dict]] = {s: {} for s in self.servers}
        self._phase_seconds: dict[str, float] = {}
        name = job["job_name"]
        try:
            for s in self.servers:
                procs[s], commands[s] = self._start_worker(config, job, run_id, s, plan[s], reports)
            for phase in Phase:
                started = time.monotonic()
                for s in self.servers:
                    _send(commands[s], phase.value)
                self._wait_phase(name, phase, procs, reports, per_server)
                self._phase_seconds[phase.value] = round(time.monotonic() - started, 3)
                if phase is Phase.MAP:
                    check_map_phase(job, per_server)
            for s in self.servers:
                _send(commands[s], None)
            deadline = time.monotonic() + 30
            for s, p in procs.items():
                try:  # the job is done: a worker slow to exit is stopped below, not a failure
                    p.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    log.warning("worker of server %s did not exit after the job; stopping it", s)
        finally:
            for p in procs.values():
                if p.poll() is None:
                    p.terminate()
                    try:
                        p.wait(timeout=5)
                    except subprocess.TimeoutExpired:
                        p.kill()
                        p.wait()
            for c in commands.values():
                c.close()
        return per_server

    def _wait_phase(self, name: str, phase: Phase, procs: dict, reports, per_server: dict) -> None:
        pending = set(procs)
        last_seen = {s: time.monotonic() for s in procs}
        while pending:
            self._deadline.check(name, phase.value)
            try:
                kind, server, rphase, payload = reports.get(timeout=min(1.0, self.config.poll_every))
            except queue.Empty:
                kind = None
            now = time.monotonic()
            if kind is not None:
                last_seen[server] = now
                if kind == Report.ERROR.value:
                    raise failure_from_report(name, payload)
                if kind in (Report.PROGRESS.value, Report.DONE.value) and rphase == phase.value:
                    per_server[server][rphase] = payload
                    if self.on_progress:
                        self.on_progress(phase.value, {s: per_server[s].get(phase.value, {}) for s in procs})
                if kind == Report.DONE.value and rphase == phase.value:
                    pending.discard(server)
            for s in list(pending):
                p = procs[s]
                if p.poll() is not None:
                    # it may have reported its error just before exiting: read what is left of its reports
                    drain_until = time.monotonic() + 1.0
                    while time.monotonic() < drain_until:
                        try:
                            kind, server, rphase, payload = reports.get(timeout=0.1)
                        except queue.Empty:
                            continue
                        if kind == Report.ERROR.value:
                            raise failure_from_report(name, payload)
                    raise JobFailed(name, f"worker process of server {s} (pid {p.pid}) died with exit code "
                                    f"{p.returncode}" + (f" (killed by signal {-p.returncode}; SIGKILL is often the "
                                                         "out-of-memory killer)" if p.returncode < 0 else ""),
                                    server=s, phase=phase.value)
                if now - last_seen[s] > defaults.HEARTBEAT_TIMEOUT_SECONDS:
                    raise JobFailed(name, f"server {s} sent no heartbeat for "
                                    f"{defaults.HEARTBEAT_TIMEOUT_SECONDS:.0f}s", server=s, phase=phase.value)


def check_map_phase(job: dict, per_server: dict[str, dict[str, dict]]) -> None:
    """After the map phase: a failed file, or more bad records than the job's max_bad_fraction, fails
    the job before anything is reduced or published."""
    problem = input_problems(merge_counters({s: {"map": p.get("map", {})} for s, p in per_server.items()}),
                             job.get("max_bad_fraction"))
    if problem:
        raise JobFailed(job["job_name"], problem, phase=Phase.MAP.value)


def _pump(channel: Channel, reports: queue.Queue) -> None:
    """Move a worker's reports to the executor's queue until the worker closes its pipe."""
    try:
        while True:
            reports.put(channel.receive())
    except (EOFError, OSError, ValueError):
        pass
    finally:
        channel.close()


def _send(channel: Channel, command: str | None) -> None:
    """Send a command; a worker that is gone is noticed by the phase's liveness check."""
    try:
        channel.send(command)
    except OSError:
        pass


def failure_from_report(name: str, report: dict) -> JobFailed:
    """The master's exception for a worker's error report (a user function's error already says where)."""
    message = report["message"]
    if report["type"] != "UserFunctionError":
        message = f"{report['type']}: {message}\n{report['traceback']}"
    err = JobFailed(name, message, server=report["server"], phase=report["phase"])
    err.report = report
    return err

