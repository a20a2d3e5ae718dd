"""A cluster server's heartbeat, written by a small process of its own.

A server's Python threads share one interpreter lock, and user code can hold it for a long
time inside one C call (`str.split` of a 200 MB line takes seconds): a heartbeat thread would
fall silent and the master would take a busy server for a dead one. So the key is written by
this process, started by the server with a pipe: the server sends its status (one JSON line)
every second, and this process sets the `alive` key from the latest line every second, with a
time to live. When the server's lines stop, the status says for how long (`busy_seconds`);
when the server is gone (the pipe's end closes, however it ended), the key is deleted at once.

Started as `python -m cluster.node.pulse`; the first line on stdin says where to write
(address, port, password, key), so the password never shows in a process list.
"""
from __future__ import annotations

import logging
import os
import select
import subprocess
import sys
import threading
import time

import redis
import ujson

from cluster import defaults

log = logging.getLogger(__name__)


class Pulse:
    """The server's side: start the process, hand it each status, stop it."""

    def __init__(self, *, host: str, port: int, password: str, key: str) -> None:
        self._setup = {"host": host, "port": port, "password": password, "key": key,
                       "ttl": defaults.HEARTBEAT_TTL_SECONDS, "every": defaults.HEARTBEAT_EVERY_SECONDS}
        self.proc: subprocess.Popen | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        with self._lock:
            self._start()

    def _start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "cluster.node.pulse", str(os.getpid())],
                                     stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
        self._send(self._setup)

    def send(self, status: dict) -> None:
        """Hand over one line (a pulse that died is started again, with its setup line first)."""
        with self._lock:  # the heartbeat thread, and the main thread when the run or phase changes
            self._send(status)

    def _send(self, status: dict) -> None:
        if self.proc is None or self.proc.poll() is not None:
            if self.proc is not None:
                log.warning("the heartbeat process exited (%s); starting it again", self.proc.returncode)
            self._start()
        assert self.proc is not None and self.proc.stdin is not None  # started above
        try:
            self.proc.stdin.write(ujson.dumps(status).encode() + b"\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError):
            self.proc.kill()  # the next send starts a new one

    def stop(self) -> None:
        """Close the pipe: the process deletes the key and exits."""
        if self.proc is None:
            return
        if self.proc.stdin is not None:
            try:
                self.proc.stdin.close()
            except BrokenPipeError:
                pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _lines(fd: int, timeout: float, buffer: bytearray) -> list[bytes] | None:
    """The complete lines that arrive within `timeout` ([] when none; None at the end of the pipe)."""
    ready, _, _ = select.select([fd], [], [], timeout)
    if not ready:
        return []
    chunk = os.read(fd, 65536)
    if not chunk:
        return None
    buffer += chunk
    *complete, rest = bytes(buffer).split(b"\n")
    buffer[:] = rest
    return complete


def main(argv: list[str] | None = None) -> None:
    """Beat for the server whose pid is argv[0] until its pipe closes or it is gone."""
    argv = sys.argv[1:] if argv is None else argv
    parent = int(argv[0])
    fd = sys.stdin.fileno()
    buffer = bytearray()
    first = _lines(fd, 30.0, buffer)
    if not first:
        return
    setup = ujson.loads(first[0])
    pending = first[1:]
    client = redis.Redis(host=setup["host"], port=setup["port"], password=setup["password"],
                         socket_timeout=setup["every"] * 2, socket_connect_timeout=setup["every"] * 2)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    status: dict = {}
    failing = False
    heard = time.monotonic()
    next_beat = 0.0
    while True:
        lines = pending or _lines(fd, max(0.0, next_beat - time.monotonic()), buffer)
        pending = []
        if lines is None or os.getppid() != parent:  # the pipe closed, or the server is gone
            break
        if lines:
            status = ujson.loads(lines[-1])
            heard = time.monotonic()
        now = time.monotonic()
        if now < next_beat or not status:
            continue
        next_beat = now + setup["every"]
        silent = now - heard
        beat = {**status, "busy_seconds": round(silent, 1)} if silent > 2 * setup["every"] else status
        try:
            client.set(setup["key"], ujson.dumps(beat), ex=setup["ttl"])
            failing = False
        except redis.RedisError as exc:  # the key expires while Redis is away; said once, not every second
            if not failing:
                log.warning("heartbeat: cannot write %s (%s); retrying every second", setup["key"], exc)
            failing = True
    try:
        client.delete(setup["key"])
    except redis.RedisError:
        pass  # it expires within its time to live


if __name__ == "__main__":
    main()
