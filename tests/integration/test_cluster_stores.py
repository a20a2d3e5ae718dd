"""Our cluster with inputs and outputs on a store: files under an s3:// input folder are planned once,
over every server, and output_url is published by one marker after every location uploaded its part."""
from __future__ import annotations

import collections
import json
import os

import boto3
import pytest
from cluster_helpers import MANAGE, Cluster, master_of
from integration_helpers import MAPREDUCE, free_port, make_job
from test_stores import store_items

from cluster import sample_data
from cluster.engine.store import store_options
from cluster.engine.store_output import StoreOutput

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """moto's S3 server for the module, with a bucket `data`; its endpoint."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    saved = {k: os.environ.get(k) for k in CREDENTIALS}
    os.environ.update(CREDENTIALS)  # this process's store clients, as the servers' (their env below)
    try:
        endpoint = f"http://127.0.0.1:{port}"
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="data")
        yield endpoint
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, s3):
    root = tmp_path_factory.mktemp("cluster_s3")
    with master_of(Cluster(root, extra_config=f"s3_endpoint_url = {s3}\n", env=CREDENTIALS)) as c:
        c.cli(MANAGE, "start")
        yield c


def upload_words(s3: str, tmp_path, prefix: str, seed: int, files: int = 4) -> dict:
    gen = sample_data.generate("words", str(tmp_path / prefix), size_mb=0.3, files=files, seed=seed, vocabulary=400)
    client = boto3.client("s3", endpoint_url=s3)
    for path in sorted((tmp_path / prefix / "input").iterdir()):
        client.put_object(Bucket="data", Key=f"{prefix}/{path.name}", Body=path.read_bytes())
    return gen["counts"]


def run(cluster, tmp_path, job: dict) -> dict:
    job_file = tmp_path / f"{job['job_name']}.json"
    job_file.write_text(json.dumps(job))
    return json.loads(cluster.cli(MAPREDUCE, "run", str(job_file), "--json", "--no-progress").stdout)


def test_store_input_is_planned_once_over_every_server_and_published_to_the_store(cluster, s3, tmp_path):
    expected = upload_words(s3, tmp_path, "cwords", seed=61)
    job = make_job("cl_s3", "testjobs", ["s3://data/cwords"], "words", "sum_values",
                   combine_function_name="sum_values", output_url="s3://data/out/cl")
    report = run(cluster, tmp_path, job)
    c = report["counters"]
    assert c["files"] == 4 and report["output_dir"] == f"s3://data/out/cl/{report['run_id']}"
    assert store_items("s3://data/out/cl", store_options(s3)) == expected
    staged = os.path.join(cluster.config.base_dir, "cl_s3", "staging")
    assert not os.path.isdir(staged) or not os.listdir(staged), "the locations' staged copies are removed"


def test_hold_state_and_merge_on_the_store_from_the_cluster(cluster, s3, tmp_path):
    counts = collections.Counter(upload_words(s3, tmp_path, "cinc/a", seed=62, files=2))
    job = make_job("cl_inc", "testjobs", ["s3://data/cinc"], "words", "sum_values", hold_state=True,
                   merge_previous_output=True, output_url="s3://data/out/cinc")
    run(cluster, tmp_path, job)
    counts.update(upload_words(s3, tmp_path, "cinc/b", seed=63, files=2))
    second = run(cluster, tmp_path, job)
    assert second["counters"]["files_already_mapped"] == 2
    assert store_items("s3://data/out/cinc", store_options(s3)) == dict(counts)
    assert len(StoreOutput("s3://data/out/cinc", store_options(s3)).latest()["mapped"]) == 4
