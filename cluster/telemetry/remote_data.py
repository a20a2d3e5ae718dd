"""Job script input from an S3-compatible store, fetched into a local cache that keeps the layout.

The bucket holds the same `<dim1>/.../<dimN-1>.<dimN>.<anything>` layout as a local data
dir, from its root. `RemoteData.list` walks it with the dimensions filter (one listing
per folder that can match, named values visited directly); `fetch` downloads what the
cache lacks (a file whose size matches the object's is not fetched again), several at
once, each under a hidden name renamed into place when complete, each tried
`DOWNLOAD_TRIES` times with a doubling wait between tries, and every step logged.
"""
from __future__ import annotations

import builtins
import logging
import os
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from typing import Any

from cluster import defaults
from cluster.engine.partitions import DimensionsFilter, Lister
from cluster.exceptions import RemoteDataError

log = logging.getLogger(__name__)
_PERMANENT = {"NoSuchKey", "NoSuchBucket", "AccessDenied", "403", "404", "InvalidAccessKeyId",
              "SignatureDoesNotMatch"}


@dataclass
class FetchReport:
    """What a fetch did: files fetched or found in the cache, bytes, and files that failed (with why)."""

    fetched: int = 0
    cached: int = 0
    bytes: int = 0
    retries: int = 0
    failed: dict[str, str] = field(default_factory=dict)


class RemoteData:
    """The files of a bucket's dimensions layout, listed with a filter and fetched into `cache_dir`."""

    def __init__(self, client: Any, bucket: str, cache_dir: str, *, tries: int = defaults.DOWNLOAD_TRIES,
                 backoff_seconds: float = defaults.DOWNLOAD_BACKOFF_SECONDS,
                 threads: int = defaults.DOWNLOAD_THREADS, list_client: Any = None) -> None:
        """`client` fetches (best without botocore's own retries: each try here is logged);
        `list_client` (default: `client`) lists, where botocore's retries are welcome."""
        self.client = client
        self.list_client = list_client or client
        self.bucket = bucket
        self.cache_dir = os.path.abspath(cache_dir)
        self.tries = max(1, tries)
        self.backoff_seconds = backoff_seconds
        self.threads = max(1, threads)

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def lister(self) -> Lister:
        """List one folder of the bucket (subfolders, files with sizes) with the delimiter '/'."""
        from botocore.exceptions import BotoCoreError, ClientError

        paginator = self.list_client.get_paginator("list_objects_v2")

        def lister(prefix: str) -> tuple[list[str], list[tuple[str, int]]]:
            start = prefix + "/" if prefix else ""
            dirs, files = [], []
            try:
                for page in paginator.paginate(Bucket=self.bucket, Prefix=start, Delimiter="/"):
                    dirs += [p["Prefix"][len(start):].rstrip("/") for p in page.get("CommonPrefixes", [])]
                    files += [(o["Key"][len(start):], o["Size"]) for o in page.get("Contents", [])
                              if not o["Key"].endswith("/")]
            except (BotoCoreError, ClientError) as exc:
                raise RemoteDataError(f"cannot list {self.url(start)}: {exc} (check the bucket name, "
                                      "s3_endpoint_url / AWS_ENDPOINT_URL and the AWS credentials)") from None
            return dirs, files
        return lister

    def list(self, dims_filter: DimensionsFilter) -> list[tuple[str, int]]:
        """(key, size) of every object the filter selects."""
        started = time.monotonic()
        found = [(key, size) for key, size, _ in dims_filter.walk(self.lister())]
        log.info("listed %d matching files (%.1f MB) in s3://%s in %.1fs", len(found),
                 sum(s for _, s in found) / 1e6, self.bucket, time.monotonic() - started)
        return found

    def local_path(self, key: str) -> str:
        return os.path.join(self.cache_dir, *key.split("/"))

    def fetch(self, objects: builtins.list[tuple[str, int]],  # (in the class, `list` names its method)
              on_file: Callable[[str, int], None] | None = None) -> FetchReport:
        """Download every object the cache lacks; a file that fails every try is reported, not raised."""
        report = FetchReport()
        todo = []
        for key, size in objects:
            path = self.local_path(key)
            if os.path.isfile(path) and os.path.getsize(path) == size:
                report.cached += 1
            else:
                todo.append((key, size))
        log.info("%d of %d files already in the cache %s; fetching %d (%.1f MB)", report.cached, len(objects),
                 self.cache_dir, len(todo), sum(s for _, s in todo) / 1e6)
        with ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="fetch") as pool:
            for key, size, tries, error in pool.map(lambda o: self._fetch_with_retries(*o), todo):
                report.retries += tries - 1
                if error is None:
                    report.fetched += 1
                    report.bytes += size
                else:
                    report.failed[key] = error
                if on_file is not None:
                    on_file(key, size)
        return report

    def _fetch_with_retries(self, key: str, size: int) -> tuple[str, int, int, str | None]:
        from botocore.exceptions import BotoCoreError, ClientError

        for attempt in range(1, self.tries + 1):
            started = time.monotonic()
            try:
                self._fetch_one(key, size)
            except (BotoCoreError, ClientError, OSError, RemoteDataError) as exc:
                error = f"{type(exc).__name__}: {exc}"
                code = exc.response.get("Error", {}).get("Code", "") if isinstance(exc, ClientError) else ""
                if code in _PERMANENT or attempt == self.tries:
                    log.error("download of %s failed (try %d of %d, not retried%s): %s", self.url(key), attempt,
                              self.tries, f": {code}" if code in _PERMANENT else "", error)
                    return key, size, attempt, error
                wait = self.backoff_seconds * 2 ** (attempt - 1)
                log.warning("download of %s failed (try %d of %d): %s; trying again in %.2gs",
                            self.url(key), attempt, self.tries, error, wait)
                time.sleep(wait)
                continue
            log.info("downloaded %s (%d bytes, %.2fs%s)", self.url(key), size, time.monotonic() - started,
                     f", try {attempt}" if attempt > 1 else "")
            return key, size, attempt, None
        raise AssertionError("unreachable")  # the loop returns on its last try

    def _fetch_one(self, key: str, size: int) -> None:
        path = self.local_path(key)
        folder = os.path.dirname(path)
        os.makedirs(folder, exist_ok=True)
        part = os.path.join(folder, f".{os.path.basename(path)}.{uuid.uuid4().hex[:8]}.part")
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
            with closing(body), open(part, "wb") as fh:
                for chunk in body.iter_chunks(1 << 20):
                    fh.write(chunk)
            got = os.path.getsize(part)
            if got != size:
                raise RemoteDataError(f"got {got} bytes of {self.url(key)}, expected {size}")
            os.replace(part, path)
        finally:
            if os.path.exists(part):
                os.unlink(part)
