"""The cluster's RPyC services over mutual TLS: only clients of the cluster's CA get served."""
from __future__ import annotations

import json
import os
import ssl
import stat
import subprocess
import sys
import threading

import pytest
import rpyc
from integration_helpers import free_port, wait_for_port

from cluster.config import ClusterConfig
from cluster.exceptions import ConfigError
from cluster.node.security import init_secrets, load_secrets
from cluster.node.services import ClusterServerService, tls_connect, tls_server

REFUSED = (EOFError, ConnectionError, OSError, ssl.SSLError)


@pytest.fixture
def xdg(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg"


@pytest.fixture
def secrets(xdg):
    return init_secrets(ClusterConfig.from_dict({"cluster_name": "tls_test"}))[0]


@pytest.fixture
def other_secrets(xdg):
    return init_secrets(ClusterConfig.from_dict({"cluster_name": "someone_else"}))[0]


@pytest.fixture
def server(secrets):
    port = free_port()
    srv = tls_server(ClusterServerService("S_0"), "127.0.0.1", port, secrets)
    thread = threading.Thread(target=srv.start, daemon=True)
    thread.start()
    assert wait_for_port(port), "the TLS server did not start"
    yield port
    srv.close()
    thread.join(timeout=10)


def test_a_client_of_the_cluster_is_served(server, secrets):
    conn = tls_connect("127.0.0.1", server, secrets)
    try:
        answer = json.loads(conn.root.ping())
        assert answer["server_id"] == "S_0" and answer["pid"] == os.getpid()
    finally:
        conn.close()


def test_classic_rpyc_is_refused(server):
    with pytest.raises(REFUSED):
        conn = rpyc.classic.connect("127.0.0.1", server)
        conn.modules.os.getcwd()


def test_tls_without_a_client_certificate_is_refused(server, secrets):
    with pytest.raises(REFUSED):
        conn = rpyc.ssl_connect("127.0.0.1", server, ca_certs=secrets.ca_cert, cert_reqs=ssl.CERT_REQUIRED,
                                config={"sync_request_timeout": 5})
        conn.root.ping()


def test_a_certificate_of_another_ca_is_refused(server, secrets, other_secrets):
    # the intruder trusts our server, but its own client certificate comes from another CA
    with pytest.raises(REFUSED):
        conn = rpyc.ssl_connect("127.0.0.1", server, keyfile=other_secrets.client_key,
                                certfile=other_secrets.client_cert, ca_certs=secrets.ca_cert,
                                cert_reqs=ssl.CERT_REQUIRED, config={"sync_request_timeout": 5})
        conn.root.ping()


def test_a_server_of_another_ca_is_not_trusted(server, secrets, other_secrets):
    # a client of the other cluster refuses our server: it cannot pose as theirs
    with pytest.raises(REFUSED):
        conn = rpyc.ssl_connect("127.0.0.1", server, keyfile=other_secrets.client_key,
                                certfile=other_secrets.client_cert, ca_certs=other_secrets.ca_cert,
                                cert_reqs=ssl.CERT_REQUIRED)
        conn.root.ping()


def test_secret_files_are_readable_by_their_owner_only(secrets):
    assert stat.S_IMODE(os.stat(secrets.directory).st_mode) == 0o700
    for name in os.listdir(secrets.directory):
        assert stat.S_IMODE(os.stat(os.path.join(secrets.directory, name)).st_mode) == 0o600, name
    assert len(secrets.redis_password()) >= 32


def test_a_secret_readable_by_others_is_refused(secrets):
    os.chmod(secrets.client_key, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_secrets(ClusterConfig.from_dict({"cluster_name": "tls_test"}))


def test_init_from_the_cli_creates_once(xdg, tmp_path):
    cli = os.path.join(os.path.dirname(sys.executable), "manage_cluster")
    config = tmp_path / "c.cfg"
    config.write_text("[CLUSTER]\ncluster_name = from_cli\n")
    env = dict(os.environ, XDG_CONFIG_HOME=str(xdg))
    first = subprocess.run([cli, "init", "--config", str(config)], env=env, capture_output=True, text=True)
    assert first.returncode == 0 and "created" in first.stdout, first.stderr
    key = (xdg / "cluster" / "from_cli" / "ca.key").read_bytes()
    again = subprocess.run([cli, "init", "--config", str(config)], env=env, capture_output=True, text=True)
    assert again.returncode == 0 and "nothing changed" in again.stdout
    assert (xdg / "cluster" / "from_cli" / "ca.key").read_bytes() == key
