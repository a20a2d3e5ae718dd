"""The intermediate codec: batches in files, faithful types, a stable hash."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zlib

import pytest

from cluster.engine import codec
from cluster.exceptions import CodecError

ITEMS = [("a", 1), (("t", 2), [1, 2]), (3, {"k": (1, 2)}), (None, 1.5), (b"raw", {1, 2}),
         (frozenset({1, 2}), True), ((1, ("nested", None)), "ü€")]


def test_items_round_trip_with_their_types(tmp_path):
    path = tmp_path / "f.bin"
    with open(path, "wb") as fh:
        written = codec.dump_items(fh, ITEMS, batch_items=3)
    assert written == os.path.getsize(path)
    back = list(codec.iter_items(str(path)))
    assert back == ITEMS
    assert [type(k) for k, _ in back] == [type(k) for k, _ in ITEMS]
    assert type(back[1][0]) is tuple and type(back[1][1]) is list


def test_dump_items_writes_batches_of_at_most_batch_items():
    buf = io.BytesIO()
    codec.dump_items(buf, [(i, i) for i in range(10)], batch_items=4)
    buf.seek(0)
    batches = list(codec.iter_batches(buf))
    assert [len(b) for b in batches] == [4, 4, 2]
    assert [x for b in batches for x in b] == [(i, i) for i in range(10)]


def test_empty_file_has_no_batches(tmp_path):
    path = tmp_path / "empty.bin"
    path.write_bytes(b"")
    assert list(codec.iter_items(str(path))) == []
    buf = io.BytesIO()
    assert codec.dump_items(buf, [], batch_items=4) == 0


def test_stable_hash_ignores_object_identity():
    # equal keys hash equally whether their parts are shared objects or copies
    part = ("x" * 50, 12345678901234)
    copy = ("x" * 50, int("12345678901234"))
    assert part is not copy
    assert codec.stable_hash((part, part)) == codec.stable_hash((part, copy)) == codec.stable_hash((copy, copy))


def test_unmarshalable_value_raises_codec_error_naming_the_type():
    class Custom:
        pass

    with pytest.raises(CodecError) as info:
        codec.dump_batch(io.BytesIO(), [("ok", 1), ("bad", (1, [Custom()]))])
    msg = str(info.value)
    assert "cannot carry item ('bad', (1, [" in msg
    assert "it holds a Custom" in msg


def test_stable_hash_values():
    assert codec.stable_hash("word") == zlib.crc32(b"word")
    assert codec.stable_hash("é") == zlib.crc32("é".encode())
    assert codec.stable_hash(("a", 1)) == codec.stable_hash(("a", 1))
    assert codec.stable_hash(("a", 1)) != codec.stable_hash(("a", 2))
    assert codec.stable_hash(1) != codec.stable_hash(2)
    assert codec.stable_hash("\udc80") == zlib.crc32("\udc80".encode("utf-8", "surrogatepass"))


def test_stable_hash_rejects_what_it_cannot_encode():
    with pytest.raises(CodecError, match="of type object cannot be hashed stably"):
        codec.stable_hash(object())


KEYS = ["word", "", "ünïcödé", 0, -7, 2 ** 40, 3.25, None, True, b"bytes", ("a", 1, ("b", None)),
        frozenset({"x", "y", "z", "w", "v"}), (frozenset({"p", "q", "r"}), "s")]
SCRIPT = ("import json, sys; from cluster.engine import codec; "
          "print(json.dumps([codec.stable_hash(k) for k in eval(sys.argv[1])]))")


@pytest.mark.parametrize("seed", ["0", "123"])
def test_stable_hash_is_the_same_in_another_process(seed):
    out = subprocess.run([sys.executable, "-c", SCRIPT, repr(KEYS)], capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONHASHSEED": seed}).stdout
    assert json.loads(out) == [codec.stable_hash(k) for k in KEYS]


def test_stable_hash_agrees_for_equal_keys():
    assert codec.stable_hash(1) == codec.stable_hash(1.0) == codec.stable_hash(True)
    assert codec.stable_hash((1, "a")) == codec.stable_hash((1.0, "a"))


def test_a_file_cut_inside_a_batch_is_an_error(tmp_path):
    path = tmp_path / "run.bin"
    with open(path, "wb") as fh:
        codec.dump_items(fh, [(f"k{i}", i) for i in range(5000)], 2048)
    data = path.read_bytes()
    path.write_bytes(data[:-1])
    with pytest.raises(CodecError, match="truncated"):
        list(codec.iter_items(str(path)))


def test_batches_of_big_items_are_cut_by_bytes(tmp_path):
    from cluster import defaults
    path = tmp_path / "big.bin"
    items = [(i, "x" * 100_000) for i in range(200)]
    with open(path, "wb") as fh:
        codec.dump_items(fh, items, 2048)
    with open(path, "rb") as fh:
        sizes = [len(b) for b in codec.iter_batches(fh)]
    assert sum(sizes) == 200 and max(sizes) * 100_000 <= 2 * defaults.BATCH_BYTES


# --- entries: a key's items without a tuple each ---------------------------------------------
def test_entries_stand_for_their_items_in_order():
    assert codec.entries_of("k", [5], runs=True, chunk=10, most=100) == [("k", 5)]
    assert codec.entries_of("k", [1] * 6, runs=True, chunk=4, most=100) == [("k", 1, 6)]
    lists = codec.entries_of("k", [1, 2, 3, 4, 5], runs=True, chunk=2, most=100)
    assert lists == [("k", [1, 2], None), ("k", [3, 4], None), ("k", 5)]
    for values in ([1] * 6, [1, 2, 3, 4, 5], ["a", "a", "b"], [None, None]):
        entries = codec.entries_of("k", values, runs=True, chunk=2, most=3)
        assert list(codec.expand(entries)) == [("k", v) for v in values]
        assert codec.total_items(entries) == len(values)
        assert all(codec.weight(e) <= 3 for e in entries)


def test_a_run_is_written_only_where_equal_values_are_the_same_value():
    """1 == True == 1.0: without `runs` (the shuffler passes it only for one value type) each value
    keeps its type."""
    values = [1, True, 1.0, 1]
    entries = codec.entries_of("k", values, runs=False, chunk=100, most=100)
    back = [v for _, v in codec.expand(entries)]
    assert [(type(v), v) for v in back] == [(type(v), v) for v in values]


def test_split_entries_keeps_each_part_within_the_limit(tmp_path):
    entries = [("a", 1, 3), ("b", [1, 2], None), ("c", 9), ("d", 1, 3), ("e", [4, 5, 6], None)]
    parts = codec.split_entries(entries, 4)
    assert [e for p in parts for e in p] == entries
    assert all(codec.total_items(p) <= 4 for p in parts)
    path = tmp_path / "run.bin"
    with open(path, "wb") as fh:
        codec.dump_entries(fh, entries, 4)
    assert list(codec.iter_items(str(path))) == list(codec.expand(entries))
