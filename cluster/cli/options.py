"""What the console scripts share: the --config option, logging, and the group that turns a
ClusterError into one `error:` line and exit status 1."""
from __future__ import annotations

import logging
from collections.abc import Callable

import click

import cluster
from cluster.exceptions import ClusterError

DISTRIBUTION = "mapreduce-cluster"  # the name on the package index; the import package is `cluster`
DASHBOARD_MODULES = {"flask", "flask_wtf", "wtforms", "waitress", "werkzeug", "jinja2", "markupsafe", "itsdangerous"}

config_option = click.option(
    "--config", "config_path", type=click.Path(dir_okay=False), default=None,
    help="INI file with a [CLUSTER] section (default: $CLUSTER_CONFIG, then "
         "~/.config/cluster/cluster.cfg, then built-in one-machine defaults).")

dask_option = click.option(
    "--dask", "dask", metavar="ADDRESS", default=None,
    help="Run mapreduce jobs on the Dask cluster whose scheduler is at ADDRESS (tcp://HOST:8786), or on a "
         "LocalCluster of number_of_servers_per_location workers started for the run (`local`); default: the "
         "config's dask_scheduler. Needs the dask extra here and on the workers.")


def setup_logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


class Group(click.Group):
    """A command group whose ClusterErrors end in one red `error:` line and exit status 1."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except ClusterError as exc:
            click.secho(f"error: {exc}", fg="red", err=True)
            ctx.exit(1)


def console_group(prog_name: str) -> Callable[[Callable], click.Group]:
    """What makes a console script's command group: -h/--help, -v (counted) and --version, with
    ClusterErrors ending in one `error:` line (Group)."""
    def decorate(fn: Callable) -> click.Group:
        fn = click.version_option(cluster.__version__, "--version", package_name=DISTRIBUTION, prog_name=prog_name,
                                  message="%(prog)s (" + DISTRIBUTION + ") %(version)s")(fn)
        fn = click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")(fn)
        return click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})(fn)
    return decorate
