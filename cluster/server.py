"""RPyC services of the cluster, served only over mutual TLS.

Never `rpyc_classic`/SlaveService: classic mode is remote code execution for anyone
who reaches the port. Every service here is a narrow `rpyc.Service` with `exposed_`
methods, `allow_pickle=False`, behind an `SSLAuthenticator` that requires a client
certificate signed by the cluster's CA, so a connection without one is refused before
any method is served.
"""
from __future__ import annotations

import os
import ssl

import rpyc
from rpyc.utils.authenticators import AuthenticationError, SSLAuthenticator
from rpyc.utils.server import ThreadedServer

from cluster.security import ClusterSecrets

PROTOCOL_CONFIG = {"allow_pickle": False, "allow_public_attrs": False, "sync_request_timeout": 60}


class _TLSAuthenticator(SSLAuthenticator):
    """SSLAuthenticator that also turns a client hanging up mid-handshake into a refusal."""

    def __call__(self, sock):
        try:
            return super().__call__(sock)
        except OSError as exc:
            raise AuthenticationError(f"TLS handshake failed: {exc}") from exc


class ClusterServerService(rpyc.Service):
    """The RPyC service of one cluster server (its phase loop arrives with the cluster runtime)."""

    def __init__(self, server_id: str):
        super().__init__()
        self.server_id = server_id

    def exposed_ping(self) -> dict:
        """Who answers: the server id and its process id."""
        return {"server_id": self.server_id, "pid": os.getpid()}


def tls_server(service: rpyc.Service, host: str, port: int, secrets: ClusterSecrets) -> ThreadedServer:
    """A threaded RPyC server for `service` that accepts only clients of this cluster's CA."""
    authenticator = _TLSAuthenticator(secrets.server_key, secrets.server_cert, ca_certs=secrets.ca_cert,
                                     cert_reqs=ssl.CERT_REQUIRED)
    return ThreadedServer(service, hostname=host, port=port, authenticator=authenticator,
                          protocol_config=PROTOCOL_CONFIG, auto_register=False)


def tls_connect(host: str, port: int, secrets: ClusterSecrets, timeout: float = 10.0) -> rpyc.Connection:
    """A connection to a cluster service, authenticated with the cluster's client certificate."""
    conn = rpyc.ssl_connect(host, port, keyfile=secrets.client_key, certfile=secrets.client_cert,
                            ca_certs=secrets.ca_cert, cert_reqs=ssl.CERT_REQUIRED,
                            config={**PROTOCOL_CONFIG, "sync_request_timeout": timeout})
    return conn
