"""ClusterManager: start, stop, kill, status and attach the cluster's servers; run jobs on them.

Each location gets the master's code, projects, config and secrets (deploy.py), a
redis-server, a management server in screen session `<cluster_name>_management` and
`number_of_servers_per_location` cluster servers in sessions `<cluster_name>_<server_id>`.
Locations are handled in parallel; every wait has a timeout and names what it waited for.
"""
from __future__ import annotations

import logging
import os
import shlex
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import redis
import rpyc
import ujson
from redis import Redis  # in the class, `redis` names its method

from cluster import defaults
from cluster.config import ClusterConfig
from cluster.exceptions import ClusterError, ClusterNotRunning, DeployError, WaitTimedOut
from cluster.layout import JobLayout
from cluster.master import deploy
from cluster.master.remote import Remote, is_local, remote_for
from cluster.node import control, location
from cluster.node.security import ClusterSecrets, init_secrets, load_secrets, secrets_for
from cluster.node.services import tls_connect
from cluster.timing import wait_until

log = logging.getLogger(__name__)


def for_each_host(hosts: tuple[str, ...] | list[str], fn: Callable[[str], Any]) -> dict[str, Any]:
    """Run fn(host) for every host at once; raise one error naming every host that failed."""
    with ThreadPoolExecutor(max_workers=min(16, len(hosts))) as pool:
        futures = {h: pool.submit(fn, h) for h in hosts}
    results, failures = {}, []
    for host, future in futures.items():
        exc = future.exception()
        if exc is None:
            results[host] = future.result()
        elif isinstance(exc, ClusterError | OSError | EOFError | redis.RedisError):
            failures.append((host, exc))
        else:
            raise exc
    if failures:
        if len(failures) == 1 and isinstance(failures[0][1], ClusterError):
            raise failures[0][1]
        raise ClusterError("; ".join(f"location {h}: {type(e).__name__}: {e}" for h, e in failures))
    return results


class ClusterManager:
    """The master's handle on one cluster (one config)."""

    def __init__(self, config: ClusterConfig, echo: Callable[[str], None] | None = None):
        self.config = config
        self.keys = control.Keys(config.cluster_name)
        self.echo = echo or log.info
        self._secrets: ClusterSecrets | None = None

    # --- reaching a location --------------------------------------------------------------
    @property
    def secrets(self) -> ClusterSecrets:
        if self._secrets is None:
            self._secrets = load_secrets(self.config)
        return self._secrets

    def remote(self, host: str) -> Remote:
        return remote_for(self.config, host)

    def redis(self, host: str, timeout: float = 10.0) -> redis.Redis:
        return control.redis_client(self.config, host, control.redis_password(self.config, self.secrets), timeout)

    def management(self, host: str, timeout: float = 30.0) -> rpyc.Connection:
        return tls_connect(host, self.config.management_port, self.secrets, timeout=timeout)

    def push_project(self, host: str, project_name: str) -> None:
        """Send one project's current sources to a location (before each run of one of its jobs)."""
        with self.remote(host) as remote:
            deploy.push_project(remote, self.config, project_name)

    def call(self, host: str, method: str, *args: Any) -> Any:
        """Call one method of a location's management service; its failure becomes a ClusterError
        with the location's message (the remote traceback goes to the debug log)."""
        try:
            conn = self.management(host)
        except (OSError, EOFError) as exc:
            raise ClusterError(f"location {host}: its management server does not answer on port "
                               f"{self.config.management_port} ({exc}); `manage_cluster start` starts it "
                               "again") from None
        try:
            return getattr(conn.root, method)(*args)
        except (OSError, EOFError) as exc:
            raise ClusterError(f"location {host}: the management server stopped answering ({exc}); "
                               "`manage_cluster status` shows it") from None
        except Exception as exc:  # an exception raised on the location, relayed by rpyc
            text = str(exc)
            log.debug("%s on %s failed:\n%s", method, host, text)
            raise ClusterError(f"location {host}: {text.split(chr(10) + chr(10) + '=====', 1)[0].strip()}") from None
        finally:
            conn.close()

    def _try_management(self, host: str) -> rpyc.Connection | None:
        try:
            return self.management(host)
        except (OSError, EOFError):
            return None

    def for_each_location(self, fn: Callable[[str], Any]) -> dict[str, Any]:
        """Run fn(host) for every location at once; raise one error naming every location that failed."""
        return for_each_host(self.config.locations, fn)

    def alive(self, client: Redis, servers: list[str]) -> dict[str, dict | None]:
        """Each server's last heartbeat (None when its key expired: the server is down)."""
        values = client.mget([self.keys.alive(s) for s in servers])
        return {s: ujson.loads(v) if v else None for s, v in zip(servers, values, strict=True)}

    # --- start ------------------------------------------------------------------------------
    def start(self) -> bool:
        """Bring every location up (secrets first, when the cluster has none); return whether anything started."""
        found, created = init_secrets(self.config)
        if created:
            self.echo(f"created the certificates and Redis password of cluster {self.config.cluster_name!r} "
                      f"in {found.directory} (readable only by you)")
        self._secrets = found
        started = self.for_each_location(self._start_location)
        if not any(started.values()):
            self.echo(f"cluster {self.config.cluster_name!r} is already running; nothing changed")
            return False
        for host, what in started.items():
            if what:
                self.echo(f"{host}: {'; '.join(what)}")
        return True

    def _start_location(self, host: str) -> list[str]:
        """Start what is not running on one location; return what was done, as phrases."""
        started: list[str] = []
        notes: list[str] = []
        mgmt = self._try_management(host)
        if mgmt is None:
            with self.remote(host) as remote:
                deploy.deploy(remote, self.config, self.secrets)
                remote.run(self._location_command("start-management", host, secrets=True))
                mgmt = self._wait_management(host, remote)
            started.append("management server")
        try:
            answer = ujson.loads(mgmt.root.ping())
            if answer["code"] != location.code_digest():
                raise DeployError(f"location {host} runs other code than this master (its management server "
                                  "was started by another version): run `manage_cluster stop`, then `start`")
            mgmt.root.make_dirs()
            client = self.redis(host)
            redis_started = False
            try:
                client.ping()
            except redis.ConnectionError:
                mgmt.root.start_redis()
                started.append(f"redis-server :{self.config.redis_port}")
                redis_started = True
            try:  # its heartbeat (a master running a job watches it) starts once Redis runs
                wait_until(lambda: client.exists(self.keys.management(host)), defaults.SERVER_START_TIMEOUT_SECONDS,
                           f"the management server of {host} to beat in its Redis")
            except WaitTimedOut:
                log_file = location.log_path(self.config, location.MANAGEMENT)
                raise ClusterError(f"the management server of {host} writes no heartbeat in its Redis (port "
                                   f"{self.config.redis_port}); its log {log_file} says why") from None
            servers = self.config.servers_by_location()[host]
            # after a Redis (re)start every server lacks a heartbeat, however fast it reconnects
            down = servers if redis_started else [s for s, beat in self.alive(client, servers).items()
                                                  if beat is None]
            if down:  # not running, or running but cut off from a Redis that was restarted
                launched = ujson.loads(mgmt.root.start_servers(ujson.dumps(down)))
                self._wait_servers(host, client, down, mgmt)
                started.extend(launched)
                back = [s for s in down if s not in launched]
                if back:
                    notes.append(f"{', '.join(back)} {'was' if len(back) == 1 else 'were'} running and "
                                 "reconnected to Redis")
        finally:
            mgmt.close()
        return ([f"started {', '.join(started)}"] if started else []) + notes

    def _location_command(self, action: str, host: str, secrets: bool = False) -> str:
        cfg = self.config
        cmd = (f"cd {shlex.quote(cfg.code_dir)} && {deploy.server_env_prefix(cfg)} "
               f"{shlex.quote(cfg.python_executable)} -m cluster.node.location {action} "
               f"--config {shlex.quote(deploy.config_path(cfg))} --location {shlex.quote(host)}")
        return cmd + (f" --secrets {shlex.quote(deploy.secrets_dir(cfg))}" if secrets else "")

    def _wait_management(self, host: str, remote: Remote) -> rpyc.Connection:
        try:
            return wait_until(lambda: self._try_management(host), defaults.SERVER_START_TIMEOUT_SECONDS,
                              f"the management server of {host}")
        except WaitTimedOut:
            pass
        log_file = location.log_path(self.config, location.MANAGEMENT)
        tail = remote.run(f"tail -n 20 {shlex.quote(log_file)}", check=False).stdout
        raise ClusterError(f"the management server of {host} did not answer on port {self.config.management_port} "
                           f"within {defaults.SERVER_START_TIMEOUT_SECONDS:.0f}s; its log {log_file} ends:\n{tail}")

    def _wait_servers(self, host: str, client: Redis, servers: list[str], mgmt: rpyc.Connection) -> None:
        waiting = list(servers)

        def all_beat() -> bool:
            waiting[:] = [s for s, beat in self.alive(client, waiting).items() if beat is None]
            return not waiting
        try:
            wait_until(all_beat, defaults.SERVER_START_TIMEOUT_SECONDS, f"the servers of {host}")
        except WaitTimedOut:
            pass
        if waiting:
            tails = "\n".join(f"--- {s}:\n{mgmt.root.log_tail(s, 15)}" for s in waiting)
            raise ClusterError(f"server(s) {', '.join(waiting)} on {host} did not start within "
                               f"{defaults.SERVER_START_TIMEOUT_SECONDS:.0f}s; their logs end:\n{tails}")
        for s in servers:  # each must also answer over RPyC (TLS)
            conn = tls_connect(host, self.config.server_port(s), self.secrets)
            try:
                conn.root.ping()
            finally:
                conn.close()

    # --- stop and kill -----------------------------------------------------------------------
    def stop(self) -> None:
        """Gracefully: servers finish nothing new and exit, then Redis and the management servers stop."""
        if not secrets_for(self.config).exists():
            self.echo(f"cluster {self.config.cluster_name!r} was never started (no certificates)")
            return
        for host, what in self.for_each_location(self._stop_location).items():
            self.echo(f"{host}: {what}")

    def _stop_location(self, host: str) -> str:
        mgmt = self._try_management(host)
        servers = self.config.servers_by_location()[host]
        client = self.redis(host)
        done = []
        try:
            try:
                for s in servers:
                    control.send_command(client, self.keys, s, control.Command.SHUTDOWN)
                running = list(servers)

                def all_stopped() -> bool:
                    running[:] = [s for s, beat in self.alive(client, running).items() if beat is not None]
                    return not running
                try:
                    wait_until(all_stopped, defaults.STOP_TIMEOUT_SECONDS, f"the servers of {host} to stop")
                except WaitTimedOut:
                    pass  # those still running are reported below
                for s in servers:  # a shutdown nobody took must not stop the next start's servers
                    client.delete(self.keys.commands(s))
                done.append(f"{len(servers) - len(running)} server(s) stopped")
            except redis.ConnectionError:
                running = servers
                done.append("Redis was not running")
            if mgmt is None:
                return ", ".join(done + ["no management server was running"])
            sessions = [r for r in ujson.loads(mgmt.root.sessions()) if r != location.MANAGEMENT]
            if sessions:
                ended = ujson.loads(mgmt.root.end_sessions(ujson.dumps(sessions)))
                done.append(f"ended the session(s) of {', '.join(ended)} that did not stop in time")
            if mgmt.root.stop_redis():
                done.append("redis-server stopped")
            pid = ujson.loads(mgmt.root.ping())["pid"]
            mgmt.root.shutdown()
            self._wait_exit(host, pid, "the management server")
            done.append("management server stopped")
        finally:
            client.close()
            if mgmt is not None:
                mgmt.close()
        return ", ".join(done)

    def _wait_exit(self, host: str, pid: int, what: str) -> None:
        """Wait until a process of the location has exited (so a following `start` finds its port free)."""
        tries = int(defaults.STOP_TIMEOUT_SECONDS * 10)
        with self.remote(host) as remote:
            gone = remote.run(f"for i in $(seq {tries}); do kill -0 {pid} 2>/dev/null || exit 0; sleep 0.1; done; "
                              "exit 1", check=False, timeout=defaults.STOP_TIMEOUT_SECONDS + 10).exit_code == 0
        if not gone:
            raise ClusterError(f"{what} of {host} (pid {pid}) did not exit within "
                               f"{defaults.STOP_TIMEOUT_SECONDS:.0f}s; `manage_cluster kill` ends it")

    def kill(self) -> None:
        """End this cluster's screen sessions and redis-servers on every location, by name and pid file."""
        def kill_location(host: str) -> str:
            with self.remote(host) as remote:
                if remote.run(f"test -f {shlex.quote(deploy.config_path(self.config))}", check=False).exit_code:
                    return "nothing to kill (the cluster was never started here)"
                out = remote.run(self._location_command("kill", host)).stdout.strip()
                return out.replace("\n", ", ") or "nothing was running"
        for host, what in self.for_each_location(kill_location).items():
            self.echo(f"{host}: {what}")

    # --- status and attach -------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """One row per server (with the latest counters of the run it works on) and one per
        location (Redis memory, free disk)."""
        by_location = self.config.servers_by_location()

        def location_status(host: str) -> dict[str, Any]:
            row: dict[str, Any] = {"location": host, "redis": "down", "redis_memory": None, "disk_free": None,
                                   "management": "down"}
            servers: dict[str, dict | None] = {s: None for s in by_location[host]}
            ages: dict[str, float] = {}
            progress: dict[str, dict] = {}  # server -> {"phase", "counters"} of the run it works on
            client = self.redis(host, timeout=5.0)
            try:
                row["redis_memory"] = client.info("memory")["used_memory"]
                row["redis"] = "up"
                servers = self.alive(client, by_location[host])
                pipe = client.pipeline(transaction=False)
                for s in servers:
                    pipe.pttl(self.keys.alive(s))
                running = [(s, beat["run_id"]) for s, beat in servers.items() if beat and beat.get("run_id")]
                for s, run_id in running:
                    pipe.hget(self.keys.progress(run_id), s)
                found = pipe.execute()
                for s, ttl in zip(servers, found, strict=False):
                    if ttl > 0:
                        ages[s] = max(0.0, defaults.HEARTBEAT_TTL_SECONDS - ttl / 1000)
                for (s, _), raw in zip(running, found[len(servers):], strict=True):
                    if raw:
                        progress[s] = ujson.loads(raw)
            except redis.RedisError:
                pass  # the row already says Redis is down and every server unknown (down)
            finally:
                client.close()
            mgmt = self._try_management(host)
            if mgmt is not None:
                try:
                    row["management"] = "up"
                    row["disk_free"] = ujson.loads(mgmt.root.info())["disk_free"]
                finally:
                    mgmt.close()
            rows = [{"server": s, "location": host, "port": self.config.server_port(s),
                     "up": beat is not None, "heartbeat_age": ages.get(s),
                     "job": (beat or {}).get("job"), "run_id": (beat or {}).get("run_id"),
                     "phase": (beat or {}).get("phase"), "rss_bytes": (beat or {}).get("rss_bytes"),
                     "progress": progress.get(s)} for s, beat in servers.items()]
            return {"location": row, "servers": rows}

        if not secrets_for(self.config).exists():
            raise ClusterNotRunning(f"cluster {self.config.cluster_name!r} has never been started "
                                    "(no certificates); run `manage_cluster start`")
        found = self.for_each_location(location_status)
        return {"locations": [found[h]["location"] for h in self.config.locations],
                "servers": [r for h in self.config.locations for r in found[h]["servers"]]}

    def attach_command(self, server_id: str) -> list[str]:
        """The command that attaches this terminal to a server's screen window."""
        if server_id not in self.config.server_ids():
            raise ClusterError(f"no server {server_id} in cluster {self.config.cluster_name!r}; its servers are "
                               f"{', '.join(self.config.server_ids())}")
        name = location.session_name(self.config, server_id)
        host = self.config.location_of(server_id)
        if is_local(host):
            return ["screen", "-r", name]
        cmd = ["ssh", "-t", "-p", str(self.config.ssh_port)]
        if self.config.ssh_key_file:
            cmd += ["-i", self.config.ssh_key_file]
        target = f"{self.config.ssh_user}@{host}" if self.config.ssh_user else host
        return cmd + [target, f"screen -r {shlex.quote(name)}"]

    def output_files(self, job_name: str, scratch_dir: str) -> Iterator[str]:
        """Paths of the job's output files of every location, in location order (remote ones are
        downloaded into `scratch_dir` one at a time and removed when the next one is asked for)."""
        layout = JobLayout(self.config.base_dir, self.config.auxiliary_dir, job_name)
        for host in self.config.locations:
            if is_local(host):
                yield from layout.output_files()
                continue
            with self.remote(host) as remote:
                listing = remote.run(f"ls -1 {shlex.quote(layout.output_dir)} 2>/dev/null", check=False).stdout
                for name in sorted(n for n in listing.split() if not n.startswith(".")):
                    local = os.path.join(scratch_dir, f"{host}-{name}")
                    remote.get(os.path.join(layout.output_dir, name), local)
                    yield local
                    os.unlink(local)

    def run(self, job: dict, on_progress: Callable[[str, dict[str, dict]], None] | None = None,
            timeout_minutes: float | None = None, cancelled: Callable[[], str | None] | None = None):
        """Run a mapreduce job on the running cluster; return its JobResult (executors/cluster.py).

        Past `timeout_minutes` the run is dropped on every server and JobTimedOut raised."""
        from cluster.executors.cluster import ClusterExecutor

        return ClusterExecutor(self, on_progress=on_progress).run(job, timeout_minutes=timeout_minutes,
                                                                  cancelled=cancelled)

    def drop_runs_of(self, job_name: str, timeout: float = defaults.RECOVERY_WAIT_SECONDS) -> list[str]:
        """End what a dead master left running of a job on the servers; return the run ids dropped.

        A Runner restarting after SIGKILL calls this before running the job again: the run's
        master key is deleted (so the servers drop it at their next heartbeat), each server is
        told to abort it, and its files are discarded once no server holds it any more."""
        def one(host: str) -> list[str]:
            servers = self.config.servers_by_location()[host]
            client = self.redis(host)
            try:
                def holding() -> dict[str, str]:
                    return {s: b["run_id"] for s, b in self.alive(client, servers).items()
                            if b and b.get("job") == job_name and b.get("run_id")}
                runs = sorted(set(holding().values()))
                if host == self.config.locations[0]:
                    control.release_dead_holder(client, self.keys, job_name)
                for run_id in runs:
                    client.delete(self.keys.master(run_id))
                for s, run_id in holding().items():
                    control.send_command(client, self.keys, s, control.Command.ABORT, run_id=run_id)
                try:
                    wait_until(lambda: not holding(), timeout, f"the servers of {host} to drop job {job_name!r}")
                except WaitTimedOut:
                    raise ClusterError(f"server(s) {', '.join(holding())} on {host} still hold a run of job "
                                       f"{job_name!r} after {timeout:.0f}s; `manage_cluster status` shows "
                                       "them") from None
                for run_id in runs:  # its master, which would have, is gone
                    control.delete_run_keys(client, self.keys, job_name, run_id)
            finally:
                client.close()
            for run_id in runs:
                self.call(host, "discard_job", job_name, run_id)
            return runs
        return sorted({r for runs in self.for_each_location(one).values() for r in runs})


ManageCluster = ClusterManager  # the name it had before the rooms (a verb); kept for old scripts
