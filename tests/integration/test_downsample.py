"""downsample: about the asked fraction of records, and the same sample on a rerun."""
from __future__ import annotations

from integration_helpers import make_job, output_dict, output_files, run_job, write_lines

LINES = 20_000


def sample_input(tmp_path):
    """20,000 distinct lines in 2 files (one per server)."""
    for f in range(2):
        write_lines(tmp_path / "sample" / f"part-{f}.txt",
                    (f"line {f}-{i:05d} payload" for i in range(LINES // 2)))
    return tmp_path / "sample"


def test_downsample_fraction_and_rerun_is_identical(config, tmp_path):
    folder = sample_input(tmp_path)
    job = make_job("sample30", "testjobs", [folder], "count_records", "sum_values", downsample=0.3)

    first = run_job(config, job)
    got = output_dict(first)
    kept = got.pop("records")
    assert 0.27 * LINES <= kept <= 0.33 * LINES, f"kept {kept} of {LINES} records with downsample 0.3"
    assert len(got) == kept and set(got.values()) == {1}, "each kept line is counted once"
    assert first.counters["records_in"] == kept
    assert first.counters["records_sampled_out"] == LINES - kept
    first_bytes = sorted(p.read_bytes() for p in output_files(first.output_dir))

    second = run_job(config, job)
    assert second.run_id != first.run_id
    assert output_dict(second) == {"records": kept, **got}
    assert sorted(p.read_bytes() for p in output_files(second.output_dir)) == first_bytes

    # both files are sampled, each at about the asked fraction
    for f in range(2):
        share = sum(1 for line in got if line.startswith(f"line {f}-"))
        assert 0.25 * LINES / 2 <= share <= 0.35 * LINES / 2, (f, share)


def test_downsample_one_keeps_everything(config, tmp_path):
    folder = sample_input(tmp_path)
    result = run_job(config, make_job("sample100", "testjobs", [folder], "count_records", "sum_values",
                                      downsample=1.0))
    got = output_dict(result)
    assert got.pop("records") == LINES and len(got) == LINES
    assert result.counters["records_sampled_out"] == 0
