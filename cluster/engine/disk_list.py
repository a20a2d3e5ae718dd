"""DiskList: an append-then-iterate list that keeps at most a budget in memory.

Items stay in memory until `max_items_in_memory` is reached, then go to a file in
batches; iterating yields the file's items, then the in-memory tail. The file is
deleted when the list is closed (also by `with`, and after a full iteration when
`delete_after_iteration` is set).

A reduce function uses it like the list it expects: iterate it (as often as it likes), take
its `len`, index it (negative too) and slice it. Indexing into the part on disk reads up to
that item, so `group[0]` and `group[-1]` are cheap and random access is not.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator
from itertools import islice
from operator import itemgetter
from typing import IO, Any

from cluster import defaults
from cluster.engine import codec


class DiskList:
    """A list that spills to `directory` past `max_items_in_memory` items."""

    def __init__(self, directory: str | None = None, max_items_in_memory: int = 100_000,
                 delete_after_iteration: bool = False):
        self.directory = directory
        self.max_items_in_memory = max(1, int(max_items_in_memory))
        self.delete_after_iteration = delete_after_iteration
        self._buffer: list = []
        self._path: str | None = None
        self._fh: IO[bytes] | None = None
        self._on_disk = 0
        self._closed = False

    def __len__(self) -> int:
        self._check_open()
        return self._on_disk + len(self._buffer)

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("DiskList is closed (a group is valid until the reduce function returns)")

    def __getitem__(self, index: int | slice) -> Any:
        """Item by position, or a list for a slice (read by a scan: cheap for the first items, which is
        what `group[0]` needs, and for the in-memory tail, which `group[-1]` reads)."""
        if isinstance(index, slice):
            wanted = range(len(self))[index]
            if wanted and min(wanted) >= self._on_disk:  # all in the in-memory tail (group[-5:])
                return [self._buffer[i - self._on_disk] for i in wanted]
            return _slice(self, index)
        if not isinstance(index, int):
            raise TypeError(f"DiskList indices must be integers or slices, not {type(index).__name__}")
        n = len(self)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError("DiskList index out of range")
        if index >= self._on_disk:
            return self._buffer[index - self._on_disk]
        return next(islice(self._iter_file(), index, None))

    @property
    def on_disk(self) -> bool:
        """True once some items went to the file."""
        return self._on_disk > 0

    def append(self, item: Any) -> None:
        self._buffer.append(item)
        if len(self._buffer) >= self.max_items_in_memory:
            self._spill()

    def extend(self, items: Iterable) -> None:
        it = iter(items)
        room = self.max_items_in_memory
        while True:
            chunk = list(islice(it, max(1, room - len(self._buffer))))
            if not chunk:
                return
            self._buffer.extend(chunk)
            if len(self._buffer) >= room:
                self._spill()

    def _spill(self) -> None:
        if self._closed:
            raise ValueError("DiskList is closed")
        if self._fh is None:
            fd, self._path = tempfile.mkstemp(prefix="disklist-", suffix=".bin", dir=self.directory)
            self._fh = os.fdopen(fd, "wb")
        buf = self._buffer
        codec.dump_items(self._fh, buf, defaults.BATCH_ITEMS)
        self._on_disk += len(buf)
        self._buffer = []

    def _iter_file(self) -> Iterator:
        if self._fh is not None:
            self._fh.flush()
            assert self._path is not None  # set with self._fh
            with open(self._path, "rb") as fh:
                for batch in codec.iter_batches(fh):
                    yield from batch

    def __iter__(self) -> Iterator:
        self._check_open()
        yield from self._iter_file()
        yield from self._buffer
        if self.delete_after_iteration:
            self.close()

    def close(self) -> None:
        """Delete the file and drop the items."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if self._path is not None:
            try:
                os.unlink(self._path)
            except FileNotFoundError:
                pass
            self._path = None
        self._buffer = []
        self._on_disk = 0
        self._closed = True

    def __enter__(self) -> DiskList:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_path", None):
            self.close()


def _slice(seq: Any, index: slice) -> list:
    """seq[index] as a list, read in one pass that keeps only the items it picks."""
    wanted = range(len(seq))[index]
    if not wanted:
        return []
    if wanted.step > 0:
        return list(islice(iter(seq), wanted.start, wanted.stop, wanted.step))
    picked = list(islice(iter(seq), wanted[-1], wanted[0] + 1, -wanted.step))
    picked.reverse()
    return picked


class DiskValues:
    """The values of a disk-backed group, as a read-only sequence (a job script's `values`)."""

    __slots__ = ("_group",)

    def __init__(self, group: DiskList) -> None:
        self._group = group

    def __len__(self) -> int:
        return len(self._group)

    def __iter__(self) -> Iterator:
        return map(_value, iter(self._group))

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return _slice(self, index)
        return self._group[index][1]

    def __repr__(self) -> str:
        """As the list of values would print (what `str(values)` writes in an output record)."""
        return "[" + ", ".join(map(repr, self)) + "]"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (list, tuple, DiskValues)):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # unhashable, as a list

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(f"the values of a group too big for memory are read from disk: a read-only sequence "
                             f"(iterate it, len(), index, slice); it has no .{name} (list(values) makes a list, "
                             "if it fits in memory)")


_value = itemgetter(1)
