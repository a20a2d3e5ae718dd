"""The long-lived cluster server: commands through its location's Redis, one run at a time.

It runs the same `ServerTask` (mapper, shuffler, reducer) as a local worker; spill files
for servers of other locations go through Redis (`redis_transport.py`), and the files other
locations send are pulled while the map phase runs.
"""
from __future__ import annotations

import errno
import gc
import logging
import os
import queue
import signal
import threading
import time
from typing import Any

import redis
import ujson

from cluster import defaults
from cluster.config import ClusterConfig
from cluster.engine.task import Phase, ServerTask, error_report
from cluster.exceptions import InputError, JobAborted, OutputError, ShuffleError, UserFunctionError
from cluster.layout import JobLayout
from cluster.node import control
from cluster.node.pulse import Pulse
from cluster.node.redis_transport import RedisReceiver, RedisTransport, job_namespace

log = logging.getLogger(__name__)
ABORTED = "the master aborted the run"
ORPHANED = "its master is gone"


class ClusterServer:
    """A long-lived cluster server: commands from its location's Redis, one run at a time.

    A thread pops commands (BLPOP) and hands the work to the main thread, which runs
    it; an `abort` also interrupts the main thread with SIGUSR1, so a run stops at
    once even inside a user function that sleeps or loops. A heartbeat thread keeps
    the server's `alive` key fresh.
    """

    def __init__(self, config: ClusterConfig, server_id: str, password: str):
        self.config = config
        self.server_id = server_id
        self.location = config.location_of(server_id)
        self.password = password
        self.keys = control.Keys(config.cluster_name)
        self.redis = control.redis_client(config, self.location, password, timeout=60.0)
        self.stopping = threading.Event()
        self.started_at = time.time()
        self.task: ServerTask | None = None
        self.run_id: str | None = None
        self.job_name: str | None = None
        self.phase: str | None = None
        self.cancelled = threading.Event()
        self._work: queue.Queue = queue.Queue()
        self._interruptible = False
        self._state = threading.Lock()  # run_id and cancelled change together
        self._failing: set[str] = set()
        self._sources: dict[str, redis.Redis] = {}
        self.receiver: RedisReceiver | None = None
        self.start_id: str | None = None
        self._master_missing_since: float | None = None  # when the run's master key was first seen gone
        self.pulse = Pulse(host=self.location, port=config.redis_port, password=password,
                           key=self.keys.alive(server_id))

    def status(self) -> dict[str, Any]:
        """What `manage_cluster status` shows for this server."""
        return {"server": self.server_id, "location": self.location, "port": self.config.server_port(self.server_id),
                "pid": os.getpid(), "job": self.job_name, "run_id": self.run_id, "phase": self.phase,
                "rss_bytes": current_rss_bytes(), "since": self.started_at, "time": time.time()}

    def _beat(self) -> None:
        """The first heartbeat, written here; then the pulse process writes them (pulse.py)."""
        self.redis.set(self.keys.alive(self.server_id), ujson.dumps(self.status()),
                       ex=defaults.HEARTBEAT_TTL_SECONDS)

    def _redis_trouble(self, what: str, exc: Exception | None) -> None:
        """Log a Redis failure once when it starts and once when it ends (the loops retry every second)."""
        if exc is not None and what not in self._failing:
            self._failing.add(what)
            log.warning("cannot %s in the Redis of %s: %s (retrying every second)", what, self.location, exc)
        elif exc is None and what in self._failing:
            self._failing.discard(what)
            log.info("the Redis of %s answers again (%s)", self.location, what)

    def _heartbeat_loop(self) -> None:
        while not self.stopping.wait(defaults.HEARTBEAT_EVERY_SECONDS):
            self.pulse.send(self.status())
            self._report_receiver_trouble()
            try:
                run_id = self.run_id
                if run_id is None or self.redis.exists(self.keys.master(run_id)):
                    self._master_missing_since = None
                elif self._master_missing_since is None:  # gone, or a restarted Redis the master sets again
                    self._master_missing_since = time.monotonic()
                elif time.monotonic() - self._master_missing_since >= defaults.MASTER_GRACE_SECONDS:
                    self._master_missing_since = None
                    log.warning("the master of run %s is gone (it stopped, or Redis lost the run); dropping it",
                                run_id)
                    self._cancel(run_id)
                    self._report(run_id, control.Reply.ERROR, self.phase or "start", error={
                        "server": self.server_id, "phase": self.phase or "start", "type": "JobAborted",
                        "message": f"server {self.server_id} dropped the run: its master stopped renewing "
                                   f"{self.keys.master(run_id)}", "traceback": ""})
                    self._work.put((self._drop_run, run_id, ORPHANED, self.start_id))
                self._redis_trouble("check the run's master", None)
            except redis.RedisError as exc:
                self._redis_trouble("check the run's master", exc)

    def _report_receiver_trouble(self) -> None:
        """A receiving thread that failed (a damaged file, a lost Redis) is said at once, as an error of
        the infrastructure (the master starts this server's part again), not at the sort phase: the
        senders would wait for its acks until their timeout."""
        receiver, run_id = self.receiver, self.run_id
        if receiver is None or run_id is None or not receiver.errors or receiver.reported:
            return
        receiver.reported = True
        exc = receiver.errors[0]
        try:
            self._report(run_id, control.Reply.ERROR, self.phase or "map", error={
                **error_report(exc, self.server_id, self.phase or "map"), "retryable": retryable(exc)})
        except redis.RedisError as report_exc:
            log.error("could not report the receiver's failure (Redis: %s)", report_exc)

    def _interrupt(self, signum, frame) -> None:
        if self._interruptible and self.cancelled.is_set():
            raise JobAborted(f"server {self.server_id}: run {self.run_id} was aborted")

    def _cancel(self, run_id: str | None = None) -> None:
        """Stop the running phase now (it raises JobAborted in the main thread); only the given run's."""
        with self._state:
            if run_id is not None and run_id != self.run_id:
                return
            self.cancelled.set()
            if self._interruptible:
                os.kill(os.getpid(), signal.SIGUSR1)

    def serve(self) -> None:
        """Take commands until told to shut down (call from the main thread)."""
        signal.signal(signal.SIGUSR1, self._interrupt)
        gc.set_threshold(*defaults.WORKER_GC_THRESHOLDS)
        self._beat()
        self.pulse.start()
        threading.Thread(target=self._heartbeat_loop, daemon=True, name="heartbeat").start()
        threading.Thread(target=self._read_commands, daemon=True, name="commands").start()
        log.info("server %s on %s ready (pid %d)", self.server_id, self.location, os.getpid())
        while not self.stopping.is_set():
            try:
                work = self._work.get(timeout=1.0)
            except queue.Empty:
                continue
            try:
                work[0](*work[1:])
            except JobAborted:
                pass  # an abort that arrived between two pieces of work
        self._drop_run()
        self.pulse.stop()
        try:
            self.redis.delete(self.keys.alive(self.server_id))
        except redis.RedisError:
            log.warning("could not remove my heartbeat key; it expires in %ss", defaults.HEARTBEAT_TTL_SECONDS)
        log.info("server %s stopped", self.server_id)

    def _read_commands(self) -> None:
        queue_key = self.keys.commands(self.server_id)
        while not self.stopping.is_set():
            try:
                got = self.redis.blpop([queue_key], timeout=1)
                self._redis_trouble("read commands", None)
            except redis.RedisError as exc:
                self._redis_trouble("read commands", exc)
                self.stopping.wait(1.0)
                continue
            if got is not None:
                self.handle(ujson.loads(got[1]))

    def handle(self, message: dict) -> None:
        """Turn one command into work for the main thread (an abort also interrupts the work running)."""
        command = control.Command(message["command"])
        if command is control.Command.SHUTDOWN:
            self._cancel()
            self.stopping.set()
        elif command is control.Command.START:
            busy = self._busy_with(message["run_id"])
            if busy:
                self._report(message["run_id"], control.Reply.ERROR, "start", error={
                    "server": self.server_id, "phase": "start", "type": "ClusterBusy", "traceback": "",
                    "message": f"server {self.server_id} is running {busy}; this run was refused (never two runs "
                               "at once): wait for that one to finish, or cancel it"})
                return
            self._cancel()
            self._work.put((self._start, message))
        elif command is control.Command.PHASE:
            self._work.put((self._run_phase, message["run_id"], Phase(message["phase"]), message.get("accepted")))
        elif command is control.Command.ABORT:
            self._cancel(message.get("run_id"))
            self._work.put((self._drop_run, message.get("run_id"), ABORTED))
        elif command is control.Command.END:
            self._work.put((self._drop_run, message.get("run_id")))

    def _busy_with(self, run_id: str) -> str | None:
        """What this server is running for a live master other than `run_id`'s (None: it is free, or
        its run's master is gone and the run is dropped for the new one)."""
        with self._state:
            current, job = self.run_id, self.job_name
        if current is None or current == run_id:
            return None
        try:
            live = bool(self.redis.exists(self.keys.master(current)))
        except redis.RedisError:
            live = True  # cannot tell: refuse rather than preempt
        return f"run {current} of job {job!r}" if live else None

    def _report(self, run_id: str, kind: control.Reply, phase: str, **fields) -> None:
        pipe = self.redis.pipeline(transaction=False)
        pipe.rpush(self.keys.reports(run_id), ujson.dumps({"kind": kind.value, "server": self.server_id,
                                                            "phase": phase, "start_id": self.start_id, **fields}))
        pipe.expire(self.keys.reports(run_id), defaults.RUN_KEYS_TTL_SECONDS)
        pipe.execute()

    def _start(self, message: dict) -> None:
        run_id, job = message["run_id"], message["job"]
        # a run still here lost its master (a live one refuses the START); the same run starts again
        # (a new attempt) with what it has on disk
        self._drop_run(reason=ORPHANED if self.run_id != run_id else None)
        with self._state:
            self.run_id, self.job_name, self.phase = run_id, job["job_name"], "start"
            self.start_id = message.get("start_id")  # the master's name for this attempt: in every report
            self.cancelled = threading.Event()
            self._master_missing_since = None
        self.pulse.send(self.status())  # at once: a phase may hold the interpreter lock before the next beat
        try:
            by_location = self.config.servers_by_location()
            namespace = job_namespace(self.config.cluster_name, job["job_name"], run_id)
            self._sources = {loc: control.redis_client(self.config, loc, self.password, timeout=60.0)
                             for loc in by_location if loc != self.location}
            layout = JobLayout(self.config.base_dir, self.config.auxiliary_dir, job["job_name"])
            transport = RedisTransport(
                layout=layout, client=self.redis, namespace=namespace, server_id=self.server_id,
                local_servers=by_location[self.location],
                remote_servers=[s for loc, ss in by_location.items() if loc != self.location for s in ss],
                max_files_in_redis=job.get("simultaneous_files_in_redis") or defaults.SIMULTANEOUS_FILES_IN_REDIS,
                timeout=defaults.SHUFFLE_TIMEOUT_SECONDS, cancelled=self.cancelled)

            def publish(phase: str, counters: dict) -> None:
                pipe = self.redis.pipeline(transaction=False)
                pipe.hset(self.keys.progress(run_id), self.server_id,
                          ujson.dumps({"phase": phase, "counters": counters}))
                pipe.expire(self.keys.progress(run_id), defaults.RUN_KEYS_TTL_SECONDS)
                pipe.execute()

            self.task = ServerTask(config=self.config, job=job, run_id=run_id, server_id=self.server_id,
                                   partitions=self.config.server_ids(), inputs=message["inputs"],
                                   projects_root=self.config.base_projects_dir, transport=transport,
                                   on_progress=publish, cancelled=self.cancelled, isolate=True,
                                   attempt=int(message.get("attempt") or 1))
            if self._sources:  # files from other locations, from now until the sort phase
                self.receiver = RedisReceiver(layout=layout, server_id=self.server_id, namespace=namespace,
                                              sources=self._sources, cancelled=self.cancelled)
                self.receiver.start()
        except Exception as exc:
            log.error("run %s of job %s cannot start here: %s", run_id, job["job_name"], exc)
            self._report(run_id, control.Reply.ERROR, "start", error=error_report(exc, self.server_id, "start"))
            self._drop_run()
            return
        log.info("run %s of job %s (attempt %s): %d input file(s) here", run_id, job["job_name"],
                 message.get("attempt") or 1, len(message["inputs"].get("files", [])))
        self._report(run_id, control.Reply.STARTED, "start")
        self.phase = None

    def _run_phase(self, run_id: str, phase: Phase, accepted: dict[str, int] | None = None) -> None:
        if run_id != self.run_id or self.task is None or self.cancelled.is_set():
            log.warning("ignoring phase %s of run %s (my run: %s)", phase.value, run_id, self.run_id)
            return
        log.info("run %s: %s phase", run_id, phase.value)
        self.phase = phase.value
        self.pulse.send(self.status())
        try:
            received = None
            self._interruptible = True
            if phase is not Phase.MAP and self.receiver is not None:
                # every map that counts has had its files acked (the master waited for it): stop pulling
                receiver, self.receiver = self.receiver, None
                receiver.stop()
                received = (receiver.files, receiver.bytes)
            counters = self.task.run_phase(phase, accepted=accepted)
            if received is not None:
                counters["received_files"], counters["received_bytes"] = received
            self._interruptible = False
            self._report(run_id, control.Reply.DONE, phase.value, counters=counters)
            log.info("run %s: %s phase done in %.1fs", run_id, phase.value, counters.get("seconds", 0))
        except Exception as exc:
            self._interruptible = False
            if self.cancelled.is_set():
                log.info("run %s: %s phase stopped (aborted)", run_id, phase.value)
                return
            log.error("run %s: %s phase failed: %s", run_id, phase.value, exc)
            try:
                self._report(run_id, control.Reply.ERROR, phase.value,
                             error={**error_report(exc, self.server_id, phase.value), "retryable": retryable(exc)})
            except redis.RedisError as report_exc:
                log.error("could not report the failure to the master (Redis: %s)", report_exc)
        finally:
            self._interruptible = False
            self.phase = None

    def _drop_run(self, run_id: str | None = None, reason: str | None = None, start_id: str | None = None) -> None:
        """Free what the current run holds (only that run's, when `run_id` is given; only that attempt's,
        when `start_id` is: a newer attempt of the run keeps what it has)."""
        if self.run_id is None or (run_id is not None and run_id != self.run_id):
            return
        if start_id is not None and start_id != self.start_id:
            return
        if reason:
            log.info("run %s dropped: %s", self.run_id, reason)
        self.cancelled.set()
        if self.task is not None:
            if reason:  # a failed or orphaned run: what it left here goes now, not when the job next runs
                self.task.discard()
            else:
                self.task.close()
        if reason == ORPHANED and self.job_name is not None:  # no master will delete its keys
            try:
                control.delete_run_keys(self.redis, self.keys, self.job_name, self.run_id)
            except redis.RedisError as exc:
                log.warning("could not delete the keys of run %s (they expire in %ss): %s", self.run_id,
                            defaults.RUN_KEYS_TTL_SECONDS, exc)
        if self.receiver is not None:
            receiver, self.receiver = self.receiver, None
            try:
                receiver.stop()
            except Exception as exc:  # noqa: BLE001 - the run is dropped; what went wrong is said here
                log.warning("run %s: receiving spill files had failed: %s", self.run_id, exc)
        for client in self._sources.values():
            client.close()
        with self._state:
            self.task, self.run_id, self.job_name, self.phase, self._sources = None, None, None, None, {}


def retryable(exc: BaseException) -> bool:
    """Whether a phase's failure is the infrastructure's (worth another attempt: a lost connection, a
    transfer that timed out, an I/O error other than a full disk) rather than the job's own (a user
    function's error, bad input, a full disk: the same again)."""
    seen: BaseException | None = exc
    found = False
    while seen is not None:
        if isinstance(seen, (UserFunctionError, InputError, OutputError)):
            return False
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return False
        if isinstance(seen, (ShuffleError, redis.RedisError, OSError, EOFError)):
            found = True
        seen = seen.__cause__
    return found


def current_rss_bytes() -> int:
    """This process's resident memory now."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0
