"""Shuffler: partition by stable hash, sorted spill files, rotation, combine, spills under a budget."""
from __future__ import annotations

import os
import random
from collections import Counter, defaultdict

import pytest

from cluster.engine import codec
from cluster.engine.disk_sort import universal_key
from cluster.engine.shuffler import Shuffler
from cluster.exceptions import BadMapOutput
from cluster.layout import SPILL_SUFFIX, UNIVERSAL_MARK

SERVERS = ["S_0", "S_1", "S_2"]


class FakeTransport:
    """Records (path, dest) of every file handed over, with the items the file held."""

    def __init__(self):
        self.sent: list[tuple[str, str]] = []
        self.files: list[tuple[str, str, list]] = []
        self.entries: list[list] = []  # each file's codec entries, as written
        self.batch_bytes: list[int] = []  # the str keys' characters in each batch written
        self.closed = 0

    def send(self, path: str, dest: str) -> int:
        assert self.closed == 0, "send after close"
        size = os.path.getsize(path)
        items = list(codec.iter_items(path))
        with open(path, "rb") as fh:
            batches = list(codec.iter_batches(fh))
        self.entries.append([e for batch in batches for e in batch])
        self.batch_bytes += [sum(len(e[0]) for e in batch if isinstance(e[0], str)) for batch in batches]
        self.sent.append((path, dest))
        self.files.append((os.path.basename(path), dest, items))
        os.unlink(path)  # a transport takes the file away
        return size

    def close(self) -> None:
        self.closed += 1

    def all_items(self) -> list:
        return [item for _, _, items in self.files for item in items]


def make(tmp_path, partitions=SERVERS, memory_budget=64 * 1024 ** 2, max_items_per_file=1_000_000,
         combine=None, server_id="S_9"):
    transport = FakeTransport()
    sh = Shuffler(server_id=server_id, partitions=partitions, spill_dir=str(tmp_path / "spill"),
                  transport=transport, memory_budget_bytes=memory_budget, max_items_per_file=max_items_per_file,
                  combine=combine, auxiliary_data={"aux": 1})
    return sh, transport


def words(n, vocabulary=200, seed=7):
    rnd = random.Random(seed)
    return [(f"w{rnd.randrange(vocabulary)}", rnd.randrange(1, 10)) for _ in range(n)]


def sum_combine(group, aux):
    assert aux == {"aux": 1}
    return [(group[0][0], sum(v for _, v in group))]


def sums(items) -> dict:
    out: dict = defaultdict(int)
    for k, v in items:
        out[k] += v
    return dict(out)


def test_partitions_follow_the_stable_hash(tmp_path):
    sh, tr = make(tmp_path)
    items = words(5000)
    for i in range(0, len(items), 10):
        sh.add(items[i:i + 10])
    counters = sh.close()
    assert tr.closed == 1
    assert counters["map_items_out"] == 5000
    assert Counter(tr.all_items()) == Counter(items)
    assert {dest for _, dest in tr.sent} == set(SERVERS)
    for _, dest, file_items in tr.files:
        for key, _ in file_items:
            assert dest == SERVERS[codec.stable_hash(key) % 3], key
    assert counters["spill_files"] == len(tr.sent) == 3
    assert counters["spilled_items"] == 5000
    assert counters["moved_bytes"] == counters["spilled_bytes"] > 0


def test_every_spill_file_is_sorted_by_key_and_named_in_sequence(tmp_path):
    sh, tr = make(tmp_path, memory_budget=30_000)
    rnd = random.Random(3)
    items = [(rnd.randrange(10_000), i) for i in range(6000)]
    for i in range(0, len(items), 50):
        sh.add(items[i:i + 50])
        sh.maybe_flush()
    sh.close()
    assert Counter(tr.all_items()) == Counter(items)
    names = [name for name, _, _ in tr.files]
    assert names == [f"S_9-{n:06d}{SPILL_SUFFIX}" for n in range(1, len(names) + 1)]
    for name, _, file_items in tr.files:
        keys = [k for k, _ in file_items]
        assert keys == sorted(keys), name
    # nothing is left behind in the spill dir (no .tmp files)
    assert os.listdir(tmp_path / "spill") == []


def test_a_tiny_budget_forces_several_spills(tmp_path):
    # without a combiner a held item costs its value's slot (small ints are shared): ~45 KB in all
    sh, tr = make(tmp_path, partitions=["S_0"], memory_budget=6_000)
    items = words(4000, vocabulary=50)
    for i in range(0, len(items), 100):
        sh.add(items[i:i + 100])
        sh.maybe_flush()
    counters = sh.close()
    assert counters["spills"] >= 5
    assert counters["spill_files"] == counters["spills"]
    assert Counter(tr.all_items()) == Counter(items)
    for _, _, file_items in tr.files:
        keys = [k for k, _ in file_items]
        assert keys == sorted(keys)


def test_a_big_budget_spills_once_at_close(tmp_path):
    sh, tr = make(tmp_path, partitions=["S_0"])
    items = words(3000)
    for i in range(0, 3000, 100):
        sh.add(items[i:i + 100])
        sh.maybe_flush()
    assert tr.sent == []
    assert sh.close()["spills"] == 1
    assert len(tr.sent) == 1


def test_rotation_by_max_items_per_file(tmp_path):
    sh, tr = make(tmp_path, partitions=["S_0", "S_1"], max_items_per_file=7)
    items = [(f"k{i % 5}", i) for i in range(40)]
    sh.add(items)
    sh.close()
    per_dest: dict = defaultdict(list)
    for _, dest, file_items in tr.files:
        per_dest[dest].append(file_items)
    for dest, files in per_dest.items():
        assert all(0 < len(f) <= 7 for f in files), dest  # a file ends at a key's entry, never past 7 items
        keys = [k for f in files for k, _ in f]
        assert keys == sorted(keys)  # rotation splits one sorted run in order
    assert Counter(tr.all_items()) == Counter(items)


def test_combine_reduces_items_and_keeps_the_sums(tmp_path):
    items = words(20_000, vocabulary=100)
    plain, plain_tr = make(tmp_path / "a", memory_budget=200_000)
    combined, comb_tr = make(tmp_path / "b", memory_budget=200_000, combine=sum_combine)
    for i in range(0, len(items), 200):
        for sh in (plain, combined):
            sh.add(items[i:i + 200])
            sh.maybe_flush()
    pc, cc = plain.close(), combined.close()
    assert pc["spilled_items"] == 20_000
    assert cc["map_items_out"] == 20_000
    assert cc["spilled_items"] < 20_000 // 10
    assert cc["combine_calls"] > 0
    assert cc["combine_items_in"] > cc["combine_items_out"]
    assert sums(comb_tr.all_items()) == sums(plain_tr.all_items()) == sums(items)
    for _, dest, file_items in comb_tr.files:
        assert all(dest == SERVERS[codec.stable_hash(k) % 3] for k, _ in file_items)


def test_combine_at_close_leaves_one_item_per_key(tmp_path):
    sh, tr = make(tmp_path, partitions=["S_0"], combine=sum_combine)
    sh.add([("a", 1), ("b", 2), ("a", 3), ("c", 4), ("a", 5), ("b", 6)])
    counters = sh.close()
    assert tr.all_items() == [("a", 9), ("b", 8), ("c", 4)]
    assert counters["combine_calls"] == 2
    assert counters["combine_items_in"] == 5
    assert counters["combine_items_out"] == 2


def test_combine_may_return_none_to_drop_a_group(tmp_path):
    def drop_a(group, aux):
        return None if group[0][0] == "a" else group[:1]

    sh, tr = make(tmp_path, partitions=["S_0"], combine=drop_a)
    sh.add([("a", 1), ("a", 2), ("b", 3), ("b", 4), ("c", 5)])
    sh.close()
    assert tr.all_items() == [("b", 3), ("c", 5)]


def test_mixed_type_keys_spill_in_the_universal_order(tmp_path):
    sh, tr = make(tmp_path, partitions=["S_0"])
    items = [(3, "a"), ("x", "b"), (None, "c"), ((1, 2), "d"), (1.5, "e"), ("a", "f"), (3, "g")]
    sh.add(items)
    sh.close()
    [(name, _, file_items)] = tr.files
    assert name == f"S_9-000001{UNIVERSAL_MARK}{SPILL_SUFFIX}"
    keys = [k for k, _ in file_items]
    assert keys == sorted(keys, key=universal_key)
    assert keys == [None, 1.5, 3, 3, "a", "x", (1, 2)]
    assert Counter(file_items) == Counter(items)


def test_comparable_keys_are_not_marked_universal(tmp_path):
    sh, tr = make(tmp_path, partitions=["S_0"])
    sh.add([((1, "a"), 1), ((0, "b"), 2)])
    sh.close()
    assert [name for name, _, _ in tr.files] == [f"S_9-000001{SPILL_SUFFIX}"]


def test_none_and_generators(tmp_path):
    sh, tr = make(tmp_path, partitions=["S_0"])
    sh.add(None)
    sh.add((k, 1) for k in "cab")
    sh.add([])
    assert sh.close()["map_items_out"] == 3
    assert tr.all_items() == [("a", 1), ("b", 1), ("c", 1)]


def test_nothing_added_sends_nothing(tmp_path):
    sh, tr = make(tmp_path)
    counters = sh.close()
    assert tr.sent == [] and tr.closed == 1
    assert counters["spills"] == 0 and counters["map_items_out"] == 0


@pytest.mark.parametrize("key", [["a", "list"], {"a": 1}])
def test_unhashable_key_is_bad_map_output(tmp_path, key):
    sh, _ = make(tmp_path)
    sh.add([(key, 1)])
    with pytest.raises(BadMapOutput, match="unhashable key"):
        sh.maybe_flush()


def test_tuple_and_int_keys_arrive_as_they_were(tmp_path):
    sh, tr = make(tmp_path, partitions=["S_0"])
    sh.add([((1, "a"), 1), (7, 2), ((1, "a"), 3)])
    sh.close()
    got = tr.all_items()
    assert got == [(7, 2), ((1, "a"), 1), ((1, "a"), 3)] or got == [(7, 2), ((1, "a"), 3), ((1, "a"), 1)]
    assert type(got[0][0]) is int and type(got[1][0]) is tuple


def test_with_value_keeps_values_equal_but_of_other_types_apart(tmp_path):
    from cluster.emit import with_value
    sh, tr = make(tmp_path, partitions=["S_0"], combine=lambda group, aux: group)
    sh.add(with_value(["b"], (1.0, 2.0)))
    sh.add(with_value(["b"], (1, 2)))
    sh.add(with_value(["c"], -0.0))
    sh.add(with_value(["c"], 0.0))
    sh.close()
    got = sorted(repr(item) for item in tr.all_items())
    assert got == sorted(["('b', (1.0, 2.0))", "('b', (1, 2))", "('c', -0.0)", "('c', 0.0)"])


@pytest.mark.parametrize("bad", [["ab", "cd"], [("k", 1, 2)], [("k",)]])
def test_map_output_that_is_not_pairs_is_refused(tmp_path, bad):
    sh, _ = make(tmp_path)
    sh.add(bad)
    with pytest.raises(BadMapOutput, match="pairs"):
        sh.maybe_flush()


def test_with_value_keys_are_counted_exactly_and_unhashable_ones_fail_at_once(tmp_path):
    from cluster.emit import with_value
    sh, tr = make(tmp_path, partitions=["S_0"], combine=lambda group, aux: [(group[0][0], sum(v for _, v in group))])
    for keys in (["a", "b", "a"], ("a", "c"), iter(["b"])):
        sh.add(with_value(keys, 1))
    sh.add(with_value(["a"], 5))
    sh.close()
    assert sorted(tr.all_items()) == [("a", 8), ("b", 2), ("c", 1)]
    assert sh.counters["map_items_out"] == 7
    sh2, _ = make(tmp_path / "2", combine=lambda group, aux: group)
    with pytest.raises(TypeError, match="unhashable"):
        sh2.add(with_value([["a", "list"]], 1))


def test_without_a_combiner_values_keep_their_types_and_runs_are_one_entry(tmp_path):
    """No tuple per item is held: one value repeated is one entry in the spill; values of several
    types (1, True, 1.0 are equal) are kept each as it was."""
    from cluster.emit import with_value

    sh, tr = make(tmp_path, partitions=["S_0"])
    for _ in range(50):
        sh.add(with_value(["a", "b", "a"], 1))
    sh.close()
    assert tr.entries == [[("a", 1, 100), ("b", 1, 50)]]
    assert tr.files[0][2] == [("a", 1)] * 100 + [("b", 1)] * 50

    sh, tr = make(tmp_path / "mixed", partitions=["S_0"])
    items = [("k", 1), ("k", True), ("k", 1.0), ("j", 2), ("k", 1)]
    sh.add(items)
    sh.close()
    back = sorted(((k, type(v).__name__, v) for k, v in tr.all_items()), key=repr)
    assert back == sorted(((k, type(v).__name__, v) for k, v in items), key=repr)


def test_runs_of_one_value_respect_max_items_per_file(tmp_path):
    sh, tr = make(tmp_path, partitions=["S_0"], max_items_per_file=7)
    sh.add([("k", 1)] * 20 + [("j", 2)] * 3)
    sh.close()
    assert all(len(items) <= 7 for _, _, items in tr.files)
    assert Counter(tr.all_items()) == Counter({("k", 1): 20, ("j", 2): 3})


def test_many_copies_of_one_item_reach_the_combiner_as_its_own_output(tmp_path):
    """n counted copies: the combiner reads its output for a run of copies, n / run times (it is
    associative), so a hot key costs the combiner a few thousand items, not millions; sums stay exact."""
    from cluster.emit import with_value

    seen: list[int] = []

    def combine(group, aux):
        seen.append(len(group))
        return sum_combine(group, aux)

    sh, tr = make(tmp_path, partitions=["S_0"], combine=combine)
    for _ in range(1000):
        sh.add(with_value(["hot"] * 100 + ["cold"], 1))
    counters = sh.close()
    assert sums(tr.all_items()) == {"hot": 100_000, "cold": 1000}
    assert max(seen) < 5000 and counters["combine_items_in"] < 10_000


def test_a_batch_of_equal_values_of_other_types_keeps_each_type_with_a_combiner(tmp_path):
    """1, True and 1.0 are one member of a set: counting a batch by key must not take them for one
    value (each item keeps its own value's type)."""
    sh, tr = make(tmp_path, partitions=["S_0"], combine=lambda group, aux: group)
    sh.add([("a", 1), ("b", True), ("c", 1.0)] * 10)
    sh.close()
    assert {(k, type(v).__name__) for k, v in tr.all_items()} == {("a", "int"), ("b", "bool"), ("c", "float")}


def test_unhashable_values_with_a_combiner_are_grouped_not_counted(tmp_path):
    def total_length(group, aux):
        return [(group[0][0], sum(len(v) for _, v in group))]

    sh, tr = make(tmp_path, partitions=["S_0"], combine=total_length)
    sh.add([("a", [1, 2]), ("a", [3]), ("b", {"x": 1})])
    sh.close()
    assert sorted(tr.all_items(), key=repr) == [("a", 3), ("b", {"x": 1})]  # one item: not combined


def test_a_combiner_that_returns_other_than_pairs_is_named(tmp_path):
    """Its items go where map output goes: a (key, total, count) triple would be read as something else."""
    from cluster.exceptions import UserFunctionError

    sh, _ = make(tmp_path, partitions=["S_0"], combine=lambda group, aux: [(group[0][0], len(group), "n")])
    sh.add([("a", 1), ("a", 2)])
    with pytest.raises(UserFunctionError, match=r"combine output must be an iterable of \(key, value\) pairs"):
        sh.close()


def test_copies_of_an_item_are_never_one_mutable_object_repeated(tmp_path):
    """A combiner that adds into its first item in place, returning lists: a hot key's sum stays exact
    (its output is not replicated by reference)."""
    from cluster.emit import with_value

    def add_in_place(group, aux):
        first = group[0] if isinstance(group[0], list) else list(group[0])  # its own output: changed in place
        for _, v in group[1:]:
            first[1] += v
        return [first]

    sh, tr = make(tmp_path, partitions=["S_0"], combine=add_in_place)
    for _ in range(50):
        sh.add(with_value(["hot"] * 100, 1))
    sh.close()
    assert sums(tr.all_items()) == {"hot": 5000}


def test_spill_batches_hold_a_bounded_size_whatever_the_keys_weigh(tmp_path):
    """Without a combiner a batch's size counts its keys too: 80 unique 200 KB keys are not one batch."""
    from cluster import defaults

    sh, tr = make(tmp_path, partitions=["S_0"])
    keys = [f"{i:04d}" + "k" * 200_000 for i in range(80)]
    sh.add([(k, 1) for k in keys])
    sh.close()
    assert sorted(k for k, _ in tr.all_items()) == sorted(keys)
    assert tr.batch_bytes and max(tr.batch_bytes) <= 2 * defaults.BATCH_BYTES
