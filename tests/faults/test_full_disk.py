"""A compute_dir on a small tmpfs that fills mid-job: a clear error naming the folder, the previous
output intact, no temporary files left behind (and no retry: a full disk stays full)."""
from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
from integration_helpers import make_config, make_job, output_dict, run_job, write_lines

from cluster.exceptions import JobFailed


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 6 MB tmpfs of its own (root only), unmounted whatever happens."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    where = tmp_path / f"tmpfs-{uuid.uuid4().hex[:6]}"
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "cluster-test-full", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_a_disk_that_fills_mid_job_fails_it_clearly_and_leaves_the_previous_output(small_disk, tmp_path):
    config = make_config(small_disk / "compute", memory="2M")
    small = tmp_path / "small"
    write_lines(small / "a.txt", [f"w{i % 50} x" for i in range(200)])
    job = make_job("fills", "testjobs", [small], "words", "sum_values")
    first = run_job(config, job)
    before = output_dict(first)
    big = tmp_path / "big"
    for f in range(4):  # ~12 MB of distinct words: their spill files cannot fit in 6 MB
        write_lines(big / f"b{f}.txt", [f"u{f}_{i} v{f}_{i} z{i}" for i in range(150_000)])
    job["input_dirs"] = [str(big)]
    with pytest.raises(JobFailed) as info:
        run_job(config, job)
    message = str(info.value)
    assert "No space left on device" in message or "no space" in message.lower(), message
    assert str(small_disk) in message, "the error must name the folder that is full"
    assert output_dict(first) == before
    job_dir = Path(config.base_dir) / "fills"
    left = [p for sub in ("map", "spill", "sort", "staging") for p in (job_dir / sub).rglob("*") if p.is_file()]
    assert left == [], left
    assert not list(job_dir.rglob("*.tmp"))
