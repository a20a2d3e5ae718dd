"""A local worker: the process the local executor starts for each server (`python -m
cluster.executors.local_worker CMD_FD REPORT_FD`). Commands arrive on one pipe (the task first,
then one phase per command), reports (progress, done, error) and a heartbeat go back on another.
"""
from __future__ import annotations

import gc
import logging
import marshal
import os
import signal
import sys
import threading
from typing import Any

from cluster import defaults
from cluster.config import ClusterConfig
from cluster.engine.task import Phase, Report, ServerTask, error_report

log = logging.getLogger(__name__)


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
    """`python -m cluster.executors.local_worker CMD_FD REPORT_FD`: a worker of the local executor."""
    args = argv if argv is not None else sys.argv[1:]
    if len(args) != 2:
        raise SystemExit("usage: python -m cluster.executors.local_worker COMMAND_FD REPORT_FD "
                         "(the local executor starts it)")
    commands, reports = Channel(read_fd=int(args[0])), Channel(write_fd=int(args[1]))
    try:
        local_worker_main(commands, reports)
    finally:
        reports.close()


if __name__ == "__main__":
    main()
