"""The cluster executor: one job's run on the running cluster's servers.

The lifecycle is base.py's; here the master pushes the job's project, asks each location's
management server to plan its inputs (each location reads only its own files), sends every
server a `start` and then each phase through its location's Redis, and polls every
`poll_every` seconds for reports, progress and heartbeats. The first error, a server whose
heartbeat expired, or a Redis that stopped answering aborts the run everywhere; output is
published on every location only after every server finished reduce.

What it needs of the cluster (its manager: `ClusterManager` in master/manager.py) is passed in:
its Redis clients and keys, its management calls, and SSH to push the project.
"""
from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

import redis
import ujson

from cluster import defaults
from cluster.engine.inputs import assign_files, check_filter_inputs, list_input_files
from cluster.engine.store import is_url, store_options
from cluster.engine.store import size as store_size
from cluster.engine.store_output import StoreOutput
from cluster.engine.task import Phase
from cluster.exceptions import ClusterBusy, ClusterError, ClusterNotRunning, InputError, JobFailed
from cluster.executors.base import Executor, JobResult, Plan, Progress, failure_from_report
from cluster.layout import JobLayout
from cluster.node import control
from cluster.node.security import secrets_for
from cluster.timing import wait_until

log = logging.getLogger(__name__)
START = "start"


class _RunLost(Exception):
    """A location's Redis was started again: every server goes through the run again (`_everywhere`)."""


class ClusterExecutor(Executor):
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

    def _everywhere(self, run_id: str, phase: str, per_server: dict[str, dict[str, dict]]) -> None:
        """Send a phase to every server and wait for all of them. After a Redis was started again (its
        files in flight lost) every server goes through the run again from its start, phase by
        phase, each phase on every server before the next (a server must not sort while others
        still send it their map output)."""
        order = [START, *(p.value for p in Phase)]
        todo = [phase]
        while todo:
            step = todo[0]
            for s in self.server_ids:
                self._send_step(run_id, s, step)
            try:
                self._wait(self._job["job_name"], run_id, step, {s: [step] for s in self.server_ids}, per_server)
            except _RunLost:
                todo = order[:order.index(phase) + 1]
                continue
            todo.pop(0)

    def _send_step(self, run_id: str, server: str, step: str) -> None:
        """Send a server one step of its part: its start (a new attempt, with a new start id: reports of
        an earlier one are ignored), or a phase (sort and reduce name the map attempt of each server
        that counts)."""
        name = self._job["job_name"]
        if step == START:
            self._start_ids[server] = uuid.uuid4().hex[:12]
            self._send(name, server, control.Command.START, run_id=run_id, job=self._job, inputs=self._plan[server],
                       attempt=self._map_attempts[server], start_id=self._start_ids[server])
        else:
            accepted = self._map_attempts if step != Phase.MAP.value else None
            self._send(name, server, control.Command.PHASE, run_id=run_id, phase=step, accepted=accepted)

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

    def _wait(self, name: str, run_id: str, phase: str, steps: dict[str, list[str]],
              per_server: dict[str, dict[str, dict]]) -> None:
        """Poll every location until each server did its steps of this phase (normally the phase alone;
        a server started again also replays what it lost). A server that died, no longer holds the
        run or met an infrastructure error costs an attempt and is brought back; a job's own error, a
        lost Redis or management server, the run lock lost or the deadline ends the run."""
        pending = {s for s, todo in steps.items() if todo}
        carried: dict[str, list[bytes]] = {h: [] for h in self.clients}
        astray: dict[str, float] = {}  # server -> since when its heartbeat names another run
        while pending:
            self.deadline.check(name, phase, " (every server was told to drop the run; the cluster is ready)")
            if self._lock is not None and self._lock.lost.is_set():
                raise JobFailed(name, f"lost the cluster's run lock ({self.keys.running()}): this master did not "
                                f"renew it for {self.master_ttl}s, and another run may have the servers now",
                                phase=phase)
            for host, client in list(self.clients.items()):
                servers = self.by_location[host]
                wanted = self.on_progress is not None and phase != START
                try:
                    pipe = client.pipeline(transaction=False)
                    pipe.set(self.keys.master(run_id), 1, ex=self.master_ttl)
                    pipe.lpop(self.keys.reports(run_id), 1000)
                    pipe.hgetall(self.keys.progress(run_id)) if wanted else pipe.echo(b"")
                    pipe.mget([self.keys.alive(s) for s in servers])
                    pipe.exists(self.keys.management(host))
                    # the clients are made without decode_responses: the replies are bytes
                    _, popped, progress, alive, management = pipe.execute()
                except redis.RedisError as exc:
                    self._recover_redis(name, run_id, phase, host, exc)  # raises _RunLost: the run starts again
                reports = carried[host] + (popped or [])
                carried[host] = []
                for raw in reports:
                    self._take_report(name, run_id, phase, ujson.loads(raw), steps, pending, per_server)
                for sid, raw in (progress or {}).items():
                    p = ujson.loads(raw)
                    if p["phase"] == phase and sid.decode() in pending:
                        per_server[sid.decode()][phase] = p["counters"]
                if phase != START:
                    self.report_progress(phase, per_server)
                if not management:
                    raise JobFailed(name, f"the management server of {host} stopped (no heartbeat for "
                                    f"{defaults.HEARTBEAT_TTL_SECONDS}s); the run cannot be published there: "
                                    "`manage_cluster start` starts it again, then run the job again", phase=phase)
                beats = {s: ujson.loads(v) if v else None for s, v in zip(servers, alive or [], strict=False)}
                self._check_beats(name, run_id, host, phase, steps, pending, beats, astray)
            if pending:  # wait for the next report of one location that owes some, at most poll_every
                host = next(h for h in self.config.locations if pending & set(self.by_location[h]))
                try:
                    got = self.clients[host].blpop([self.keys.reports(run_id)],
                                                   timeout=self.deadline.remaining(self.config.poll_every))
                except redis.RedisError:
                    got = None  # the next round names the lost Redis
                if got is not None:
                    carried[host].append(cast(bytes, got[1]))  # bytes: no decode_responses

    def _take_report(self, name: str, run_id: str, phase: str, report: dict, steps: dict[str, list[str]],
                     pending: set[str], per_server: dict[str, dict[str, dict]]) -> None:
        """One server report: an error fails the run (or, the infrastructure's, costs an attempt); a
        step done sends the server its next one."""
        s = report["server"]
        if report["kind"] == control.Reply.ERROR.value:
            error = report["error"]
            if error["type"] == "ClusterBusy":
                raise ClusterBusy(f"job {name!r} was not started: {error['message']}")
            if report.get("start_id") != self._start_ids.get(s):
                return  # an attempt that was given up already
            if not error.get("retryable"):
                raise failure_from_report(name, error)
            self._retry(name, run_id, phase, s, steps, pending, f"{error['type']}: {error['message']}", dead=False)
            return
        if report.get("start_id") != self._start_ids.get(s) or not steps.get(s) or report["phase"] != steps[s][0]:
            return  # a report of an attempt given up, or of a step already taken
        steps[s].pop(0)
        if "counters" in report:
            per_server[s][report["phase"]] = report["counters"]
        if steps[s]:
            self._send_step(run_id, s, steps[s][0])
        else:
            pending.discard(s)

    def _check_beats(self, name: str, run_id: str, host: str, phase: str, steps: dict[str, list[str]],
                     pending: set[str], beats: dict[str, dict | None], astray: dict[str, float]) -> None:
        """Every server of the run must beat and (after a grace) name this run in its heartbeat, those
        done with this phase too (their process holds what the others still send them, or what the
        next phase reads): one that died, or was restarted, costs an attempt and is brought back."""
        now = time.monotonic()
        for s, beat in beats.items():
            if beat is None:
                self._retry(name, run_id, phase, s, steps, pending,
                            f"server {s} on {host} stopped sending heartbeats (none for "
                            f"{defaults.HEARTBEAT_TTL_SECONDS}s): it died", dead=True)
                astray.pop(s, None)
                continue
            if beat.get("run_id") == run_id or beat.get("busy_seconds"):  # busy: its status is from before
                astray.pop(s, None)
                continue
            grace = defaults.START_GRACE_SECONDS if steps.get(s) and steps[s][0] == START else \
                3 * defaults.HEARTBEAT_EVERY_SECONDS + 1
            if now - astray.setdefault(s, now) > grace:
                other = f"run {beat['run_id']} of job {beat.get('job')!r}" if beat.get("run_id") else "no run"
                self._retry(name, run_id, phase, s, steps, pending,
                            f"server {s} on {host} no longer works on run {run_id} (its heartbeat names {other}): "
                            "it was restarted or dropped the run", dead=False)
                astray.pop(s, None)

    def _retry(self, name: str, run_id: str, phase: str, server: str, steps: dict[str, list[str]],
               pending: set[str], reason: str, *, dead: bool) -> None:
        """Give a server's part another attempt (at most max_task_attempts per server and phase): start
        its process again if it died, then its run again, and replay what it lost: in map, its map (a
        new map attempt: the files its last one sent are dropped by their receivers); in sort, its sort;
        in reduce, its sort and reduce (from the spill files it received, on its location's disk); a
        server done with the phase only starts again (and sorts again, if the sort was what it held)."""
        attempt = self._attempts.get((server, phase), 1) + 1
        if attempt > self.config.max_task_attempts:
            raise JobFailed(name, f"{reason}; its {phase} was tried {self.config.max_task_attempts} time(s) "
                            "(max_task_attempts), so the job stops here", server=server, phase=phase)
        self._attempts[(server, phase)] = attempt
        left = [step for step in steps.get(server, []) if step != START] if server in pending else []
        if left[:1] == [Phase.REDUCE.value]:
            left = [Phase.SORT.value, *left]  # its sort was in the memory of the process that died
        elif not left and phase == Phase.SORT.value:
            left = [Phase.SORT.value]  # done, but what it sorted is gone with it: the reduce reads it
        if Phase.MAP.value in left:
            self._map_attempts[server] += 1  # its receivers drop what the attempt given up sent
        replay = left
        log.warning("run %s: %s; attempt %d of server %s's %s", run_id, reason, attempt, server, phase)
        self.retried.append({"server": server, "phase": phase, "attempt": attempt, "reason": reason[:500]})
        if dead:
            self._restart_server(name, server, phase)
        steps[server] = [START, *replay]
        pending.add(server)
        self._send_step(run_id, server, START)

    def _recover_redis(self, name: str, run_id: str, phase: str, host: str, exc: Exception) -> None:
        """A location's Redis stopped answering: start it again (its management server does, as `start`
        does) and, since what was in it is gone (reports, files in flight, the run's keys), start every
        server's part again from its start, with new map attempts, up to this phase (`_RunLost` tells
        `_everywhere`). Counts as an attempt of this phase; a Redis that cannot be started fails the job."""
        lost = f"lost the Redis of location {host} ({exc})"
        attempt = self._attempts.get((f"redis:{host}", phase), 1) + 1
        if attempt > self.config.max_task_attempts:
            raise JobFailed(name, f"{lost}, {self.config.max_task_attempts} time(s) in this phase "
                            "(max_task_attempts); check it with `manage_cluster status`", phase=phase)
        self._attempts[(f"redis:{host}", phase)] = attempt
        log.warning("run %s: %s; starting it again, and the run from its map (attempt %d)", run_id, lost, attempt)
        try:
            self.manager.call(host, "start_redis")
            wait_until(lambda: self._answers(host) and self._renew_reachable(run_id),
                       defaults.SERVER_START_TIMEOUT_SECONDS, f"the Redis of {host}")
            self._renew(name, run_id)
            if host == self.config.locations[0] and self._lock is not None:
                self._lock.take_again()
            wait_until(lambda: self._renew_reachable(run_id) and all(
                self.manager.alive(self.clients[self.config.location_of(s)], [s])[s] for s in self.server_ids),
                       defaults.SERVER_START_TIMEOUT_SECONDS, "every server to beat in the restarted Redis")
        except (ClusterError, redis.RedisError) as again:
            raise JobFailed(name, f"{lost}, and it could not be started again ({again}); `manage_cluster status` "
                            "shows it", phase=phase) from None
        self.retried.append({"server": f"every server (the Redis of {host})", "phase": phase, "attempt": attempt,
                             "reason": lost[:500]})
        for s in self.server_ids:  # what any earlier map sent is dropped by its receivers
            self._map_attempts[s] += 1
        raise _RunLost(lost)

    def _renew_reachable(self, run_id: str) -> bool:
        """Renew the run's master key wherever Redis answers (while this master waits on a restart, the
        other servers must not take the run for orphaned); always true, to sit in a wait's check."""
        for client in self.clients.values():
            try:
                client.set(self.keys.master(run_id), 1, ex=self.master_ttl)
            except redis.RedisError:
                continue  # that location's own check names it
        return True

    def _answers(self, host: str) -> bool:
        try:
            return bool(self.clients[host].ping())
        except redis.RedisError:
            return False

    def _restart_server(self, name: str, server: str, phase: str) -> None:
        """Start a server that died again in its screen session (as `manage_cluster start` does) and wait
        until it beats; a location that cannot be reached fails the job (its data is on its own disk)."""
        host = self.config.location_of(server)
        try:
            self.manager.call(host, "start_servers", ujson.dumps([server]))
            wait_until(lambda: self._renew_reachable(self._run_id) and self.manager.alive(self.clients[host],
                                                                                        [server])[server],
                       defaults.SERVER_START_TIMEOUT_SECONDS, f"server {server} on {host} to start again")
        except (ClusterError, redis.RedisError) as exc:
            raise JobFailed(name, f"server {server} died and cannot be started again on {host} ({exc}); the files "
                            f"of {host} are on its own disk, so the job cannot go on without it", server=server,
                            phase=phase) from None

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


