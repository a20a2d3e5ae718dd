"""`python -m cluster.job`: Telemetry-style job scripts over filtered, partitioned data, driven as a
user would (the command line, real worker processes, 2 mappers and 2 reducers), checked
against a hand-written reading of the same files; S3 through moto's server over real HTTP."""
from __future__ import annotations

import bz2
import collections
import gzip
import json
import logging
import lzma
import os
import subprocess
import sys
from pathlib import Path

import lz4.frame
import pytest
from integration_helpers import REPO

from cluster import sample_data
from cluster.engine.partitions import DimensionsFilter
from cluster.telemetry.remote_data import RemoteData

SCRIPTS = REPO / "tests" / "job_scripts"
EXAMPLE = REPO / "examples" / "telemetry" / "channel_os.py"  # the README's example
FIELDS = ["reason", "appName", "appUpdateChannel", "appVersion", "appBuildID", "submission_date"]
BAD_LINES = ["no tab on this line", "0000-bad\t{\"info\": {\"appUpdateChannel\": ", "0000-bad2\tnot json at all"]


def write_filter(path: Path, **allowed) -> Path:
    path.write_text(json.dumps({"version": 1, "dimensions": [
        {"field_name": n, "allowed_values": allowed.get(n, "*")} for n in FIELDS]}))
    return path


def dims_of(rel: str) -> list[str]:
    parts = rel.split("/")
    return parts[:-1] + parts[-1].split(".")[:2]


def read_text(path: Path) -> str:
    opener = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open, ".lz4": lz4.frame.open}.get(path.suffix, open)
    with opener(path, "rt") as fh:
        return fh.read()


def bad_lines_at(root: Path) -> str:
    """'<file>:<line>' of the first of BAD_LINES."""
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        lines = read_text(path).splitlines()
        if BAD_LINES[0] in lines:
            return f"{path}:{lines.index(BAD_LINES[0]) + 1}"
    raise AssertionError("the fixture's bad lines are missing")


def truth(root: Path, keep) -> dict:
    """The answers, by reading every file of the tree with plain Python."""
    by_channel_os: collections.Counter = collections.Counter()
    by_channel: collections.Counter = collections.Counter()
    documents = bad = files = untabbed = 0
    for path in sorted(root.rglob("*")):
        if not path.is_file() or not keep(dims_of(str(path.relative_to(root)))):
            continue
        files += 1
        for line in read_text(path).splitlines():
            _, tab, value = line.partition("\t")
            untabbed += not tab
            try:
                info = json.loads(value)["info"] if tab else None
            except ValueError:
                info = None
            if info is None:
                bad += 1
                continue
            documents += 1
            by_channel_os[f"{info['appUpdateChannel']}|{info['OS']}"] += 1
            by_channel[info["appUpdateChannel"]] += 1
    return {"documents": documents, "bad": bad, "files": files, "untabbed": untabbed,
            "by_channel_os": dict(by_channel_os),
            "by_channel": dict(by_channel)}


@pytest.fixture(scope="module")
def telemetry(tmp_path_factory) -> Path:
    """Telemetry in its layout, 16 files in every compression, with known bad lines in one file."""
    out = tmp_path_factory.mktemp("telemetry")
    sample_data.generate("telemetry", str(out), size_mb=1.5, files=16, seed=5)
    root = out / "input"
    files = sorted(p for p in root.rglob("*.log"))
    with open(files[0], "a") as fh:
        fh.write("\n".join(BAD_LINES) + "\n")
    writers = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open, ".lz4": lz4.frame.open}
    for i, path in enumerate(files):
        suffix = [None, ".gz", ".bz2", ".xz", ".lz4"][i % 5]
        if suffix:
            data = path.read_bytes()
            with writers[suffix](str(path) + suffix, "wb") as fh:
                fh.write(data)
            path.unlink()
    return root


def run_job(tmp_path: Path, script: str, data: Path | None, filter_path: Path, *extra: str,
            env: dict | None = None, work: Path | None = None) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp_path / f"{script}.out"
    path = EXAMPLE if script == "channel_os" else SCRIPTS / f"{script}.py"
    cmd = [sys.executable, "-m", "cluster.job", str(path), "--input-filter", str(filter_path),
           "--work-dir", str(work or tmp_path / "work"), "--output", str(out), "--num-mappers", "2",
           "--num-reducers", "2", *extra]
    if data is not None:
        cmd += ["--data-dir", str(data)]
    base = dict(os.environ, XDG_CONFIG_HOME=str(tmp_path / "xdg"), XDG_DATA_HOME=str(tmp_path / "xdg-data"))
    base.pop("CLUSTER_CONFIG", None)
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env={**base, **(env or {})}, timeout=120)
    return proc, out


def records(path: Path, sep: str = "\t") -> dict[str, int]:
    lines = path.read_text().splitlines()
    got = dict(line.split(sep, 1) for line in lines)
    assert len(got) == len(lines), "a key was written twice"
    return {k: int(v) for k, v in got.items()}


FILTERS = {
    "star": ({}, lambda d: True),
    "string": ({"appUpdateChannel": "release"}, lambda d: d[2] == "release"),
    "list": ({"appUpdateChannel": ["beta", "nightly"], "appName": ["Firefox"]},
             lambda d: d[2] in ("beta", "nightly") and d[1] == "Firefox"),
    "range": ({"submission_date": {"min": "20140302"}, "appVersion": {"max": "29.0"}},
              lambda d: d[5] >= "20140302" and d[3] <= "29.0"),
}


@pytest.mark.parametrize("name", FILTERS)
def test_channel_os_counts_equal_the_truth_for_each_kind_of_filter(telemetry, tmp_path, name):
    allowed, keep = FILTERS[name]
    want = truth(telemetry, keep)
    assert want["files"] > 0 and (name == "star" or want["files"] < 16)
    proc, out = run_job(tmp_path, "channel_os", telemetry, write_filter(tmp_path / "f.json", **allowed))
    assert proc.returncode == 0, proc.stderr
    assert records(out) == want["by_channel_os"]
    assert f"selected {want['files']} files" in proc.stderr
    assert f"{want['bad']:,} bad lines" in proc.stderr


def test_record_count_and_bad_lines_with_file_and_line(telemetry, tmp_path):
    want = truth(telemetry, lambda d: True)
    lines = want["documents"] + want["bad"]
    proc, out = run_job(tmp_path, "record_count", telemetry, write_filter(tmp_path / "f.json"))
    assert proc.returncode == 0, proc.stderr
    # record_count does not parse JSON: only lines without a tab are bad
    assert records(out) == {"record_count": lines - want["untabbed"]}
    assert f"{lines:,} rows read, {want['untabbed']:,} bad lines" in proc.stderr
    where = bad_lines_at(telemetry)
    assert f"{where}: no tab between the key and the value" in proc.stderr
    channel_os, _ = run_job(tmp_path, "channel_os", telemetry, write_filter(tmp_path / "f.json"))
    assert f"{lines:,} rows read, {want['bad']:,} bad lines" in channel_os.stderr
    path, lineno = where.rsplit(":", 1)
    assert f"{path}:{int(lineno) + 1}: JSONDecodeError" in channel_os.stderr
    for mapper in ("S_0", "S_1"):  # every step per mapper: files, decompressed, failed, rows, bad lines
        assert f"mapper {mapper}: 8 files (" in proc.stderr and "decompressed, 0 failed)" in proc.stderr


def test_combine_on_and_off_give_the_same_output_and_combine_runs(telemetry, tmp_path):
    f = write_filter(tmp_path / "f.json")
    on, out_on = run_job(tmp_path, "channel_os", telemetry, f, "--combine-threshold", "5")
    assert on.returncode == 0, on.stderr
    calls = int(on.stderr.split(" combine calls")[0].rsplit(", ", 1)[1].replace(",", ""))
    assert calls > 100, on.stderr  # 16 files x ~100 documents per key: many combines at 5
    off_out = tmp_path / "off"
    off_out.mkdir()
    off, out_off = run_job(off_out, "channel_os", telemetry, f, "--combine-threshold", "0")
    assert off.returncode == 0, off.stderr
    assert " 0 combine calls" in off.stderr
    assert records(out_on) == records(out_off) == truth(telemetry, lambda d: True)["by_channel_os"]


def test_a_map_only_job_writes_every_map_record(telemetry, tmp_path):
    want = truth(telemetry, lambda d: d[2] == "beta")
    proc, out = run_job(tmp_path, "map_only", telemetry, write_filter(tmp_path / "f.json", appUpdateChannel="beta"))
    assert proc.returncode == 0, proc.stderr
    lines = out.read_text().splitlines()
    tabbed = want["documents"] + want["bad"] - want["untabbed"]  # map_only does not parse the JSON
    assert len(lines) == tabbed and all(line.endswith("\tbeta") for line in lines)
    assert len({line.split("\t")[0] for line in lines}) == len(lines)


def test_csv_output_through_setup_reduce(telemetry, tmp_path):
    import csv
    proc, out = run_job(tmp_path, "csv_report", telemetry, write_filter(tmp_path / "f.json"), "--num-reducers", "1")
    assert proc.returncode == 0, proc.stderr
    header, *rows = list(csv.reader(out.read_text().splitlines()))
    assert header == ["channel", "documents", "note"]
    assert {r[0]: int(r[1]) for r in rows} == truth(telemetry, lambda d: True)["by_channel"]
    assert all(r[2] == f"{r[0]}, all builds" for r in rows)


def test_a_corrupt_file_is_named_and_fails_the_job(telemetry, tmp_path):
    data = tmp_path / "data"
    import shutil
    shutil.copytree(telemetry, data)
    broken = sorted(data.rglob("*.gz"))[0]
    broken.write_bytes(broken.read_bytes()[: broken.stat().st_size // 2])
    proc, out = run_job(tmp_path, "record_count", data, write_filter(tmp_path / "f.json"))
    assert proc.returncode == 1, proc.stderr
    assert f"{broken}: gzip data ends early (truncated)" in proc.stderr and "cannot be read" in proc.stderr
    assert not out.exists(), "no output holds part of a file"


def test_a_value_marshal_cannot_carry_is_refused_with_type_file_and_line(telemetry, tmp_path):
    proc, out = run_job(tmp_path, "unmarshalable", telemetry, write_filter(tmp_path / "f.json"),
                        "--max-bad-fraction", "0")
    assert proc.returncode == 1 and not out.exists()
    assert "decimal.Decimal, which marshal cannot serialize" in proc.stderr, proc.stderr
    assert ":3: NotSerializable: map_context.write" in proc.stderr and "/input/" in proc.stderr


def test_bad_command_lines_are_explained(telemetry, tmp_path):
    proc, _ = run_job(tmp_path, "record_count", None, write_filter(tmp_path / "f.json"))
    assert proc.returncode == 2 and "--data-dir is required" in proc.stderr
    bad_filter = tmp_path / "bad.json"
    bad_filter.write_text('{"version": 1, "dimensions": [{"field_name": "a", "allowed_values": 1.5}]}')
    proc, _ = run_job(tmp_path, "record_count", telemetry, bad_filter)
    assert proc.returncode == 1 and "not a valid dimensions filter" in proc.stderr
    proc, _ = run_job(tmp_path, "record_count", telemetry, write_filter(tmp_path / "f.json"), "--delete-data")
    assert proc.returncode == 2 and "needs --bucket" in proc.stderr
    outside = tmp_path / "keep"  # what WORK/projects/<job name> would be with this name
    (outside / "precious").mkdir(parents=True)
    (tmp_path / "w").mkdir()
    proc, _ = run_job(tmp_path / "w", "record_count", telemetry, write_filter(tmp_path / "f.json"), "--job-name",
                      "../../../keep")
    assert proc.returncode == 1 and "job name '../../../keep' must be" in proc.stderr
    assert (outside / "precious").is_dir()
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    proc = subprocess.run([sys.executable, "-m", "cluster.job", str(SCRIPTS / "record_count.py"), "-f",
                           str(tmp_path / "f.json"), "-d", str(telemetry), "-w", str(tmp_path / "w2"), "-o",
                           str(blocker / "out.txt")], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 1 and "cannot write the output in" in proc.stderr and "Traceback" not in proc.stderr


def test_a_selection_that_matches_nothing_says_so(telemetry, tmp_path):
    proc, out = run_job(tmp_path, "record_count", telemetry, write_filter(tmp_path / "f.json",
                                                                         appUpdateChannel="no-such-channel"))
    assert proc.returncode == 0 and out.read_text() == ""
    assert "no file matched" in proc.stderr


def test_profile_writes_one_file_per_mapper_and_reducer(telemetry, tmp_path):
    proc, _ = run_job(tmp_path, "record_count", telemetry, write_filter(tmp_path / "f.json"), "--profile")
    assert proc.returncode == 0, proc.stderr
    names = sorted(p.name for p in (tmp_path / "work").glob("*.prof"))
    assert {"map-S_0.prof", "map-S_1.prof", "reduce-S_0.prof", "reduce-S_1.prof"} <= set(names)


# --- S3 ----------------------------------------------------------------------------------------
def upload(endpoint: str, bucket: str, root: Path):
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint)
    client.create_bucket(Bucket=bucket)
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        client.put_object(Bucket=bucket, Key=str(path.relative_to(root)), Body=path.read_bytes())
    return client


def test_bucket_fetches_the_selection_into_the_cache_then_local_only_uses_it(telemetry, tmp_path, s3_server):
    upload(s3_server, "telemetry", telemetry)
    f = write_filter(tmp_path / "f.json", appUpdateChannel=["release", "beta"])
    want = truth(telemetry, lambda d: d[2] in ("release", "beta"))
    env = {"AWS_ENDPOINT_URL": s3_server}
    proc, out = run_job(tmp_path, "channel_os", None, f, "--bucket", "telemetry", env=env)
    assert proc.returncode == 0, proc.stderr
    assert records(out) == want["by_channel_os"]
    cache = tmp_path / "work" / "cache"
    cached = sorted(str(p.relative_to(cache)) for p in cache.rglob("*") if p.is_file())
    assert len(cached) == want["files"] and all(dims_of(c)[2] in ("release", "beta") for c in cached)
    assert f"listed {want['files']} matching files" in proc.stderr
    assert proc.stderr.count("downloaded s3://telemetry/") == want["files"]

    again, _ = run_job(tmp_path, "channel_os", None, f, "--bucket", "telemetry", env=env)
    assert again.returncode == 0 and f"{want['files']} of {want['files']} files already in the cache" in again.stderr
    assert "downloaded s3://" not in again.stderr

    offline = {"AWS_ENDPOINT_URL": "http://127.0.0.1:9"}  # nothing listens: --local-only must not need it
    local, out_local = run_job(tmp_path, "channel_os", None, f, "--bucket", "telemetry", "--local-only",
                               "--delete-data", env=offline)
    assert local.returncode == 0, local.stderr
    assert records(out_local) == want["by_channel_os"]
    assert not [p for p in cache.rglob("*") if p.is_file()], "--delete-data left files in the cache"


class FlakyClient:
    """A real S3 client whose get_object fails `failures` times for one key."""

    def __init__(self, client, key: str, failures: int):
        self.client, self.key, self.failures = client, key, failures

    def get_paginator(self, name):
        return self.client.get_paginator(name)

    def get_object(self, **kwargs):
        if kwargs["Key"] == self.key and self.failures > 0:
            self.failures -= 1
            raise ConnectionResetError(104, "Connection reset by peer")
        return self.client.get_object(**kwargs)


def test_a_download_that_fails_twice_is_retried_and_logged(telemetry, tmp_path, s3_server, caplog):
    client = upload(s3_server, "flaky", telemetry)
    f = DimensionsFilter(json.loads(write_filter(tmp_path / "f.json").read_text()))
    objects = RemoteData(client, "flaky", str(tmp_path / "c0")).list(f)
    key = objects[3][0]
    caplog.set_level(logging.INFO, logger="cluster.telemetry.remote_data")
    remote = RemoteData(FlakyClient(client, key, 2), "flaky", str(tmp_path / "cache"), backoff_seconds=0.01)
    report = remote.fetch(objects)
    assert report.fetched == len(objects) and report.failed == {} and report.retries == 2
    tries = [r.getMessage() for r in caplog.records
             if r.name == "cluster.telemetry.remote_data" and key in r.getMessage()]
    assert "failed (try 1 of 3)" in tries[0] and "failed (try 2 of 3)" in tries[1]
    assert "Connection reset by peer" in tries[0] and "try 3" in tries[2] and len(tries) == 3
    assert (tmp_path / "cache" / key).read_bytes() == (telemetry / key).read_bytes()

    caplog.clear()
    broken = RemoteData(FlakyClient(client, key, 3), "flaky", str(tmp_path / "cache2"), backoff_seconds=0.01)
    report = broken.fetch(objects)
    assert list(report.failed) == [key] and "Connection reset" in report.failed[key]
    assert any(r.levelno == logging.ERROR and "try 3 of 3" in r.getMessage() for r in caplog.records)
    assert not [p for p in (tmp_path / "cache2").rglob("*") if p.name.startswith(".")], "a partial file was left"
