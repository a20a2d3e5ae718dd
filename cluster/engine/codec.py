"""The intermediate codec: batches of (key, value) items in spill and run files.

marshal is used because it is the fastest faithful codec measured for this data
(tuples stay tuples, ints stay ints; see BENCHMARKS.md) and it cannot run code
when loading. A file is a sequence of marshal-dumped lists in the current format
(version 4: back-references make it faster and smaller). Stable hashing uses
version 2, which has no back-references, so equal keys always give equal bytes.
"""
from __future__ import annotations

import marshal
import zlib
from collections.abc import Iterable, Iterator
from typing import IO, Any

from cluster.engine.sizing import batch_items_for, estimate_item_bytes
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
    """Yield every item of a spill or run file."""
    with open(path, "rb") as fh:
        for batch in iter_batches(fh):
            yield from batch


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
