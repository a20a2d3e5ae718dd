"""Publish a script job's output folder to `<publish_url>/<job_name>/data/`.

`publish_url` is a local folder or `s3://bucket/prefix` (any S3-compatible store: the
endpoint comes from `s3_endpoint_url`, credentials from boto3's usual chain: environment,
~/.aws/credentials, instance role). Readers never see a half-published folder locally:
`data` is a symbolic link switched in one rename to a complete copy (the previous copy is
kept until the next publication, so a reader that opened it can finish). On S3 the new files
are uploaded first, then the files the new run no longer has are deleted, then
`_PUBLISHED.json` (the manifest: run, time, files and their sizes) is written last.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from typing import Any

from cluster.config import ClusterConfig
from cluster.exceptions import PublishError
from cluster.master.s3 import s3_client
from cluster.scheduling.schedule import utc_now

log = logging.getLogger(__name__)
MANIFEST = "_PUBLISHED.json"


def s3_root(config: ClusterConfig) -> tuple[str, str]:
    """(bucket, key prefix: '' or ending in '/') of an s3:// publish_url: every job's folder is in it."""
    bucket, _, prefix = config.publish_url.removeprefix("s3://").partition("/")
    return bucket, f"{prefix.strip('/')}/" if prefix.strip("/") else ""


def s3_location(config: ClusterConfig, job_name: str) -> tuple[str, str]:
    """(bucket, key prefix ending in '/') of a job's published data on an s3:// publish_url."""
    bucket, root = s3_root(config)
    return bucket, f"{root}{job_name}/data/"


def local_location(config: ClusterConfig, job_name: str) -> str:
    """The folder (a link to the latest copy) of a job's published data on a local publish_url."""
    return os.path.join(config.publish_url, job_name, "data")


def s3_errors() -> tuple[type[Exception], ...]:
    """What boto3 raises when S3 cannot be used (imported only when S3 is; none without the s3 extra,
    where S3 is never reached: `s3_client` says the extra is missing)."""
    try:
        from boto3.exceptions import Boto3Error
        from botocore.exceptions import BotoCoreError, ClientError
    except ModuleNotFoundError:
        return ()
    return Boto3Error, BotoCoreError, ClientError


def _files(source_dir: str) -> list[tuple[str, int]]:
    """(relative path, size) of every file under source_dir, in name order."""
    found = []
    for root, dirs, names in os.walk(source_dir):
        dirs.sort()
        for n in sorted(names):
            path = os.path.join(root, n)
            found.append((os.path.relpath(path, source_dir), os.path.getsize(path)))
    return found


def _manifest(job_name: str, run_label: str, files: list[tuple[str, int]]) -> dict[str, Any]:
    return {"job_name": job_name, "run": run_label, "published_at": utc_now().isoformat(timespec="seconds"),
            "files": [{"path": p, "bytes": n} for p, n in files]}


def publish(config: ClusterConfig, job_name: str, source_dir: str, run_label: str) -> dict[str, Any]:
    """Publish every file under source_dir; return where to, and how many files and bytes."""
    if not os.path.isdir(source_dir):
        raise PublishError(f"job {job_name!r}: its output_dir {source_dir} does not exist after the run; "
                           "the command must create it (nothing was published)")
    files = _files(source_dir)
    if config.publish_url.startswith("s3://"):
        url = _publish_s3(config, job_name, source_dir, run_label, files)
    else:
        url = _publish_local(config.publish_url, job_name, source_dir, run_label, files)
    total = sum(n for _, n in files)
    log.info("published %d file(s), %d bytes of job %s to %s", len(files), total, job_name, url)
    return {"published_to": url, "files_published": len(files), "bytes_published": total}


def _publish_local(root: str, job_name: str, source_dir: str, run_label: str,
                   files: list[tuple[str, int]]) -> str:
    job_dir = os.path.join(root, job_name)
    versions = os.path.join(job_dir, ".versions")
    label = f"{utc_now():%Y%m%dT%H%M%S}-run{run_label}-{os.getpid()}"  # never the one `data` points to
    target = os.path.join(versions, label)
    link = os.path.join(job_dir, "data")
    try:
        os.makedirs(versions, exist_ok=True)
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(source_dir, target, symlinks=True)
        with open(os.path.join(target, MANIFEST), "w") as fh:
            json.dump(_manifest(job_name, run_label, files), fh, indent=1)
        if os.path.isdir(link) and not os.path.islink(link):  # a folder published by hand: keep it aside
            os.rename(link, os.path.join(versions, f"manual-{utc_now():%Y%m%dT%H%M%S}"))
        tmp_link = f"{link}.new"
        if os.path.lexists(tmp_link):
            os.unlink(tmp_link)
        os.symlink(os.path.join(".versions", label), tmp_link)
        os.replace(tmp_link, link)
    except OSError as exc:
        raise PublishError(f"job {job_name!r}: cannot publish to {job_dir}: {exc}") from None
    # keep the previous version (a reader that opened `data` just before the switch can finish)
    # and anything moved aside by hand; remove the older published ones
    published = sorted((v for v in os.listdir(versions) if not v.startswith("manual-") and v != label),
                       key=lambda v: os.path.getmtime(os.path.join(versions, v)))
    for old in published[:-1]:
        shutil.rmtree(os.path.join(versions, old), ignore_errors=True)
    return link + "/"


def _publish_s3(config: ClusterConfig, job_name: str, source_dir: str, run_label: str,
                files: list[tuple[str, int]]) -> str:
    bucket, base = s3_location(config, job_name)
    url = f"s3://{bucket}/{base}"
    client = s3_client(config)
    try:
        for rel, _ in files:
            client.upload_file(os.path.join(source_dir, rel), bucket, base + rel.replace(os.sep, "/"))
        keep = {base + rel.replace(os.sep, "/") for rel, _ in files} | {base + MANIFEST}
        stale = []
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=base):
            stale += [o["Key"] for o in page.get("Contents", []) if o["Key"] not in keep]
        for i in range(0, len(stale), 1000):
            client.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in stale[i:i + 1000]]})
        client.put_object(Bucket=bucket, Key=base + MANIFEST, ContentType="application/json",
                          Body=json.dumps(_manifest(job_name, run_label, files), indent=1).encode())
    except s3_errors() as exc:
        where = f" at {config.s3_endpoint_url}" if config.s3_endpoint_url else ""
        raise PublishError(f"job {job_name!r}: cannot publish to {url}{where}: {exc} (check the bucket exists "
                           "and the credentials in the environment or ~/.aws/credentials)") from None
    return url
