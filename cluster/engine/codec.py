"""The intermediate codec: batches of (key, value) items in spill and run files.

marshal is used because it is the fastest faithful codec measured for this data
(tuples stay tuples, ints stay ints; see BENCHMARKS.md) and it cannot run code
when loading. A file is a sequence of marshal-dumped lists in the current format
(version 4: back-references make it faster and smaller). Stable hashing uses
version 2, which has no back-references, so equal keys always give equal bytes.

A batch is a list of entries, each standing for items of one key, so a key's many
items cost no tuple each, on disk or in memory:

- `(key, value)`: the one item itself;
- `(key, value, n)`: n items `(key, value)` (a run of one value, as word counts make);
- `(key, [value, ...], None)`: an item per value, in order.

Files of plain items are files of entries too.
"""
from __future__ import annotations

import marshal
import zlib
from bisect import bisect_right
from collections.abc import Iterable, Iterator
from itertools import accumulate, chain, repeat
from typing import IO, Any

from cluster.engine.sizing import batch_items_for, deep_size, estimate_item_bytes, spread_sample
from cluster.exceptions import CodecError

VERSION = marshal.version
HASH_VERSION = 2


def dump_batch(fh: IO[bytes], items: list) -> int:
    """Write one batch; return the bytes written."""
    try:
        data = marshal.dumps(items, VERSION)
    except ValueError:
        raise CodecError(_unmarshalable(items)) from None
    fh.write(data)
    return len(data)


def _unmarshalable(items: Iterable) -> str:
    for item in items:
        try:
            marshal.dumps(item, VERSION)
        except ValueError:
            return (f"cannot carry item {item!r:.200} between phases: it holds a "
                    f"{_bad_type(item)}; keys and values must be built from None, bool, int, float, "
                    "str, bytes, tuple, list, dict, set")
    return "cannot carry a batch between phases (unknown value)"


def _bad_type(value: Any) -> str:
    if isinstance(value, (list, tuple, set, frozenset)):
        for v in value:
            try:
                marshal.dumps(v, VERSION)
            except ValueError:
                return _bad_type(v)
    if isinstance(value, dict):
        for kv in value.items():
            try:
                marshal.dumps(kv, VERSION)
            except ValueError:
                return _bad_type(kv)
    return type(value).__name__


def iter_batches(fh: IO[bytes]) -> Iterator[list]:
    """Yield the batches of an open file, in order; a file cut inside a batch is an error."""
    load = marshal.load
    while True:
        start = fh.tell()
        try:
            batch = load(fh)
        except EOFError:
            if fh.seek(0, 2) != start:
                raise CodecError(f"{getattr(fh, 'name', 'a spill file')} is truncated: it ends inside a "
                                 f"batch at byte {start}") from None
            return
        yield batch


def iter_items(path: str) -> Iterator:
    """Yield every item of a spill or run file (its entries expanded)."""
    with open(path, "rb") as fh:
        for batch in iter_batches(fh):
            yield from batch if plain(batch) else expand(batch)


def stable_hash(key: Any) -> int:
    """A hash of a key that is the same in every process and on every machine."""
    t = type(key)
    if t is str:
        return zlib.crc32(key.encode("utf-8", "surrogatepass"))
    if t is int or t is bool or (t is float and key.is_integer()):
        # 1, 1.0 and True are one key to a dict and to groupby: they must reach the same server
        return zlib.crc32(b"i%d" % int(key))
    if t is tuple:
        return zlib.crc32(b"t" + b",".join(b"%d" % stable_hash(e) for e in key))
    try:
        return zlib.crc32(marshal.dumps(key, HASH_VERSION))
    except ValueError:
        raise CodecError(f"key {key!r:.200} of type {type(key).__name__} cannot be hashed stably; "
                         "use str, int, float, bytes or tuples of them") from None


def dump_items(fh: IO[bytes], items: list, batch_items: int) -> int:
    """Write items as batches of at most `batch_items` (fewer for big items); return the bytes written."""
    batch_items = min(batch_items, batch_items_for(estimate_item_bytes(items)))
    written = 0
    for i in range(0, len(items), batch_items):
        written += dump_batch(fh, items[i:i + batch_items])
    return written


# --- entries: a key's items without a tuple each ---------------------------------------------
RUN_VALUE_TYPES = frozenset({int, str, bytes, bool, type(None)})  # equal only when the same value


def entries_of(key: Any, values: list, runs: bool, chunk: int, most: int) -> list[tuple]:
    """The entries for one key's values (in order): a single item, runs of one repeated value (when
    `runs`: every value of one type where equal means identical), or lists of at most `chunk` values;
    none stands for more than `most` items."""
    n = len(values)
    if n == 1:
        return [(key, values[0])]
    v0 = values[0]
    if runs and values[-1] == v0 and values.count(v0) == n:
        return run_entries(key, v0, n, most)
    chunk = min(chunk, most)
    if n <= chunk:
        return [(key, values, None)]
    return [(key, values[i:i + chunk], None) if n - i > 1 else (key, values[i]) for i in range(0, n, chunk)]


def run_entries(key: Any, value: Any, n: int, most: int) -> list[tuple]:
    """`n` items `(key, value)` as runs of at most `most` (a run of one is the item itself)."""
    return [(key, value, min(most, n - i)) if min(most, n - i) > 1 else (key, value) for i in range(0, n, most)]


def weight(entry: tuple) -> int:
    """How many items an entry stands for."""
    if len(entry) == 2:
        return 1
    return len(entry[1]) if entry[2] is None else entry[2]


def total_items(entries: Iterable[tuple]) -> int:
    return sum(map(weight, entries))


def entry_item_bytes(entries: list) -> float:
    """Average bytes per item of codec entries in memory (an entry of many values shares its key and
    tuple among them): a batch of N items holds about N times this."""
    if not entries:
        return 64.0
    sample = spread_sample(entries)
    return 8 + sum(map(deep_size, sample)) / max(1, sum(map(weight, sample)))


def plain(entries: list) -> bool:
    """True when every entry is an item (len 2): the batch is its own list of items."""
    return set(map(len, entries)) <= _ONLY_PAIRS


_ONLY_PAIRS = frozenset({2})


def items_of(entry: tuple) -> Iterable[tuple]:
    """The items one entry stands for."""
    if len(entry) == 2:
        return (entry,)
    if entry[2] is None:
        return zip(repeat(entry[0]), entry[1])
    return zip(repeat(entry[0]), repeat(entry[1], entry[2]))


def expand(entries: Iterable[tuple]) -> Iterator[tuple]:
    """The items the entries stand for, in order (each entry's own key), without a Python frame per item."""
    return chain.from_iterable(map(items_of, entries))


def cuts(*bounds: tuple[list[int], int]) -> Iterator[tuple[int, int]]:
    """Consecutive [start, stop) ranges over entries whose running totals (one list per measure, each
    with its limit) stay within every limit: at least one entry a range."""
    first = bounds[0][0]
    start = 0
    while start < len(first):
        stop = min(bisect_right(ends, (ends[start - 1] if start else 0) + limit, lo=start) for ends, limit in bounds)
        stop = max(start + 1, stop)
        yield start, stop
        start = stop


def split_entries(entries: list, max_items: int) -> list[list]:
    """The entries cut into consecutive lists of at most `max_items` items each (an entry is never
    cut: one that stands for more is a list of its own; the shuffler makes none)."""
    if len(entries) <= 1:
        return [entries] if entries else []
    ends = list(accumulate(map(weight, entries)))
    if ends[-1] <= max_items:
        return [entries]
    return [entries[start:stop] for start, stop in cuts((ends, max_items))]


def dump_entries(fh: IO[bytes], entries: list, batch_items: int) -> int:
    """Write entries as batches of about `batch_items` items each; return the bytes written."""
    if plain(entries):
        return dump_items(fh, entries, batch_items)
    return sum(dump_batch(fh, part) for part in split_entries(entries, batch_items))
