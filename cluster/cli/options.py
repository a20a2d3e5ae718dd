"""What the console scripts share: the --config option, logging, and the group that turns a
ClusterError into one `error:` line and exit status 1."""
from __future__ import annotations

import logging

import click

from cluster.exceptions import ClusterError

DISTRIBUTION = "mapreduce-cluster"  # the name on the package index; the import package is `cluster`
DASHBOARD_MODULES = {"flask", "flask_wtf", "wtforms", "waitress", "werkzeug", "jinja2", "markupsafe", "itsdangerous"}

config_option = click.option(
    "--config", "config_path", type=click.Path(dir_okay=False), default=None,
    help="INI file with a [CLUSTER] section (default: $CLUSTER_CONFIG, then "
         "~/.config/cluster/cluster.cfg, then built-in one-machine defaults).")


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
