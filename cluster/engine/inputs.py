"""Input planning: list a job's input files, choose which server maps which, and remember what
incremental runs (hold_state) have mapped.

The master (or the location's management server) plans the inputs once per location, so servers
never disagree about who maps a file; `assign_files` balances by size with a stable tie-break.
"""
from __future__ import annotations

import fcntl
import os
from collections.abc import Iterable
from typing import Any, cast

import ujson

from cluster.engine import codec
from cluster.engine.partitions import DimensionsFilter, select_local_files
from cluster.engine.store import StoreOptions, exists, is_url, list_files, local_path
from cluster.engine.store import size as store_size
from cluster.engine.store_output import StoreOutput
from cluster.exceptions import InputError
from cluster.layout import JobLayout


# --- choosing input files ----------------------------------------------------------------
def list_input_files(input_dirs: Iterable[str], store: StoreOptions | None = None) -> list[tuple[str, int]]:
    """Every file under the input dirs (recursively, hidden names skipped) with its size; an entry may
    be a store URL (any fsspec one: s3://bucket/prefix, gs://..., with `store`'s options)."""
    found: dict[str, int] = {}
    missing = []
    for top in input_dirs:
        if is_url(top):
            listed = list_files(top, store)
            if not listed and not exists(top, store):
                raise InputError(f"input_dirs entry {top} names nothing on its store (no such bucket, folder or "
                                 "prefix); fix the URL, or the store's credentials")
            found.update(listed)
            continue
        top = local_path(top)
        if not os.path.isdir(top):
            missing.append(top)
            continue
        seen_dirs: set[str] = set()

        def unreadable(exc: OSError) -> None:
            raise InputError(f"cannot list input folder {exc.filename}: {exc.strerror}")

        for root, dirs, files in os.walk(top, followlinks=True, onerror=unreadable):
            real = os.path.realpath(root)
            if real in seen_dirs:  # a symlink loop, or a folder reached twice
                dirs[:] = []
                continue
            seen_dirs.add(real)
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(files):
                if name.startswith(".") or name.endswith(".tmp"):
                    continue
                path = os.path.abspath(os.path.join(root, name))
                try:
                    found[path] = os.path.getsize(path)
                except FileNotFoundError:
                    continue
    if missing:
        raise InputError(f"input_dirs not found on this machine: {', '.join(missing)} "
                         "(each location must have every input dir, even an empty one)")
    return sorted(found.items())


def is_locked(path: str) -> bool:
    """True when another process holds a lock on the file (it is still being written; a store's
    objects are whole when they are listed)."""
    if is_url(path):
        return False
    try:
        with open(path, "rb") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(fh, fcntl.LOCK_UN)
    except FileNotFoundError:
        return False  # gone since the listing: the map phase will say so if it is still planned
    except PermissionError as exc:
        raise InputError(f"cannot read input file {path}: {exc.strerror} (check its permissions)") from None
    return False


def assign_files(files: list[tuple[str, int]], servers: list[str]) -> dict[str, list[str]]:
    """Split files over servers by size: largest first, each to the least-loaded server.

    Ties are broken by a stable hash of the path, never Python's salted hash(), so
    every process that plans the same listing gets the same answer.
    """
    loads = {s: 0 for s in servers}
    plan: dict[str, list[str]] = {s: [] for s in servers}
    for path, size in sorted(files, key=lambda f: (-f[1], codec.stable_hash(f[0]), f[0])):
        target = min(servers, key=lambda s: (loads[s], servers.index(s)))
        plan[target].append(path)
        loads[target] += max(size, 1)
    return plan


class HoldState:
    """hold_state bookkeeping: which files successful runs of a job have mapped.

    A run records its files in a pending file; `commit` makes it count only when
    the job succeeded, so a failed run maps the same files again next time.
    """

    def __init__(self, layout: JobLayout, store: StoreOptions | None = None):
        self.directory = layout.state_dir
        self.store = store

    def mapped(self) -> set[str]:
        done: set[str] = set()
        if not os.path.isdir(self.directory):
            return done
        for name in os.listdir(self.directory):
            if name.endswith(".json"):
                with open(os.path.join(self.directory, name)) as fh:
                    done.update(ujson.load(fh))
        return done

    def record(self, run_id: str, server_id: str, files: list[str]) -> None:
        os.makedirs(self.directory, exist_ok=True)
        path = os.path.join(self.directory, f"{run_id}-{server_id}.pending")
        with open(path, "w") as fh:
            ujson.dump({f: store_size(f, self.store) for f in files}, fh)

    def commit(self, run_id: str) -> None:
        if not os.path.isdir(self.directory):
            return
        for name in os.listdir(self.directory):
            if name.startswith(run_id + "-") and name.endswith(".pending"):
                src = os.path.join(self.directory, name)
                os.replace(src, src[: -len(".pending")] + ".json")

    def discard(self, run_id: str) -> None:
        if not os.path.isdir(self.directory):
            return
        for name in os.listdir(self.directory):
            if name.startswith(run_id + "-") and name.endswith(".pending"):
                os.unlink(os.path.join(self.directory, name))


def check_filter_inputs(job: dict) -> None:
    """An input_filter selects from local folders: a job that filters store URLs is refused."""
    urls = [d for d in job["input_dirs"] if is_url(d)]
    if job.get("input_filter") and urls:
        raise InputError(f"input_filter selects from local folders only, not {', '.join(urls)} (a job "
                         "script fetches from S3 with --bucket; or list the folders to read)")


def choose_inputs(job: dict, layout: JobLayout, store: StoreOptions | None = None, location: str | None = None
                  ) -> tuple[list[tuple[str, int]], list[tuple[str, int]], dict[str, Any]]:
    """The job's input files to map now and its previous output (merge_previous_output), each as
    (path, size), and notes for the counters (locked files skipped, files hold_state already mapped).
    `location`: the cluster location planning its own files (hold_state on a store keeps its local
    paths apart from other locations' same paths)."""
    check_filter_inputs(job)
    if job.get("input_filter"):
        dims_filter = DimensionsFilter(job["input_filter"], source=f"job {job['job_name']!r} input_filter")
        files = sorted(f for d in job["input_dirs"] for f in select_local_files(d, dims_filter))
    else:
        files = list_input_files(job["input_dirs"], store)
    notes: dict[str, Any] = {"locked_files_skipped": [], "files_already_mapped": 0,
                             "auxiliary_missing": missing_auxiliary_data(job, layout)}
    published = StoreOutput(job["output_url"], store) if job.get("output_url") else None
    if job.get("hold_state"):
        seen = published.mapped(location) if published is not None else HoldState(layout, store).mapped()
        notes["files_already_mapped"] = sum(1 for f, _ in files if f in seen)
        files = [(f, s) for f, s in files if f not in seen]
    unlocked = []
    for f, s in files:
        if is_locked(f):
            notes["locked_files_skipped"].append(f)
        else:
            unlocked.append((f, s))
    previous = []
    if job.get("merge_previous_output"):
        previous = (published.output_files() if published is not None
                    else [(p, os.path.getsize(p)) for p in layout.output_files()])
    return unlocked, previous, notes


def plan_inputs(job: dict, servers: list[str], layout: JobLayout, store: StoreOptions | None = None,
                location: str | None = None) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Decide, once for the location, which server maps which file: {server: {"files", "bytes",
    "previous_output"}}, and the notes of `choose_inputs`."""
    files, previous, notes = choose_inputs(job, layout, store, location)
    sizes = dict(files)
    plan: dict[str, dict[str, Any]] = {s: {"files": fs, "bytes": sum(sizes[f] for f in fs)}
                                       for s, fs in assign_files(files, servers).items()}
    for server, fs in assign_files(previous, servers).items():
        plan[server]["previous_output"] = fs
    return plan, notes


def missing_auxiliary_data(job: dict, layout: JobLayout) -> list[str]:
    """The auxiliary data files the job names that are not on this machine."""
    names = cast("set[str]", {job.get(k) for k in ("auxiliary_data_name_mapper", "auxiliary_data_name_reducer")}
                 - {None, ""})  # the names given (None and "" taken out)
    return sorted(p for p in map(layout.auxiliary_path, names) if not os.path.isfile(p))


