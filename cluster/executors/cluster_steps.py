"""How the cluster executor drives its servers through a run, step by step, and brings them back.

Each server gets its steps (its start, then a phase) through its location's Redis; the master
polls reports, progress and heartbeats every `poll_every` seconds. A server that died, was
restarted or met an infrastructure error costs an attempt (`_retry`): it is started again and
replays what it lost. A location's Redis that died is started again and the whole run goes
through its phases again (`_recover_redis`, `_everywhere`). A job's own error, a lost
management server, the run lock lost or the deadline ends the run.
"""
from __future__ import annotations

import logging
import time
import uuid
from abc import abstractmethod
from typing import Any, cast

import redis
import ujson

from cluster import defaults
from cluster.engine.task import Phase
from cluster.exceptions import ClusterBusy, ClusterError, JobFailed
from cluster.executors.base import Executor, Plan, failure_from_report
from cluster.node import control
from cluster.timing import wait_until

log = logging.getLogger(__name__)
START = "start"


class _RunLost(Exception):
    """A location's Redis was started again: every server goes through the run again (`_everywhere`)."""


class StepwiseExecutor(Executor):
    """The cluster executor's steps and attempts (ClusterExecutor in cluster.py sets what they use)."""

    manager: Any
    keys: control.Keys
    by_location: dict[str, list[str]]
    clients: dict[str, redis.Redis]
    master_ttl: int
    _lock: control.RunLock | None
    _job: dict
    _plan: Plan
    _run_id: str
    _map_attempts: dict[str, int]
    _attempts: dict[tuple[str, str], int]
    _start_ids: dict[str, str]

    @abstractmethod
    def _send(self, name: str, server: str, command: control.Command, **fields) -> None:
        """Push one command onto a server's list in its location's Redis."""

    @abstractmethod
    def _renew(self, name: str, run_id: str) -> None:
        """Say in every location's Redis that this run's master is alive."""

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
            # the management server beats there again too (within a second): the run's next round checks it
            wait_until(lambda: self._renew_reachable(run_id) and all(
                self.manager.alive(self.clients[self.config.location_of(s)], [s])[s] for s in self.server_ids)
                and self.clients[host].exists(self.keys.management(host)),
                       defaults.SERVER_START_TIMEOUT_SECONDS,
                       "every server and the management server to beat in the restarted Redis")
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
