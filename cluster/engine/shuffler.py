"""Partition map output by key into spill files and hand them to a transport.

Each map call's output is appended to a pending batch (one C-level extend per
line). A batch is then either counted or grouped:

- counted, when the job has a combiner and every item of the batch is a
  (key, value) pair of plain types (int, str, bytes or None; tuple keys are
  grouped, since hashing a nested tuple twice costs more than grouping it once):
  identical items are counted by `collections.Counter` in C, so
  millions of ("word", 1) items take the memory of their distinct values, and
  the combiner later gets `[item] * n` (for a big n, its own output for 1024
  copies, n / 1024 times: a combiner is associative). Only items equal in type
  and value are merged, so the combiner sees what the map produced. A batch whose
  items all carry one value (a map's `(word, 1)` tuples) is counted by key.
- keys counted per value, for `cluster.emit.with_value(keys, value)` output with a
  combiner: no tuple is built per key at all.
- grouped otherwise: with a combiner, items are appended to their key's list;
  without one, only their values are (a job without a combiner holds no tuple per
  item: `with_value` keys and plain tuples alike go to `groups[key].append(value)`,
  itemgetter, defaultdict lookup and list.append chained through `map`, all in C).
  Keys that are equal are one key (1, 1.0, True): the group's key is the first seen.

When the held items pass the combine size, groups are combined in place (a
combiner may run 0..n times, so it must be associative); when they pass the
memory budget they are spilled: keys are sorted once per spill, so every spill
file is a sorted run and the reducer only merges; each key's values are written as
codec entries (a run of one repeated value, or a list of values), not an item each.
Keys go to servers by a stable hash, the same on every machine.
"""
from __future__ import annotations

import logging
import os
import traceback
import zlib
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterable, Iterator
from itertools import accumulate, chain, repeat
from operator import eq, itemgetter
from typing import Any

from cluster import defaults
from cluster.emit import SameValue
from cluster.engine import codec
from cluster.engine.disk_sort import sort_keys
from cluster.engine.sizing import (
    SLOT_BYTES,
    batch_items_for,
    deep_size,
    estimate_item_bytes,
    estimate_value_bytes,
    spread_sample,
)
from cluster.engine.transport import Transport
from cluster.exceptions import BadMapOutput, ShuffleError, UserFunctionError
from cluster.layout import SPILL_SUFFIX, UNIVERSAL_MARK

try:
    # the C loop behind Counter.update; private, so not in the stubs
    from collections import _count_elements  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - other Pythons
    def _count_elements(mapping, iterable):
        get = mapping.get
        for element in iterable:
            mapping[element] = get(element, 0) + 1

log = logging.getLogger(__name__)
_BYTES_PER_GROUP = 160   # a dict entry, a list header and its spare slots
_BYTES_PER_COUNT = 100   # a Counter entry
_BYTES_PER_ITEM_GUESS = 128.0  # before the first batch is measured
_MAX_PENDING_ITEMS = defaults.MAX_PENDING_ITEMS
_key0 = itemgetter(0)
_value1 = itemgetter(1)
_append = list.append
_consume: Callable[[Iterable[Any]], None] = deque(maxlen=0).extend
_NOTHING = object()
_TUPLE = {tuple}
_STR = {str}
_PAIR = {2}
_PAIR_TYPES = {tuple, list}
_COUNT_VALUE_TYPES = frozenset({int, str, bytes, type(None)})
_COUNT_KEY_TYPES = frozenset({int, str, bytes, type(None)})
_IMMUTABLE_VALUES = frozenset({int, float, str, bytes, bool, type(None), tuple, frozenset})


def describe_bad_output(items: Iterable, what: str = "map output") -> str | None:
    """Why these map (or combine) output items are not (key, value) pairs with hashable keys; None
    when they are."""
    for item in items:
        if type(item) not in _PAIR_TYPES or len(item) != 2:
            return (f"{what} must be an iterable of (key, value) pairs, or None; got the item "
                    f"{item!r:.200} ({type(item).__name__}"
                    + (f" of length {len(item)})" if hasattr(item, "__len__") else ")"))
        try:
            hash(item[0])
        except TypeError:
            return (f"{what} item {item!r:.200} has an unhashable key "
                    f"({type(item[0]).__name__}); keys must be hashable: use a tuple, not a list or dict")
    return None


class CountedItems:
    """Identical (key, value) items held as counts, for a job with a combiner: millions of
    ("word", 1) take the memory of their distinct items, and the combiner later gets `[item] * n`.

    Two kinds of entry: whole items counted (`by_item`), and the keys of `with_value(keys, value)`
    output counted per value (`by_value`), so no tuple is built per key. The last value seen keeps
    its key Counter at hand (`last_value`, `last_keys`): a map call with the same value adds its keys
    in one C loop, as a hand-written Counter loop would.
    """

    __slots__ = ("by_item", "by_value", "items", "new_items", "last_value", "last_keys")

    def __init__(self) -> None:
        self.by_item: Counter = Counter()  # (key, value) -> how many
        self.by_value: dict = {}           # (type(value), value) -> (value, Counter of keys)
        self.items = 0                     # items the counts stand for, settled
        self.new_items = 0                 # of which not yet settled (the hot path only adds here)
        self.last_value: Any = _NOTHING
        self.last_keys: Counter = Counter()

    def clear(self) -> None:
        self.by_item, self.by_value, self.items, self.new_items = Counter(), {}, 0, 0
        self.last_value, self.last_keys = _NOTHING, Counter()

    def keys_for(self, value: Any) -> Counter:
        """The Counter of `value`'s keys, which becomes the last one (values of plain types only:
        (1.0, 2) == (1, 2), so only values equal in type and value share)."""
        entry = self.by_value.get((type(value), value))
        if entry is None:
            entry = self.by_value[(type(value), value)] = (value, Counter())
        self.last_value, self.last_keys = value, entry[1]
        return entry[1]

    def settle(self) -> int:
        """Move the hot path's new items into the total; return how many there were."""
        new, self.new_items = self.new_items, 0
        self.items += new
        return new

    def entries(self) -> int:
        """Distinct entries held: what the counts cost in memory."""
        return len(self.by_item) + sum(len(keys) for _, keys in self.by_value.values())

    def take(self) -> dict:
        """The counted items by key, as {key: [(item, n), ...]}; the buffer starts empty again."""
        by_key: defaultdict = defaultdict(list)
        for item, n in self.by_item.items():
            by_key[item[0]].append((item, n))
        for value, keys in self.by_value.values():
            for key, n in keys.items():
                by_key[key].append(((key, value), n))
        self.clear()
        return by_key


class GroupedItems:
    """Items grouped by key, one list per key: the items themselves, what a combiner reads, or (for a
    job without one, `values`) only their values. A spill writes either."""

    __slots__ = ("groups", "items", "values")

    def __init__(self, values: bool = False) -> None:
        self.groups: defaultdict = defaultdict(list)
        self.items = 0  # items held in the groups
        self.values = values

    def add_batch(self, items: list) -> None:
        """Append every (key, value) item (or its value) to its key's list (lookup and append chained in C)."""
        group_into(self.groups, items, self.values)
        self.items += len(items)

    def add_keys(self, keys: list, value: Any) -> None:
        """`values` only: the items (key, value) for every key, as `value` appended to each key's list."""
        try:
            _consume(map(_append, map(self.groups.__getitem__, keys), repeat(value)))
        except TypeError as exc:
            raise BadMapOutput(describe_bad_output(zip(keys, repeat(value)))
                               or f"map output could not be grouped ({type(exc).__name__}: {exc})") from None
        self.items += len(keys)

    def add_combined(self, key: Any, group: list, combine: Callable[[Any, list], list]) -> None:
        """Put one key's items back, combined first when there are several (`combine(key, group)`)."""
        out = combine(key, group) if len(group) > 1 else group
        groups = self.groups
        for item in out:  # by each item's own key: a combiner may change keys
            groups[item[0]].append(item)
        self.items += len(out)

    def pop(self, key: Any) -> list:
        """Take one key's items out (empty when it has none)."""
        group = self.groups.pop(key, None) or []
        self.items -= len(group)
        return group

    def add_counted(self, counted: dict) -> None:
        """Expand counted items ({key: [(item, n), ...]}) into their groups."""
        groups = self.groups
        for key, entries in counted.items():
            group = groups[key]
            for item, n in entries:
                group += [item] * n
                self.items += n

    def take(self) -> defaultdict:
        """All groups; the buffer starts empty again."""
        groups = self.groups
        self.groups, self.items = defaultdict(list), 0
        return groups


def group_into(groups: defaultdict, items: list, values: bool = False) -> None:
    """Append each item (or, with `values`, its value) to `groups[item[0]]`; malformed items are
    BadMapOutput."""
    try:
        _consume(map(_append, map(groups.__getitem__, map(_key0, items)), map(_value1, items) if values else items))
    except (TypeError, IndexError, KeyError) as exc:
        raise BadMapOutput(describe_bad_output(items)
                           or f"map output could not be grouped ({type(exc).__name__}: {exc})") from None


class Shuffler:
    """Collects one map server's output, combines it, spills and ships it to its reducers."""

    def __init__(self, *, server_id: str, partitions: list[str], spill_dir: str, transport: Transport,
                 memory_budget_bytes: int, max_items_per_file: int,
                 combine: Callable[[list, Any], Iterable] | None = None, combine_name: str = "combine",
                 auxiliary_data: Any = None, counters: dict | None = None, file_prefix: str | None = None):
        self.server_id = server_id
        self.file_prefix = file_prefix or server_id  # a cluster server's names its map attempt too
        self.partitions = list(partitions)
        self.spill_dir = spill_dir
        self.transport = transport
        self.memory_budget_bytes = memory_budget_bytes
        self.max_items_per_file = max(1, max_items_per_file)
        self.combine = combine
        self.combine_name = combine_name
        self.combine_buffer_bytes = defaults.COMBINE_BUFFER_BYTES
        self.auxiliary_data = auxiliary_data
        self.counters = counters if counters is not None else {}
        for name in ("map_items_out", "combine_calls", "combine_items_in", "combine_items_out",
                     "spills", "spilled_items", "spilled_bytes", "spill_files", "moved_bytes"):
            self.counters.setdefault(name, 0)
        self._pending: list = []          # map output not yet counted or grouped
        self._pending_keys: dict = {}     # (type(value), value) -> [value, keys...] from with_value()
        self._counted = CountedItems()
        self._grouped = GroupedItems(values=combine is None)
        self._use_counts = combine is not None
        self._bytes_per_item: float | None = None  # estimated from the batches (a value, without a combiner)
        self._bytes_per_key = 0.0  # a group's key, without a combiner (with one, within the items)
        self._value_types: set = set()  # of every value held: a run of one value is written as one entry
        self._batches = 0
        self._bytes_after_combine = 0.0
        self._items_after_combine = 0
        self._spill_seq = 0
        os.makedirs(spill_dir, exist_ok=True)

    def add(self, items: Iterable | None) -> None:
        """Take one map call's output (the hot path: one C-level extend, or one C-level count)."""
        if type(items) is SameValue:
            value = items.value
            counted = self._counted
            if value is counted.last_value:  # only set when the job has a combiner
                # counted now, while split() has them in the cache: what a Counter loop costs per key
                keys = items.keys if type(items.keys) is list else list(items.keys)
                _count_elements(counted.last_keys, keys)
                counted.new_items += len(keys)
                return
            if type(value) not in _COUNT_VALUE_TYPES:  # (1.0, 2) == (1, 2): only exact plain types share
                self._pending += items
                return
            if self.combine is not None:
                counted.keys_for(value)
                self.add(items)
                return
            bucket: list | None = self._pending_keys.get((type(value), value))
            if bucket is None:
                self._pending_keys[(type(value), value)] = bucket = [value]
            bucket += items.keys
            return
        if items is None:
            return
        pending = self._pending
        pending += items
        if len(pending) > _MAX_PENDING_ITEMS:
            self.drain()

    # --- batches -----------------------------------------------------------------------
    def drain(self) -> None:
        """Count or group the pending batch. Raises BadMapOutput for malformed map output."""
        self.counters["map_items_out"] += self._counted.settle()
        if self._pending_keys:
            self._drain_keys()
        items = self._pending
        if not items:
            return
        self._pending = []
        types = set(map(type, items))
        if not types <= _PAIR_TYPES or set(map(len, items)) != _PAIR:
            raise BadMapOutput(describe_bad_output(items))
        self.counters["map_items_out"] += len(items)
        self._measure(items)
        if self._use_counts and self._count(items, types):
            return
        if self.combine is None:
            self._value_types.update(map(type, map(_value1, items)))
            self._grouped.add_batch(items)
            return
        batch: defaultdict = defaultdict(list)
        group_into(batch, items)
        grouped = self._grouped
        if len(items) >= defaults.EAGER_COMBINE_ITEMS_PER_KEY * len(batch):
            # many items per key: combine them now, while they are young and in the cache
            for key, group in batch.items():
                old = grouped.pop(key)
                grouped.add_combined(key, old + group if old else group, self._combine_group)
        else:
            groups = grouped.groups
            for key, group in batch.items():
                groups[key] += group
            grouped.items += len(items)

    def _measure(self, items: list) -> None:
        """Keep the bytes-per-item estimate honest: the first batch, then a small sample now and then
        (and of every big batch), since items vary."""
        self._batches += 1
        if self._grouped.values:  # a held item is its value; its key is held once per group
            if self._bytes_per_item is None or not self._batches % defaults.RESAMPLE_EVERY_BATCHES:
                picked = spread_sample(items)
                per_value = estimate_value_bytes([v for _, v in picked])
                self._bytes_per_item = max(per_value, ((self._bytes_per_item or per_value) + per_value) / 2)
                self._bytes_per_key = max(self._bytes_per_key, estimate_item_bytes([k for k, _ in picked]))
            return
        if self._bytes_per_item is None:
            self._bytes_per_item = estimate_item_bytes(items)
        elif not self._batches % defaults.RESAMPLE_EVERY_BATCHES or len(items) > 4 * defaults.BATCH_ITEMS:
            sample = estimate_item_bytes(items, defaults.RESAMPLE_ITEMS)
            self._bytes_per_item = max(sample, (self._bytes_per_item + sample) / 2)

    def _combine_group(self, key: Any, group: list) -> list:
        """The combiner's output for one key's items, with the user's errors named."""
        self.counters["combine_calls"] += 1
        self.counters["combine_items_in"] += len(group)
        assert self.combine is not None  # called only when the job has a combiner
        try:
            out = list(self.combine(group, self.auxiliary_data) or ())
        except Exception as exc:
            raise UserFunctionError(function=f"combine function {self.combine_name!r}", phase="map",
                                    server=self.server_id, error=f"{type(exc).__name__}: {exc}",
                                    traceback=traceback.format_exc(), key=key) from exc
        # its items go where map output goes (spills, the reduce function): (key, value) pairs only
        if out and (not set(map(type, out)) <= _PAIR_TYPES or set(map(len, out)) != _PAIR):
            raise UserFunctionError(function=f"combine function {self.combine_name!r}", phase="map",
                                    server=self.server_id, error=describe_bad_output(out, "combine output")
                                    or "combine output must be (key, value) pairs", traceback="", key=key)
        self.counters["combine_items_out"] += len(out)
        return out

    def _drain_keys(self) -> None:
        """with_value() output of a job without a combiner: the value appended to each key's group."""
        buckets, self._pending_keys = self._pending_keys, {}
        grouped = self._grouped
        for bucket in buckets.values():
            value = bucket[0]
            keys = bucket[1:]
            self.counters["map_items_out"] += len(keys)
            self._value_types.add(type(value))
            if self._bytes_per_item is None:
                self._bytes_per_item = SLOT_BYTES + deep_size(value) / max(1, len(keys))  # one value, shared
                self._bytes_per_key = estimate_item_bytes(keys)
            grouped.add_keys(keys, value)

    def _count(self, items: list, types: set) -> bool:
        """Count a batch of plain (key, value) tuples (a job with a combiner); False, and no counting
        from now on, when its items are of other types (map output types rarely change). A batch whose
        items all carry one value (a map returning (word, 1) tuples) is counted by key, as with_value
        output is: hashing a key costs less than hashing its tuple."""
        if types != _TUPLE:
            self._use_counts = False
            return False
        value_types = set(map(type, map(_value1, items)))  # before any set of values: 1, True and 1.0 are one member
        if not value_types <= _COUNT_VALUE_TYPES or not set(map(type, map(_key0, items))) <= _COUNT_KEY_TYPES:
            self._use_counts = False
            return False
        values = set(map(_value1, items)) if len(value_types) == 1 else ()
        if len(values) == 1:
            counts = self._counted.keys_for(values.pop())
            before = len(counts)
            _count_elements(counts, map(_key0, items))
        else:
            counts = self._counted.by_item
            before = len(counts)
            counts.update(items)
        self._counted.items += len(items)
        if len(items) > 10_000 and len(counts) - before > 0.8 * len(items):
            self._use_counts = False  # nearly every item (or key) is new: counting only costs time
        return True

    # --- memory ------------------------------------------------------------------------
    def held_bytes(self) -> float:
        """Estimated bytes held by buffered items."""
        per_item = self._bytes_per_item or _BYTES_PER_ITEM_GUESS
        counted = self._counted
        # a counted item costs a pointer once its group is built for the combiner
        return (self._grouped.items * per_item + len(self._grouped.groups) * (_BYTES_PER_GROUP + self._bytes_per_key)
                + counted.items * 8 + counted.entries() * (per_item + _BYTES_PER_COUNT)
                + len(self._pending) * per_item)

    def maybe_flush(self) -> None:
        """Drain the batch; combine past the combine size; spill past the memory budget."""
        self.drain()
        held = self.held_bytes()
        if self.combine is not None:
            new_items = self._grouped.items - self._items_after_combine
            # combine when it pays: many new items per key (cheap, keeps memory hot), or a full buffer
            if (new_items >= defaults.COMBINE_MIN_ITEMS
                    and new_items >= defaults.EAGER_COMBINE_ITEMS_PER_KEY * len(self._grouped.groups)) or \
                    held - self._bytes_after_combine > min(self.memory_budget_bytes / 2, self.combine_buffer_bytes):
                self._combine_all()
                held = self._bytes_after_combine = self.held_bytes()
                self._items_after_combine = self._grouped.items
        if held > self.memory_budget_bytes:
            self._spill_all()
            self._bytes_after_combine = 0.0
            self._items_after_combine = 0

    def close(self) -> dict:
        """Spill what is left, wait for the transport; return the counters."""
        self.drain()
        if self.combine is not None:
            self._combine_all()
        self._spill_all()
        self.transport.close()
        return self.counters

    # --- combine -----------------------------------------------------------------------
    def _combine_all(self) -> None:
        counted = self._counted.take()
        groups = self._grouped.take()
        combined = self._grouped
        for key in set(groups).union(counted):
            group = groups.get(key) or []
            entries = counted.get(key)
            if entries:  # built one key at a time: memory stays small
                group = list(group)
                for item, n in entries:
                    group += self._copies(key, item, n)
            combined.add_combined(key, group, self._combine_group)

    def _copies(self, key: Any, item: tuple, n: int) -> list:
        """What the combiner makes of `n` copies of one item, in fewer items: a combiner is associative
        (it may run any number of times, on any part of a group), so the combined output of RUN copies
        stands for them, and the combiner reads RUN + n / RUN items, not n."""
        run = defaults.COMBINE_COPIES_RUN
        if n <= 2 * run:
            return [item] * n
        times, rest = divmod(n, run)
        out = self._combine_group(key, [item] * run)
        if not all(type(o) is tuple and type(o[1]) in _IMMUTABLE_VALUES for o in out):
            return [item] * n  # a list or dict may be changed in place: one object repeated would count twice
        return out * times + [item] * rest

    # --- spill -------------------------------------------------------------------------
    def _spill_all(self) -> None:
        self._grouped.add_counted(self._counted.take())
        values = self._grouped.values
        groups = self._grouped.take()
        if not groups:
            return
        keys = list(groups)
        universal = sort_keys(keys)
        n = len(self.partitions)
        per_part = [keys] if n == 1 else partition_keys(keys, n)
        self.counters["spills"] += 1
        # a run of one value is one entry only when equal values are the same value (1 == True == 1.0)
        types = self._value_types
        runs = len(types) == 1 and types <= codec.RUN_VALUE_TYPES
        most = self.max_items_per_file
        # a batch's bytes: its values, and a key for each entry (counted per value: unique keys, one each)
        chunk = min(batch_items_for((self._bytes_per_item or _BYTES_PER_ITEM_GUESS) + self._bytes_per_key), most)
        for index, pkeys in enumerate(per_part):
            if not pkeys:
                continue
            lists = list(map(groups.__getitem__, pkeys))
            if not values:  # item lists (a combiner's output, few items a key): the items are entries
                items = list(chain.from_iterable(lists))
                for start in range(0, len(items), most):
                    part = items[start:start + most]
                    self._write([part[i:i + chunk] for i in range(0, len(part), chunk)], len(part),
                                self.partitions[index], universal)
                continue
            file: list = []
            in_file = 0
            for batch, size in value_batches(pkeys, lists, runs, chunk, most):
                if in_file + size > most and file:
                    self._write(file, in_file, self.partitions[index], universal)
                    file, in_file = [], 0
                file.append(batch)
                in_file += size
            if file:
                self._write(file, in_file, self.partitions[index], universal)
        if values:
            self._value_types = set()

    def _write(self, batches: list[list], items: int, dest: str, universal: bool) -> None:
        """One spill file of these batches of entries (`items` in all), handed to the transport."""
        self._spill_seq += 1
        name = f"{self.file_prefix}-{self._spill_seq:06d}{UNIVERSAL_MARK if universal else ''}{SPILL_SUFFIX}"
        tmp = os.path.join(self.spill_dir, name + ".tmp")
        path = os.path.join(self.spill_dir, name)
        try:
            with open(tmp, "wb") as fh:
                written = sum(codec.dump_batch(fh, batch) for batch in batches)
            os.replace(tmp, path)
            self.counters["moved_bytes"] += self.transport.send(path, dest)
        except OSError as exc:
            raise ShuffleError(f"writing spill file {path} for {dest} failed: {exc}") from exc
        self.counters["spill_files"] += 1
        self.counters["spilled_items"] += items
        self.counters["spilled_bytes"] += written


def partition_keys(keys: list, n: int) -> list[list]:
    """The keys (in order) of each of `n` partitions, by their stable hash; str keys hashed in C."""
    per_part: list[list] = [[] for _ in range(n)]
    hashes = None
    if set(map(type, keys)) == _STR:
        try:
            hashes = list(map(zlib.crc32, map(str.encode, keys)))  # what stable_hash gives a str
        except UnicodeEncodeError:  # a lone surrogate: stable_hash encodes it
            hashes = None
    if hashes is None:
        hashes = list(map(codec.stable_hash, keys))
    appends = [p.append for p in per_part]
    for k, h in zip(keys, hashes, strict=True):  # each key once per spill
        appends[h % n](k)
    return per_part


def value_batches(keys: list, lists: list[list], runs: bool, chunk: int, most: int
                  ) -> Iterator[tuple[list, int]]:
    """Codec entries for each key's values, in key order, as batches of about `chunk` values held
    (a run of one value holds one) and at most `most` items: (batch, items). A key's values are one
    entry: a run (when `runs` and they are all one value) or a list; only a key of more than `chunk`
    values (a run: more than `most`) takes several. Built in C and list comprehensions: no Python call
    per key."""
    lens = list(map(len, lists))
    entries: list[tuple]
    if max(lens) == 1:
        entries = list(zip(keys, map(_key0, lists), strict=True))  # every key once: an item each
        held = lens
    elif runs:
        firsts = list(map(_key0, lists))
        same = list(map(eq, map(list.count, lists, firsts), lens))
        entries = [(k, v, n) if r else (k, vs, None)
                   for k, vs, v, n, r in zip(keys, lists, firsts, lens, same, strict=True)]
        held = [1 if r else n for n, r in zip(lens, same, strict=True)]
    else:
        entries = list(zip(keys, lists, repeat(None)))
        held = lens
    if max(held) > chunk or max(lens) > most:  # a long list, or a run past a file's items: cut them
        flat: list = []
        lens, held = [], []
        for e in entries:
            if len(e) == 2 or (e[2] is None and len(e[1]) <= chunk) or (e[2] is not None and e[2] <= most):
                pieces: list[tuple] = [e]
            elif e[2] is None:
                pieces = codec.entries_of(e[0], e[1], runs, chunk, most)
            else:
                pieces = codec.run_entries(e[0], e[1], e[2], most)
            for entry in pieces:
                flat.append(entry)
                w = codec.weight(entry)
                lens.append(w)
                held.append(w if len(entry) == 3 and entry[2] is None else 1)
        entries = flat
    item_ends = list(accumulate(lens))
    for start, stop in codec.cuts((list(accumulate(held)), chunk), (item_ends, most)):
        yield entries[start:stop], item_ends[stop - 1] - (item_ends[start - 1] if start else 0)
