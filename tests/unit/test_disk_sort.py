"""DiskSort: external merge sort under a memory budget, iterated by key group."""
from __future__ import annotations

import os
import random
from collections import Counter

import pytest

from cluster.engine import codec
from cluster.engine.disk_list import DiskList
from cluster.engine.disk_sort import DiskSort, sort_items, sort_keys, universal_key

TINY = 1024 ** 2  # the smallest budget DiskSort accepts


def run_files(folder) -> list[str]:
    return sorted(f for f in os.listdir(folder) if f.startswith("run-"))


def write_run(path, items) -> str:
    with open(path, "wb") as fh:
        codec.dump_items(fh, items, 1000)
    return str(path)


def test_random_keys_under_a_tiny_budget(tmp_path):
    rnd = random.Random(11)
    items = [(rnd.randrange(50_000), i) for i in range(150_000)]
    with DiskSort(str(tmp_path), memory_budget=TINY) as ds:
        for item in items:
            ds.append(item)
        assert ds.counters["runs_spilled"] >= 5
        assert len(run_files(tmp_path)) == ds.run_count == ds.counters["runs_spilled"]
        groups = list(ds.groups())
        assert ds.counters["merge_passes"] >= 2  # premerge passes plus the final merge
        assert ds.counters["items_sorted"] == 150_000
    keys = [k for k, _ in groups]
    expected: dict = {}
    for k, v in items:
        expected.setdefault(k, []).append(v)
    assert keys == sorted(expected)
    assert {k: sorted(v for _, v in g) for k, g in groups} == {k: sorted(v) for k, v in expected.items()}
    assert all(all(item[0] == k for item in g) for k, g in groups)
    assert run_files(tmp_path) == []


def test_items_in_memory_only(tmp_path):
    ds = DiskSort(str(tmp_path))
    ds.extend([("b", 1), ("a", 2), ("c", 3), ("a", 4)])
    assert [k for k, _ in ds.items()] == ["a", "a", "b", "c"]
    assert ds.counters["runs_spilled"] == 0
    assert run_files(tmp_path) == []


def test_mixed_type_keys_group_exactly(tmp_path):
    rnd = random.Random(5)
    pool = ([i for i in range(300)] + [f"s{i}" for i in range(300)] + [None]
            + [(i, f"t{i % 3}") for i in range(100)] + [(i, None) for i in range(50)]
            + [frozenset({i, i + 1}) for i in range(100)] + [frozenset({f"a{i}", "b"}) for i in range(20)]
            + [2.5, b"bytes", (), ("nested", (1, "x"))])
    items = [(rnd.choice(pool), 1) for _ in range(80_000)]
    with DiskSort(str(tmp_path), memory_budget=TINY) as ds:
        for item in items:
            ds.append(item)
        assert ds.run_count >= 3
        result = [(k, len(g)) for k, g in ds.groups()]
    keys = [k for k, _ in result]
    assert len(keys) == len(set(keys))  # each key exactly once
    assert dict(result) == dict(Counter(k for k, _ in items))
    assert keys == sorted(keys, key=universal_key)


def test_add_run_of_presorted_files(tmp_path):
    a = write_run(tmp_path / "a.spill", [(i, "a") for i in range(0, 3000, 2)])
    b = write_run(tmp_path / "b.spill", [(i, "b") for i in range(0, 3000, 3)])
    c = write_run(tmp_path / "c.spill", [])
    ds = DiskSort(str(tmp_path / "sort"))
    os.makedirs(tmp_path / "sort")
    for p in (a, b, c):
        ds.add_run(p)
    ds.append((1, "appended"))
    assert ds.run_count == 3
    groups = dict(ds.groups())
    expected_keys = sorted(set(range(0, 3000, 2)) | set(range(0, 3000, 3)) | {1})
    assert list(groups) == expected_keys
    assert sorted(v for _, v in groups[6]) == ["a", "b"]
    assert groups[1] == [(1, "appended")]
    ds.close()
    assert all(os.path.exists(p) for p in (a, b, c))  # added runs belong to their owner


def test_natural_run_merged_with_universal(tmp_path):
    natural = write_run(tmp_path / "n.spill", sorted([(i, "n") for i in range(0, 500, 5)] + [(2.5, "n")]))
    mixed = [(None, "u"), ("s", "u"), (10, "u"), ((3, "z"), "u"), (frozenset({1}), "u"), (7.5, "u")]
    mixed.sort(key=lambda item: universal_key(item[0]))
    universal = write_run(tmp_path / "u.spill", mixed)
    ds = DiskSort(str(tmp_path))
    ds.add_run(natural)
    ds.add_run(universal, universal=True)
    assert ds.universal
    result = [(k, sorted(v for _, v in g)) for k, g in ds.groups()]
    keys = [k for k, _ in result]
    assert keys == sorted(keys, key=universal_key)
    assert len(keys) == len(set(keys))
    assert dict(result)[10] == ["n", "u"]
    assert dict(result)[2.5] == ["n"]
    assert dict(result)[(3, "z")] == ["u"]
    assert keys[:3] == [None, 0, 2.5]
    assert keys[-3:] == ["s", (3, "z"), frozenset({1})]
    assert len(keys) == 101 + 5


def test_disk_based_groups_are_disk_lists_closed_after_the_next_group(tmp_path):
    ds = DiskSort(str(tmp_path))
    ds.extend([("b", i) for i in range(5)] + [("a", i) for i in range(3)] + [("c", 0)])
    groups = ds.groups(disk_based=True)
    first = next(groups)[1]
    assert isinstance(first, DiskList)
    assert sorted(first) == [("a", 0), ("a", 1), ("a", 2)]
    second = next(groups)[1]
    assert isinstance(second, DiskList)
    with pytest.raises(ValueError, match="closed"):
        list(first)
    assert sorted(second) == [("b", i) for i in range(5)]
    assert list(next(groups)[1]) == [("c", 0)]
    with pytest.raises(StopIteration):
        next(groups)
    with pytest.raises(ValueError):
        list(second)
    assert ds.counters["groups_on_disk"] == 3
    ds.close()


def test_groups_are_lists_in_key_order(tmp_path):
    ds = DiskSort(str(tmp_path))
    ds.extend([(2, "x"), (1, "y"), (2, "z")])
    groups = list(ds.groups())
    assert groups[0] == (1, [(1, "y")])
    assert groups[1][0] == 2 and sorted(groups[1][1]) == [(2, "x"), (2, "z")]
    assert all(type(g) is list for _, g in groups) and ds.counters["groups_on_disk"] == 0
    assert list(DiskSort(str(tmp_path)).groups()) == []


def test_a_group_past_a_quarter_of_the_budget_goes_to_disk_by_itself(tmp_path):
    with DiskSort(str(tmp_path), memory_budget=TINY) as ds:
        ds.extend([("hot", i) for i in range(300_000)] + [("a", 1), ("z", 2)])
        seen = {}
        for key, group in ds.groups():
            seen[key] = type(group).__name__
            if key == "hot":
                assert len(group) == 300_000 and group.on_disk
                assert group[0][0] == "hot" and group[-1][0] == "hot"
                assert sorted(v for _, v in group) == list(range(300_000))
                assert sum(1 for _ in group) == 300_000  # a second pass
                assert len(group[10:20]) == 10 and len(group[-5:]) == 5 and group[::100_000][0][0] == "hot"
        assert seen == {"a": "list", "hot": "DiskList", "z": "list"}
        assert ds.counters["groups_on_disk"] == 1
    assert os.listdir(tmp_path) == []


def test_hot_key_goes_to_disk(tmp_path):
    with DiskSort(str(tmp_path), memory_budget=TINY) as ds:
        for i in range(200_000):
            ds.append(("hot", i))
        ds.append(("cold", 0))
        seen = []
        for key, group in ds.groups(disk_based=True, max_items_in_memory=1000):
            assert isinstance(group, DiskList)
            seen.append((key, len(group), group.on_disk))
            if key == "hot":
                assert sorted(v for _, v in group) == list(range(200_000))
                assert any(f.startswith("disklist-") for f in os.listdir(tmp_path))
        assert seen == [("cold", 1, False), ("hot", 200_000, True)]
    assert os.listdir(tmp_path) == []


def test_close_removes_run_files_even_mid_iteration(tmp_path):
    ds = DiskSort(str(tmp_path), memory_budget=TINY)
    for i in range(100_000):
        ds.append((i % 1000, i))
    assert run_files(tmp_path)
    ds.premerge()
    groups = ds.groups(disk_based=True)
    group = next(groups)[1]
    assert sorted(group) == [(0, i) for i in range(0, 100_000, 1000)]
    ds.close()
    assert os.listdir(tmp_path) == []
    with pytest.raises(ValueError, match="closed"):
        list(group)


def test_close_without_iterating(tmp_path):
    ds = DiskSort(str(tmp_path), memory_budget=TINY)
    for i in range(60_000):
        ds.append((str(i), i))
    assert run_files(tmp_path)
    ds.close()
    assert run_files(tmp_path) == []


def test_sort_helpers():
    keys = [3, 1, 2]
    assert sort_keys(keys) is False and keys == [1, 2, 3]
    keys = [3, "a", None, 1]
    assert sort_keys(keys) is True and keys == [None, 1, 3, "a"]
    items = [((2, "b"), 0), ((1, "z"), 1)]
    assert sort_items(items) is False and items == [((1, "z"), 1), ((2, "b"), 0)]
    items = [(frozenset({2}), 0), (frozenset({1}), 1), (1, 2)]
    assert sort_items(items) is True
    assert items == [(1, 2), (frozenset({1}), 1), (frozenset({2}), 0)]


def test_universal_key_agrees_with_the_natural_order():
    rnd = random.Random(2)
    for values in ([rnd.randrange(-50, 50) + rnd.choice([0, 0.5]) for _ in range(200)],
                   [rnd.choice("abcdé") * rnd.randrange(4) for _ in range(200)],
                   [(rnd.randrange(3), rnd.choice("xy"), (rnd.randrange(2),)) for _ in range(200)],
                   [bytes([rnd.randrange(256)]) for _ in range(200)]):
        assert sorted(values, key=universal_key) == sorted(values)
    assert universal_key(1) == universal_key(1.0) == universal_key(True)


def test_tuple_keys_holding_frozensets_group_exactly(tmp_path):
    ds = DiskSort(str(tmp_path))
    ds.extend([((frozenset({1}),), "a"), ((frozenset({2}),), "b"), ((frozenset({1}),), "c")])
    result = [(k, len(g)) for k, g in ds.groups()]
    assert sorted(result, key=lambda kv: universal_key(kv[0])) == [((frozenset({1}),), 2),
                                                                    ((frozenset({2}),), 1)]


def test_runs_of_different_key_types_merge(tmp_path):
    with DiskSort(str(tmp_path), memory_budget=TINY) as ds:
        ds.extend((i, 1) for i in range(40_000))
        ds.extend((str(i), 1) for i in range(40_000))
        assert ds.run_count >= 2
        assert sum(1 for _ in ds.groups()) == 80_000


def test_extend_keeps_to_the_budget(tmp_path):
    by_append = DiskSort(str(tmp_path / "a"), memory_budget=TINY)
    by_extend = DiskSort(str(tmp_path / "e"), memory_budget=TINY)
    os.makedirs(tmp_path / "a")
    os.makedirs(tmp_path / "e")
    for i in range(200_000):
        by_append.append((i, i))
    by_extend.extend((i, i) for i in range(200_000))
    try:
        assert by_append.counters["runs_spilled"] >= 5
        assert by_extend.counters["runs_spilled"] >= by_append.counters["runs_spilled"] - 1
    finally:
        by_append.close()
        by_extend.close()


@pytest.mark.parametrize("seed", range(20))
def test_nan_and_deeply_nested_set_keys_group_exactly(tmp_path, seed):
    rnd = random.Random(seed)
    pool = [float("nan"), 0.0, 1.0, 2.5, -3.0, ("t", (frozenset({1}),)), ("t", (frozenset({2}),)),
            ("t", (frozenset({1, 2}),))]
    items = [(rnd.choice(pool), 1) for _ in range(3000)]
    with DiskSort(str(tmp_path), memory_budget=1024 ** 2) as ds:
        for item in items:
            ds.append(item)
        groups = [(k, len(g)) for k, g in ds.groups()]
    plain = [(k, n) for k, n in groups if k == k]
    assert len({universal_key(k) for k, _ in plain}) == len(plain), "a key came out twice"
    assert sum(n for _, n in groups) == 3000
    truth = Counter(k for k, _ in items if k == k)
    assert {k: n for k, n in plain} == dict(truth)


def test_runs_of_entries_merge_into_the_groups_of_their_items(tmp_path):
    """Spill files hold codec entries (runs of one value, lists of values, single items): merged from
    several runs, each key's group is its items, as a list or, past the limit, a DiskList."""
    runs = [
        [("a", 1, 40), ("b", [1, 2, 3], None), ("c", 7)],
        [("a", [5, 6], None), ("c", 1, 2000), ("d", "x")],
        [("b", 4), ("c", [8, 9], None)],
    ]
    expected: dict = {}
    for i, entries in enumerate(runs):
        path = tmp_path / f"r{i}.spill"
        with open(path, "wb") as fh:
            codec.dump_entries(fh, entries, 16)
        for k, v in codec.expand(entries):
            expected.setdefault(k, []).append((k, v))
    for disk_based in (False, True):
        (tmp_path / f"sort{disk_based}").mkdir()
        ds = DiskSort(str(tmp_path / f"sort{disk_based}"))
        for i in range(len(runs)):
            ds.add_run(str(tmp_path / f"r{i}.spill"))
        seen = {}
        for key, group in ds.groups(disk_based=disk_based, max_items_in_memory=1000):
            assert isinstance(group, DiskList) == (disk_based or key == "c"), key
            assert len(group) == len(expected[key])
            assert group[0] == expected[key][0] and group[-1] == expected[key][-1]
            seen[key] = sorted(group)
        assert seen == {k: sorted(v) for k, v in expected.items()}
        assert ds.counters["items_sorted"] == sum(map(len, expected.values()))
        ds.close()
