"""Console scripts. `mapreduce --help` lists the commands."""
from __future__ import annotations

import json
import logging
import os
import sys

import click

from cluster import jobs
from cluster.config import ClusterConfig
from cluster.exceptions import ClusterError
from cluster.layout import JobLayout
from cluster.mapper import iter_lines

log = logging.getLogger("cluster.cli")

config_option = click.option(
    "--config", "config_path", type=click.Path(dir_okay=False), default=None,
    help="INI file with a [CLUSTER] section (default: $CLUSTER_CONFIG, then "
         "~/.config/cluster/cluster.cfg, then built-in one-machine defaults).")


def _setup_logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


class _Group(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except ClusterError as exc:
            click.secho(f"error: {exc}", fg="red", err=True)
            ctx.exit(1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def mapreduce(verbose: int) -> None:
    """Run MapReduce jobs written as plain Python functions.

    \b
    Quick start:
      mapreduce template mapreduce > job.json   # edit the None fields
      mapreduce run job.json --local            # run it now on this machine
      mapreduce output JOB_NAME                 # print its output
    """
    _setup_logging(verbose)


@mapreduce.command()
@click.argument("job_type", type=click.Choice([t.value for t in jobs.JobType]))
def template(job_type: str) -> None:
    """Print a job template (JSON) with every key at its default."""
    job = jobs.TEMPLATES[jobs.JobType(job_type)]()
    click.echo(json.dumps(job, indent=2))


def _read_job(path: str) -> dict:
    try:
        with open(path) as fh:
            job = json.load(fh)
    except OSError as exc:
        raise click.ClickException(f"cannot read job file {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise click.ClickException(f"job file {path} is not valid JSON: {exc}") from None
    return jobs.validate_job(job)


@mapreduce.command()
@click.argument("job_file", type=click.Path(dir_okay=False))
def validate(job_file: str) -> None:
    """Check a job file; list every problem."""
    job = _read_job(job_file)
    click.echo(f"job {job['job_name']!r} ({job['job_type']}) is valid")


@mapreduce.command()
@click.argument("job_file", type=click.Path(dir_okay=False))
@config_option
@click.option("--local", is_flag=True, help="Run now on this machine with worker processes (no cluster).")
@click.option("--servers", type=click.IntRange(1, 512), default=None,
              help="Worker processes with --local (default: number_of_servers_per_location).")
@click.option("--progress/--no-progress", default=None, help="Progress bars (default: on a terminal).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON (for scripts).")
def run(job_file: str, config_path: str | None, local: bool, servers: int | None,
        progress: bool | None, as_json: bool) -> None:
    """Run a mapreduce job file now and print its counters."""
    from cluster.local import LocalExecutor
    from cluster.progress import PhaseBars, format_counters

    job = _read_job(job_file)
    config = ClusterConfig.load(config_path)
    if not local:
        raise click.ClickException("no running cluster to submit to: the cluster runtime is not installed "
                                   "in this version; run the job on this machine with --local")
    bars = PhaseBars(enabled=progress)
    executor = LocalExecutor(config, servers=servers, on_progress=bars.update,
                             worker_log_level=logging.getLogger().level)
    try:
        result = executor.run(job)
    finally:
        bars.close()
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
    """Print every output item of a job, one JSON line each."""
    config = ClusterConfig.load(config_path)
    layout = JobLayout(config.base_dir, config.auxiliary_dir, job_name)
    files = layout.output_files()
    if not files:
        raise click.ClickException(f"job {job_name!r} has no output in {layout.output_dir} "
                                   "(has it run successfully with this config?)")
    shown = 0
    out = sys.stdout
    for path in files:
        for line in iter_lines(path):
            if limit is not None and shown >= limit:
                return
            out.write(line if line.endswith("\n") else line + "\n")
            shown += 1


@mapreduce.command("config")
@config_option
def show_config(config_path: str | None) -> None:
    """Print the resolved configuration and where it came from."""
    config = ClusterConfig.load(config_path)
    for key, value in config.as_dict().items():
        if key == "redis_auth" and value:
            value = "(set)"
        click.echo(f"{key} = {value}")


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def manage_cluster(verbose: int) -> None:
    """Set up and run the cluster's servers (RPyC services in GNU screen, a Redis per machine).

    \b
    First time on a cluster:
      manage_cluster init      # the cluster's CA, certificates and Redis password
    """
    _setup_logging(verbose)


@manage_cluster.command()
@config_option
@click.option("--force", is_flag=True, help="Make new certificates and a new password even if some exist "
                                           "(servers started with the old ones must be restarted).")
def init(config_path: str | None, force: bool) -> None:
    """Create the cluster's CA, server and client certificates and Redis password (once)."""
    from cluster.security import init_secrets

    config = ClusterConfig.load(config_path)
    found, created = init_secrets(config, force=force)
    if created:
        click.echo(f"created the certificates and Redis password of cluster {config.cluster_name!r} in "
                   f"{found.directory} (readable only by you)")
    else:
        click.echo(f"cluster {config.cluster_name!r} already has its certificates in {found.directory}; "
                   "nothing changed (use --force to replace them)")


def main() -> None:  # pragma: no cover - console entry point
    mapreduce(prog_name=os.path.basename(sys.argv[0]))
