"""RPyC services of the cluster, served only over mutual TLS.

Never `rpyc_classic`/SlaveService: classic mode is remote code execution for anyone
who reaches the port. Every service here is a narrow `rpyc.Service` with `exposed_`
methods, `allow_pickle=False`, behind an `SSLAuthenticator` that requires a client
certificate signed by the cluster's CA, so a connection without one is refused before
any method is served.
"""
from __future__ import annotations

import argparse
import io
import logging
import os
import shutil
import ssl
import sys
import threading
import time

import redis
import rpyc
import ujson
from rpyc.utils.authenticators import AuthenticationError, SSLAuthenticator
from rpyc.utils.server import ThreadedServer

from cluster import defaults
from cluster.config import ClusterConfig
from cluster.engine.inputs import HoldState, plan_inputs
from cluster.engine.reducer import commit_output, discard_run
from cluster.engine.store import store_options
from cluster.engine.store_output import StoreOutput
from cluster.layout import JobLayout
from cluster.logfile import RotatingFile
from cluster.node import control, location
from cluster.node.location import code_digest
from cluster.node.security import ClusterSecrets, location_secrets
from cluster.node.server import ClusterServer

log = logging.getLogger(__name__)

PROTOCOL_CONFIG = {"allow_pickle": False, "allow_public_attrs": False, "sync_request_timeout": 60}


class _TLSAuthenticator(SSLAuthenticator):
    """SSLAuthenticator that also turns a client hanging up mid-handshake into a refusal."""

    def __call__(self, sock):
        try:
            return super().__call__(sock)
        except OSError as exc:
            raise AuthenticationError(f"TLS handshake failed: {exc}") from exc


class ClusterServerService(rpyc.Service):
    """The RPyC service of one cluster server: who it is, what it does, stop it.

    Work reaches the server through its location's Redis (node/server.py); this service
    only answers and stops. Answers are JSON strings: with pickling off, a dict would
    travel as a remote reference.
    """

    def __init__(self, server_id: str, loop: ClusterServer | None = None):
        super().__init__()
        self.server_id = server_id
        self.loop = loop

    def exposed_ping(self) -> str:
        """Who answers: the server id and its process id."""
        return ujson.dumps({"server_id": self.server_id, "pid": os.getpid()})

    def exposed_status(self) -> str:
        """The current job, phase and memory of this server."""
        return ujson.dumps(self.loop.status() if self.loop else {"server": self.server_id, "pid": os.getpid()})

    def exposed_stop(self) -> None:
        """Finish nothing new and exit (the running phase, if any, is stopped)."""
        if self.loop is not None:
            self.loop.stopping.set()


class ManagementService(rpyc.Service):
    """One per location: dirs, machine facts, its cluster servers and Redis, job files there."""

    def __init__(self, config: ClusterConfig, host: str, config_path: str, secrets_dir: str):
        super().__init__()
        self.config = config
        self.host = host
        self.config_path = config_path
        self.secrets_dir = secrets_dir
        self.server: ThreadedServer | None = None

    def _layout(self, job_name: str) -> JobLayout:
        return JobLayout(self.config.base_dir, self.config.auxiliary_dir, job_name)

    def exposed_ping(self) -> str:
        """This location's management server: pid, Python version, package version."""
        return ujson.dumps({"location": self.host, "pid": os.getpid(), "code": code_digest(),
                            "python": f"{sys.version_info[0]}.{sys.version_info[1]}"})

    def exposed_make_dirs(self) -> None:
        for d in (self.config.base_dir, self.config.working_dir, self.config.logs_dir, self.config.auxiliary_dir,
                  self.config.base_projects_dir):
            os.makedirs(d, exist_ok=True)

    def exposed_info(self) -> str:
        """Free disk under base_dir, memory, load: for `status`."""
        disk = shutil.disk_usage(self.config.base_dir)
        mem = {}
        with open("/proc/meminfo") as fh:
            for line in fh:
                name, value = line.split(":", 1)
                mem[name] = int(value.split()[0]) * 1024
        return ujson.dumps({"disk_free": disk.free, "disk_total": disk.total, "mem_total": mem.get("MemTotal", 0),
                            "mem_available": mem.get("MemAvailable", 0), "load": os.getloadavg()})

    def exposed_start_redis(self) -> int:
        secrets = location_secrets(self.secrets_dir)
        return location.location_redis(self.config, self.host).start(
            control.redis_password(self.config, secrets))

    def exposed_stop_redis(self) -> bool:
        return location.location_redis(self.config, self.host).stop()

    def exposed_sessions(self) -> str:
        """Which of this location's screen sessions of this cluster run."""
        running = location.screen_sessions()
        roles = [location.MANAGEMENT, *self.config.servers_by_location()[self.host]]
        return ujson.dumps([r for r in roles if location.session_name(self.config, r) in running])

    def exposed_start_servers(self, server_ids: str) -> str:
        """Start the named servers of this location in screen (those not running yet)."""
        running = location.screen_sessions()
        started = []
        for sid in ujson.loads(server_ids):
            if sid not in self.config.servers_by_location()[self.host]:
                raise ValueError(f"{sid} is not a server of {self.host}")
            name = location.session_name(self.config, sid)
            if name not in running:
                location.start_session(name, location.server_command(self.config_path, self.secrets_dir,
                                                                     "serve", sid))
                started.append(sid)
        return ujson.dumps(started)

    def exposed_end_sessions(self, roles: str) -> str:
        """End the named screen sessions of this cluster here (servers that did not stop)."""
        return ujson.dumps([r for r in ujson.loads(roles)
                            if location.quit_session(location.session_name(self.config, r))])

    def exposed_log_tail(self, role: str, lines: int = 50) -> str:
        return location.tail(location.log_path(self.config, role), lines)

    def exposed_plan_inputs(self, job: str, servers: str) -> str:
        """Which of this location's servers maps which of its files (decided once, here)."""
        job_dict = ujson.loads(job)
        plan, notes = plan_inputs(job_dict, ujson.loads(servers), self._layout(job_dict["job_name"]),
                                  store_options(self.config.s3_endpoint_url), location=self.host)
        return ujson.dumps({"plan": plan, "notes": notes})

    def exposed_mapped_files(self, job_name: str) -> str:
        """The files this location's servers mapped in successful runs (hold_state)."""
        return ujson.dumps(sorted(HoldState(self._layout(job_name)).mapped()))

    def exposed_upload_output(self, job_name: str, run_id: str, output_url: str) -> str:
        """Put this location's staged reduce output of a run under the run's prefix at output_url; the
        master publishes it (one marker) once every location has."""
        staging = self._layout(job_name).staging_dir(run_id)
        local = [os.path.join(staging, f) for f in os.listdir(staging)] if os.path.isdir(staging) else []
        return ujson.dumps(StoreOutput(output_url, store_options(self.config.s3_endpoint_url)).upload(run_id, local))

    def exposed_prepare_job(self, job_name: str) -> None:
        """Remove what an earlier run of the job left between phases."""
        self._layout(job_name).clear_intermediate()

    def exposed_commit_job(self, job_name: str, run_id: str, replace: bool, mapped: str) -> str:
        """Publish a successful run's output here and record its mapped files (hold_state)."""
        layout = self._layout(job_name)
        hold = HoldState(layout)
        for sid, files in ujson.loads(mapped).items():
            hold.record(run_id, sid, files)
        out = commit_output(layout, run_id, replace=replace)
        hold.commit(run_id)
        return out

    def exposed_discard_job(self, job_name: str, run_id: str) -> None:
        """Remove what a failed run left here; the previous output stays."""
        layout = self._layout(job_name)
        discard_run(layout, run_id)
        HoldState(layout).discard(run_id)

    def exposed_output_files(self, job_name: str) -> str:
        return ujson.dumps(self._layout(job_name).output_files())

    def exposed_shutdown(self) -> None:
        """Stop this management server once the answer is sent."""
        if self.server is not None:
            threading.Timer(0.2, self.server.close).start()


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


class _Tee(io.TextIOBase):
    """Writes to the screen window and to the server's log file."""

    def __init__(self, log, window):
        self.log = log
        self.window = window

    def write(self, text: str) -> int:
        self.log.write(text)
        try:
            self.window.write(text)
        except (OSError, ValueError):
            pass  # the window is gone (screen ended): the log file still has everything
        return len(text)

    def flush(self) -> None:
        self.log.flush()
        try:
            self.window.flush()
        except (OSError, ValueError):
            pass


def _log_to(path: str) -> None:
    """Everything the process prints (user functions included) goes to the window and to `path`."""
    logfile = RotatingFile(path)
    sys.stdout = _Tee(logfile, sys.__stdout__)
    sys.stderr = _Tee(logfile, sys.__stderr__)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("MANAGEMENT").setLevel(logging.WARNING)  # rpyc's per-connection lines (certificates...)


def _beat_management(config: ClusterConfig, host: str, secrets: ClusterSecrets) -> None:
    """Say in the location's Redis, every second, that this management server runs: a master
    running a job notices within seconds when it is gone (it is needed to publish the output)."""
    client = control.redis_client(config, host, control.redis_password(config, secrets), timeout=5.0)
    key = control.Keys(config.cluster_name).management(host)
    failing = False
    while True:
        try:
            client.set(key, os.getpid(), ex=defaults.HEARTBEAT_TTL_SECONDS)
            failing = False
        except redis.RedisError as exc:  # Redis starts after this server, and may be restarted
            if not failing:
                log.info("cannot write my heartbeat in the Redis of %s yet (%s); retrying every second", host, exc)
            failing = True
        time.sleep(defaults.HEARTBEAT_EVERY_SECONDS)


def main(argv: list[str] | None = None) -> None:
    """`python -m cluster.node.services management|serve ...`: started by manage_cluster in a screen session."""
    parser = argparse.ArgumentParser(prog="python -m cluster.node.services",
                                     description="A management server or a cluster server (started by "
                                                 "`manage_cluster start` in a screen session).")
    parser.add_argument("role", choices=["management", "serve"])
    parser.add_argument("server_id", nargs="?", help="S_n, for serve")
    parser.add_argument("--location", help="this location's host as the config names it, for management")
    parser.add_argument("--config", required=True)
    parser.add_argument("--secrets", required=True)
    args = parser.parse_args(argv)
    config = ClusterConfig.from_file(args.config, check_dirs=False)
    role = location.MANAGEMENT if args.role == "management" else args.server_id
    _log_to(location.log_path(config, role))
    secrets = location_secrets(args.secrets)
    if args.role == "management":
        service = ManagementService(config, args.location, os.path.abspath(args.config), args.secrets)
        server = tls_server(service, location.address(args.location), config.management_port, secrets)
        service.server = server
        log.info("management server of %s on port %d", args.location, config.management_port)
        threading.Thread(target=_beat_management, args=(config, args.location, secrets), daemon=True,
                         name="heartbeat").start()
        server.start()
        return
    loop = ClusterServer(config, args.server_id, control.redis_password(config, secrets))
    server = tls_server(ClusterServerService(args.server_id, loop), location.address(loop.location),
                        config.server_port(args.server_id), secrets)
    threading.Thread(target=server.start, daemon=True, name="rpyc").start()
    try:
        loop.serve()
    finally:
        server.close()


if __name__ == "__main__":
    main()
