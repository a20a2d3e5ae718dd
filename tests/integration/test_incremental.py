"""hold_state + merge_previous_output (incremental runs), and delete_job_data false (output beside)."""
from __future__ import annotations

import collections
import shutil
from pathlib import Path

import pytest
from integration_helpers import make_job, output_dict, output_files, read_output, run_job

from cluster import sample_data
from cluster.exceptions import JobFailed


def add_words(tmp_path: Path, input_dir: Path, prefix: str, seed: int, gzip_every: int = 0) -> dict:
    """Generate words elsewhere, then move them into input_dir as <prefix>-<name>; return the counts."""
    scratch = tmp_path / f"gen-{prefix}"
    expected = sample_data.generate("words", str(scratch), size_mb=0.3, files=3, seed=seed,
                                    gzip_every=gzip_every, vocabulary=800)
    input_dir.mkdir(parents=True, exist_ok=True)
    for p in sorted((scratch / "input").iterdir()):
        shutil.move(str(p), str(input_dir / f"{prefix}-{p.name}"))
    return expected["counts"]


def wc_job(name: str, input_dir: Path, **extra) -> dict:
    return make_job(name, "testjobs", [input_dir], "bad_record_on_bad", "sum_values", **extra)


def test_hold_state_merge_previous_output_equals_one_shot(config, tmp_path):
    inc = tmp_path / "incoming"
    counts_a = add_words(tmp_path, inc, "a", seed=21)
    job = wc_job("incremental", inc, hold_state=True, merge_previous_output=True, delete_job_data=False)
    job["combine_function_name"] = "sum_values"

    first = run_job(config, job)
    assert output_dict(first) == counts_a
    assert first.counters["files_already_mapped"] == 0

    counts_b = add_words(tmp_path, inc, "b", seed=22, gzip_every=2)
    second = run_job(config, job)
    assert second.counters["files_already_mapped"] == 3, "the files of run 1 must not be mapped again"
    merged = output_dict(second)
    assert merged == dict(collections.Counter(counts_a) + collections.Counter(counts_b))

    one_shot = run_job(config, wc_job("one_shot", inc))
    assert output_dict(one_shot) == merged
    # only the merged run's files are published: the previous output was folded in, not kept beside
    assert all(second.run_id in p.name for p in output_files(second.output_dir))

    previous_files = output_files(second.output_dir)
    third = run_job(config, job)
    assert third.counters["files_already_mapped"] == 6
    # nothing new: only the previous output is read back, one record per item
    assert third.counters["files"] == len(previous_files)
    assert third.counters["records_in"] == len(merged)
    assert output_dict(third) == merged
    assert all(third.run_id in p.name for p in output_files(third.output_dir))


def test_hold_state_without_new_files_maps_nothing(config, tmp_path):
    inc = tmp_path / "incoming"
    counts = add_words(tmp_path, inc, "a", seed=23)
    job = wc_job("hold_only", inc, hold_state=True)
    assert output_dict(run_job(config, job)) == counts
    again = run_job(config, job)
    assert again.counters["files_already_mapped"] == 3
    assert again.counters["records_in"] == 0
    assert output_dict(again) == {}


def test_delete_job_data_false_keeps_earlier_output_beside(config, tmp_path):
    inc = tmp_path / "incoming"
    counts = add_words(tmp_path, inc, "a", seed=24)
    job = wc_job("beside", inc, delete_job_data=False)
    first = run_job(config, job)
    first_files = {p: p.read_bytes() for p in output_files(first.output_dir)}
    second = run_job(config, job)
    assert second.output_dir == first.output_dir
    files = output_files(second.output_dir)
    for p, data in first_files.items():
        assert p in files and p.read_bytes() == data, f"{p.name} of the first run changed or vanished"
    new = [p for p in files if p not in first_files]
    assert new and all(second.run_id in p.name for p in new)
    by_run: dict[str, collections.Counter] = {first.run_id: collections.Counter(),
                                              second.run_id: collections.Counter()}
    for p, items in read_output(second.output_dir).items():
        run = first.run_id if first.run_id in p.name else second.run_id
        for k, v in items:
            by_run[run][k] += v
    assert dict(by_run[first.run_id]) == counts
    assert dict(by_run[second.run_id]) == counts


def test_delete_job_data_true_replaces_output(config, tmp_path):
    inc = tmp_path / "incoming"
    counts = add_words(tmp_path, inc, "a", seed=25)
    job = wc_job("replace", inc, delete_job_data=True)
    first = run_job(config, job)
    second = run_job(config, job)
    files = output_files(second.output_dir)
    assert files and all(second.run_id in p.name and first.run_id not in p.name for p in files)
    assert output_dict(second) == counts


def test_incremental_tuple_keys_merge(config, tmp_path):
    """Previous output is read back with tuple keys as tuples, so they merge with new items."""
    inc = tmp_path / "incoming"
    add_words(tmp_path, inc, "a", seed=26)
    job = make_job("pairs_inc", "testjobs", [inc], "word_pairs", "sum_values",
                   hold_state=True, merge_previous_output=True)
    run_job(config, job)
    add_words(tmp_path, inc, "b", seed=27)
    merged = run_job(config, job)
    one_shot = run_job(config, make_job("pairs_once", "testjobs", [inc], "word_pairs", "sum_values"))
    assert output_dict(merged) == output_dict(one_shot)


def test_failed_incremental_run_does_not_hold_its_files(config, tmp_path):
    """A run that fails leaves the output as it was and maps the same new files next time."""
    inc = tmp_path / "incoming"
    counts_a = add_words(tmp_path, inc, "a", seed=28)
    job = make_job("inc_fail", "testjobs", [inc], "fail_on_boom", "sum_values",
                   hold_state=True, merge_previous_output=True)
    first = run_job(config, job)
    before = {p: p.read_bytes() for p in output_files(first.output_dir)}
    counts_b = add_words(tmp_path, inc, "b", seed=29)
    boom = inc / "b-part-00001.txt"
    good = boom.read_text()
    boom.write_text("BOOM\n" + good)
    with pytest.raises(JobFailed, match="BOOM"):
        run_job(config, job)
    assert {p: p.read_bytes() for p in output_files(first.output_dir)} == before
    boom.write_text(good)
    fixed = run_job(config, job)
    assert fixed.counters["files_already_mapped"] == 3
    assert output_dict(fixed) == dict(collections.Counter(counts_a) + collections.Counter(counts_b))


def test_previous_output_is_never_downsampled(config, tmp_path):
    inc = tmp_path / "incoming"
    add_words(tmp_path, inc, "a", seed=31)
    job = wc_job("sampled_incremental", inc, hold_state=True, merge_previous_output=True,
                 delete_job_data=False, downsample=0.5)
    first = output_dict(run_job(config, job))
    assert first
    # nothing new: the previous output comes back whole, run after run
    assert output_dict(run_job(config, job)) == first
    assert output_dict(run_job(config, job)) == first


def test_a_second_run_of_a_running_job_is_refused(config, tmp_path):
    from cluster.layout import JobLayout
    inc = tmp_path / "incoming"
    add_words(tmp_path, inc, "a", seed=32)
    layout = JobLayout(config.base_dir, config.auxiliary_dir, "locked_job")
    with layout.lock():  # stands for a run in progress in another process
        with pytest.raises(JobFailed, match="another run of this job is in progress"):
            run_job(config, wc_job("locked_job", inc))
    assert output_dict(run_job(config, wc_job("locked_job", inc)))  # free again afterwards


def test_a_truncated_gz_leaves_output_and_state_untouched_and_the_rerun_is_exact(config, tmp_path):
    """The issue's case: a .gz cut halfway once gave 'succeeded' with its readable half counted, and the
    rerun after the fix counted that half twice (3,172,403 words against the true 2,114,952)."""
    inc = tmp_path / "incoming"
    counts_a = add_words(tmp_path, inc, "a", seed=31)
    job = wc_job("cut", inc, hold_state=True, merge_previous_output=True, delete_job_data=False)
    first = run_job(config, job)
    assert output_dict(first) == counts_a
    state_dir = Path(config.base_dir) / "cut"
    before = {p: p.read_bytes() for p in sorted(state_dir.rglob("*")) if p.is_file()}

    counts_b = add_words(tmp_path, inc, "b", seed=32, gzip_every=1)
    gz = sorted(inc.glob("b-*.gz"))[0]
    whole = gz.read_bytes()
    gz.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(JobFailed) as info:
        run_job(config, job)
    assert f"{gz}: gzip data ends early (truncated)" in str(info.value)
    after = {p: p.read_bytes() for p in sorted(state_dir.rglob("*")) if p.is_file()}
    assert after == before, "the previous output and the hold_state record are as they were"

    gz.write_bytes(whole)  # fixed
    third = run_job(config, job)
    assert output_dict(third) == dict(collections.Counter(counts_a) + collections.Counter(counts_b))
    assert sum(output_dict(third).values()) == sum(counts_a.values()) + sum(counts_b.values())
