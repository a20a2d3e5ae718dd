"""DiskList: append, spill past a budget, iterate in order, clean up."""
from __future__ import annotations

import os

import pytest

from cluster.engine.disk_list import DiskList, DiskValues


def files_in(path) -> list[str]:
    return sorted(os.listdir(path))


def test_small_list_stays_in_memory(tmp_path):
    dl = DiskList(str(tmp_path), max_items_in_memory=10)
    for i in range(9):
        dl.append(("k", i))
    assert len(dl) == 9
    assert not dl.on_disk
    assert files_in(tmp_path) == []
    assert list(dl) == [("k", i) for i in range(9)]


def test_spills_past_the_budget_and_iterates_in_order(tmp_path):
    dl = DiskList(str(tmp_path), max_items_in_memory=100)
    items = [(i % 7, (i, str(i))) for i in range(5050)]
    for item in items:
        dl.append(item)
    assert dl.on_disk
    assert len(dl) == 5050
    assert len(dl._buffer) < 100  # at most the budget is held in memory
    [name] = files_in(tmp_path)
    assert name.startswith("disklist-") and name.endswith(".bin")
    assert list(dl) == items
    assert list(dl) == items  # iterating twice gives the same items
    dl.close()
    assert files_in(tmp_path) == []


def test_extend_keeps_the_budget(tmp_path):
    dl = DiskList(str(tmp_path), max_items_in_memory=64)
    dl.extend(iter(range(1000)))
    dl.extend([])
    dl.extend(range(1000, 1010))
    assert len(dl) == 1010
    assert dl.on_disk
    assert len(dl._buffer) < 64
    assert list(dl) == list(range(1010))


def test_append_after_iteration_is_seen(tmp_path):
    dl = DiskList(str(tmp_path), max_items_in_memory=3)
    dl.extend([1, 2, 3, 4])
    assert list(dl) == [1, 2, 3, 4]
    dl.extend([5, 6, 7])
    assert list(dl) == [1, 2, 3, 4, 5, 6, 7]


def test_close_deletes_the_file_and_refuses_iteration(tmp_path):
    dl = DiskList(str(tmp_path), max_items_in_memory=2)
    dl.extend(range(10))
    assert len(files_in(tmp_path)) == 1
    dl.close()
    assert files_in(tmp_path) == []
    with pytest.raises(ValueError, match="closed"):
        len(dl)
    with pytest.raises(ValueError, match="closed"):
        list(dl)
    dl.close()  # closing twice is harmless


def test_context_manager_closes(tmp_path):
    with DiskList(str(tmp_path), max_items_in_memory=2) as dl:
        dl.extend(range(5))
        assert files_in(tmp_path)
    assert files_in(tmp_path) == []
    with pytest.raises(ValueError):
        iter(dl).__next__()


def test_delete_after_iteration(tmp_path):
    dl = DiskList(str(tmp_path), max_items_in_memory=2, delete_after_iteration=True)
    dl.extend(range(5))
    assert list(dl) == [0, 1, 2, 3, 4]
    assert files_in(tmp_path) == []
    with pytest.raises(ValueError):
        list(dl)


def test_partial_iteration_then_close(tmp_path):
    dl = DiskList(str(tmp_path), max_items_in_memory=2)
    dl.extend(range(100))
    it = iter(dl)
    assert [next(it) for _ in range(3)] == [0, 1, 2]
    dl.close()
    assert files_in(tmp_path) == []


def test_types_survive_the_disk(tmp_path):
    items = [(("t", 1), [1, 2]), (1, {"a": (1,)}), ("s", None), (b"b", 1.5)]
    dl = DiskList(str(tmp_path), max_items_in_memory=1)
    dl.extend(items)
    assert dl.on_disk
    back = list(dl)
    assert back == items
    assert type(back[0][0]) is tuple and type(back[0][1]) is list


def test_budget_below_one_means_one(tmp_path):
    dl = DiskList(str(tmp_path), max_items_in_memory=0)
    dl.append("x")
    assert dl.on_disk
    assert list(dl) == ["x"]


def test_index_reads_spilled_and_buffered_items(tmp_path):
    with DiskList(str(tmp_path), max_items_in_memory=10) as dl:
        dl.extend((i, i * i) for i in range(25))
        assert dl.on_disk
        assert dl[0] == (0, 0) and dl[12] == (12, 144) and dl[24] == (24, 576) and dl[-1] == (24, 576)
        with pytest.raises(IndexError):
            dl[25]
        with pytest.raises(TypeError):
            dl["1"]
        expected = [(i, i * i) for i in range(25)]
        for cut in (slice(1, 3), slice(-3, None), slice(None, None, 7), slice(20, 5, -4), slice(5, 5),
                    slice(-100, 100), slice(None, None, -1)):
            assert dl[cut] == expected[cut], cut
        assert list(dl) == list(dl) == expected  # iterated more than once


def test_disk_values_are_a_sequence_of_the_values(tmp_path):
    with DiskList(str(tmp_path), max_items_in_memory=10) as dl:
        dl.extend(("k", i) for i in range(25))
        values = DiskValues(dl)
        assert len(values) == 25 and list(values) == list(range(25)) and sum(values) == sum(range(25))
        assert values[0] == 0 and values[-1] == 24 and values[3:6] == [3, 4, 5] and values[::-10] == [24, 14, 4]
        with pytest.raises(AttributeError, match="read-only sequence .* no .sort"):
            values.sort()


def test_a_closed_disk_list_says_so(tmp_path):
    dl = DiskList(str(tmp_path), max_items_in_memory=2)
    dl.extend(range(5))
    dl.close()
    for use in (len, lambda d: d[0], lambda d: d[1:3], list):
        with pytest.raises(ValueError, match="closed"):
            use(dl)


def test_disk_values_print_and_compare_as_the_list_would(tmp_path):
    with DiskList(str(tmp_path), max_items_in_memory=3) as dl:
        dl.extend(("k", v) for v in [1, "two", (3,), None, 5.5])
        values = DiskValues(dl)
        assert str(values) == repr(values) == str([1, "two", (3,), None, 5.5])
        assert values == [1, "two", (3,), None, 5.5] and values != [1, "two"]
