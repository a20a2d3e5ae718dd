"""Preflight: everything a job needs that can be checked before it runs, and its plan.

`mapreduce validate` runs every check (on this machine, or on every location with
`--cluster`) and prints the plan: files and bytes per server. `mapreduce submit` runs the
checks that the master can answer (the project's functions, a script's file or tarball), so a
job that can only fail is never queued.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from cluster.config import ClusterConfig
from cluster.engine import functions
from cluster.engine.partitions import filter_problems
from cluster.exceptions import ClusterError
from cluster.job_spec import JobType
from cluster.layout import JobLayout


@dataclass
class Preflight:
    """What the checks found: problems (each one a sentence a user can act on) and the plan."""

    job: dict[str, Any]
    problems: list[str] = field(default_factory=list)
    plan: dict[str, dict[str, Any]] = field(default_factory=dict)  # server -> {"files": n, "bytes": n}

    def plan_lines(self) -> list[str]:
        """One line per server, then the total."""
        if not self.plan:
            return []
        lines = [f"  {s}: {p['files']:,} files, {p['bytes']:,} bytes" for s, p in sorted(
            self.plan.items(), key=lambda kv: (len(kv[0]), kv[0]))]
        files = sum(p["files"] for p in self.plan.values())
        size = sum(p["bytes"] for p in self.plan.values())
        return [f"plan: {files:,} input files, {size:,} bytes over {len(self.plan)} servers", *lines]


def check_master(job: dict[str, Any], config: ClusterConfig) -> list[str]:
    """The checks the master answers alone: a mapreduce job's functions load; a script job's script
    exists, or its tarball exists and passes the rules the Runner unpacks it by; a transfer's
    master-side input exists."""
    problems = []
    kind = JobType(job["job_type"])
    if kind is JobType.MAPREDUCE:
        if job.get("input_filter"):
            problems += filter_problems(job["input_filter"])
        try:
            functions.load_job_functions(config.projects_dir, job)
        except ClusterError as exc:
            problems.append(str(exc))
    elif kind is JobType.SCRIPT:
        if job.get("code_tarball"):
            from cluster.scheduling.script_runs import tarball_problems

            path = config.master_path(job["code_tarball"])
            if not os.path.isfile(path):
                problems.append(f"code_tarball {path} does not exist on the master")
            else:
                problems += [f"code_tarball {path} is refused: {p}" for p in tarball_problems(path)]
        elif job.get("script_location"):
            path = config.master_path(job["script_location"])
            if not os.path.isfile(path):
                problems.append(f"script_location {path} does not exist on the master")
    elif job.get("transfer_type") in ("upload", "upload_bulk"):
        path = config.master_path(job["input_dir"])
        if not os.path.isdir(path):
            problems.append(f"input_dir {path} (what the upload copies) is not a folder on the master")
    elif job.get("transfer_type") == "upload_auxiliary":
        path = config.master_path(job["input_file_name"])
        if not os.path.isfile(path):
            problems.append(f"input_file_name {path} (the auxiliary data to upload) does not exist on the master")
    return problems


def check_job(job: dict[str, Any], config: ClusterConfig, *, cluster: bool = False,
              servers: int | None = None) -> Preflight:
    """Every check for `job` (a validated, complete job dict), and its plan: on this machine with
    `servers` local servers, or on every location of the running cluster with `cluster`."""
    report = Preflight(job, problems=check_master(job, config))
    if job["job_type"] != JobType.MAPREDUCE.value:
        return report
    if cluster:
        _check_locations(report, config)
    else:
        _check_here(report, config, servers or config.number_of_servers_per_location)
    return report


def _plan_summary(plan: dict[str, dict[str, Any]]) -> dict[str, dict[str, int]]:
    return {s: {"files": len(p.get("files", [])), "bytes": p.get("bytes", 0)} for s, p in plan.items()}


def _check_here(report: Preflight, config: ClusterConfig, servers: int) -> None:
    from cluster.engine.inputs import plan_inputs  # the planner the local executor runs
    from cluster.engine.mapper import load_auxiliary_data

    job = report.job
    layout = JobLayout(config.base_dir, config.auxiliary_dir, job["job_name"])
    for key in ("auxiliary_data_name_mapper", "auxiliary_data_name_reducer"):
        try:
            load_auxiliary_data(layout, job.get(key))
        except ClusterError as exc:
            report.problems.append(f"{key}: {exc}")
    try:  # missing input_dirs are named by the planner, as a run would name them
        plan, _ = plan_inputs(job, [f"S_{i}" for i in range(servers)], layout)
    except ClusterError as exc:
        report.problems.append(str(exc))
        return
    report.plan = _plan_summary(plan)


def _check_locations(report: Preflight, config: ClusterConfig) -> None:
    import ujson

    from cluster.master.manager import ClusterManager

    manager = ClusterManager(config)
    by_location = config.servers_by_location()
    job_json = ujson.dumps(report.job)

    for host in config.locations:  # one location at a time: each problem names its location
        try:
            answer = ujson.loads(manager.call(host, "plan_inputs", job_json, ujson.dumps(by_location[host])))
        except ClusterError as exc:
            report.problems.append(f"on {host}: {exc}")
            continue
        report.plan.update(_plan_summary(answer["plan"]))
        report.problems += [f"on {host}: auxiliary data {p} not found (upload it with an upload_auxiliary "
                            "transfer)" for p in answer["notes"].get("auxiliary_missing", [])]
