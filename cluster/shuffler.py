"""Partition map output by key into spill files and hand them to a transport.

Map output is grouped by key in memory (one dict lookup per item). When the
estimated size passes the budget, the groups are combined in place when the job
has a combiner (and kept while that frees enough), otherwise spilled: keys are
sorted once per spill, so every spill file is a sorted run and the reducer only
merges. Keys go to servers by a stable hash, the same on every machine.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from itertools import chain
from typing import Any

from cluster import codec, defaults
from cluster.disk_sort import deep_size, sort_keys
from cluster.layout import SPILL_SUFFIX, UNIVERSAL_MARK
from cluster.transport import Transport

log = logging.getLogger(__name__)
_PER_KEY_BYTES = 160  # a dict entry, a list header and its spare slots


class ShuffleError(Exception):
    """Internal: a spill could not be written (wrapped by the phase with its context)."""


class Shuffler:
    """Collects one map server's output, combines it, spills and ships it to its reducers."""

    def __init__(self, *, server_id: str, partitions: list[str], spill_dir: str, transport: Transport,
                 memory_budget: int, max_items_per_file: int,
                 combine: Callable[[list, Any], Iterable] | None = None, auxiliary_data: Any = None,
                 counters: dict | None = None):
        self.server_id = server_id
        self.partitions = list(partitions)
        self.spill_dir = spill_dir
        self.transport = transport
        self.memory_budget = memory_budget
        self.max_items_per_file = max(1, max_items_per_file)
        self.combine = combine
        self.auxiliary_data = auxiliary_data
        self.counters = counters if counters is not None else {}
        for name in ("map_items_out", "combine_calls", "combine_items_in", "combine_items_out",
                     "spills", "spilled_items", "spilled_bytes", "spill_files", "moved_bytes"):
            self.counters.setdefault(name, 0)
        self._groups: dict = {}
        self._held = 0
        self._added = 0
        self._item_bytes: float | None = None
        self._seq = 0
        self._partition_cache: dict = {}
        os.makedirs(spill_dir, exist_ok=True)

    def add(self, items: Iterable | None) -> None:
        """Take one map call's output. The hot path: keep it lean."""
        if items is None:
            return
        groups = self._groups
        get = groups.get
        n = 0
        for n, item in enumerate(items, 1):  # noqa: B007 - n is the count
            key = item[0]
            group = get(key)
            if group is None:
                groups[key] = [item]
            else:
                group.append(item)
        self._held += n
        self._added += n

    def held_bytes(self) -> float:
        """Estimated bytes held by buffered items."""
        if self._item_bytes is None:
            if self._held < defaults.SIZE_SAMPLE_ITEMS:
                return self._held * 128.0
            sample = list(chain.from_iterable(list(self._groups.values())[:defaults.SIZE_SAMPLE_ITEMS]))
            sample = sample[:defaults.SIZE_SAMPLE_ITEMS]
            self._item_bytes = 8 + sum(map(deep_size, sample)) / len(sample)
        return self._held * self._item_bytes + len(self._groups) * _PER_KEY_BYTES

    def maybe_flush(self) -> None:
        """Combine or spill when the held items pass the memory budget."""
        if self.held_bytes() <= self.memory_budget:
            return
        if self.combine is not None:
            self._combine_all()
            if self.held_bytes() <= self.memory_budget / 2:
                return
        self._spill_all()

    def close(self) -> dict:
        """Spill what is left, wait for the transport; return the counters."""
        if self.combine is not None and self._groups:
            self._combine_all()
        self._spill_all()
        self.transport.close()
        self.counters["map_items_out"] += self._added
        self._added = 0
        return self.counters

    # --- combine -----------------------------------------------------------------------
    def _combine_all(self) -> None:
        combine, aux = self.combine, self.auxiliary_data
        new: dict = {}
        held = calls = items_in = 0
        for key, group in self._groups.items():
            if len(group) > 1:
                calls += 1
                items_in += len(group)
                out = combine(group, aux)
                for item in out if out is not None else ():
                    k = item[0]
                    g = new.get(k)
                    if g is None:
                        new[k] = [item]
                    else:
                        g.append(item)
                    held += 1
            else:
                g = new.get(key)
                if g is None:
                    new[key] = group
                else:
                    g.extend(group)
                held += 1
        self.counters["combine_calls"] += calls
        self.counters["combine_items_in"] += items_in
        self.counters["combine_items_out"] += held - (len(self._groups) - calls)
        self._groups = new
        self._held = held

    # --- spill -------------------------------------------------------------------------
    def _partition(self, key: Any) -> int:
        p = self._partition_cache.get(key)
        if p is None:
            p = codec.stable_hash(key) % len(self.partitions)
            if len(self._partition_cache) < 1_000_000:
                self._partition_cache[key] = p
        return p

    def _spill_all(self) -> None:
        groups = self._groups
        if not groups:
            return
        keys = list(groups)
        universal = sort_keys(keys)
        n = len(self.partitions)
        if n == 1:
            per_part = [keys]
        else:
            per_part = [[] for _ in range(n)]
            part = self._partition
            for k in keys:
                per_part[part(k)].append(k)
        self._groups = {}
        self._held = 0
        self.counters["spills"] += 1
        getitem = groups.__getitem__
        for index, pkeys in enumerate(per_part):
            if not pkeys:
                continue
            items = list(chain.from_iterable(map(getitem, pkeys)))
            for start in range(0, len(items), self.max_items_per_file):
                self._write(items[start:start + self.max_items_per_file], self.partitions[index], universal)

    def _write(self, items: list, dest: str, universal: bool) -> None:
        self._seq += 1
        name = f"{self.server_id}-{self._seq:06d}{UNIVERSAL_MARK if universal else ''}{SPILL_SUFFIX}"
        tmp = os.path.join(self.spill_dir, name + ".tmp")
        path = os.path.join(self.spill_dir, name)
        try:
            with open(tmp, "wb") as fh:
                written = codec.dump_items(fh, items, defaults.BATCH_ITEMS)
            os.replace(tmp, path)
            self.counters["moved_bytes"] += self.transport.send(path, dest)
        except OSError as exc:
            raise ShuffleError(f"writing spill file {path} for {dest} failed: {exc}") from exc
        self.counters["spill_files"] += 1
        self.counters["spilled_items"] += len(items)
        self.counters["spilled_bytes"] += written
