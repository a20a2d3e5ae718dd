"""What the Dask executor's tasks do on a Dask worker: map a batch of input files into one sorted
spill per reduce partition, hand a partition's spills on, and sort and reduce one partition.

Every task runs the engine's own rooms (Mapper, Shuffler, DiskSort, Reducer) in a scratch folder of
its own on the worker's disk, so a task run again (after a lost worker) starts clean and nothing is
counted twice: a map task's spills travel as its result, through Dask, and a reduce task's output
files go to a folder of that attempt, which the client publishes only for the attempt Dask kept.

An error of the job's own (a user function that raises, bad map output, an input that cannot be
read) is returned as a report, not raised: Dask would retry a raised error, and a deterministic one
fails the same way every time. Anything else is raised, for Dask's retries.
"""
from __future__ import annotations

import contextlib
import functools
import gc
import hashlib
import os
import shutil
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import ujson

from cluster import defaults
from cluster.engine import functions
from cluster.engine.reducer import Reducer
from cluster.engine.store import put_files
from cluster.engine.store import size as store_size
from cluster.engine.store_output import StoreOutput
from cluster.engine.task import error_report, map_inputs, peak_rss_bytes
from cluster.exceptions import ClusterError, ConfigError, InputError, OutputError, ProjectError, TaskFailed
from cluster.layout import JobLayout

SCRATCH = "mapreduce-cluster"  # under the worker's own folder


# --- the project's code, shipped with the job ----------------------------------------------
def held(value: Any) -> Any:
    """A value the run's tasks share, as a task of its own: Dask computes it again from the task graph
    when the worker that held it died."""
    return value


def bundle_project(projects_root: str, project_name: str) -> dict[str, Any]:
    """A project's files as {"name", "digest", "files": {relative path: bytes}}: what the workers
    import, so they need no copy of projects_dir."""
    folder = functions.project_dir(projects_root, project_name)
    files: dict[str, bytes] = {}
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__" and not d.startswith("."))
        for name in sorted(names):
            if name.startswith(".") or name.endswith((".pyc", ".pyo")):
                continue
            path = os.path.join(root, name)
            with open(path, "rb") as fh:
                files[os.path.relpath(path, folder).replace(os.sep, "/")] = fh.read()
    size = sum(map(len, files.values()))
    if size > defaults.DASK_MAX_PROJECT_BYTES:
        raise ProjectError(f"project {project_name!r} ({folder}) holds {size / 2**20:.0f} MB, more than the "
                           f"{defaults.DASK_MAX_PROJECT_BYTES / 2**20:.0f} MB sent with a Dask job: keep data out "
                           "of the project folder (auxiliary data, or an input)")
    digest = hashlib.blake2b(project_name.encode() + b"\0", digest_size=12)
    for rel, data in sorted(files.items()):
        digest.update(rel.encode() + b"\0" + data + b"\0")
    return {"name": project_name, "digest": digest.hexdigest(), "files": files}


def _project_root(bundle: dict[str, Any]) -> str:
    """The bundle written out once on this worker (by digest), as a projects root."""
    root = os.path.join(_work_dir(), "projects", bundle["digest"])
    if os.path.isdir(os.path.join(root, bundle["name"])):
        return root
    tmp = f"{root}.{uuid.uuid4().hex}.tmp"
    folder = os.path.join(tmp, bundle["name"])
    for rel, data in bundle["files"].items():
        path = os.path.join(folder, *rel.split("/"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(data)
    os.makedirs(os.path.dirname(root), exist_ok=True)
    try:
        os.rename(tmp, root)
    except OSError:  # another task of this worker wrote it first
        shutil.rmtree(tmp, ignore_errors=True)
    return root


@functools.lru_cache(maxsize=8)
def _job_functions(digest: str, job_json: str, root: str) -> tuple:
    """The job's functions, loaded once per worker process for each job (and version of the project);
    isolated, as on a cluster server: a long-lived worker runs many projects and versions, and a
    helper module must come from the project that imports it."""
    return functions.load_job_functions(root, ujson.loads(job_json), isolate=True)


def job_functions(bundle: dict[str, Any], job: dict) -> tuple:
    return _job_functions(bundle["digest"], ujson.dumps(job, sort_keys=True), _project_root(bundle))


# --- where a task runs -------------------------------------------------------------------
def worker_address() -> str:
    from distributed import get_worker

    try:
        return get_worker().address
    except ValueError:  # not on a worker (a test calling the task directly)
        return "this process"


def memory_budget(default: int) -> int:
    """This task's share of its worker's memory limit (its threads share it), at most `default`."""
    from distributed import get_worker

    try:
        worker = get_worker()
    except ValueError:
        return default
    limit = getattr(getattr(worker, "memory_manager", None), "memory_limit", None)
    if not limit:
        return default
    share = int(limit / max(1, worker.state.nthreads) * defaults.DASK_MEMORY_SHARE)
    return min(default, max(defaults.DASK_MIN_MEMORY_BUDGET, share))  # never past the config's share


def _work_dir() -> str:
    """This worker's own folder (Dask removes a dead worker's), else the temporary folder."""
    from distributed import get_worker

    try:
        base = get_worker().local_directory
    except ValueError:  # not on a worker (a test calling the task directly)
        base = tempfile.gettempdir()
    return os.path.join(base, SCRATCH)


def _scratch(task_id: str) -> str:
    base = os.path.join(_work_dir(), "tasks")
    os.makedirs(base, exist_ok=True)
    return tempfile.mkdtemp(prefix=f"{task_id}-", dir=base)


@contextlib.contextmanager
def engine_gc() -> Iterator[None]:
    """The garbage collector tuned as in our own workers and servers while a task runs (the engine
    makes millions of small objects that live until a spill), then as the worker had it."""
    saved = gc.get_threshold()
    gc.set_threshold(*defaults.WORKER_GC_THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*saved)


class CollectingTransport:
    """A map task's spill files taken into memory, by partition: they travel as the task's result."""

    def __init__(self) -> None:
        self.parts: defaultdict[str, list[tuple[str, bytes]]] = defaultdict(list)

    def send(self, path: str, dest_server: str) -> int:
        with open(path, "rb") as fh:
            data = fh.read()
        os.unlink(path)
        self.parts[dest_server].append((os.path.basename(path), data))
        return len(data)

    def close(self) -> None:
        pass


# --- the tasks ---------------------------------------------------------------------------
def map_task(task_id: str, spec: dict[str, Any], files: dict[str, int | None], previous: list[str],
             project: dict[str, Any], aux_map: Any, aux_reduce: Any) -> dict[str, Any]:
    """A map task (see _map_task), with the engine's garbage collector settings."""
    with engine_gc():
        return _map_task(task_id, spec, files, previous, project, aux_map, aux_reduce)


def _map_task(task_id: str, spec: dict[str, Any], files: dict[str, int | None], previous: list[str],
              project: dict[str, Any], aux_map: Any, aux_reduce: Any) -> dict[str, Any]:
    """Map a batch of files (path -> the size planned): {"counters", "parts": {partition: [(spill name,
    bytes), ...]}, "worker"}, or {"error": report} for the job's own errors. A task Dask runs again (its
    result was lost with a worker) must read what the first run read: a file whose size changed since
    the plan is an error, not a different answer."""
    worker = worker_address()
    started = time.monotonic()
    problem = _version_problem(spec, worker) or _changed_input(files, spec.get("store"))
    if problem is not None:
        return {"error": error_report(problem, f"{task_id} (worker {worker})", "map")}
    scratch = _scratch(task_id)
    counters: dict[str, Any] = {}
    transport = CollectingTransport()
    try:
        map_fn, combine_fn, _ = job_functions(project, spec["job"])
        map_inputs(server_id=task_id, job=spec["job"], files=list(files), previous_output=previous,
                   map_fn=map_fn, combine_fn=combine_fn, aux_map=aux_map, aux_reduce=aux_reduce,
                   partitions=spec["partitions"], spill_dir=scratch, transport=transport,
                   memory_budget_bytes=memory_budget(spec["memory_budget"]), counters=counters,
                   store=spec.get("store"))
    except ClusterError as exc:
        return {"error": error_report(exc, f"{task_id} (worker {worker})", "map")}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    counters["seconds"] = round(time.monotonic() - started, 3)
    counters["peak_rss_bytes"] = peak_rss_bytes()
    return {"counters": counters, "parts": dict(transport.parts), "worker": worker, "task": task_id}


def map_summary(map_result: dict[str, Any]) -> dict[str, Any]:
    """A map result without its spills: what the client waits on (the spills stay on the workers)."""
    return {k: v for k, v in map_result.items() if k != "parts"}


def partition_of(map_result: dict[str, Any], partition: str) -> list[tuple[str, bytes]]:
    """One partition's spills of one map task's result (what one reduce task fetches). A map result
    computed again after a lost worker is checked here, since the client saw only the first one."""
    if "error" in map_result:
        report = map_result["error"]
        raise TaskFailed(f"map task {report['server']}, run again after a worker was lost, failed: "
                         f"{report['type']}: {report['message']}")
    if map_result["counters"].get("files_failed"):
        raise TaskFailed(f"map task {map_result.get('task')}, run again after a worker was lost, could not "
                         f"read a file the first run read: {map_result['counters'].get('failed_files')}")
    return map_result["parts"].get(partition, [])


def _changed_input(files: dict[str, int | None], store: Any) -> InputError | None:
    for path, planned in files.items():
        now = store_size(path, store)
        if planned is not None and now != planned:
            return InputError(f"input file {path} changed during the run (planned at {planned:,} bytes, now "
                              f"{'gone' if now is None else f'{now:,} bytes'}); files must not change while a "
                              "job reads them (write elsewhere, then move into the input folder)")
    return None


def _version_problem(spec: dict[str, Any], worker: str) -> ConfigError | None:
    mine, theirs = versions(), spec.get("versions") or {}
    wrong = [f"{k} {v} (the client's {theirs.get(k)})" for k, v in mine.items() if theirs.get(k) != v]
    if wrong:
        return ConfigError(f"Dask worker {worker} does not run what the client runs: {', '.join(wrong)}; install "
                           "the client's Python and mapreduce-cluster there and restart it")
    return None


def reduce_task(partition: str, spec: dict[str, Any], project: dict[str, Any], aux_reduce: Any,
                *spills: list[tuple[str, bytes]]) -> dict[str, Any]:
    """A reduce task (see _reduce_task), with the engine's garbage collector settings."""
    with engine_gc():
        return _reduce_task(partition, spec, project, aux_reduce, *spills)


def _reduce_task(partition: str, spec: dict[str, Any], project: dict[str, Any], aux_reduce: Any,
                 *spills: list[tuple[str, bytes]]) -> dict[str, Any]:
    """Sort and reduce one partition from the map tasks' spills; its output files go to a folder of
    this attempt under the run's staging folder: {"counters": {"sort", "reduce"}, "files", "worker"}."""
    worker = worker_address()
    job = spec["job"]
    problem = _version_problem(spec, worker)
    if problem is not None:
        return {"error": error_report(problem, f"{partition} (worker {worker})", "sort")}
    scratch = _scratch(partition)
    layout = JobLayout(scratch, scratch, job["job_name"])
    sort_counters: dict[str, Any] = {}
    reduce_counters: dict[str, Any] = {}
    phase = "sort"
    reducer = None
    try:
        _, _, reduce_fn = job_functions(project, job)
        folder = layout.map_dir(partition)
        os.makedirs(folder)
        for name, data in (s for part in spills for s in part):
            with open(os.path.join(folder, name), "wb") as fh:
                fh.write(data)
        budget = memory_budget(spec["memory_budget"])
        reducer = Reducer(server_id=partition, layout=layout, run_id=spec["run_id"], job=job,
                          reduce_function=reduce_fn, auxiliary_data=aux_reduce, memory_budget=budget,
                          counters=sort_counters)
        started = time.monotonic()
        reducer.sort()
        sort_counters["seconds"] = round(time.monotonic() - started, 3)
        phase, reducer.counters = "reduce", reduce_counters
        started = time.monotonic()
        reducer.reduce()
        reduce_counters["seconds"] = round(time.monotonic() - started, 3)
        reduce_counters["peak_rss_bytes"] = peak_rss_bytes()
        files = _publish_attempt(layout.staging_dir(spec["run_id"]), spec, partition)
    except ClusterError as exc:
        return {"error": error_report(exc, f"{partition} (worker {worker})", phase)}
    finally:
        if reducer is not None:
            reducer.close()
        shutil.rmtree(scratch, ignore_errors=True)
    return {"counters": {"sort": sort_counters, "reduce": reduce_counters}, "files": files, "worker": worker}


def _publish_attempt(source: str, spec: dict[str, Any], partition: str) -> list[str]:
    """Move a reduce attempt's output files to a folder of their own, under the run's staging folder
    (or, with output_url, under the store's `_attempts/<run>/`); return their paths or URLs. The
    client publishes the attempts Dask kept, and drops the others."""
    names = sorted(os.listdir(source)) if os.path.isdir(source) else []
    attempt = f"{partition}-{uuid.uuid4().hex[:12]}"
    if spec["job"].get("output_url"):
        prefix = StoreOutput(spec["job"]["output_url"], spec.get("store")).attempt_prefix(spec["run_id"], attempt)
        pairs = [(os.path.join(source, name), f"{prefix}/{name}") for name in names]
        try:
            put_files(pairs, spec.get("store"))
        except OSError as exc:
            raise OutputError(f"uploading reduce output to {prefix} failed: {exc}") from exc
        return [url for _, url in pairs]
    folder = os.path.join(spec["staging"], ".attempts", attempt)
    os.makedirs(folder)
    out = []
    for name in names:
        dest = os.path.join(folder, name)
        shutil.move(os.path.join(source, name), dest)
        out.append(dest)
    return out


@functools.cache
def _loaded_code() -> str:
    from cluster.node.location import code_digest

    return code_digest()


def versions() -> dict[str, str]:
    """What must match between the client and its workers (the code: as this process loaded it)."""
    import sys

    import cluster

    return {"python": ".".join(map(str, sys.version_info[:2])), "mapreduce-cluster": cluster.__version__,
            "code": _loaded_code()}
