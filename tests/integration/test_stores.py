"""Inputs and outputs on a store through fsspec: an S3-compatible server (moto in server mode, over
real HTTP) read and written by the local executor and by Dask workers, each output compared with
the same job's output from local folders."""
from __future__ import annotations

import collections
import gzip
import os

import boto3
import pytest
import ujson
import zstandard
from dask_helpers import DaskProcesses
from integration_helpers import make_config, make_job, output_dict, run_job, write_lines

from cluster import sample_data
from cluster.engine.reading import InputFile
from cluster.engine.store import list_files, store_options
from cluster.engine.store_output import StoreOutput
from cluster.exceptions import JobFailed, JobSpecError
from cluster.executors.dask import DaskExecutor
from cluster.job_spec import validate_job


@pytest.fixture
def bucket(s3_server):
    """An empty bucket `data` on the S3 server; (endpoint, boto3 client)."""
    client = boto3.client("s3", endpoint_url=s3_server)
    client.create_bucket(Bucket="data")
    return s3_server, client


@pytest.fixture
def words_on_s3(bucket, tmp_path):
    """The same words as local files and as objects under s3://data/words/ (plain, gzip and zstd),
    with a `_SUCCESS` object beside them (skipped, as Spark's are): (local folder, expected counts)."""
    endpoint, client = bucket
    expected = sample_data.generate("words", str(tmp_path / "gen"), size_mb=0.5, files=6, seed=41, vocabulary=700)
    local = tmp_path / "gen" / "input"
    for i, path in enumerate(sorted(local.iterdir())):
        body = path.read_bytes()
        body = [body, gzip.compress(body), zstandard.ZstdCompressor().compress(body)][i % 3]
        client.put_object(Bucket="data", Key=f"words/day={i % 2}/{path.name}.log", Body=body)
    client.put_object(Bucket="data", Key="words/_SUCCESS", Body=b"")
    return local, expected["counts"]


def store_items(url: str, store) -> dict:
    """The published output at `url`, read as a reader would: `_LATEST`, then the files it names."""
    marker = StoreOutput(url, store).latest()
    assert marker is not None, f"nothing published at {url}"
    out: dict = {}
    for file_url in marker["files"]:
        with InputFile(file_url, store) as fh:
            for line in fh:
                key, value = ujson.loads(line)
                key = tuple(key) if isinstance(key, list) else key
                assert key not in out, f"{key!r} published twice"
                out[key] = value
    return out


def wc(name, inputs, **extra):
    return make_job(name, "testjobs", inputs, "words", "sum_values", **extra)


def test_the_local_executor_reads_s3_and_publishes_to_s3(tmp_path, bucket, words_on_s3):
    endpoint, client = bucket
    local, expected = words_on_s3
    config = make_config(tmp_path / "compute").with_overrides(s3_endpoint_url=endpoint)
    store = store_options(endpoint)
    assert len(list_files("s3://data/words", store)) == 6, "_SUCCESS is not an input"

    result = run_job(config, wc("s3_words", ["s3://data/words"], output_url="s3://data/out/wc"))
    assert result.counters["files"] == 6 and result.counters["files_decompressed"] == 4
    assert result.output_dir == f"s3://data/out/wc/{result.run_id}"
    assert store_items("s3://data/out/wc", store) == expected == output_dict(run_job(config, wc("plain", [local])))
    keys = {o["Key"] for o in client.list_objects_v2(Bucket="data", Prefix="out/wc/")["Contents"]}
    assert f"out/wc/{result.run_id}/_SUCCESS" in keys and "out/wc/_LATEST" in keys
    assert not any("_attempts" in k for k in keys)


def test_a_second_run_replaces_the_first_at_one_step_and_a_failed_run_changes_nothing(tmp_path, bucket,
                                                                                        words_on_s3):
    endpoint, client = bucket
    local, expected = words_on_s3
    config = make_config(tmp_path / "compute").with_overrides(s3_endpoint_url=endpoint)
    store = store_options(endpoint)
    client.put_object(Bucket="data", Key="out/twice/notes/README", Body=b"not a run: never removed")
    first, second, third = (run_job(config, wc("twice", ["s3://data/words"], output_url="s3://data/out/twice"))
                            for _ in range(3))
    marker = StoreOutput("s3://data/out/twice", store).latest()
    assert marker["run_id"] == third.run_id
    assert all(f.startswith(f"s3://data/out/twice/{third.run_id}/") for f in marker["files"])
    keys = {o["Key"] for o in client.list_objects_v2(Bucket="data", Prefix="out/twice/")["Contents"]}
    assert not any(first.run_id in k for k in keys), "delete_job_data: the older runs' prefixes are removed"
    assert any(second.run_id in k for k in keys), "but the one before, which a reader may still be reading"
    assert "out/twice/notes/README" in keys

    write_lines(tmp_path / "boom" / "a.txt", ["fine", "this goes boom", "never"])
    failing = make_job("twice", "testjobs", [str(tmp_path / "boom")], "fail_on_boom_noting", "sum_values",
                       output_url="s3://data/out/twice", auxiliary_data_name_mapper="notes")
    from integration_helpers import write_auxiliary

    (tmp_path / "notes").mkdir()
    write_auxiliary(config, "notes", {"dir": str(tmp_path / "notes")})
    with pytest.raises(JobFailed):
        run_job(config, failing)
    assert StoreOutput("s3://data/out/twice", store).latest() == marker
    assert store_items("s3://data/out/twice", store) == expected


def test_output_beside_the_previous_one_without_delete_job_data(tmp_path, bucket):
    endpoint, _ = bucket
    config = make_config(tmp_path / "compute").with_overrides(s3_endpoint_url=endpoint)
    write_lines(tmp_path / "a" / "a.txt", ["x y"])
    write_lines(tmp_path / "b" / "b.txt", ["z"])
    run_job(config, wc("beside", [tmp_path / "a"], output_url="s3://data/out/beside", delete_job_data=False))
    run_job(config, wc("beside", [tmp_path / "b"], output_url="s3://data/out/beside", delete_job_data=False))
    assert store_items("s3://data/out/beside", store_options(endpoint)) == {"x": 1, "y": 1, "z": 1}


def test_hold_state_and_merge_previous_output_on_the_store_equal_a_one_shot_run(tmp_path, bucket):
    endpoint, client = bucket
    config = make_config(tmp_path / "compute").with_overrides(s3_endpoint_url=endpoint)
    store = store_options(endpoint)
    counts: collections.Counter = collections.Counter()

    def add(name: str, seed: int) -> None:
        gen = sample_data.generate("words", str(tmp_path / name), size_mb=0.1, files=2, seed=seed, vocabulary=300)
        for path in sorted((tmp_path / name / "input").iterdir()):
            client.put_object(Bucket="data", Key=f"inc/{name}-{path.name}", Body=path.read_bytes())
        counts.update(gen["counts"])

    job = wc("inc_s3", ["s3://data/inc"], output_url="s3://data/out/inc", hold_state=True,
             merge_previous_output=True, combine_function_name="sum_values")
    add("a", 51)
    first = run_job(config, job)
    assert store_items("s3://data/out/inc", store) == dict(counts)
    add("b", 52)
    second = run_job(config, job)
    assert second.counters["files_already_mapped"] == 2
    assert store_items("s3://data/out/inc", store) == dict(counts)
    marker = StoreOutput("s3://data/out/inc", store).latest()
    assert len(marker["mapped"]) == 4, "the hold_state record lives in the marker, beside the output"
    assert first.run_id not in ujson.dumps(marker["files"])


def test_output_url_must_be_a_url(tmp_path):
    with pytest.raises(JobSpecError, match="output_url must be a store URL"):
        validate_job(wc("bad_url", [tmp_path], output_url="/srv/out"))


@pytest.fixture
def dask_with_s3(tmp_path, s3_server):
    """Two dask workers that reach the S3 server with its test credentials (set before they start)."""
    procs = DaskProcesses(tmp_path / "dask")
    try:
        procs.client().close()
        yield procs
    finally:
        procs.stop()


def test_dask_reads_s3_and_publishes_to_s3(tmp_path, bucket, words_on_s3, dask_with_s3):
    endpoint, client = bucket
    local, expected = words_on_s3
    config = make_config(tmp_path / "compute").with_overrides(s3_endpoint_url=endpoint)
    job = wc("dask_s3", ["s3://data/words"], output_url="s3://data/out/dask", combine_function_name="sum_values")
    result = DaskExecutor(config, dask_with_s3.address).run(job)
    assert store_items("s3://data/out/dask", store_options(endpoint)) == expected
    assert result.output_dir == f"s3://data/out/dask/{result.run_id}"
    keys = {o["Key"] for o in client.list_objects_v2(Bucket="data", Prefix="out/dask/")["Contents"]}
    assert not any("_attempts" in k for k in keys), "only the kept attempts' files, moved under the run"
    assert not os.path.exists(os.path.join(config.base_dir, "dask_s3", "reduce"))
