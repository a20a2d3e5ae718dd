"""A skewed data set (one key holds 30% of ~40 MB) under a small memory budget:
exact sums, bounded memory per server, and a run well under a minute."""
from __future__ import annotations

import time

import pytest
from integration_helpers import TEST_PROJECTS, make_config, make_job, output_dict, run_job

from cluster import sample_data

MiB = 1024 ** 2


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
    assert seconds < 45, f"took {seconds:.1f}s"
