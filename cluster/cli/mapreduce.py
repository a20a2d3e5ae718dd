"""`mapreduce`: job templates, running and validating jobs, their output, the queue, the Runner and
the dashboard. `mapreduce --help` lists the commands."""
from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Sequence

import click

from cluster import defaults, job_spec
from cluster.cli.options import DASHBOARD_MODULES, config_option, console_group, dask_option, setup_logging
from cluster.config import ClusterConfig
from cluster.engine.reading import iter_lines
from cluster.exceptions import MissingExtra
from cluster.layout import JobLayout

log = logging.getLogger("cluster.cli")


@console_group("mapreduce")
def mapreduce(verbose: int) -> None:
    """Run MapReduce jobs written as plain Python functions.

    \b
    Quick start:
      mapreduce template mapreduce > job.json   # edit the None fields
      mapreduce run job.json --local            # run it now on this machine
      mapreduce output JOB_NAME                 # print its output

    \b
    The queue (a Runner works through it):
      mapreduce submit job.json   mapreduce queue   mapreduce history [JOB]
      mapreduce delete JOB        mapreduce estimate JOB
      mapreduce runner            # works through the queue, round after round
      mapreduce dashboard         # the cluster, queue, runs and results in a browser
    """
    setup_logging(verbose)


@mapreduce.command()
@click.argument("job_type", type=click.Choice([t.value for t in job_spec.JobType]))
@click.option("--keys", is_flag=True, help="Print what each key means, with its default (a Markdown table).")
def template(job_type: str, keys: bool) -> None:
    """Print a job template (JSON) with every key at its default.

    A job file needs only the keys marked required (`--keys` lists them); the rest default."""
    kind = job_spec.JobType(job_type)
    if keys:
        click.echo(job_spec.key_table(kind))
        return
    click.echo(json.dumps(job_spec.TEMPLATES[kind](), indent=2))


def _read_job(path: str) -> dict:
    try:
        with open(path) as fh:
            job = json.load(fh)
    except OSError as exc:
        raise click.ClickException(f"cannot read job file {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise click.ClickException(f"job file {path} is not valid JSON: {exc}") from None
    return job_spec.validate_job(job)


@mapreduce.command()
@click.argument("job_file", type=click.Path(dir_okay=False))
@config_option
@click.option("--cluster", is_flag=True, help="Check the input on every location of the running cluster "
                                              "(default: on this machine, as `run --local` reads it).")
@click.option("--servers", type=click.IntRange(1, 512), default=None,
              help="Servers to plan for on this machine (default: number_of_servers_per_location).")
def validate(job_file: str, config_path: str | None, cluster: bool, servers: int | None) -> None:
    """Check a job file in depth and print its plan; list every problem.

    \b
    The keys (a job file needs only those without a default), then: the project's map, combine
    and reduce functions load; input_dirs and auxiliary data exist (on every location with
    --cluster); a script job's script exists or its tarball passes the Runner's rules; an
    upload's files exist on the master. The plan: files and bytes per server."""
    from cluster.cli.preflight import check_job

    if cluster and servers is not None:
        raise click.UsageError("--servers plans for this machine; with --cluster each location plans for its own "
                               "number_of_servers_per_location")
    job = _read_job(job_file)
    report = check_job(job, ClusterConfig.load(config_path), cluster=cluster, servers=servers)
    for line in report.plan_lines():
        click.echo(line)
    if report.problems:
        lines = "\n".join(f"  - {p}" for p in report.problems)
        raise click.ClickException(f"job {job['job_name']!r} cannot run ({len(report.problems)} problem(s)):\n{lines}")
    click.echo(f"job {job['job_name']!r} ({job['job_type']}) is valid")


@mapreduce.command()
@click.argument("job_file", type=click.Path(dir_okay=False))
@config_option
@click.option("--local", is_flag=True, help="Run now on this machine with worker processes (no cluster).")
@click.option("--servers", type=click.IntRange(1, 512), default=None,
              help="Worker processes with --local (default: number_of_servers_per_location).")
@dask_option
@click.option("--progress/--no-progress", default=None, help="Progress bars (default: on a terminal).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON (for scripts).")
@click.option("--max-bad-fraction", type=click.FloatRange(0, 1), default=None,
              help="Fail the job when more than this share of the records is bad (0: any bad record fails, "
                   "1: never; default: the job's max_bad_fraction, 0.01).")
def run(job_file: str, config_path: str | None, local: bool, servers: int | None, dask: str | None,
        progress: bool | None, as_json: bool, max_bad_fraction: float | None) -> None:
    """Run a mapreduce job file now and print its counters.

    Without --local or --dask the job runs on the running cluster (`manage_cluster start`).

    \b
    Input files are read by their content (gzip, bzip2, xz, LZMA-alone, lz4, zstd or plain text).
    A bad record is a line that is not UTF-8 or whose map function raised BadRecord; past
    max_bad_fraction of them the job fails, naming the worst files and the first bad lines. A
    file that cannot be decoded (binary, truncated, corrupt) fails the job, named with the
    reason. A failed job publishes nothing."""
    from cluster.api import executor_kind, make_executor
    from cluster.progress import PhaseBars, format_counters

    job = _read_job(job_file)
    if max_bad_fraction is not None:
        job["max_bad_fraction"] = max_bad_fraction
    config = ClusterConfig.load(config_path)
    if servers is not None and not local:
        raise click.UsageError("--servers goes with --local; a cluster has number_of_servers_per_location servers "
                               "on each location")
    kind = executor_kind(config, local=local, dask=dask)
    bars = PhaseBars(enabled=progress)
    from cluster.job_spec import validate_job

    job = validate_job(job)
    with _scheduler(config_path).recorded_run(job, source=f"mapreduce run ({kind})") as record:
        try:
            options: dict = {"worker_log_level": logging.getLogger().level} if local else {}
            if dask:
                options["address"] = dask
            result = make_executor(kind, config, servers=servers, on_progress=bars.update, **options).run(
                job, cancelled=record.cancelled)
        finally:
            bars.close()
        record.counters = {"output_dir": result.output_dir, "mapreduce_run": result.run_id, **result.counters}
    if as_json:
        click.echo(json.dumps({"job_name": result.job_name, "run_id": result.run_id,
                               "output_dir": result.output_dir, "counters": result.counters}, default=str))
    else:
        click.echo(format_counters(result))


@mapreduce.command()
@click.argument("job_name")
@config_option
@click.option("--limit", type=int, default=None, help="Print at most this many items.")
def output(job_name: str, config_path: str | None, limit: int | None) -> None:
    """Print every output item of a job (from every location), one JSON line each."""
    import tempfile

    from cluster.master.manager import ClusterManager

    config = ClusterConfig.load(config_path)
    layout = JobLayout(config.base_dir, config.auxiliary_dir, job_name)
    shown = files = 0
    out = sys.stdout
    with tempfile.TemporaryDirectory(prefix="cluster-output-") as scratch:
        for path in ClusterManager(config).output_files(job_name, scratch):
            files += 1
            for line in iter_lines(path):
                if limit is not None and shown >= limit:
                    return
                out.write(line if line.endswith("\n") else line + "\n")
                shown += 1
    if not files:
        raise click.ClickException(f"job {job_name!r} has no output in {layout.output_dir} on "
                                   f"{', '.join(config.locations)} (has it run successfully with this config?)")


@mapreduce.command("config")
@config_option
def show_config(config_path: str | None) -> None:
    """Print the resolved configuration and where it came from."""
    config = ClusterConfig.load(config_path)
    for key, value in config.as_dict().items():
        if key in ("redis_auth", "dashboard_password") and value:
            value = "(set)"
        click.echo(f"{key} = {value}")


def _scheduler(config_path: str | None):
    from cluster.scheduling.store import Scheduler

    return Scheduler(ClusterConfig.load(config_path))


def _table(rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


@mapreduce.command()
@click.argument("job_file", type=click.Path(dir_okay=False))
@config_option
def submit(job_file: str, config_path: str | None) -> None:
    """Put a job (any type) on the queue; a queued job of the same name is replaced.

    Refused when a check on the master fails (`mapreduce validate` says which): functions that do
    not load, a script or tarball that is missing or breaks the Runner's rules."""
    from cluster.cli.preflight import check_master

    job = _read_job(job_file)
    problems = check_master(job, ClusterConfig.load(config_path))
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        raise click.ClickException(f"job {job['job_name']!r} was not queued: it cannot run ({len(problems)} "
                                   f"problem(s)):\n{lines}")
    replaced = _scheduler(config_path).submit_job(job)
    click.echo(f"job {job['job_name']!r} {'replaced the queued job of that name' if replaced else 'queued'}")


@mapreduce.command()
@click.argument("job_name")
@config_option
def delete(job_name: str, config_path: str | None) -> None:
    """Take a job off the queue (its history stays)."""
    if not _scheduler(config_path).delete_job(job_name):
        raise click.ClickException(f"no job {job_name!r} in the queue (`mapreduce queue` lists them)")
    click.echo(f"job {job_name!r} deleted from the queue")


@mapreduce.command()
@click.argument("job_name")
@config_option
@click.option("--delete", is_flag=True, help="Also take the job off the queue.")
@click.option("--wait", "wait_seconds", type=click.FloatRange(0, 3600), default=60, show_default=True,
              help="Seconds to wait for the run to stop (0: ask and return).")
def cancel(job_name: str, config_path: str | None, delete: bool, wait_seconds: float) -> None:
    """Stop a job's running run (started by the Runner, `mapreduce run` or a job script): its cluster
    phases are aborted, a script's whole process group is stopped, and the run is recorded as
    cancelled. The job stays queued (held, if it has no schedule) unless --delete."""
    import getpass

    from cluster.scheduling.store import RunStatus

    scheduler = _scheduler(config_path)
    ids = scheduler.request_cancel(job_name, f"by {getpass.getuser()} with `mapreduce cancel`")
    deleted = scheduler.delete_job(job_name) if delete else False
    if not ids:
        if deleted:
            click.echo(f"job {job_name!r} was not running; it is off the queue")
            return
        raise click.ClickException(f"job {job_name!r} is not running (`mapreduce history {job_name}` shows its runs)")
    from cluster.exceptions import WaitTimedOut
    from cluster.timing import wait_until

    for run_id in ids:
        def ended(r: int = run_id) -> dict | None:
            got = scheduler.get_run(r)
            return got if got and got["status"] != RunStatus.RUNNING.value else None
        try:
            run = wait_until(ended, wait_seconds, f"run {run_id}") if wait_seconds else None
        except WaitTimedOut:
            raise click.ClickException(f"run {run_id} of job {job_name!r} was asked to stop but still runs after "
                                       f"{wait_seconds:g}s (its process may be stuck: `mapreduce history`)") from None
        click.echo(f"run {run_id} of job {job_name!r}: " + (run["status"] if run else "asked to stop"))
    if deleted:
        click.echo(f"job {job_name!r} is off the queue")


@mapreduce.command("force-run")
@click.argument("job_name")
@config_option
def force_run(job_name: str, config_path: str | None) -> None:
    """Run a queued job at the Runner's next look, whatever its schedule; a job held after failing
    runs again with its retries afresh."""
    if not _scheduler(config_path).force_run(job_name):
        raise click.ClickException(f"no job {job_name!r} in the queue (`mapreduce queue` lists them)")
    click.echo(f"job {job_name!r} runs when the Runner next looks at the queue")


@mapreduce.command()
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print the jobs as JSON.")
def queue(config_path: str | None, as_json: bool) -> None:
    """The queued jobs, in the order the Runner takes them (highest job_priority first)."""
    scheduler = _scheduler(config_path)
    found = scheduler.list_jobs()
    states = scheduler.retry_states()
    if as_json:
        click.echo(json.dumps([{**job, "queue_state": states.get(job["job_name"])} for job in found]))
        return
    if not found:
        click.echo("the queue is empty")
        return
    rows = [("JOB", "TYPE", "PRIORITY", "GROUP", "SCHEDULE", "TIMEOUT", "ONCE", "ESTIMATE", "STATE")]
    from cluster.scheduling.schedule import describe, describe_state

    for job in found:
        when = describe(job)
        estimate = scheduler.estimate_next_runtime(job["job_name"])
        rows.append((job["job_name"], job["job_type"], str(job.get("job_priority") or 0), job.get("group_name") or "-",
                     when, f"{job['timeout_minutes']} min" if job.get("timeout_minutes") else "-",
                     "yes" if job.get("run_once") else "no", "-" if estimate is None else f"{estimate:.1f}s",
                     describe_state(job, states.get(job["job_name"]))))
    _table(rows)


@mapreduce.command()
@click.argument("job_name", required=False)
@config_option
@click.option("--limit", type=click.IntRange(1, 100_000), default=20, show_default=True, help="Runs to show.")
@click.option("--json", "as_json", is_flag=True, help="Print the runs as JSON (counters included).")
@click.option("--prune", "prune_days", type=click.FloatRange(0, min_open=True), default=None, metavar="DAYS",
              help="Delete the records of runs that ended more than DAYS ago (of every job), then exit.")
def history(job_name: str | None, config_path: str | None, limit: int, as_json: bool,
            prune_days: float | None) -> None:
    """The latest runs (of one job, or of every job), newest first: who started each (SOURCE) and
    how it ended."""
    if prune_days is not None:
        if job_name:
            raise click.UsageError("--prune applies to every job's runs; leave out JOB_NAME")
        gone = _scheduler(config_path).prune(prune_days)
        click.echo(f"deleted the records of {gone} run(s) that ended more than {prune_days:g} day(s) ago")
        return
    runs = _scheduler(config_path).history(job_name, limit)
    if as_json:
        click.echo(json.dumps(runs))
        return
    if not runs:
        click.echo("no runs recorded" + (f" for job {job_name!r}" if job_name else ""))
        return
    from cluster.scheduling.store import parse_time

    rows = [("RUN", "JOB", "STARTED (UTC)", "SECONDS", "STATUS", "SOURCE", "PHASE", "EXCEPTION")]
    for r in runs:
        took = parse_time(r["ended_at"]) - parse_time(r["started_at"]) if r["ended_at"] else None
        secs = "-" if took is None else f"{took.total_seconds():.1f}"
        rows.append((str(r["id"]), r["job_name"], r["started_at"][:19].replace("T", " "), secs, r["status"],
                     r.get("source") or "runner", r["phase"] or "-",
                     (r["exception"] or r["note"] or "-").splitlines()[0][:80]))
    _table(rows)


@mapreduce.command()
@click.argument("job_name")
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print the estimate and the runtimes it comes from as JSON.")
def estimate(job_name: str, config_path: str | None, as_json: bool) -> None:
    """How long the job's next run should take (the median of its last 50 successful runs)."""
    scheduler = _scheduler(config_path)
    seconds = scheduler.estimate_next_runtime(job_name)
    if as_json:
        click.echo(json.dumps({"job_name": job_name, "estimate_seconds": seconds,
                               "runtimes": scheduler.runtimes(job_name)}))
        return
    if seconds is None:
        raise click.ClickException(f"job {job_name!r} has no successful run yet, so no estimate")
    click.echo(f"{seconds:.1f} s (median of its last {len(scheduler.runtimes(job_name))} successful runs)")


@mapreduce.command()
@config_option
@click.option("--once", is_flag=True, help="Run one round (every due job once), then exit.")
@click.option("--local", is_flag=True, help="Run mapreduce jobs on this machine's worker processes, not the cluster.")
@click.option("--servers", type=click.IntRange(1, 512), default=None,
              help="Worker processes with --local (default: number_of_servers_per_location).")
@dask_option
def runner(config_path: str | None, once: bool, local: bool, servers: int | None, dask: str | None) -> None:
    """Work through the queue, round after round (run it in screen or as a service).

    \b
    Each round runs every due job once, highest job_priority first. A failed or
    timed-out job takes its whole group_name off the queue. SIGTERM or Ctrl-C
    finishes the current job, then exits; a Runner killed outright is picked up
    by the next one (the interrupted job runs again). `mapreduce history` shows
    every run. With --once, the exit status is 1 when a job of the round did not
    succeed (failed, timed out, or refused because the cluster ran another job)."""
    from cluster.scheduling.runner import Runner
    from cluster.scheduling.store import RunStatus

    if servers is not None and not local:
        raise click.UsageError("--servers goes with --local")
    config = ClusterConfig.load(config_path)
    from cluster.logfile import RotatingFile

    log_file = RotatingFile(os.path.join(config.local_working_dir, "runner.log"))
    handler = logging.StreamHandler(log_file)
    handler.setLevel(logging.WARNING)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)

    def echo(message: str) -> None:  # the terminal (or screen window) and the size-capped runner.log
        line = f"{_now()} {message}"
        click.echo(line)
        log_file.write(line + "\n")
    r = Runner(config, local=local, servers=servers, dask=dask, echo=echo)
    r.install_signal_handlers()
    where = {"local": "local executor", "dask": f"Dask at {dask or config.dask_scheduler}",
             "cluster": f"cluster {config.cluster_name!r}"}[r.executor]
    echo(f"Runner pid {os.getpid()} on the queue in {config.local_working_dir} ({where}"
         f"{', one round' if once else ''}); its log: {log_file.path}")
    outcomes = r.serve(once=once)
    missed = [o for o in outcomes if o.status not in (RunStatus.SUCCEEDED,)]
    if once and missed:
        raise click.ClickException("not every job succeeded in this round: " + ", ".join(
            f"{o.job_name} ({o.status.value.replace('_', ' ')})" for o in missed))


@mapreduce.command()
@config_option
@click.option("--host", default=defaults.DASHBOARD_HOST, show_default=True,
              help="Address to listen on. Anything but loopback needs dashboard_password set.")
@click.option("--port", type=click.IntRange(1, 65535), default=defaults.DASHBOARD_PORT, show_default=True,
              help="TCP port to listen on.")
def dashboard(config_path: str | None, host: str, port: int) -> None:
    """Serve the web dashboard: cluster, queue, runs, published results, a form to schedule jobs.

    \b
    The login password comes from $CLUSTER_DASHBOARD_PASSWORD or the config key
    dashboard_password. Without one it listens only on loopback, with a password
    made up for this run and printed here. From another machine, use an SSH tunnel:
      ssh -L 8787:127.0.0.1:8787 master   # then open http://127.0.0.1:8787/"""
    try:
        from cluster.dashboard.serve import check_port, plain_http_warning, resolve_password, serve
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in DASHBOARD_MODULES:
            raise
        raise MissingExtra("the dashboard", "dashboard", exc.name or "flask") from None

    config = ClusterConfig.load(config_path)
    password, made_up = resolve_password(config, host)
    check_port(host, port)
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"{_now()} dashboard of the queue in {config.local_working_dir} on http://{shown}:{port}/ "
               "(Ctrl-C stops it)")
    warning = plain_http_warning(host)
    if warning:
        click.echo(f"{_now()} {warning}", err=True)
    if made_up:
        click.echo(f"{_now()} no dashboard_password is configured: log in with {password} "
                   f"(valid until the dashboard stops; set ${defaults.DASHBOARD_PASSWORD_ENV} or "
                   "dashboard_password for a lasting one)")
    serve(config, host, port, password)


def _now() -> str:
    from cluster.scheduling.schedule import utc_now

    return f"{utc_now():%Y-%m-%d %H:%M:%S}"
