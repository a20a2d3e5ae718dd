"""The local executor: one location's servers as worker processes on this machine, no servers to start.

The lifecycle is base.py's; here a run starts N worker processes (`python -m cluster.executors.local_worker`,
each a `ServerTask`), sends each phase down a pipe and reads reports (progress, done, error,
heartbeats) from another. A worker that raises, dies or falls silent fails the job with a message
naming it; the previous output is left as it was.
"""
from __future__ import annotations

import logging
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import cluster
from cluster import defaults
from cluster.config import ClusterConfig
from cluster.engine.inputs import plan_inputs
from cluster.engine.store import store_options
from cluster.engine.task import Phase, Report
from cluster.exceptions import JobFailed
from cluster.executors.base import (
    Plan,
    Progress,
    ThisMachineExecutor,
    discard_output,
    failure_from_report,
    publish_output,
)
from cluster.executors.local_worker import Channel

log = logging.getLogger(__name__)


class LocalExecutor(ThisMachineExecutor):
    """Runs mapreduce jobs now, on this machine, with `servers` worker processes."""

    description = "the local executor"

    def __init__(self, config: ClusterConfig, servers: int | None = None, on_progress: Progress | None = None,
                 worker_log_level: int = logging.WARNING, reducers: int | None = None,
                 profile_dir: str | None = None):
        """`servers` workers map and `reducers` of them (default: all) reduce; with `profile_dir`,
        each worker writes a cProfile file per phase there (`<phase>-<server>.prof`)."""
        mappers = servers or config.number_of_servers_per_location
        reducers = reducers or mappers
        self.servers = [f"S_{i}" for i in range(max(mappers, reducers))]
        self.mappers = self.servers[:mappers]
        self.reducers = self.servers[:reducers]
        # what the workers get: this many servers on this one location
        super().__init__(config.with_overrides(number_of_servers_per_location=len(self.servers)), on_progress)
        self.worker_log_level = worker_log_level
        self.profile_dir = profile_dir
        self._procs: dict[str, subprocess.Popen] = {}
        self._commands: dict[str, Channel] = {}
        self._reports: queue.Queue = queue.Queue()

    @property
    def server_ids(self) -> list[str]:
        return self.servers

    @contextmanager
    def session(self) -> Iterator[None]:
        self._procs, self._commands, self._reports = {}, {}, queue.Queue()
        yield

    def plan(self, job: dict) -> tuple[Plan, dict[str, Any]]:
        layout = self._layout(job)
        layout.clear_intermediate()
        plan, notes = plan_inputs(job, self.mappers, layout, store_options(self.config.s3_endpoint_url))
        for s in self.servers:  # a reducer that maps nothing
            plan.setdefault(s, {"files": []})
        return plan, notes

    def start(self, job: dict, run_id: str, plan: Plan, per_server: dict[str, dict[str, dict]]) -> None:
        for s in self.servers:
            self._procs[s], self._commands[s] = self._start_worker(self.config, job, run_id, s, plan[s],
                                                                   self._reports)

    def run_phase(self, job: dict, run_id: str, phase: Phase, per_server: dict[str, dict[str, dict]]) -> None:
        for s in self.servers:
            _send(self._commands[s], phase.value)
        self._wait_phase(job["job_name"], phase, per_server)

    def commit(self, job: dict, run_id: str, plan: Plan, per_server: dict[str, dict[str, dict]]) -> str:
        for s in self.servers:
            _send(self._commands[s], None)
        deadline = time.monotonic() + 30
        for s, p in self._procs.items():
            try:  # the job is done: a worker slow to exit is stopped in finish(), not a failure
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("worker of server %s did not exit after the job; stopping it", s)
        self._stop_workers()  # nothing of the run may still write when its output is published
        return publish_output(self._layout(job), job, run_id, {s: plan[s]["files"] for s in self.servers},
                              store_options(self.config.s3_endpoint_url))

    def abort(self, job: dict, run_id: str) -> None:
        self._stop_workers()
        discard_output(self._layout(job), job, run_id, store_options(self.config.s3_endpoint_url))

    def finish(self, job: dict, run_id: str) -> None:
        self._stop_workers()
        for c in self._commands.values():
            c.close()

    def _stop_workers(self) -> None:
        for p in self._procs.values():
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()

    def _start_worker(self, config: ClusterConfig, job: dict, run_id: str, server: str, inputs: dict,
                      reports: queue.Queue) -> tuple[subprocess.Popen, Channel]:
        """Start `python -m cluster.executors.local_worker` for one server, with a command pipe and a report pipe."""
        cmd_r, cmd_w = os.pipe()
        rep_r, rep_w = os.pipe()
        package_root = os.path.dirname(os.path.dirname(os.path.abspath(cluster.__file__)))
        env = dict(os.environ, CLUSTER_SERVER_ID=server, CLUSTER_JOB_NAME=job["job_name"],
                   PYTHONPATH=os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p))
        try:
            proc = subprocess.Popen([sys.executable, "-m", "cluster.executors.local_worker", str(cmd_r), str(rep_w)],
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

    def _wait_phase(self, name: str, phase: Phase, per_server: dict) -> None:
        procs, reports = self._procs, self._reports
        pending = set(procs)
        last_seen = {s: time.monotonic() for s in procs}
        while pending:
            self.deadline.check(name, phase.value)
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
                    self.report_progress(phase.value, per_server)
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
