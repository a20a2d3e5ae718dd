"""What runs on a location itself: its screen sessions, its redis-server, its log files.

The master reaches a location through `remote.py` and runs `python -m cluster.node.location
...` there (kill, start the management server), or asks the location's management
service; either way the work below happens on the machine it concerns. Sessions are
found by their exact names (`<cluster_name>_management`, `<cluster_name>_<server_id>`),
redis-server by its pid file: nothing else is ever stopped.
"""
from __future__ import annotations

import argparse
import hashlib
import logging
import os
import re
import socket
import subprocess
import sys
from collections import deque

import cluster
from cluster.config import ClusterConfig
from cluster.exceptions import RemoteCommandError
from cluster.node.redis_server import RedisServer

log = logging.getLogger(__name__)
MANAGEMENT = "management"
_SESSION_RE = re.compile(r"^\s+(\d+)\.(\S+)\s+\(", re.MULTILINE)


def session_name(config: ClusterConfig, role: str) -> str:
    """`<cluster_name>_management` or `<cluster_name>_<server_id>`."""
    return f"{config.cluster_name}_{role}"


def log_path(config: ClusterConfig, role: str) -> str:
    return os.path.join(config.logs_dir, f"{session_name(config, role)}.log")


def address(host: str) -> str:
    """The IP address a location's services listen on."""
    try:
        return socket.gethostbyname(host)
    except OSError as exc:
        raise RemoteCommandError(f"cannot resolve location {host!r}: {exc}") from None


def location_redis(config: ClusterConfig, host: str) -> RedisServer:
    """The redis-server of one location: files in <working_dir>/redis, bound to the location's address."""
    return RedisServer(os.path.join(config.working_dir, "redis"), address(host), config.redis_port)


def screen_sessions() -> dict[str, list[int]]:
    """Running screen sessions of this user: name -> pids (a name can be taken twice)."""
    try:
        proc = subprocess.run(["screen", "-ls"], capture_output=True, text=True, timeout=10)
    except FileNotFoundError:
        raise RemoteCommandError("GNU screen is not installed on this machine; run init/install.sh") from None
    sessions: dict[str, list[int]] = {}
    for pid, name in _SESSION_RE.findall(proc.stdout):
        sessions.setdefault(name, []).append(int(pid))
    return sessions


def start_session(name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
    """Start `argv` in a detached screen session called `name`."""
    proc = subprocess.run(["screen", "-dmS", name, *argv], capture_output=True, text=True, timeout=10,
                          env=env, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise RemoteCommandError(f"screen could not start session {name}: {proc.stderr.strip() or proc.stdout}")


def quit_session(name: str) -> int:
    """End every screen session called exactly `name` (its process gets SIGHUP); return how many."""
    pids = screen_sessions().get(name, [])
    for pid in pids:
        subprocess.run(["screen", "-S", f"{pid}.{name}", "-X", "quit"], capture_output=True, timeout=10)
    return len(pids)


def tail(path: str, lines: int = 50) -> str:
    """The last lines of a file ('' when it does not exist)."""
    try:
        with open(path, errors="replace") as fh:
            return "".join(deque(fh, maxlen=lines))
    except FileNotFoundError:
        return ""


def server_command(config_path: str, secrets_dir: str, *args: str) -> list[str]:
    """The command line of a management or cluster server of this location."""
    return [sys.executable, "-m", "cluster.node.services", *args, "--config", config_path, "--secrets", secrets_dir]


def kill(config: ClusterConfig, host: str) -> list[str]:
    """End this location's sessions of this cluster and its redis-server; return what was ended."""
    ended = []
    for role in [MANAGEMENT, *config.servers_by_location()[host]]:
        if quit_session(session_name(config, role)):
            ended.append(session_name(config, role))
    if location_redis(config, host).stop():
        ended.append(f"redis-server :{config.redis_port}")
    return ended


def package_dir() -> str:
    return os.path.dirname(os.path.abspath(cluster.__file__))


def code_digest(folder: str | None = None) -> str:
    """A digest of the package's Python sources, every subpackage included (what a location runs
    must match the master's)."""
    return folder_digest(folder or package_dir(), suffixes=(".py",))


def folder_digest(folder: str, suffixes: tuple[str, ...] | None = None) -> str:
    """A digest of a folder's files (names and contents; caches, compiled files and dot-names left
    out), or of those ending in `suffixes`: the same sources give the same digest on every machine."""
    h = hashlib.blake2b(digest_size=12)
    sources = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__" and not d.startswith("."))
        sources += [os.path.relpath(os.path.join(root, f), folder) for f in files
                    if not f.startswith(".") and not f.endswith((".pyc", ".pyo"))
                    and (suffixes is None or f.endswith(suffixes))]
    for name in sorted(sources):
        h.update(name.replace(os.sep, "/").encode() + b"\0")
        with open(os.path.join(folder, name), "rb") as fh:
            h.update(fh.read() + b"\0")
    return h.hexdigest()


def main(argv: list[str] | None = None) -> None:
    """`python -m cluster.node.location {kill,start-management} --config CFG --location HOST [--secrets DIR]`."""
    parser = argparse.ArgumentParser(prog="python -m cluster.node.location",
                                     description="Location-side operations, run by manage_cluster on each machine.")
    parser.add_argument("action", choices=["kill", "start-management"])
    parser.add_argument("--config", required=True)
    parser.add_argument("--location", required=True)
    parser.add_argument("--secrets", default=None)
    args = parser.parse_args(argv)
    config = ClusterConfig.from_file(args.config, check_dirs=False)
    if args.action == "kill":
        for what in kill(config, args.location):
            print(f"ended {what}")
        return
    name = session_name(config, MANAGEMENT)
    if screen_sessions().get(name):
        print(f"{name} is already running")
        return
    start_session(name, server_command(args.config, args.secrets, MANAGEMENT, "--location", args.location))
    print(f"started {name}")


if __name__ == "__main__":
    main()
