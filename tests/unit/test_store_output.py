"""StoreOutput on a file:// store: one marker publishes a run, a failed run changes nothing, a run that
failed after its marker was written stays published, and only run prefixes are ever removed."""
from __future__ import annotations

import json

import pytest

from cluster.engine.inputs import check_filter_inputs
from cluster.engine.store import is_url, list_files, write_bytes
from cluster.engine.store_output import LATEST, StoreOutput
from cluster.exceptions import InputError, JobSpecError
from cluster.job_spec import get_mapreduce_job_template, validate_job

RUNS = ["20261201T000000-aaaaaaaa", "20261202T000000-bbbbbbbb", "20261203T000000-cccccccc"]


def publish(out: StoreOutput, tmp_path, run_id: str, replace: bool = True, mapped=None) -> str:
    local = tmp_path / f"staged-{run_id}"
    local.mkdir()
    (local / f"S_0-{run_id}-00000.jsonl").write_text(f'["run", "{run_id}"]\n')
    files = out.upload(run_id, [str(p) for p in local.iterdir()])
    return out.commit(run_id, files, mapped or {}, replace=replace)


def test_one_marker_names_the_run_and_replace_keeps_the_one_before(tmp_path):
    url = f"file://{tmp_path}/out"
    out = StoreOutput(url)
    assert out.latest() is None and out.output_files() == []
    (tmp_path / "out" / "notes").mkdir(parents=True)
    (tmp_path / "out" / "notes" / "keep.txt").write_text("not a run")
    for run_id in RUNS:
        assert publish(out, tmp_path, run_id) == f"{url}/{run_id}"
    marker = json.loads((tmp_path / "out" / LATEST).read_text())
    assert marker["run_id"] == RUNS[2] and len(marker["files"]) == 1 and RUNS[2] in marker["files"][0]
    left = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert left == sorted([LATEST, "notes", RUNS[1], RUNS[2]]), "the run before stays for readers; nothing else goes"
    assert (tmp_path / "out" / RUNS[2] / "_SUCCESS").exists()


def test_without_replace_the_files_add_up_and_hold_state_accumulates(tmp_path):
    out = StoreOutput(f"file://{tmp_path}/out")
    publish(out, tmp_path, RUNS[0], replace=False, mapped={"s3://b/a.log": 10})
    publish(out, tmp_path, RUNS[1], replace=False, mapped={"s3://b/b.log": 20})
    assert len(out.output_files()) == 2
    assert out.mapped() == {"s3://b/a.log", "s3://b/b.log"}


def test_a_cluster_locations_paths_are_kept_apart(tmp_path):
    out = StoreOutput(f"file://{tmp_path}/out")
    local = tmp_path / "staged"
    local.mkdir()
    out.commit(RUNS[0], [], {}, replace=True, mapped_by_location={"host-a": {"/data/day1.log": None}})
    assert out.mapped("host-a") == {"/data/day1.log"}
    assert out.mapped("host-b") == set() and out.mapped() == set()


def test_discard_removes_a_failed_run_but_never_the_published_one(tmp_path):
    out = StoreOutput(f"file://{tmp_path}/out")
    publish(out, tmp_path, RUNS[0])
    failed = tmp_path / "failed"
    failed.mkdir()
    (failed / "part.jsonl").write_text("[1, 2]\n")
    out.upload(RUNS[1], [str(failed / "part.jsonl")])
    write_bytes(out.attempt_prefix(RUNS[1], "P_000-x") + "/part.jsonl", b"[1, 2]\n")
    out.discard(RUNS[1])
    assert not (tmp_path / "out" / RUNS[1]).exists() and not (tmp_path / "out" / "_attempts" / RUNS[1]).exists()
    out.discard(RUNS[0])  # failed after its marker was written: published, so it stays
    assert (tmp_path / "out" / RUNS[0]).is_dir() and out.latest()["run_id"] == RUNS[0]


def test_a_marker_that_is_not_ours_is_refused_with_the_reason(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / LATEST).write_text("not json")
    with pytest.raises(Exception, match="not this package's marker"):
        StoreOutput(f"file://{tmp_path}/out").latest()


def test_urls_listing_skips_hidden_and_underscore_names(tmp_path):
    (tmp_path / "in" / "_temporary").mkdir(parents=True)
    for name in ("a.log", ".hidden", "_SUCCESS", "b.tmp", "_temporary/x.log"):
        (tmp_path / "in" / name).write_text("x\n")
    assert [u.rsplit("/", 1)[1] for u, _ in list_files(f"file://{tmp_path}/in")] == ["a.log"]
    assert is_url("s3://b/x") and is_url("gs://b") and not is_url("/data") and not is_url("file:///data")


def test_output_url_may_not_hold_the_input_and_filters_stay_local(tmp_path):
    job = get_mapreduce_job_template()
    job.update(job_name="j", project_name="p", map_function_name="m", input_dirs=["s3://b/data/logs"],
               output_url="s3://b/data")
    with pytest.raises(JobSpecError, match="holds input_dirs s3://b/data/logs"):
        validate_job(job)
    job.update(output_url="s3://b/data-out", input_filter={"version": 1, "dimensions": []})
    with pytest.raises(InputError, match="input_filter selects from local folders only"):
        check_filter_inputs(validate_job(job))
