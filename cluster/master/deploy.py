"""Put the cluster's code, projects, config and secrets on a location; check it can run them.

The master pushes its own `cluster` package to `<code_dir>/cluster` on every location
(the servers run it with PYTHONPATH=<code_dir>), so every location runs the master's
code; the location's Python (`python_executable`) must be the master's version and
have the dependencies installed (`init/install.sh` on every machine). A location whose
management server was started from other code is found by a digest of the sources.
"""
from __future__ import annotations

import os
import shlex
import sys
import tarfile
import tempfile
import uuid

from cluster.config import ClusterConfig
from cluster.exceptions import DeployError, RemoteCommandError
from cluster.master.remote import Remote
from cluster.node.location import folder_digest, package_dir
from cluster.node.security import LOCATION_FILES, ClusterSecrets

DEPENDENCIES = ("rpyc", "redis", "ujson", "paramiko", "cryptography", "click", "tqdm", "lz4", "zstandard")
PUSH_TIMEOUT = 300.0
VERSIONS_KEPT = 4  # of a pushed tree, on each location


def config_path(config: ClusterConfig) -> str:
    """Where a location keeps the config the master gave it."""
    return os.path.join(config.code_dir, "cluster.cfg")


def secrets_dir(config: ClusterConfig) -> str:
    """Where a location keeps its copy of the cluster's secrets (no CA key, no client key)."""
    return os.path.join(config.code_dir, "secrets")


def _skip(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    parts = info.name.split("/")
    if "__pycache__" in parts or info.name.endswith((".pyc", ".pyo")) or any(p.startswith(".") for p in parts[1:]):
        return None
    return info


def push_tree(remote: Remote, src_dir: str, dest_dir: str) -> bool:
    """Make `dest_dir` on the location a copy of `src_dir`; return whether anything was sent.

    Each content goes once into `<dest_dir>.versions/<digest>` (one tar.gz, unpacked under a name
    of its own, renamed in whole) and `dest_dir` becomes a symlink to it in one rename: pushes
    that run at once never collide, a reader sees the old tree or the new one, and a push of
    sources the location already has sends nothing. The newest few versions are kept (a run
    that started before a push may still import its files)."""
    digest = folder_digest(src_dir)
    token = uuid.uuid4().hex[:12]
    versions = dest_dir + ".versions"
    q = {k: shlex.quote(v) for k, v in dict(
        dest=dest_dir, versions=versions, version=f"{versions}/{digest}", new=f"{versions}/.new-{token}",
        tar=f"{versions}/.{token}.tar.gz", link=f"{dest_dir}.link-{token}", old=f"{dest_dir}.old-{token}").items()}
    have = remote.run(f"test -d {q['version']} && touch {q['version']}", check=False).exit_code == 0
    if not have:
        with tempfile.NamedTemporaryFile(suffix=".tar.gz") as tmp:
            with tarfile.open(tmp.name, "w:gz", compresslevel=3) as tar:
                tar.add(src_dir, arcname=".", filter=_skip)
            remote.run(f"mkdir -p {q['versions']}")
            remote.put(tmp.name, f"{versions}/.{token}.tar.gz", timeout=PUSH_TIMEOUT)
        # a push of the same digest at the same moment may have renamed its copy in first: keep that one
        remote.run(f"set -e; mkdir -p {q['new']}; tar -xzf {q['tar']} -C {q['new']}; rm -f {q['tar']}; "
                   f"mv -T {q['new']} {q['version']} 2>/dev/null || rm -rf {q['new']}", timeout=PUSH_TIMEOUT)
    # a folder from before versions (a real directory) is moved aside once; then the link is renamed in
    # the link is relative (the folder may be reached by another path, e.g. through a mount)
    target = shlex.quote(f"{os.path.basename(dest_dir)}.versions/{digest}")
    remote.run(f"set -e; ln -sfn {target} {q['link']}; "
               f"if [ -d {q['dest']} ] && [ ! -L {q['dest']} ]; then mv -T {q['dest']} {q['old']} || true; fi; "
               f"mv -T {q['link']} {q['dest']}; rm -rf {q['old']}; "
               f"cd {q['versions']} && ls -1t | tail -n +{VERSIONS_KEPT + 1} | grep -vx {shlex.quote(digest)} "
               "| xargs -r rm -rf --", timeout=PUSH_TIMEOUT)
    return not have


def check_python(remote: Remote, config: ClusterConfig) -> None:
    """The location's interpreter exists, is the master's Python version and has the dependencies."""
    py = config.python_executable
    want = f"{sys.version_info[0]}.{sys.version_info[1]}"
    probe = ("import sys; print('%d.%d' % sys.version_info[:2]); "
             f"import {', '.join(DEPENDENCIES)}")
    result = remote.run(f"{shlex.quote(py)} -c {shlex.quote(probe)}", check=False)
    got = result.stdout.strip().splitlines()[:1]
    if result.exit_code == 127 or not got:
        raise DeployError(f"{remote.host} has no Python at {py}: install the project there with init/install.sh "
                          f"at the same path as on the master, or set python_executable in the config "
                          f"({result.stderr.strip()[-300:]})")
    if got[0] != want:
        raise DeployError(f"{remote.host} runs Python {got[0]} at {py}, the master runs {want}: the servers "
                          f"must run the master's Python version (intermediate files use marshal); install "
                          f"Python {want} there or point python_executable at it")
    if result.exit_code != 0:
        raise DeployError(f"{remote.host}: {py} lacks packages the servers need "
                          f"({result.stderr.strip().splitlines()[-1] if result.stderr.strip() else 'import failed'}); "
                          "run init/install.sh on that machine")


def _put_private(remote: Remote, data: bytes, dest: str) -> None:
    with tempfile.NamedTemporaryFile() as tmp:
        os.chmod(tmp.name, 0o600)
        tmp.write(data)
        tmp.flush()
        remote.put(tmp.name, dest)
    remote.run(f"chmod 600 {shlex.quote(dest)}")


def deploy(remote: Remote, config: ClusterConfig, secrets: ClusterSecrets) -> None:
    """Make the dirs, check Python, push the code, the projects, the config and the secrets."""
    dirs = (config.base_dir, config.working_dir, config.logs_dir, config.auxiliary_dir, config.code_dir,
            config.base_projects_dir)
    try:
        remote.run("mkdir -p " + " ".join(shlex.quote(d) for d in dirs))
        private = shlex.quote(secrets_dir(config))
        remote.run(f"mkdir -p -m 700 {private} && chmod 700 {private}")
    except RemoteCommandError as exc:
        raise DeployError(f"cannot make the cluster's directories on {remote.host}: {exc}") from None
    check_python(remote, config)
    push_tree(remote, package_dir(), os.path.join(config.code_dir, "cluster"))
    if os.path.isdir(config.projects_dir):
        push_tree(remote, config.projects_dir, config.base_projects_dir)
    _put_private(remote, config.to_ini().encode(), config_path(config))
    for name in LOCATION_FILES:
        with open(secrets.path(name), "rb") as fh:
            _put_private(remote, fh.read(), os.path.join(secrets_dir(config), name))


def push_project(remote: Remote, config: ClusterConfig, project_name: str) -> None:
    """Send one project's current sources (before each run of one of its jobs)."""
    src = os.path.join(config.projects_dir, project_name)
    push_tree(remote, src, os.path.join(config.base_projects_dir, project_name))


def server_env_prefix(config: ClusterConfig) -> str:
    """`env PYTHONPATH=<code_dir>` so the location's Python imports the pushed package."""
    return f"env PYTHONPATH={shlex.quote(config.code_dir)}"
