"""The queue, a job's page (its dict, runs, runtime chart, estimate), run now, delete, run logs."""
from __future__ import annotations

import json
import os
from typing import Any, cast

from flask import Blueprint, abort, flash, redirect, render_template, request, send_file, url_for
from flask_wtf import FlaskForm

from cluster import defaults
from cluster.dashboard.cluster_view import running_runs
from cluster.dashboard.results import is_within, published_files
from cluster.dashboard.state import state
from cluster.job_spec import is_valid_name
from cluster.scheduling.schedule import describe, next_run, utc_now
from cluster.scheduling.store import parse_time

bp = Blueprint("jobs", __name__)


class ActionForm(FlaskForm):
    """A button that changes the queue: only its CSRF token."""


def _seconds(run: dict[str, Any]) -> float | None:
    if not run.get("ended_at"):
        return None
    return (parse_time(run["ended_at"]) - parse_time(run["started_at"])).total_seconds()


@bp.route("/jobs")
def queue():
    scheduler = state().scheduler
    latest = scheduler.latest_runs()
    now = utc_now()
    rows = []
    for entry in scheduler.queued():
        at, text = next_run(entry.job, entry.reference, now, retry_at=entry.retry_at, held=entry.held)
        rows.append({"job": entry.job, "schedule": describe(entry.job), "next_at": at, "next": text,
                     "last": latest.get(entry.name), "estimate": scheduler.estimate_next_runtime(entry.name)})
    return render_template("jobs.html", rows=rows, runner=state().runner())


def _chart(runs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Bars of the latest finished runs' durations, oldest left (an SVG drawn by the template)."""
    done = [(r, cast(float, _seconds(r)))  # a float: the run has ended_at
            for r in reversed(runs) if r.get("ended_at")][-defaults.DASHBOARD_RUNTIMES_CHARTED:]
    if not done:
        return None
    top = max(s for _, s in done) or 1.0
    width, height, gap = 16, 80, 4
    bars = []
    for i, (r, s) in enumerate(done):
        h = max(2.0, height * s / top)
        bars.append({"x": i * (width + gap), "y": height - h, "w": width, "h": h, "status": r["status"],
                     "title": f"run {r['id']}: {s:.1f} s, {r['status']}"})
    return {"bars": bars, "width": len(bars) * (width + gap), "height": height, "top": top}


def job_runs_context(name: str, runner: dict[str, Any]) -> dict[str, Any]:
    runs = state().scheduler.history(name, limit=50)
    for r in runs:
        r["seconds"] = _seconds(r)
    running = [r for r in running_runs(runner.get("pid")) if r["job_name"] == name]
    return {"name": name, "runs": runs, "running": running}


@bp.route("/jobs/<name>")
def job(name: str):
    scheduler = state().scheduler
    runner = state().runner()
    entry = next((q for q in scheduler.queued() if q.name == name), None)
    job_dict = entry.job if entry else None
    context = job_runs_context(name, runner)
    if job_dict is None and not context["runs"]:
        abort(404, f"There is no job {name!r} in the queue and no run of it in the history.")
    return render_template("job.html", job=job_dict, job_json=json.dumps(job_dict, indent=2) if job_dict else None,
                           schedule=describe(job_dict) if job_dict else None,
                           next=next_run(entry.job, entry.reference, utc_now(), retry_at=entry.retry_at,
                                       held=entry.held)[1] if entry else None,
                           estimate=scheduler.estimate_next_runtime(name), runtimes=scheduler.runtimes(name),
                           chart=_chart(context["runs"]), form=ActionForm(), runner=runner,
                           published=published_files(state().config, name) if is_valid_name(name) else None,
                           **context)


@bp.route("/jobs/<name>/runs")
def runs_fragment(name: str):
    return render_template("_runs.html", **job_runs_context(name, state().runner()))


@bp.route("/jobs/<name>/run", methods=["POST"])
def run_now(name: str):  # (CSRFProtect checked the form's token before this view runs)
    if not state().scheduler.force_run(name):
        abort(404, f"There is no job {name!r} in the queue (it may have been deleted, or left it after a run).")
    runner = state().runner()
    if runner:
        flash(f"Job {name} will run when the Runner next looks at the queue (within "
              f"{defaults.RUNNER_IDLE_SECONDS:.0f} s when it is idle, else after its current job).", "ok")
    else:
        flash(f"Job {name} is marked to run now, but no Runner works this queue: start one "
              "(`mapreduce runner`) and it runs first thing.", "warning")
    return redirect(url_for("jobs.job", name=name))


@bp.route("/jobs/<name>/cancel", methods=["POST"])
def cancel(name: str):  # (CSRFProtect checked the form's token before this view runs)
    ids = state().scheduler.request_cancel(name, f"with the dashboard's Stop button, from {request.remote_addr}")
    if not ids:
        flash(f"Job {name} is not running: nothing to stop.", "warning")
    else:
        flash(f"Run {', '.join(map(str, ids))} of job {name} is stopping (within a few seconds); it will show "
              "as cancelled.", "ok")
    return redirect(url_for("jobs.job", name=name))


@bp.route("/jobs/<name>/delete", methods=["GET", "POST"])
def delete(name: str):
    form = ActionForm()
    job_dict = state().scheduler.get_job(name)
    if job_dict is None:
        abort(404, f"There is no job {name!r} in the queue.")
    if form.validate_on_submit():
        state().scheduler.delete_job(name)
        flash(f"Job {name} was deleted from the queue; its history stays.", "ok")
        return redirect(url_for("jobs.queue"))
    return render_template("delete.html", name=name, job=job_dict, form=form)


@bp.route("/runs/<int:run_id>/log")
def run_log(run_id: int):
    """A script run's output (stdout and stderr, as written), as plain text."""
    run = state().scheduler.get_run(run_id)
    if run is None or not run.get("log_path"):
        abort(404, f"Run {run_id} has no log (only script runs keep one).")
    path = run["log_path"]
    if not is_within(path, os.path.realpath(os.path.join(state().config.local_working_dir, "runs"))):
        abort(404, f"Run {run_id}'s log is not in this master's runs folder.")
    if not os.path.isfile(path):
        abort(404, f"Run {run_id}'s log {path} is gone (the {defaults.RUN_DIRS_KEPT} latest runs of a job keep "
                   "their folder).")
    return send_file(path, mimetype="text/plain; charset=utf-8", max_age=0)
