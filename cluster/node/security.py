"""The cluster's secrets: a CA, server and client certificates, and the Redis password.

RPyC connections use mutual TLS: servers present a certificate signed by the
cluster's CA and require the same of every client, so nothing without the
cluster's client key can call a method. Everything lives in one folder per
cluster (`~/.config/cluster/<cluster_name>/`, mode 0700, files 0600); `manage_cluster
init` creates it and a first `start` does it by itself.
"""
from __future__ import annotations

import datetime
import ipaddress
import os
import secrets
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cluster.config import ClusterConfig
from cluster.exceptions import ConfigError

_FILES = ("ca.crt", "ca.key", "server.crt", "server.key", "client.crt", "client.key", "redis.password")
CERT_DAYS = 3650


def secrets_root() -> str:
    """Where clusters keep their secrets: $XDG_CONFIG_HOME/cluster, else ~/.config/cluster."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "cluster")


@dataclass(frozen=True)
class ClusterSecrets:
    """Paths of one cluster's secret files."""

    directory: str

    def path(self, name: str) -> str:
        return os.path.join(self.directory, name)

    @property
    def ca_cert(self) -> str:
        return self.path("ca.crt")

    @property
    def server_cert(self) -> str:
        return self.path("server.crt")

    @property
    def server_key(self) -> str:
        return self.path("server.key")

    @property
    def client_cert(self) -> str:
        return self.path("client.crt")

    @property
    def client_key(self) -> str:
        return self.path("client.key")

    def redis_password(self) -> str:
        with open(self.path("redis.password")) as fh:
            return fh.read().strip()

    def exists(self) -> bool:
        return all(os.path.isfile(self.path(f)) for f in _FILES)


def secrets_for(config: ClusterConfig) -> ClusterSecrets:
    """The secrets folder of this config's cluster (it may not exist yet)."""
    return ClusterSecrets(os.path.join(secrets_root(), config.cluster_name))


def load_secrets(config: ClusterConfig) -> ClusterSecrets:
    """The cluster's secrets, checked to exist and to be readable by their owner only."""
    found = secrets_for(config)
    if not found.exists():
        raise ConfigError(f"cluster {config.cluster_name!r} has no certificates in {found.directory}; "
                          "run `manage_cluster init` (or `manage_cluster start`, which does it)")
    for name in _FILES:
        mode = os.stat(found.path(name)).st_mode & 0o777
        if mode & 0o077:
            raise ConfigError(f"{found.path(name)} is readable by others (mode {mode:o}); "
                              f"run `chmod 600 {found.path(name)}`")
    return found


LOCATION_FILES = ("ca.crt", "server.crt", "server.key", "redis.password")


def location_secrets(directory: str) -> ClusterSecrets:
    """The secrets a location's servers need (no CA key, no client key), checked to be private."""
    found = ClusterSecrets(directory)
    for name in LOCATION_FILES:
        path = found.path(name)
        if not os.path.isfile(path):
            raise ConfigError(f"{path} is missing; `manage_cluster start` copies it from the master")
        mode = os.stat(path).st_mode & 0o777
        if mode & 0o077:
            raise ConfigError(f"{path} is readable by others (mode {mode:o}); run `chmod 600 {path}`")
    return found


def write_private(path: str, data: bytes) -> None:
    """Write a file only its owner can read, whole or not at all."""
    fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(path + ".tmp", 0o600)
    os.replace(path + ".tmp", path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _name(common_name: str, cluster_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, f"cluster {cluster_name}"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _alt_names(hosts: list[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(["localhost", "127.0.0.1", *hosts]):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def _issue(subject: x509.Name, key: ec.EllipticCurvePrivateKey, issuer: x509.Name,
           issuer_key: ec.EllipticCurvePrivateKey, *, ca: bool, usage: x509.ObjectIdentifier | None = None,
           hosts: list[str] | None = None) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=CERT_DAYS))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if hosts is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName(_alt_names(hosts)), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def init_secrets(config: ClusterConfig, force: bool = False) -> tuple[ClusterSecrets, bool]:
    """Create the CA, the server and client certificates and the Redis password, once.

    Returns (secrets, created): an existing set is kept unless `force`.
    """
    found = secrets_for(config)
    if found.exists() and not force:
        return load_secrets(config), False
    os.makedirs(found.directory, mode=0o700, exist_ok=True)
    os.chmod(found.directory, 0o700)
    cluster = config.cluster_name
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name(f"cluster {cluster} CA", cluster)
    ca_cert = _issue(ca_name, ca_key, ca_name, ca_key, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = _issue(_name(f"cluster {cluster} server", cluster), server_key, ca_name, ca_key, ca=False,
                         usage=ExtendedKeyUsageOID.SERVER_AUTH, hosts=list(config.locations))
    client_key = ec.generate_private_key(ec.SECP256R1())
    client_cert = _issue(_name(f"cluster {cluster} client", cluster), client_key, ca_name, ca_key, ca=False,
                         usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    pem = serialization.Encoding.PEM
    write_private(found.ca_cert, ca_cert.public_bytes(pem))
    write_private(found.path("ca.key"), _key_pem(ca_key))
    write_private(found.server_cert, server_cert.public_bytes(pem))
    write_private(found.server_key, _key_pem(server_key))
    write_private(found.client_cert, client_cert.public_bytes(pem))
    write_private(found.client_key, _key_pem(client_key))
    write_private(found.path("redis.password"), (secrets.token_urlsafe(32) + "\n").encode())
    return found, True
