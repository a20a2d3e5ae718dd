"""`mapreduce dashboard` as a user starts it: where it listens, which password, clear refusals."""
from __future__ import annotations

import http.cookiejar
import os
import re
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from dashboard_helpers import csrf_token, stop_process
from integration_helpers import MAPREDUCE, free_port, wait_for_port

from cluster import defaults


def write_config(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "cluster.cfg"
    path.write_text(f"[CLUSTER]\ncompute_dir = {tmp_path / 'compute'}\nlocal_working_dir = {tmp_path / 'master'}\n"
                    + extra)
    path.chmod(0o600)
    return path


def env_without_password() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != defaults.DASHBOARD_PASSWORD_ENV}


def login(port: int, password: str) -> int:
    """Log in over real HTTP; return the status of the queue page afterwards."""
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    base = f"http://127.0.0.1:{port}"
    token = csrf_token(opener.open(base + "/login", timeout=10).read().decode())
    form = urllib.parse.urlencode({"password": password, "csrf_token": token}).encode()
    try:
        opener.open(base + "/login", data=form, timeout=10)
    except urllib.error.HTTPError as exc:
        return exc.code
    return opener.open(base + "/jobs", timeout=10).status


class Served:
    def __init__(self, config: Path, port: int, env: dict[str, str]):
        self.proc = subprocess.Popen([str(MAPREDUCE), "dashboard", "--config", str(config), "--port", str(port)],
                                     env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.port = port

    def __enter__(self) -> Served:
        assert wait_for_port(self.port, 20, alive=lambda: self.proc.poll() is None), self.proc.stdout.read()
        return self

    def __exit__(self, *exc) -> None:
        stop_process(self.proc)


def test_without_a_password_it_refuses_any_address_but_loopback(tmp_path):
    config = write_config(tmp_path)
    proc = subprocess.run([str(MAPREDUCE), "dashboard", "--config", str(config), "--host", "0.0.0.0",
                           "--port", str(free_port())], env=env_without_password(), capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 1
    assert "without a password" in proc.stderr and "dashboard_password" in proc.stderr


def test_without_a_password_on_loopback_it_makes_one_up_and_prints_it(tmp_path):
    port = free_port()
    with Served(write_config(tmp_path), port, env_without_password()) as served:
        first = ""
        deadline = time.monotonic() + 10
        while "log in with" not in first and time.monotonic() < deadline:
            first += served.proc.stdout.readline()
        password = re.search(r"log in with (\S+)", first).group(1)
        assert login(port, "a guess") == 401
        assert login(port, password) == 200


def test_the_password_comes_from_the_config_or_the_environment(tmp_path):
    port = free_port()
    with Served(write_config(tmp_path, "dashboard_password = from the config\n"), port, env_without_password()):
        assert login(port, "from the config") == 200
    port = free_port()
    env = dict(os.environ, **{defaults.DASHBOARD_PASSWORD_ENV: "from the environment"})
    with Served(write_config(tmp_path, "dashboard_password = from the config\n"), port, env):
        assert login(port, "from the environment") == 200
        assert login(port, "from the config") == 401


def test_a_port_in_use_is_named(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run([str(MAPREDUCE), "dashboard", "--config", str(write_config(tmp_path)), "--port",
                               str(port)], env=dict(os.environ, **{defaults.DASHBOARD_PASSWORD_ENV: "pw"}),
                              capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1 and f"cannot listen on 127.0.0.1:{port}" in proc.stderr


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
def test_loopback_addresses(host):
    from cluster.dashboard.serve import is_loopback

    assert is_loopback(host)
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3") and not is_loopback("master.example")


def test_off_loopback_a_short_password_is_refused_and_plain_http_is_warned_of(tmp_path):
    from cluster.dashboard.serve import plain_http_warning

    config = write_config(tmp_path, "dashboard_password = x\n")
    proc = subprocess.run([str(MAPREDUCE), "dashboard", "--config", str(config), "--host", "0.0.0.0",
                           "--port", str(free_port())], env=env_without_password(), capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 1
    assert "password of 1 characters" in proc.stderr and f"at least {defaults.DASHBOARD_MIN_PASSWORD_CHARS}" in \
        proc.stderr
    port = free_port()  # on loopback a short password is the user's choice
    with Served(config, port, env_without_password()):
        assert login(port, "x") == 200
    warning = plain_http_warning("10.1.2.3")
    assert warning and "plain HTTP" in warning and "TLS proxy" in warning and "ssh -L" in warning
    assert plain_http_warning("127.0.0.1") is None
