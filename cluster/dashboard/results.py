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
from cluster.job_spec import is_valid_name
from cluster.master.s3 import s3_client
from cluster.scheduling.publish import MANIFEST, local_location, s3_errors, s3_location, s3_root

bp = Blueprint("results", __name__)
FILES_LISTED = 500  # per job; the manifest and a download of each still cover the rest


def is_within(path: str, real_folder: str) -> bool:
    """Whether `path`, links resolved, is inside `real_folder` (a path already resolved: realpath)."""
    return os.path.realpath(path).startswith(real_folder + os.sep)


def _is_s3(config: ClusterConfig) -> bool:
    return config.publish_url.startswith("s3://")


def published_jobs(config: ClusterConfig) -> list[str]:
    """Names of the jobs that have published something."""
    if _is_s3(config):
        bucket, base = s3_root(config)
        names = []
        try:
            pages = s3_client(config).get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=base,
                                                                              Delimiter="/")
            for page in pages:
                names += [p["Prefix"][len(base):].rstrip("/") for p in page.get("CommonPrefixes", [])]
        except s3_errors() as exc:
            raise PublishError(f"cannot list the published results in {config.publish_url}: {exc} (check "
                               "s3_endpoint_url and the credentials)") from None
        return sorted(n for n in names if is_valid_name(n))
    root = config.publish_url
    if not os.path.isdir(root):
        return []
    return sorted(n for n in os.listdir(root) if is_valid_name(n) and os.path.isdir(local_location(config, n)))


def _s3_files(config: ClusterConfig, job_name: str) -> tuple[list[dict[str, Any]], dict | None, str]:
    bucket, base = s3_location(config, job_name)
    client = s3_client(config)
    files = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=base):
        files += [{"path": o["Key"][len(base):], "bytes": o["Size"], "modified": o["LastModified"]}
                  for o in page.get("Contents", [])]
    manifest = None
    if any(f["path"] == MANIFEST for f in files):
        manifest = json.loads(client.get_object(Bucket=bucket, Key=base + MANIFEST)["Body"].read())
    return files, manifest, f"s3://{bucket}/{base}"


def _local_files(config: ClusterConfig, job_name: str) -> tuple[list[dict[str, Any]], dict | None, str]:
    data = local_location(config, job_name)
    real = os.path.realpath(data)
    files = []
    for root, dirs, names in os.walk(data):
        dirs.sort()
        for n in sorted(names):
            path = os.path.join(root, n)
            if not is_within(path, real):
                continue  # a link out of the published folder (or a dangling one): not a published file
            try:
                st = os.stat(path)
            except OSError:
                continue
            files.append({"path": os.path.relpath(path, data), "bytes": st.st_size,
                          "modified": dt.datetime.fromtimestamp(st.st_mtime, dt.UTC)})
    manifest = None
    if os.path.isfile(os.path.join(data, MANIFEST)):
        with open(os.path.join(data, MANIFEST)) as fh:
            manifest = json.load(fh)
    return files, manifest, data + "/"


def published_files(config: ClusterConfig, job_name: str) -> dict[str, Any] | None:
    """A job's published files (path, bytes, modified) and manifest; None when it published nothing;
    {"error": ...} when they cannot be listed (the page shows why, next to that job only)."""
    try:
        if _is_s3(config):
            files, manifest, where = _s3_files(config, job_name)
        elif os.path.isdir(local_location(config, job_name)):
            files, manifest, where = _local_files(config, job_name)
        else:
            return None
    except (OSError, ValueError) + s3_errors() as exc:  # (a starred tuple is not understood by mypy)
        return {"job_name": job_name, "error": f"cannot list the published files of job {job_name} in "
                                                f"{config.publish_url}: {exc}"}
    if not files:
        return None
    shown = [f for f in files if f["path"] != MANIFEST]
    return {"job_name": job_name, "where": where, "files": shown[:FILES_LISTED], "error": None,
            "more": max(0, len(shown) - FILES_LISTED), "bytes": sum(f["bytes"] for f in shown),
            "manifest": manifest if isinstance(manifest, dict) else None}


@bp.route("/results")
def page():
    config = state().config
    jobs = [published_files(config, name) for name in published_jobs(config)]
    return render_template("results.html", jobs=[j for j in jobs if j], publish_url=config.publish_url)


@bp.route("/results/<name>/data/<path:rel>")
def download(name: str, rel: str):
    """One published file, as a download."""
    config = state().config
    if not is_valid_name(name) or rel.startswith("/") or ".." in rel.split("/"):
        abort(404, "No such published file.")
    if _is_s3(config):
        from botocore.exceptions import ClientError

        bucket, base = s3_location(config, name)
        try:
            obj = s3_client(config).get_object(Bucket=bucket, Key=base + rel)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                abort(404, f"No published file {rel!r} of job {name!r} in {config.publish_url}.")
            raise PublishError(f"cannot fetch {rel} of job {name} from {config.publish_url}: {exc}") from None
        except s3_errors() as exc:
            raise PublishError(f"cannot fetch {rel} of job {name} from {config.publish_url}: {exc} (check "
                               "s3_endpoint_url and the credentials)") from None
        return send_file(obj["Body"], as_attachment=True, download_name=os.path.basename(rel), max_age=0)
    data = os.path.realpath(local_location(config, name))
    path = safe_join(data, rel)
    if path is None or not is_within(path, data) or not os.path.isfile(path):
        abort(404, f"No published file {rel!r} of job {name!r}.")
    return send_file(path, as_attachment=True, download_name=os.path.basename(rel), max_age=0)
