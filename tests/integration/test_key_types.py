"""Keys of every kind end to end: tuple keys come back as JSON arrays, ints as ints, mixed
types group correctly, and each output file is in ascending key order when keys compare."""
from __future__ import annotations

import collections
import random
from pathlib import Path

import pytest
from integration_helpers import (
    TEST_PROJECTS,
    make_config,
    make_job,
    output_dict,
    read_output,
    run_job,
    tuplify,
    write_lines,
)

from cluster.engine.functions import load_function


@pytest.fixture
def numbers_dir(tmp_path) -> Path:
    """2 files of 1500 lines, 5 whole numbers in 0..1999 a line (so 10 < 9 would show as text order)."""
    rng = random.Random(7)
    for f in range(2):
        write_lines(tmp_path / "numbers" / f"n{f}.txt",
                    (" ".join(str(rng.randint(0, 1999)) for _ in range(5)) for _ in range(1500)))
    return tmp_path / "numbers"


def input_lines(folder: Path) -> list[str]:
    return [line for p in sorted(folder.iterdir()) for line in p.read_text().splitlines(True)]


def assert_files_ascending(output_dir) -> None:
    for path, items in read_output(output_dir).items():
        keys = [tuplify(k) for k, _ in items]
        assert keys == sorted(keys), f"{path.name}: keys not in ascending order"
        assert len(set(keys)) == len(keys)


def test_int_keys_stay_ints_in_numeric_order(config, numbers_dir):
    expected: collections.Counter = collections.Counter()
    for line in input_lines(numbers_dir):
        for x in line.split():
            expected[int(x)] += int(x)
    result = run_job(config, make_job("ints", "testjobs", [numbers_dir], "number_keys", "sum_values"))
    got = output_dict(result)
    assert got == dict(expected)
    assert all(type(k) is int for k in got), "int keys must come back as JSON numbers"
    assert all(type(v) is int for v in got.values())
    assert_files_ascending(result.output_dir)


def test_tuple_keys_come_back_as_arrays(config, words_plain):
    input_dir, _ = words_plain
    expected: collections.Counter = collections.Counter()
    for line in input_lines(input_dir):
        words = line.split()
        for a, b in zip(words, words[1:], strict=False):
            expected[(a, b, len(a))] += 1
    job = make_job("pairs", "testjobs", [input_dir], "word_pairs", "sum_values")
    result = run_job(config, job, servers=3)
    raw = [item for items in read_output(result.output_dir).values() for item in items]
    assert raw and all(isinstance(k, list) and len(k) == 3 and isinstance(k[2], int) for k, _ in raw), \
        "a tuple key must be written as a JSON array"
    assert output_dict(result) == dict(expected)
    assert_files_ascending(result.output_dir)


def test_mixed_type_keys_group_correctly(config, numbers_dir):
    expected: collections.Counter = collections.Counter()
    for line in input_lines(numbers_dir):
        for x in line.split():
            n = int(x)
            expected[n] += 1
            expected[x] += 1
            expected[None] += n
            expected[("t", n % 7)] += n
    result = run_job(config, make_job("mixed", "testjobs", [numbers_dir], "mixed_keys", "sum_values"))
    got = output_dict(result)  # fails on a key written twice
    assert got == dict(expected)
    assert {type(k) for k in got} == {int, str, type(None), tuple}
    assert got[None] == sum(int(x) for line in input_lines(numbers_dir) for x in line.split())
    # 7 and "7" are different keys and stay apart
    some = next(k for k in got if type(k) is int)
    assert got[some] == got[str(some)]


def test_int_runs_and_str_runs_from_different_mappers_merge(config, numbers_dir, words_plain):
    """One mapper sees only int keys, the other only str keys: each spills naturally sorted runs
    that cannot be compared with the other's; the reducers must still group every key."""
    (numbers_dir / "n1.txt").unlink()
    words_file = sorted(words_plain[0].iterdir())[0]
    words_dir = numbers_dir.parent / "words"
    words_dir.mkdir()
    (words_dir / "w.txt").write_bytes(words_file.read_bytes()[: (numbers_dir / "n0.txt").stat().st_size])
    expected: collections.Counter = collections.Counter()
    for folder in (numbers_dir, words_dir):
        for line in input_lines(folder):
            for t in line.split():
                expected[int(t) if t.isdigit() else t] += 1
    job = make_job("runs", "testjobs", [numbers_dir, words_dir], "token_keys", "sum_values")
    result = run_job(config, job)
    assert [ph["map"]["files"] for ph in result.per_server.values()] == [1, 1]
    assert output_dict(result) == dict(expected)


ALL_TYPES = range(10)
NATURAL_RUNS = (0, 1, 2, 3, 4, 6, 7, 9)  # each category sorts naturally; no run needs the universal order


@pytest.mark.parametrize(("categories", "lines_per_file", "items_per_spill_file"), [
    pytest.param(ALL_TYPES, 4000, None, id="a-run-per-file"),  # a file's values outgrow a server's share
    pytest.param(ALL_TYPES, 300, 10, id="hundreds-of-runs-premerged"),
    pytest.param(NATURAL_RUNS, 2000, 40, id="natural-runs-premerged"),
])
def test_runs_of_every_key_type_merge_and_group_exactly(tmp_path, categories, lines_per_file,
                                                         items_per_spill_file):
    """One file per key type (ints, strs, tuples, tuples holding None, None beside floats, bytes,
    floats, tuples that only sometimes compare, nested tuples); a budget small enough that every
    file is spilled as its own run(s), so runs of types that do not compare meet in the merge, and
    with tiny spill files also in the sort phase's extra merge passes.
    Every key must come out once, with its exact count."""
    typed_key = load_function(str(TEST_PROJECTS), "testjobs", "map_functions", "_typed_key")
    rng = random.Random(99)
    expected: collections.Counter = collections.Counter()
    for category in categories:
        lines = []
        for _ in range(lines_per_file):
            numbers = [rng.randint(0, 999) for _ in range(5)]
            lines.append(f"c{category} " + " ".join(map(str, numbers)))
            expected.update(repr(typed_key(category, n)) for n in numbers)
        write_lines(tmp_path / "typed" / f"cat{category}.txt", lines)
    config = make_config(tmp_path / "compute", TEST_PROJECTS, memory="1M")
    job = make_job("typed", "testjobs", [tmp_path / "typed"], "typed_keys", "sum_by_repr",
                   max_number_dumped_items_shuffler=items_per_spill_file)
    result = run_job(config, job, servers=3)
    assert result.counters["spill_files"] >= len(categories), "each file should make at least one run"
    if items_per_spill_file:
        assert max(ph["sort"]["runs_in"] for ph in result.per_server.values()) > 64
    assert output_dict(result) == dict(expected)
