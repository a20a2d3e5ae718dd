"""The cluster executor: one job's run on the running cluster's servers.

The lifecycle is base.py's; here the master pushes the job's project, asks each location's
management server to plan its inputs (each location reads only its own files), sends every
server a `start` and then each phase through its location's Redis, and polls every
`poll_every` seconds for reports, progress and heartbeats (cluster_steps.py: the steps, and the
attempts that bring a dead server or Redis back). A job's own error aborts the run everywhere;
output is published on every location only after every server finished reduce.

What it needs of the cluster (its manager: `ClusterManager` in master/manager.py) is passed in:
its Redis clients and keys, its management calls, and SSH to push the project.
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis
import ujson

from cluster import defaults
from cluster.engine.inputs import assign_files, check_filter_inputs, list_input_files
from cluster.engine.store import is_url, store_options
from cluster.engine.store import size as store_size
from cluster.engine.store_output import StoreOutput
from cluster.engine.task import Phase
from cluster.exceptions import ClusterBusy, ClusterError, ClusterNotRunning, InputError, JobFailed
from cluster.executors.base import JobResult, Plan, Progress
from cluster.executors.cluster_steps import START, StepwiseExecutor
from cluster.layout import JobLayout
from cluster.node import control
from cluster.node.security import secrets_for

log = logging.getLogger(__name__)


class ClusterExecutor(StepwiseExecutor):
    """Runs mapreduce jobs on the cluster that `manager` manages."""

    description = "the cluster"

    def __init__(self, manager: Any, on_progress: Progress | None = None) -> None:
        super().__init__(manager.config, on_progress)
        self.manager = manager
        self.keys = manager.keys
        self.by_location = self.config.servers_by_location()
        self.clients: dict[str, redis.Redis] = {}
        self.master_ttl = max(defaults.MASTER_TTL_SECONDS, int(3 * self.config.poll_every) + 1)
        self.store = store_options(self.config.s3_endpoint_url)
        self._lock: control.RunLock | None = None

    @property
    def server_ids(self) -> list[str]:
        return self.config.server_ids()

    def lock(self, job: dict) -> Any:
        """The job's lock in the master's working dir (runs of one job never overlap, from any client here)."""
        return JobLayout(os.path.join(self.config.local_working_dir, "jobs"), self.config.auxiliary_dir,
                         job["job_name"]).lock()

    @contextmanager
    def session(self) -> Iterator[None]:
        try:
            self._connect()
            yield
        finally:
            for c in self.clients.values():
                c.close()
            self.clients = {}

    def _connect(self) -> None:
        if not secrets_for(self.config).exists():
            raise ClusterNotRunning(f"no running cluster {self.config.cluster_name!r}: it was never started "
                                    f"(no certificates in {secrets_for(self.config).directory}); start it with "
                                    "`manage_cluster start`, or run the job on this machine with --local")
        for host, servers in self.by_location.items():
            client = self.manager.redis(host, timeout=30.0)
            self.clients[host] = client  # closed by session() whatever happens next
            try:
                beats = self.manager.alive(client, servers)
            except redis.RedisError as exc:
                raise ClusterNotRunning(f"no running cluster {self.config.cluster_name!r}: the Redis of {host} "
                                        f"(port {self.config.redis_port}) does not answer ({exc}); start the "
                                        "cluster with `manage_cluster start`, or run the job with --local") from None
            down = [s for s, b in beats.items() if b is None]
            if down:
                raise ClusterNotRunning(f"server(s) {', '.join(down)} on {host} are down (no heartbeat); "
                                        "`manage_cluster start` starts them again")
            if not client.exists(self.keys.management(host)):
                raise ClusterNotRunning(f"the management server of {host} is down (no heartbeat); "
                                        "`manage_cluster start` starts it again")

    def _run(self, job: dict) -> JobResult:
        """The lifecycle, holding the cluster's run lock (a second run is refused at once, naming the first)."""
        lock = control.RunLock(self.clients[self.config.locations[0]], self.keys, job["job_name"], self.master_ttl)
        try:
            holder = lock.acquire()
        except redis.RedisError as exc:
            raise ClusterNotRunning(f"the Redis of {self.config.locations[0]} does not answer ({exc}); "
                                    "`manage_cluster status` shows it") from None
        if holder is not None and control.holder_is_dead(holder):
            # a client of this machine that was killed: its servers drop its run now, not in MASTER_TTL seconds
            log.warning("the run lock's holder (pid %s, job %r) is gone; dropping its run first", holder["pid"],
                        holder["job"])
            self.manager.drop_runs_of(holder["job"])
            holder = lock.acquire()
        if holder is not None:
            since = max(0.0, time.time() - holder.get("since", time.time()))
            raise ClusterBusy(f"job {job['job_name']!r} was not started: cluster {self.config.cluster_name!r} is "
                              f"running job {holder['job']!r} (for {since:.0f}s, from pid {holder['pid']} on "
                              f"{holder['host']}); one job at a time has the servers: wait for it to finish "
                              "(`manage_cluster status` shows it), or stop it")
        self._lock = lock
        try:
            return super()._run(job)
        finally:
            lock.release()
            self._lock = None

    def plan(self, job: dict) -> tuple[Plan, dict[str, Any]]:
        """Push the project to every location and let each plan its own files; files on a store
        (input_dirs URLs, and the previous output under output_url) are planned here, once, over
        every server of every location."""
        name = job["job_name"]
        check_filter_inputs(job)
        on_store = bool(job.get("output_url"))
        # what each location plans: its local folders, and its own previous output
        job_json = ujson.dumps({**job, "input_dirs": [d for d in job["input_dirs"] if not is_url(d)],
                                "merge_previous_output": bool(job.get("merge_previous_output")) and not on_store})

        def prepare(host: str) -> dict:
            self.manager.push_project(host, job["project_name"])
            self.manager.call(host, "prepare_job", name)
            return ujson.loads(self.manager.call(host, "plan_inputs", job_json, ujson.dumps(self.by_location[host])))

        plans = self.manager.for_each_location(prepare)
        missing = {h: p["notes"]["auxiliary_missing"] for h, p in plans.items() if p["notes"].get("auxiliary_missing")}
        if missing:  # before any server starts
            raise InputError("auxiliary data not found: "
                             + "; ".join(f"on {h}: {', '.join(m)}" for h, m in sorted(missing.items()))
                             + " (upload it with an upload_auxiliary transfer, or fix the job's name)")
        notes: dict[str, Any] = {"locked_files_skipped": [], "files_already_mapped": 0}
        plan: Plan = {}
        for host in self.config.locations:
            plan.update(plans[host]["plan"])
            notes["locked_files_skipped"] += plans[host]["notes"]["locked_files_skipped"]
            notes["files_already_mapped"] += plans[host]["notes"]["files_already_mapped"]
        self._plan_store_files(job, plan, notes)
        return plan, notes

    def _plan_store_files(self, job: dict, plan: Plan, notes: dict[str, Any]) -> None:
        """The input files on stores (and, with output_url, the previous output), over every server."""
        urls = [d for d in job["input_dirs"] if is_url(d)]
        published = StoreOutput(job["output_url"], self.store) if job.get("output_url") else None
        files = list_input_files(urls, self.store) if urls else []
        if files and job.get("hold_state"):
            if published is not None:
                seen = published.mapped()
            else:  # each location recorded what its servers mapped
                seen = {f for got in self.manager.for_each_location(
                    lambda host: self.manager.call(host, "mapped_files", job["job_name"])).values()
                    for f in ujson.loads(got)}
            notes["files_already_mapped"] += sum(1 for f, _ in files if f in seen)
            files = [(f, size) for f, size in files if f not in seen]
        servers = self.server_ids
        sizes = dict(files)
        for s, fs in assign_files(files, servers).items():
            plan[s]["files"] = plan[s].get("files", []) + fs
            plan[s]["bytes"] = plan[s].get("bytes", 0) + sum(sizes[f] for f in fs)
        if published is not None and job.get("merge_previous_output"):
            for s, fs in assign_files(published.output_files(), servers).items():
                plan[s]["previous_output"] = fs

    def start(self, job: dict, run_id: str, plan: Plan, per_server: dict[str, dict[str, dict]]) -> None:
        self._job, self._plan, self._run_id = job, plan, run_id
        self._map_attempts = {s: 1 for s in self.server_ids}
        self._attempts: dict[tuple[str, str], int] = {}
        self._start_ids: dict[str, str] = {}
        self._renew(job["job_name"], run_id)
        self._everywhere(run_id, START, per_server)

    def run_phase(self, job: dict, run_id: str, phase: Phase, per_server: dict[str, dict[str, dict]]) -> None:
        self._everywhere(run_id, phase.value, per_server)

    def commit(self, job: dict, run_id: str, plan: Plan, per_server: dict[str, dict[str, dict]]) -> str:
        replace = bool(job.get("delete_job_data") or job.get("merge_previous_output"))
        if job.get("output_url"):
            output = self._commit_to_store(job, run_id, replace, plan)
        else:
            self.manager.for_each_location(lambda host: self._commit(host, job, run_id, replace, plan, per_server))
            output = JobLayout(self.config.base_dir, self.config.auxiliary_dir, job["job_name"]).output_dir
        for s in self.server_ids:
            try:
                self._send(job["job_name"], s, control.Command.END, run_id=run_id)
            except ClusterError as exc:  # published: a server that missed its END drops the run by itself
                log.warning("run %s is published, but server %s did not get its END: %s", run_id, s, exc)
        return output

    def _commit_to_store(self, job: dict, run_id: str, replace: bool, plan: Plan) -> str:
        """Every location uploads its reduce output under the run's prefix; then one marker publishes it
        (with the hold_state record), and the locations drop their staged copies."""
        name, url = job["job_name"], job["output_url"]
        uploaded = self.manager.for_each_location(lambda host: self.manager.call(host, "upload_output", name, run_id,
                                                                                  url))
        files = [f for host in self.config.locations for f in ujson.loads(uploaded[host])]
        mapped: dict[str, int | None] = {}
        by_location: dict[str, dict[str, int | None]] = {}
        if job.get("hold_state"):  # store files once; a location's own files under its name
            for s in self.server_ids:
                for f in plan[s]["files"]:
                    if is_url(f):
                        mapped[f] = store_size(f, self.store)
                    else:
                        by_location.setdefault(self.config.location_of(s), {})[f] = None  # sized by its location
        prefix = StoreOutput(url, self.store).commit(run_id, files, mapped, replace=replace,
                                                     mapped_by_location=by_location)
        for host in self.config.locations:
            try:
                self.manager.call(host, "discard_job", name, run_id)
            except ClusterError as exc:  # published already: a staged copy left over is only disk space
                log.warning("could not remove run %s's staged copy on %s: %s", run_id, host, exc)
        return prefix

    def abort(self, job: dict, run_id: str) -> None:
        self._abort(job["job_name"], run_id)
        if job.get("output_url"):
            StoreOutput(job["output_url"], self.store).discard(run_id)

    def finish(self, job: dict, run_id: str) -> None:
        self._forget(job["job_name"], run_id)

    def _renew(self, name: str, run_id: str) -> None:
        """Say in every location's Redis that this run's master is alive (servers drop orphaned runs)."""
        for host, client in self.clients.items():
            try:
                client.set(self.keys.master(run_id), 1, ex=self.master_ttl)
            except redis.RedisError as exc:
                raise JobFailed(name, f"cannot reach the Redis of {host}: {exc}") from None

    def _send(self, name: str, server: str, command: control.Command, **fields) -> None:
        host = self.config.location_of(server)
        try:
            control.send_command(self.clients[host], self.keys, server, command, **fields)
        except redis.RedisError as exc:
            raise JobFailed(name, f"cannot reach the Redis of {host} to command {server}: {exc}",
                            server=server) from None

    def _commit(self, host: str, job: dict, run_id: str, replace: bool, plan: dict,
                per_server: dict[str, dict[str, dict]]) -> str:
        mapped: dict[str, list[str]] = {}
        if job.get("hold_state"):
            for s in self.by_location[host]:
                mapped[s] = plan[s]["files"]
        return self.manager.call(host, "commit_job", job["job_name"], run_id, replace, ujson.dumps(mapped))

    def _abort(self, name: str, run_id: str) -> None:
        """Tell every server to drop the run and every location to discard its files (best effort)."""
        for s in self.config.server_ids():
            try:
                control.send_command(self.clients[self.config.location_of(s)], self.keys, s,
                                     control.Command.ABORT, run_id=run_id)
            except (redis.RedisError, KeyError) as exc:
                log.warning("could not tell %s to abort run %s: %s", s, run_id, exc)

        for host in self.config.locations:
            try:
                self.manager.call(host, "discard_job", name, run_id)
            except ClusterError as exc:
                log.warning("could not discard run %s's files on %s: %s", run_id, host, exc)

    def _forget(self, name: str, run_id: str) -> None:
        for host, client in self.clients.items():
            try:
                control.delete_run_keys(client, self.keys, name, run_id)
            except redis.RedisError as exc:
                log.warning("could not delete run %s's keys in the Redis of %s: %s", run_id, host, exc)


