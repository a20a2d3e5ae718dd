"""DiskSort: an external merge sort under a memory budget, iterated one key group at a time.

Items are (key, value) tuples. Appended items are held until their estimated size
passes the budget, then sorted and written as a run; already-sorted run files
(the shuffler's spill files) can be added as they are. Iterating merges all runs.

The merge works on slices, not items: each round takes, from every run's current
batch, the items up to the smallest "last key" among those batches, and sorts
their concatenation; timsort sees the concatenated sorted slices and merges them
in C. The per-item Python cost of `heapq.merge` is avoided.

Keys sort in their natural ascending order when they are mutually comparable.
Otherwise (int beside str, None, sets...) the sort falls back to a universal
order: a total order that agrees with the natural one wherever that is defined,
so runs sorted either way merge correctly and equal keys always meet.
"""
from __future__ import annotations

import os
import tempfile
from bisect import bisect_right
from collections.abc import Iterable, Iterator
from itertools import chain, groupby, islice
from operator import itemgetter
from typing import Any

from cluster import defaults
from cluster.engine import codec
from cluster.engine.disk_list import DiskList
from cluster.engine.sizing import batch_items_for, estimate_item_bytes
from cluster.exceptions import OrderConflict

_key0 = itemgetter(0)
_END = object()
NATURAL_TYPES = frozenset({str, int, float, bool, bytes, tuple})


def universal_key(k: Any) -> tuple:
    """A sort key giving every value a place in one total order."""
    t = type(k)
    if t is str:
        return (2, k)
    if t is int or t is bool:
        return (1, 0, k)
    if t is float:
        return (1, 0, k) if k == k else (1, 1, 0)  # NaN after every number: the order stays total
    if k is None:
        return (0, 0)
    if t is bytes:
        return (3, k)
    if t is tuple or t is list:
        return (4, tuple(map(universal_key, k)))
    if t is frozenset or t is set:
        return (5, tuple(sorted(map(universal_key, k))))
    if t is dict:
        return (6, tuple(sorted((universal_key(a), universal_key(b)) for a, b in k.items())))
    return (7, t.__name__, repr(k))


def _universal_item_key(item: tuple) -> tuple:
    return universal_key(item[0])


_FAMILY = {int: "number", float: "number", bool: "number", str: "str", bytes: "bytes", tuple: "tuple"}


def _naturally_ordered(keys: Iterable) -> bool:
    """True when the natural order of these keys is total: no sets, None, dicts or NaN, at any tuple depth."""
    keys = list(keys)
    types = set(map(type, keys))
    if not types <= NATURAL_TYPES:
        return False
    if float in types and any(k != k for k in keys if type(k) is float):
        return False
    if tuple in types:
        return _naturally_ordered(chain.from_iterable(k for k in keys if type(k) is tuple))
    return True


def sort_keys(keys: list) -> bool:
    """Sort distinct keys in place; return True when the universal order had to be used."""
    if _naturally_ordered(keys):
        try:
            keys.sort()
            return False
        except TypeError:
            pass
    keys.sort(key=universal_key)
    return True


def sort_items(items: list) -> bool:
    """Sort (key, value) items by key in place; return True when the universal order was used."""
    if _naturally_ordered(map(_key0, items)):
        try:
            items.sort(key=_key0)
            return False
        except TypeError:
            pass
    items.sort(key=_universal_item_key)
    return True


class DiskSort:
    """Sort (key, value) items under `memory_budget` bytes, spilling runs into `directory`."""

    def __init__(self, directory: str | None = None, memory_budget: int = 256 * 1024 ** 2,
                 universal: bool = False):
        self.directory = directory
        self.memory_budget = max(1024 ** 2, int(memory_budget))
        self.universal = universal
        self._buffer: list = []
        self._item_bytes: float | None = None
        self._runs: list[str] = []
        self._since_check = 0
        self._check_every = defaults.SIZE_SAMPLE_ITEMS
        self._families: set = set()
        self._own_runs: list[str] = []
        self._current: DiskList | None = None
        self.counters = {"runs_spilled": 0, "merge_passes": 0, "items_sorted": 0}

    # --- input -------------------------------------------------------------------------
    def append(self, item: tuple) -> None:
        self._buffer.append(item)
        self._since_check += 1
        if self._since_check >= self._check_every:
            self._check_memory()

    def extend(self, items: Iterable[tuple]) -> None:
        it = iter(items)
        while True:
            batch = list(islice(it, self._check_every))
            if not batch:
                return
            self._buffer.extend(batch)
            self._check_memory()

    def add_run(self, path: str, universal: bool = False) -> None:
        """Add a file of batches already sorted by key (universal order when `universal`)."""
        self._runs.append(path)
        self.universal = self.universal or universal

    @property
    def run_count(self) -> int:
        """How many sorted runs are waiting to be merged."""
        return len(self._runs)

    def _check_memory(self) -> None:
        self._since_check = 0
        if self._item_bytes is None and len(self._buffer) >= defaults.SIZE_SAMPLE_ITEMS:
            self._item_bytes = estimate_item_bytes(self._buffer)
            self._check_every = batch_items_for(self._item_bytes)
        per_item = self._item_bytes or 64.0
        # sorting needs the list itself plus timsort's temporary space (n/2 pointers)
        if len(self._buffer) * (per_item + 4) > self.memory_budget:
            self._spill()

    def _new_run_path(self) -> str:
        fd, path = tempfile.mkstemp(prefix="run-", suffix=".bin", dir=self.directory)
        os.close(fd)
        self._own_runs.append(path)
        return path

    def _spill(self) -> None:
        if not self._buffer:
            return
        self.universal = sort_items(self._buffer) or self.universal
        self._families.update(_FAMILY.get(t, "other") for t in set(map(type, map(_key0, self._buffer))))
        if len(self._families) > 1:
            self.universal = True  # runs of different key types only merge in the universal order
        path = self._new_run_path()
        with open(path, "wb") as fh:
            codec.dump_items(fh, self._buffer, defaults.BATCH_ITEMS)
        self._runs.append(path)
        self.counters["runs_spilled"] += 1
        self._buffer = []

    # --- merging -----------------------------------------------------------------------
    def _fan_in(self) -> int:
        per_item = self._item_bytes or 128.0
        # a run's current batch, and two lists of pointers to its items: its slice and the merged copy
        # (the items themselves are shared, not copied)
        per_run = batch_items_for(per_item) * (per_item + 16)
        return int(max(2, min(defaults.MAX_MERGE_FAN_IN, self.memory_budget // per_run)))

    @staticmethod
    def _batches(path: str) -> Iterator[list]:
        with open(path, "rb") as fh:
            yield from codec.iter_batches(fh)

    def _merge(self, sources: list[Iterator[list]]) -> Iterator[list]:
        """Merge iterators of sorted batches into sorted batches."""
        key = _universal_item_key if self.universal else _key0
        heads: list[list[Any]] = []  # [the current batch, the iterator of the rest]
        for it in sources:
            batch = next((b for b in it if b), None)
            if batch is not None:
                heads.append([batch, it])
        try:
            while len(heads) > 1:
                bound = min(key(h[0][-1]) for h in heads)
                out: list = []
                keep = []
                for h in heads:
                    batch = h[0]
                    if key(batch[-1]) <= bound:
                        out += batch
                        nxt = next((b for b in h[1] if b), None)
                        if nxt is not None:
                            h[0] = nxt
                            keep.append(h)
                    else:
                        i = bisect_right(batch, bound, key=key)
                        if i == len(batch):  # only an inconsistent order gets here
                            raise TypeError("keys are not consistently ordered")
                        if i:
                            out += batch[:i]
                            h[0] = batch[i:]
                        keep.append(h)
                heads = keep
                out.sort(key=key)
                yield out
        except TypeError as exc:
            if self.universal:
                raise
            raise OrderConflict(str(exc)) from exc
        for h in heads:
            yield h[0]
            yield from (b for b in h[1] if b)

    def premerge(self) -> None:
        """Merge runs into fewer, longer runs until one final merge fits the memory budget."""
        if self._runs and self._buffer:
            self._spill()
        if not self._runs:
            return
        self._item_bytes = self._item_bytes or self._sample_run_item_bytes()
        runs = list(self._runs)
        fan_in = self._fan_in()
        while len(runs) > fan_in:
            self.counters["merge_passes"] += 1
            merged = []
            for i in range(0, len(runs), fan_in):
                group = runs[i:i + fan_in]
                if len(group) == 1:
                    merged.append(group[0])
                    continue
                path = self._new_run_path()
                with open(path, "wb") as fh:
                    for batch in self._merge([self._batches(p) for p in group]):
                        codec.dump_entries(fh, batch, defaults.BATCH_ITEMS)
                merged.append(path)
                self._drop_own(group)
            runs = merged
        self._runs = runs

    def _sorted_batches(self) -> Iterator[list]:
        self.premerge()
        if not self._runs:
            self.universal = sort_items(self._buffer) or self.universal
            buf, self._buffer = self._buffer, []
            return iter([buf] if buf else [])
        self.counters["merge_passes"] += 1
        return self._merge([self._batches(p) for p in self._runs])

    def _sample_run_item_bytes(self) -> float:
        for path in self._runs:
            for batch in self._batches(path):
                if batch:
                    return codec.entry_item_bytes(batch)
        return 64.0

    def _drop_own(self, paths: list[str]) -> None:
        for p in paths:
            if p in self._own_runs:
                os.unlink(p)
                self._own_runs.remove(p)

    # --- output ------------------------------------------------------------------------
    def entries(self) -> Iterator[tuple]:
        """Every codec entry, in key order (an entry stands for one or many items of its key)."""
        return chain.from_iterable(self._sorted_batches())

    def items(self) -> Iterator[tuple]:
        """Every item, in key order."""
        for batch in self._sorted_batches():
            if codec.plain(batch):
                self.counters["items_sorted"] += len(batch)
                yield from batch
            else:
                self.counters["items_sorted"] += codec.total_items(batch)
                yield from codec.expand(batch)

    def groups(self, disk_based: bool = False, max_items_in_memory: int | None = None
               ) -> Iterator[tuple[Any, list | DiskList]]:
        """Yield (key, group) per key in order. A group is a list; one that outgrows a quarter of the
        memory budget (every group, when `disk_based`) is a DiskList instead, valid until the next
        group is requested. `counters["groups_on_disk"]` counts the DiskList groups.

        A key's entries become items only here: a list group is built in C from them, and a DiskList
        takes them whole (its items are made as the reduce function reads them)."""
        per_item = max(self._item_bytes or 128.0, 64.0)  # an item of a list group is a tuple of its own
        if max_items_in_memory is None:
            max_items_in_memory = max(1000, int(self.memory_budget / 4 / per_item))
        limit = max_items_in_memory
        counters = self.counters
        counters.setdefault("groups_on_disk", 0)
        plain, expand = codec.plain, codec.expand
        for key, run in groupby(self.entries(), key=_key0):
            head: list = []
            n = 0
            for entry in run:
                head.append(entry)
                n += 1 if len(entry) == 2 else (len(entry[1]) if entry[2] is None else entry[2])  # its weight
                if n > limit:
                    break
            else:  # the whole group fits
                if not disk_based:
                    counters["items_sorted"] += n
                    yield key, head if plain(head) else list(expand(head))
                    continue
            group = DiskList(self.directory, limit)
            self._current = group
            counters["groups_on_disk"] += 1
            try:
                group.add_entries(head, n)
                del head
                for chunk in iter(lambda: list(islice(run, 256)), []):  # noqa: B023 - the rest of this group
                    group.add_entries(chunk)
                counters["items_sorted"] += len(group)
                yield key, group
            finally:
                group.close()
                self._current = None

    def close(self) -> None:
        """Delete the runs this sort wrote (added runs belong to their owner)."""
        if self._current is not None:
            self._current.close()
        self._drop_own(list(self._own_runs))
        self._buffer = []

    def __enter__(self) -> DiskSort:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

