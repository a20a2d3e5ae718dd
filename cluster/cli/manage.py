"""`manage_cluster`: bring the cluster up and down, see its state, attach to a server's screen."""
from __future__ import annotations

import json
import os

import click

from cluster.cli.options import config_option, console_group, setup_logging
from cluster.config import ClusterConfig
from cluster.progress import human_size


@console_group("manage_cluster")
def manage_cluster(verbose: int) -> None:
    """Set up and run the cluster's servers (RPyC services in GNU screen, a Redis per machine).

    \b
    \b
    Typical use:
      manage_cluster start           # (first time: makes the cluster's certificates)
      mapreduce run job.json         # run a job on it
      manage_cluster status          # servers, jobs, phases, memory
      manage_cluster attach S_0      # watch a server's prints (Ctrl-a d to detach)
      manage_cluster stop            # graceful; `kill` when something hangs
    """
    setup_logging(verbose)


@manage_cluster.command()
@config_option
@click.option("--force", is_flag=True, help="Make new certificates and a new password even if some exist "
                                           "(servers started with the old ones must be restarted).")
def init(config_path: str | None, force: bool) -> None:
    """Create the cluster's CA, server and client certificates and Redis password (once)."""
    from cluster.node.security import init_secrets

    config = ClusterConfig.load(config_path)
    found, created = init_secrets(config, force=force)
    if created:
        click.echo(f"created the certificates and Redis password of cluster {config.cluster_name!r} in "
                   f"{found.directory} (readable only by you)")
    else:
        click.echo(f"cluster {config.cluster_name!r} already has its certificates in {found.directory}; "
                   "nothing changed (use --force to replace them)")


def _manager(config_path: str | None):
    from cluster.master.manager import ClusterManager

    return ClusterManager(ClusterConfig.load(config_path), echo=click.echo)


@manage_cluster.command()
@config_option
def start(config_path: str | None) -> None:
    """Start Redis, the management server and the cluster servers on every location.

    Pushes the code, projects/, the config and the secrets first. Servers already
    running are left alone, so `start` after a crash starts only what is missing."""
    manager = _manager(config_path)
    manager.start()
    _print_status(manager.status())


@manage_cluster.command()
@config_option
def stop(config_path: str | None) -> None:
    """Stop gracefully: servers take nothing new and exit, then Redis and the management servers."""
    _manager(config_path).stop()


@manage_cluster.command()
@config_option
def kill(config_path: str | None) -> None:
    """End this cluster's screen sessions and redis-servers at once (only this cluster's, by name and pid file)."""
    _manager(config_path).kill()


@manage_cluster.command()
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def status(config_path: str | None, as_json: bool) -> None:
    """One line per server (up/down, heartbeat, job, phase, memory) and per location (Redis, disk)."""
    found = _manager(config_path).status()
    if as_json:
        click.echo(json.dumps(found))
    else:
        _print_status(found)


def _print_status(found: dict) -> None:
    servers: list[tuple[str, ...]] = [("SERVER", "LOCATION", "PORT", "STATE", "HEARTBEAT", "JOB", "PHASE", "RSS")]
    for r in found["servers"]:
        age = "-" if r["heartbeat_age"] is None else f"{r['heartbeat_age']:.1f}s ago"
        servers.append((r["server"], r["location"], str(r["port"]), "up" if r["up"] else "DOWN", age,
                        r["job"] or "-", r["phase"] or "-", human_size(r["rss_bytes"])))
    locations: list[tuple[str, ...]] = [("LOCATION", "REDIS", "REDIS MEMORY", "MANAGEMENT", "DISK FREE")]
    for r in found["locations"]:
        locations.append((r["location"], r["redis"], human_size(r["redis_memory"]), r["management"],
                          human_size(r["disk_free"])))
    for n, table in enumerate((servers, locations)):
        widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
        click.echo("\n" * bool(n) + "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
                                              for row in table))


@manage_cluster.command()
@click.argument("server_id")
@config_option
def attach(server_id: str, config_path: str | None) -> None:
    """Attach this terminal to a server's screen window (through ssh -t for another machine)."""
    command = _manager(config_path).attach_command(server_id)
    os.execvp(command[0], command)
