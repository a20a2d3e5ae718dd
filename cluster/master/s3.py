"""The S3 client of the master (job script input, published results): one place for its settings."""
from __future__ import annotations

import os
from typing import Any

from cluster.config import ClusterConfig
from cluster.exceptions import MissingExtra


def s3_client(config: ClusterConfig, retries: int | None = None, credentials: tuple[str, str] | None = None) -> Any:
    """A boto3 S3 client for `s3_endpoint_url` (AWS when unset; credentials from boto3's usual chain:
    environment, ~/.aws, instance role, unless `credentials` (key, secret) are given).
    `retries`: botocore's own attempts (None: its default)."""
    try:
        import boto3  # only a master that talks to S3 needs it loaded
        from botocore.config import Config
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in ("boto3", "botocore"):
            raise
        raise MissingExtra("S3 (a --bucket, an s3:// publish_url)", "s3", exc.name or "boto3") from None

    options: dict[str, Any] = {"connect_timeout": 10, "read_timeout": 60}
    if retries is not None:
        options["retries"] = {"total_max_attempts": retries, "mode": "standard"}
    endpoint = config.s3_endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or None
    keys = {"aws_access_key_id": credentials[0], "aws_secret_access_key": credentials[1]} if credentials else {}
    return boto3.client("s3", endpoint_url=endpoint, config=Config(**options), **keys)
