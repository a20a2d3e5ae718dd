"""Files on a store (any fsspec URL: s3://, gs://, az://, memory://, file://...) beside local paths.

A plain path (or file://) is this machine's file system and stays on the standard library;
anything with another scheme goes through fsspec, imported only then, with the store's usual
credentials (its environment variables and files) and the options of `StoreOptions` (the S3
endpoint of the config's s3_endpoint_url). Listing, sizes and opening for reading are what input
needs; `put` and `write_bytes` what publishing a run's output needs.
"""
from __future__ import annotations

import functools
import os
from collections.abc import Iterable
from typing import IO, Any

from cluster.exceptions import InputError, MissingExtra

#: fsspec options by protocol, e.g. {"s3": {"endpoint_url": "http://127.0.0.1:9000"}}
StoreOptions = dict[str, dict[str, Any]]


def is_url(path: str) -> bool:
    """True for a store URL (a scheme other than file://), False for a local path."""
    scheme, sep, _ = str(path).partition("://")
    return bool(sep) and scheme.isidentifier() and scheme != "file"


def local_path(path: str) -> str:
    """A local path as it is (file:// taken off)."""
    return path[len("file://"):] if path.startswith("file://") else path


def store_options(s3_endpoint_url: str | None) -> StoreOptions:
    """The options every process reaching a store needs (the client builds them, tasks get them)."""
    return {"s3": {"endpoint_url": s3_endpoint_url}} if s3_endpoint_url else {}


@functools.lru_cache(maxsize=32)
def _filesystem(protocol: str, options: tuple) -> Any:
    try:
        import fsspec
    except ImportError as exc:
        raise MissingExtra(f"reading {protocol}:// URLs", "s3" if protocol in ("s3", "s3a") else "dask",
                           exc.name or "fsspec") from None
    try:
        return fsspec.filesystem(protocol, **dict(options))
    except (ImportError, ValueError) as exc:
        raise InputError(f"no fsspec file system for {protocol}:// here: {exc} (install the package that "
                         f"provides it, e.g. s3fs for s3://, gcsfs for gs://, adlfs for az://)") from None


def filesystem(url: str, options: StoreOptions | None = None) -> Any:
    """The fsspec file system of a URL (one per protocol and options, per process)."""
    protocol = url.split("://", 1)[0]
    if protocol == "s3a":
        protocol = "s3"
    kwargs = dict((options or {}).get(protocol, {}))
    if protocol == "file":
        kwargs["auto_mkdir"] = True  # as a store makes a key's "folders"
    return _filesystem(protocol, tuple(sorted((k, v) for k, v in kwargs.items() if v is not None)))


def _hidden(name: str) -> bool:
    return name.startswith(".") or name.startswith("_") or name.endswith(".tmp")


def list_files(url: str, options: StoreOptions | None = None) -> list[tuple[str, int]]:
    """Every file under a store folder (recursively; names starting with '.' or '_' and .tmp files
    skipped, as locally) with its size, as full URLs. An empty or missing folder lists nothing."""
    fs = filesystem(url, options)
    root = fs._strip_protocol(url).rstrip("/")
    try:
        found = fs.find(root, detail=True)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise InputError(f"cannot list {url}: {exc}") from exc
    out = []
    for path, info in found.items():
        rel = path[len(root):].lstrip("/")
        if info.get("type") == "directory" or any(_hidden(part) for part in rel.split("/")):
            continue
        out.append((fs.unstrip_protocol(path), int(info.get("size") or 0)))
    return sorted(out)


def exists(url: str, options: StoreOptions | None = None) -> bool:
    try:
        return bool(filesystem(url, options).exists(url))
    except OSError as exc:
        raise InputError(f"cannot reach {url}: {exc}") from exc


def size(path: str, options: StoreOptions | None = None) -> int | None:
    """A file's size in bytes, None when it is not there."""
    if not is_url(path):
        try:
            return os.path.getsize(local_path(path))
        except OSError:
            return None
    try:
        return int(filesystem(path, options).size(path))
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise InputError(f"cannot reach {path}: {exc}") from exc


def open_binary(path: str, options: StoreOptions | None = None) -> IO[bytes]:
    """A file opened for reading bytes: a local file, or a store's (seekable, read ahead in blocks)."""
    if not is_url(path):
        return open(local_path(path), "rb")
    return filesystem(path, options).open(path, "rb", block_size=4 * 1024 ** 2, cache_type="readahead")


def put_files(pairs: Iterable[tuple[str, str]], options: StoreOptions | None = None) -> None:
    """Upload local files to store URLs, (local path, URL) each."""
    for local, url in pairs:
        filesystem(url, options).put_file(local, url)


def write_bytes(url: str, data: bytes, options: StoreOptions | None = None) -> None:
    """One object written whole: readers see all of it or none (a store's PUT is; a local file is
    written aside and renamed into place)."""
    if url.startswith("file://"):
        path = local_path(url)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        return
    with filesystem(url, options).open(url, "wb") as fh:
        fh.write(data)


def read_bytes(url: str, options: StoreOptions | None = None) -> bytes | None:
    fs = filesystem(url, options)
    try:
        return fs.cat_file(url)
    except FileNotFoundError:
        return None


def remove(urls: list[str], options: StoreOptions | None = None) -> None:
    if urls:
        filesystem(urls[0], options).rm(urls)


def join(url: str, *parts: str) -> str:
    return "/".join([url.rstrip("/"), *parts])
