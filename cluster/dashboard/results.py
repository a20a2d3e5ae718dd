"""Published results: the files of each job under `<publish_url>/<job_name>/data/`, and downloads."""
from __future__ import annotations

import datetime as dt
import json
import os
from typing import Any

from flask import Blueprint, abort, render_template, send_file
from werkzeug.security import safe_join

from cluster.config import ClusterConfig
from cluster.dashboard.state import state
from cluster.exceptions import PublishError
from cluster.jobs import is_valid_name
from cluster.publish import MANIFEST

bp = Blueprint("results", __name__)
FILES_LISTED = 500  # per job; the manifest and a download of each still cover the rest


def _s3(config: ClusterConfig) -> tuple[Any, str, str]:
    from cluster.s3 import s3_client

    bucket, _, prefix = config.publish_url.removeprefix("s3://").partition("/")
    return s3_client(config), bucket, prefix.strip("/")


def _s3_errors() -> tuple[type[Exception], ...]:
    from boto3.exceptions import Boto3Error
    from botocore.exceptions import BotoCoreError, ClientError

    return Boto3Error, BotoCoreError, ClientError


def published_jobs(config: ClusterConfig) -> list[str]:
    """Names of the jobs that have published something."""
    if config.publish_url.startswith("s3://"):
        client, bucket, prefix = _s3(config)
        base = f"{prefix}/" if prefix else ""
        names = []
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=base, Delimiter="/"):
            names += [p["Prefix"][len(base):].rstrip("/") for p in page.get("CommonPrefixes", [])]
        return sorted(n for n in names if is_valid_name(n))
    root = config.publish_url
    if not os.path.isdir(root):
        return []
    return sorted(n for n in os.listdir(root) if is_valid_name(n) and os.path.isdir(os.path.join(root, n, "data")))


def published_files(config: ClusterConfig, job_name: str) -> dict[str, Any] | None:
    """A job's published files (path, bytes, modified) and manifest; None when it published nothing."""
    files: list[dict[str, Any]] = []
    manifest = None
    if config.publish_url.startswith("s3://"):
        client, bucket, prefix = _s3(config)
        base = "/".join(p for p in (prefix, job_name, "data") if p) + "/"
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=base):
            files += [{"path": o["Key"][len(base):], "bytes": o["Size"], "modified": o["LastModified"]}
                      for o in page.get("Contents", [])]
        if any(f["path"] == MANIFEST for f in files):
            manifest = json.loads(client.get_object(Bucket=bucket, Key=base + MANIFEST)["Body"].read())
        where = f"{config.publish_url.rstrip('/')}/{job_name}/data/"
    else:
        data = os.path.join(config.publish_url, job_name, "data")
        if not os.path.isdir(data):
            return None
        for root, dirs, names in os.walk(data):
            dirs.sort()
            for n in sorted(names):
                path = os.path.join(root, n)
                st = os.stat(path)
                files.append({"path": os.path.relpath(path, data), "bytes": st.st_size,
                              "modified": dt.datetime.fromtimestamp(st.st_mtime, dt.UTC)})
        if os.path.isfile(os.path.join(data, MANIFEST)):
            with open(os.path.join(data, MANIFEST)) as fh:
                manifest = json.load(fh)
        where = data + "/"
    if not files:
        return None
    shown = [f for f in files if f["path"] != MANIFEST]
    return {"job_name": job_name, "where": where, "files": shown[:FILES_LISTED],
            "more": max(0, len(shown) - FILES_LISTED), "bytes": sum(f["bytes"] for f in shown), "manifest": manifest}


@bp.route("/results")
def page():
    config = state().config
    try:
        jobs = [published_files(config, name) for name in published_jobs(config)]
    except _s3_errors() as exc:
        raise PublishError(f"cannot list the published results in {config.publish_url}: {exc}") from None
    return render_template("results.html", jobs=[j for j in jobs if j], publish_url=config.publish_url)


@bp.route("/results/<name>/data/<path:rel>")
def download(name: str, rel: str):
    """One published file, as a download."""
    config = state().config
    if not is_valid_name(name):
        abort(404, f"{name!r} is not a job name.")
    if config.publish_url.startswith("s3://"):
        client, bucket, prefix = _s3(config)
        if rel.startswith("/") or ".." in rel.split("/"):
            abort(404, "No such published file.")
        key = "/".join(p for p in (prefix, name, "data", rel) if p)
        try:
            obj = client.get_object(Bucket=bucket, Key=key)
        except _s3_errors():
            abort(404, f"No published file {rel!r} of job {name!r} in {config.publish_url}.")
        return send_file(obj["Body"], as_attachment=True, download_name=os.path.basename(rel), max_age=0)
    data = os.path.realpath(os.path.join(config.publish_url, name, "data"))
    path = safe_join(data, rel)
    if path is None or not os.path.realpath(path).startswith(data + os.sep) or not os.path.isfile(path):
        abort(404, f"No published file {rel!r} of job {name!r}.")
    return send_file(path, as_attachment=True, download_name=os.path.basename(rel), max_age=0)
