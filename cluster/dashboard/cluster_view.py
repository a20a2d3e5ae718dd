"""The cluster page: servers, locations, the Runner and the runs in progress, refreshing itself."""
from __future__ import annotations

from typing import Any

from flask import Blueprint, render_template

from cluster.dashboard.state import state
from cluster.progress import server_progress
from cluster.scheduling.schedule import utc_now
from cluster.scheduling.store import parse_time, run_is_orphaned

bp = Blueprint("cluster", __name__)


def running_runs(runner_pid: int | None) -> list[dict[str, Any]]:
    """The runs in progress (or left open by a Runner that died: not `runner_pid`, the one that holds
    the queue now), with elapsed time, estimate and each server's progress per phase."""
    scheduler = state().scheduler
    now = utc_now()
    out = []
    for run in scheduler.unfinished_runs():
        progress = run.get("progress") or {}
        servers = progress.get("servers") or {}
        # a run whose Runner is gone (killed, machine rebooted) is not running: the next Runner closes it
        orphaned = run_is_orphaned(run, runner_pid)
        out.append({**run, "orphaned": orphaned, "elapsed": (now - parse_time(run["started_at"])).total_seconds(),
                    "estimate": scheduler.estimate_next_runtime(run["job_name"]),
                    "servers": {s: server_progress(progress.get("phase"), c) for s, c in sorted(servers.items())}})
    return out


def cluster_context() -> dict[str, Any]:
    found = state().status()
    servers = []
    for row in found.get("servers", []):
        p = row.get("progress") or {}
        servers.append({**row, "phases": server_progress(p.get("phase"), p.get("counters")) if p else None})
    runner = state().runner()
    return {"status": found, "servers": servers, "runs": running_runs(runner.get("pid")), "runner": runner,
            "config": state().config}


@bp.route("/")
def page():
    return render_template("cluster.html", **cluster_context())


@bp.route("/cluster/fragment")
def fragment():
    return render_template("_cluster.html", **cluster_context())
