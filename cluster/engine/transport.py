"""Move closed spill files to the server that reduces them.

A transport takes a finished spill file and makes it appear, whole, in the
destination server's map dir. Between servers of one location that is a rename
(`LocalTransport`); between machines it goes through Redis (the cluster issue).
"""
from __future__ import annotations

import os
from typing import Protocol

from cluster.layout import JobLayout


class Transport(Protocol):
    def send(self, path: str, dest_server: str) -> int:
        """Hand over a closed file; return the bytes moved. The file is gone from `path` after."""

    def close(self) -> None:
        """Wait until every file handed over has arrived."""


class LocalTransport:
    """Servers sharing a filesystem: a rename into the receiver's map dir."""

    def __init__(self, layout: JobLayout):
        self.layout = layout

    def send(self, path: str, dest_server: str) -> int:
        size = os.path.getsize(path)
        dest = self.layout.map_dir(dest_server)
        os.makedirs(dest, exist_ok=True)
        os.replace(path, os.path.join(dest, os.path.basename(path)))
        return size

    def close(self) -> None:
        pass
