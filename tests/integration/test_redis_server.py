"""A location's redis-server: password in a 0600 file, loopback only, stopped by its own pid only."""
from __future__ import annotations

import os
import stat
import subprocess

import pytest
import redis
from integration_helpers import free_port
from redis.backoff import NoBackoff
from redis.retry import Retry

from cluster.node.redis_server import RedisServer

PASSWORD = "test-password-0123456789abcdef"
NO_RETRY = Retry(NoBackoff(), 0)


@pytest.fixture
def server(tmp_path):
    srv = RedisServer(str(tmp_path / "redis"), "127.0.0.1", free_port())
    yield srv
    srv.stop()


def test_start_requires_the_password_and_listens_on_the_address_only(server):
    pid = server.start(PASSWORD)
    assert server.pid() == pid
    assert server.client(PASSWORD).set("k", b"v") and server.client(PASSWORD).get("k") == b"v"
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host="127.0.0.1", port=server.port, socket_timeout=5, retry=NO_RETRY).ping()
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host="127.0.0.1", port=server.port, password="wrong", socket_timeout=5, retry=NO_RETRY).ping()
    assert server.client(PASSWORD).config_get("bind")["bind"] == "127.0.0.1"
    assert stat.S_IMODE(os.stat(server.conf_path).st_mode) == 0o600
    with open(f"/proc/{pid}/cmdline", "rb") as fh:
        assert PASSWORD.encode() not in fh.read(), "the password must not be on the command line"


def test_start_twice_keeps_the_running_server(server):
    first = server.start(PASSWORD)
    assert server.start(PASSWORD) == first


def test_stop_ends_it_and_a_second_stop_does_nothing(server):
    pid = server.start(PASSWORD)
    assert server.stop() is True
    assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] == "Z"
    assert server.pid() is None and server.stop() is False
    with pytest.raises(redis.ConnectionError):
        server.client(PASSWORD, timeout=1).ping()


def test_a_pid_file_naming_another_process_is_never_signalled(server):
    os.makedirs(server.directory, exist_ok=True)
    other = subprocess.Popen(["sleep", "30"])
    try:
        with open(server.pid_path, "w") as fh:
            fh.write(f"{other.pid}\n")
        assert server.pid() is None
        assert server.stop() is False
        assert other.poll() is None, "a process that is not this redis-server was signalled"
    finally:
        other.kill()
        other.wait()
