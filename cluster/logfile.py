"""A log file that never fills a disk: size-capped, rotated to `<path>.1` ... `<path>.<backups>`.

The servers' output (their logging and the prints of user functions) and the Runner's lines go
through one of these, so a cluster that runs for months keeps at most (backups + 1) x max_bytes
of logs per process.
"""
from __future__ import annotations

import io
import os
import threading

from cluster import defaults


class RotatingFile(io.TextIOBase):
    """A text file opened for appending that, past `max_bytes`, is renamed to `<path>.1` (older ones
    shifted up, the last dropped) and started afresh. Writes from several threads are serialised."""

    def __init__(self, path: str, max_bytes: int = defaults.LOG_MAX_BYTES, backups: int = defaults.LOG_BACKUPS):
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self._lock = threading.Lock()
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self._fh = open(path, "a", buffering=1)  # noqa: SIM115 - closed by close()

    def write(self, text: str) -> int:
        with self._lock:
            self._fh.write(text)
            if self._fh.tell() >= self.max_bytes:
                self._rotate()
        return len(text)

    def _rotate(self) -> None:
        self._fh.close()
        for i in range(self.backups - 1, 0, -1):
            older = f"{self.path}.{i}"
            if os.path.exists(older):
                os.replace(older, f"{self.path}.{i + 1}")
        if self.backups > 0:
            os.replace(self.path, f"{self.path}.1")
        else:
            os.unlink(self.path)
        self._fh = open(self.path, "a", buffering=1)  # noqa: SIM115 - closed by close()

    def flush(self) -> None:
        with self._lock:
            if not self._fh.closed:
                self._fh.flush()

    def close(self) -> None:
        with self._lock:
            self._fh.close()
        super().close()
