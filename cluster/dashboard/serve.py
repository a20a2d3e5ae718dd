"""Serve the dashboard (`mapreduce dashboard`): the password, the address rule, the WSGI server."""
from __future__ import annotations

import ipaddress
import logging
import os
import secrets
import socket
import stat

from cluster import defaults
from cluster.config import ClusterConfig
from cluster.exceptions import ConfigError

log = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    """Whether `host` names only this machine (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def configured_password(config: ClusterConfig) -> str | None:
    """$CLUSTER_DASHBOARD_PASSWORD, else the config key dashboard_password (None: neither is set)."""
    env = os.environ.get(defaults.DASHBOARD_PASSWORD_ENV, "").strip()
    if env:
        return env
    if config.dashboard_password and os.path.isfile(config.source):
        mode = os.stat(config.source).st_mode
        if mode & (stat.S_IRGRP | stat.S_IROTH):
            log.warning("config file %s holds dashboard_password but others can read it: chmod 600 %s",
                        config.source, config.source)
    return config.dashboard_password


def resolve_password(config: ClusterConfig, host: str) -> tuple[str, bool]:
    """The login password and whether it was made up for this run (only on loopback, when none is
    configured; like a notebook server's token, it is printed for whoever started the dashboard)."""
    password = configured_password(config)
    if password and not is_loopback(host) and len(password) < defaults.DASHBOARD_MIN_PASSWORD_CHARS:
        raise ConfigError(
            f"the dashboard would listen on {host}, reachable from other machines, with a password of "
            f"{len(password)} characters: use at least {defaults.DASHBOARD_MIN_PASSWORD_CHARS} (e.g. "
            "`python -c 'import secrets; print(secrets.token_urlsafe(16))'`), or listen on 127.0.0.1")
    if password:
        return password, False
    if not is_loopback(host):
        raise ConfigError(
            f"the dashboard would listen on {host}, reachable from other machines, without a password: "
            f"set dashboard_password in {config.source if os.path.isfile(config.source) else 'the config'} "
            f"(or ${defaults.DASHBOARD_PASSWORD_ENV}), or listen on 127.0.0.1")
    return secrets.token_urlsafe(12), True


def plain_http_warning(host: str) -> str | None:
    """What to say when the dashboard serves plain HTTP beyond this machine (None on loopback)."""
    if is_loopback(host):
        return None
    return (f"warning: the dashboard serves plain HTTP on {host}: the password and the session cookie cross "
            "the network unencrypted; put it behind a TLS proxy (nginx, Caddy) or listen on 127.0.0.1 and reach "
            "it through an SSH tunnel (ssh -L 8787:127.0.0.1:8787 master)")


def check_port(host: str, port: int) -> None:
    """Fail with a clear message when the address is taken or cannot be used."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise ConfigError(f"the dashboard cannot listen on {host}:{port}: {exc.strerror} "
                              "(another program uses the port? choose another with --port)") from None


def serve(config: ClusterConfig, host: str, port: int, password: str) -> None:
    """Serve until interrupted, with waitress (a production WSGI server; no debugger, several threads)."""
    from waitress import serve as waitress_serve

    from cluster.dashboard import create_app

    trusted = ["localhost", "127.0.0.1", "[::1]", host] if is_loopback(host) else None
    app = create_app(config, password, trusted_hosts=trusted)
    waitress_serve(app, host=host, port=port, threads=defaults.DASHBOARD_THREADS, ident="cluster-dashboard",
                   clear_untrusted_proxy_headers=True, max_request_body_size=defaults.DASHBOARD_MAX_UPLOAD_BYTES)
