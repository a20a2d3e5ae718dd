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
    """A list that spills to `directory` past `max_items_in_memory` items.

    It holds codec entries (an item is an entry), so a key's values can come in as whole entries
    (`add_entries`) and are expanded into items only while they are read."""

    def __init__(self, directory: str | None = None, max_items_in_memory: int = 100_000,
                 delete_after_iteration: bool = False):
        self.directory = directory
        self.max_items_in_memory = max(1, int(max_items_in_memory))
        self.delete_after_iteration = delete_after_iteration
        self._buffer: list = []     # entries
        self._in_buffer = 0         # the items they stand for
        self._plain = True          # every buffered entry is an item
        self._entries = False       # add_entries was used: what it holds are entries, not any items
        self._path: str | None = None
        self._fh: IO[bytes] | None = None
        self._on_disk = 0
        self._closed = False

    def __len__(self) -> int:
        self._check_open()
        return self._on_disk + self._in_buffer

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("DiskList is closed (a group is valid until the reduce function returns)")

    def __getitem__(self, index: int | slice) -> Any:
        """Item by position, or a list for a slice (read by a scan: cheap for the first items, which is
        what `group[0]` needs, and for the in-memory tail, which `group[-1]` reads)."""
        if isinstance(index, slice):
            wanted = range(len(self))[index]
            if wanted and min(wanted) >= self._on_disk and self._plain:  # all in the in-memory tail (group[-5:])
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
            if self._plain:
                return self._buffer[index - self._on_disk]
            return next(islice(codec.expand(self._buffer), index - self._on_disk, None))
        return next(islice(self._iter_file(), index, None))

    @property
    def on_disk(self) -> bool:
        """True once some items went to the file."""
        return self._on_disk > 0

    def append(self, item: Any) -> None:
        self._buffer.append(item)
        self._in_buffer += 1
        if self._in_buffer >= self.max_items_in_memory:
            self._spill()

    def extend(self, items: Iterable) -> None:
        it = iter(items)
        room = self.max_items_in_memory
        while True:
            chunk = list(islice(it, max(1, room - self._in_buffer)))
            if not chunk:
                return
            self._buffer += chunk
            self._in_buffer += len(chunk)
            if self._in_buffer >= room:
                self._spill()

    def add_entries(self, entries: list, items: int | None = None) -> None:
        """Add codec entries (standing for `items` items, counted when not given)."""
        self._entries = True  # so the items added before must be (key, value) items too
        self._buffer += entries
        self._in_buffer += codec.total_items(entries) if items is None else items
        self._plain = self._plain and codec.plain(entries)
        if self._in_buffer >= self.max_items_in_memory:
            self._spill()

    def _spill(self) -> None:
        if self._closed:
            raise ValueError("DiskList is closed")
        if self._fh is None:
            fd, self._path = tempfile.mkstemp(prefix="disklist-", suffix=".bin", dir=self.directory)
            self._fh = os.fdopen(fd, "wb")
        if self._entries:
            codec.dump_entries(self._fh, self._buffer, defaults.BATCH_ITEMS)
        else:
            codec.dump_items(self._fh, self._buffer, defaults.BATCH_ITEMS)
        self._on_disk += self._in_buffer
        self._buffer, self._in_buffer, self._plain = [], 0, True

    def _iter_file(self) -> Iterator:
        if self._fh is not None:
            self._fh.flush()
            assert self._path is not None  # set with self._fh
            with open(self._path, "rb") as fh:
                for batch in codec.iter_batches(fh):
                    yield from codec.expand(batch) if self._entries and not codec.plain(batch) else batch

    def _iter_buffer(self) -> Iterator:
        return iter(self._buffer) if self._plain else codec.expand(self._buffer)

    def __iter__(self) -> Iterator:
        self._check_open()
        if self._fh is None and not self.delete_after_iteration:
            return self._iter_buffer()  # no generator between the caller and the items
        return self._iter_all()

    def _iter_all(self) -> Iterator:
        yield from self._iter_file()
        yield from self._iter_buffer()
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
        self._buffer, self._in_buffer, self._plain = [], 0, True
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
