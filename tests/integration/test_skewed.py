"""A skewed data set (one key holds 30% of ~40 MB) under a small memory budget:
exact sums, bounded memory per server, and a run well under a minute."""
from __future__ import annotations

import collections
import logging
import random
import time

import pytest
from integration_helpers import TEST_PROJECTS, make_config, make_job, output_dict, run_job

from cluster import sample_data

MiB = 1024 ** 2
log = logging.getLogger(__name__)


@pytest.mark.slow
def test_skewed_keys_disk_based_input_exact_and_bounded(tmp_path):
    expected = sample_data.generate("skewed", str(tmp_path / "skewed"), size_mb=40, files=4,
                                    hot_fraction=0.3, seed=3)
    assert expected["records"] > 3_000_000
    config = make_config(tmp_path / "compute", TEST_PROJECTS, memory="64M")
    job = make_job("skewed", "testjobs", [tmp_path / "skewed" / "input"], "key_value", "sum_streaming",
                   disk_based_input=True, combine_function_name=None)

    started = time.monotonic()
    result = run_job(config, job, servers=2)
    seconds = time.monotonic() - started

    got = output_dict(result)
    assert len(got) == expected["distinct_keys"]
    assert got["hot"] == expected["sums"]["hot"]
    assert got == expected["sums"]
    c = result.counters
    assert c["records_in"] == expected["records"]
    assert c["combine_calls"] == 0
    hot_share = next(s for s, ph in result.per_server.items()
                     if ph["reduce"].get("largest_group", 0) > 0.25 * expected["records"])
    assert hot_share in ("S_0", "S_1")
    assert set(c["peak_rss_bytes"]) == {"S_0", "S_1"}
    for server, rss in c["peak_rss_bytes"].items():
        assert 0 < rss < 64 * MiB + 160 * MiB, f"{server} peaked at {rss / MiB:.0f} MiB"
    log.info("skewed 40 MB through 64 MB: %.1fs", seconds)  # speed is measured by scripts/bench, not here


def _hot_words(folder, hot: int, seed: int = 1) -> collections.Counter:
    """Lines of ten 'hot' and three of 5,000 other words, in four files; the exact counts."""
    folder.mkdir(parents=True)
    rng = random.Random(seed)
    vocabulary = [f"w{i}" for i in range(5000)]
    counts: collections.Counter = collections.Counter()
    for f in range(4):
        with open(folder / f"{f}.txt", "w") as fh:
            for _ in range(hot // 40):
                words = ["hot"] * 10 + rng.sample(vocabulary, 3)
                counts.update(words)
                fh.write(" ".join(words) + "\n")
    return counts


@pytest.mark.slow
def test_a_hot_word_ten_times_the_memory_share_without_a_combiner_or_disk_based_input(tmp_path):
    """No combiner, no disk_based_input: the hottest word's group (1.8 M items, ~10x a server's 16 MiB
    share as a list) goes to disk by itself; the reduce function uses it as a list (len, negative
    indexes, slices, two passes); the count is exact and memory stays within the share."""
    config = make_config(tmp_path / "compute", TEST_PROJECTS, memory="32M")
    share = config.server_memory_budget
    _hot_words(tmp_path / "s", 400)
    small = run_job(config, make_job("small", "testjobs", [tmp_path / "s"], "words", "group_shape"), servers=2)
    baseline = max(small.counters["peak_rss_bytes"].values())  # the workers' fixed overhead

    expected = _hot_words(tmp_path / "hot", 1_800_000)
    result = run_job(config, make_job("hot", "testjobs", [tmp_path / "hot"], "words", "group_shape"), servers=2)
    got = output_dict(result)
    assert got["hot"] == {"len": expected["hot"], "sum": expected["hot"], "again": expected["hot"],
                          "last_key": "hot", "middle": 3, "tail": [True, True, True], "type": "DiskList"}
    assert all(got[w]["sum"] == n and got[w]["type"] == "list" for w, n in expected.items() if w != "hot")
    assert result.counters["groups_on_disk"] == 1
    for server, rss in result.counters["peak_rss_bytes"].items():
        log.info("%s peaked at %.1f MiB (fixed overhead %.1f MiB, share %.1f MiB)", server, rss / MiB,
                 baseline / MiB, share / MiB)
        assert rss < baseline + 1.25 * share, f"{server} peaked at {rss / MiB:.1f} MiB"
