"""Three "hosts" on this machine: network namespaces on a bridge, each with its own sshd and private mounts.

Topology (all names carry a random suffix, so parallel runs and leftovers of a crashed run do not collide):

    root namespace ("master")          bridge mrb<hex>  10.A.B.1/24
      veth mrv<hex><i>  <-->  namespace mrns<hex>-<i>: veth mrp<hex><i> 10.A.B.1<i+1>/24, lo up

Each host runs `/usr/sbin/sshd -D` on port 22 of its own address, started inside a private mount namespace
(`unshare --mount --propagation private`) where

  * the host's backing folder `<tmp>/host<i>/compute` is bind-mounted onto the shared path `<tmp>/compute`
    (same path on every host, empty in the root namespace), and
  * a private tmpfs is mounted on /run/screen, so GNU screen sessions of one host are invisible to the others
    (and to the root namespace's own sessions).

Every command run over SSH is a child of that sshd, so it inherits the network and the mount namespace.
`run_on(i, cmd)` enters the same namespaces directly (ip netns exec + nsenter --mount=/proc/<sshd>/ns/mnt).

The finalizer stops each sshd, kills whatever still lives in each namespace (screen sessions, redis servers
started over SSH by the tests), deletes the namespaces, the veths and the bridge, and reports (fails the
teardown with) every step that went wrong.
"""
from __future__ import annotations

import ipaddress
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SSHD = "/usr/sbin/sshd"
N_HOSTS = 3
SSH_PORT = 22


def _run(args: list[str], check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
    """A command in the root namespace; a failure says what ran and what it printed."""
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)!r} failed with exit code {proc.returncode}: "
                           f"{proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def _used_networks() -> list[ipaddress.IPv4Network]:
    """Every IPv4 network this machine routes or has an address in (all routing tables)."""
    nets = []
    for args in (["ip", "-4", "route", "show", "table", "all"], ["ip", "-4", "-o", "addr", "show"]):
        for line in _run(args, check=False).stdout.splitlines():
            for word in line.split():
                if word[0].isdigit():
                    try:
                        nets.append(ipaddress.ip_network(word, strict=False))
                    except ValueError:
                        pass
    return [n for n in nets if n.version == 4 and n.prefixlen > 0]


def _free_subnet() -> ipaddress.IPv4Network:
    used = _used_networks()
    for _ in range(200):
        candidate = ipaddress.ip_network(f"10.{secrets.randbelow(254) + 1}.{secrets.randbelow(254) + 1}.0/24")
        if not any(candidate.overlaps(n) for n in used):
            return candidate
    raise RuntimeError("found no free /24 in 10.0.0.0/8")


def _tcp_ok(ip: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((ip, port), timeout=timeout):
            return True
    except OSError:
        return False


def _delete_link(name: str) -> None:
    """Delete a root-namespace link; one that is already gone is fine."""
    r = _run(["ip", "link", "delete", name], check=False)
    if r.returncode != 0 and _run(["ip", "link", "show", name], check=False).returncode == 0:
        raise RuntimeError(f"`ip link delete {name}` failed: {r.stderr.strip()}")


@dataclass
class Hosts:
    """What the `hosts` fixture yields; see the module docstring."""

    tmp: Path
    suffix: str = field(default_factory=lambda: secrets.token_hex(2))
    ips: list[str] = field(default_factory=list)
    key_file: str = ""
    known_hosts: str = ""
    compute_dir: str = ""
    host_dirs: list[Path] = field(default_factory=list)
    bridge_ip: str = ""
    namespaces: list[str] = field(default_factory=list)     # the ones that were created
    sshd_procs: list[subprocess.Popen] = field(default_factory=list)
    _bridge_made: bool = False
    _veths: list[str] = field(default_factory=list)          # root-namespace veth ends that were created

    @property
    def bridge(self) -> str:
        return f"mrb{self.suffix}"

    def ns(self, i: int) -> str:
        return f"mrns{self.suffix}-{i}"

    def run_on(self, i: int, command: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """Run a shell command on host i: in its network namespace and its sshd's mount namespace."""
        pid = self.sshd_procs[i].pid
        return subprocess.run(["ip", "netns", "exec", self.ns(i), "nsenter", f"--mount=/proc/{pid}/ns/mnt",
                               "sh", "-c", command], capture_output=True, text=True, timeout=timeout)

    def sshd_log(self, i: int) -> str:
        log = self.tmp / f"host{i}" / "sshd.log"
        return log.read_text() if log.exists() else "(no log)"

    # --- setup ---------------------------------------------------------------------------------------------

    def start(self) -> None:
        self._network()
        self._keys()
        for i in range(N_HOSTS):
            self._start_sshd(i)
        self._wait_ready()

    def _network(self) -> None:
        net = _free_subnet()
        base = net.network_address
        self.bridge_ip = str(base + 1)
        self.ips = [str(base + 11 + i) for i in range(N_HOSTS)]
        _run(["ip", "link", "add", self.bridge, "type", "bridge"])
        self._bridge_made = True
        _run(["ip", "addr", "add", f"{self.bridge_ip}/24", "dev", self.bridge])
        _run(["ip", "link", "set", self.bridge, "up"])
        for i in range(N_HOSTS):
            ns, outer, inner = self.ns(i), f"mrv{self.suffix}{i}", f"mrp{self.suffix}{i}"
            _run(["ip", "netns", "add", ns])
            self.namespaces.append(ns)
            _run(["ip", "link", "add", outer, "type", "veth", "peer", "name", inner, "netns", ns])
            self._veths.append(outer)
            _run(["ip", "link", "set", outer, "master", self.bridge])
            _run(["ip", "link", "set", outer, "up"])
            nsx = ["ip", "netns", "exec", ns]
            _run(nsx + ["ip", "link", "set", "lo", "up"])
            _run(nsx + ["ip", "addr", "add", f"{self.ips[i]}/24", "dev", inner])
            _run(nsx + ["ip", "link", "set", inner, "up"])

    def _keys(self) -> None:
        keys = self.tmp / "keys"
        keys.mkdir()
        self.key_file = str(keys / "client_key")
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "multihost-client", "-f", self.key_file])
        (keys / "authorized_keys").write_text(Path(self.key_file + ".pub").read_text())
        compute = self.tmp / "compute"
        compute.mkdir()
        self.compute_dir = str(compute)
        known = []
        for i in range(N_HOSTS):
            d = self.tmp / f"host{i}"
            (d / "compute").mkdir(parents=True)
            self.host_dirs.append(d / "compute")
            _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"host{i}", "-f", str(d / "host_key")])
            kind, key = (d / "host_key.pub").read_text().split()[:2]
            known.append(f"{self.ips[i]} {kind} {key}\n")
            (d / "sshd_config").write_text("\n".join([
                f"Port {SSH_PORT}", f"ListenAddress {self.ips[i]}", f"HostKey {d / 'host_key'}",
                f"AuthorizedKeysFile {keys / 'authorized_keys'}", f"PidFile {d / 'sshd.pid'}", "StrictModes no",
                "UsePAM no", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
                "PermitRootLogin prohibit-password", "Subsystem sftp internal-sftp", "UseDNS no",
                "MaxStartups 100", "MaxSessions 100"]) + "\n")
        self.known_hosts = str(self.tmp / "known_hosts")
        Path(self.known_hosts).write_text("".join(known))

    def _start_sshd(self, i: int) -> None:
        d = self.tmp / f"host{i}"
        mounts = (f"mount --bind {d / 'compute'} {self.compute_dir} && "
                  "mount -t tmpfs -o mode=1777,size=16m multihost-screen /run/screen && "
                  f"exec {SSHD} -D -f {d / 'sshd_config'} -E {d / 'sshd.log'}")
        # `ip netns exec` and `unshare` both exec (no fork), so the Popen pid ends up being sshd's own pid,
        # and /proc/<pid>/ns/mnt is the private mount namespace every SSH session inherits.
        with open(d / "start.err", "w") as err:
            self.sshd_procs.append(subprocess.Popen(
                ["ip", "netns", "exec", self.ns(i), "unshare", "--mount", "--propagation", "private",
                 "sh", "-c", mounts], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err))

    def _wait_ready(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        for i, ip in enumerate(self.ips):
            while not _tcp_ok(ip, SSH_PORT):
                proc = self.sshd_procs[i]
                if proc.poll() is not None or time.monotonic() > deadline:
                    err = (self.tmp / f"host{i}" / "start.err").read_text()
                    raise RuntimeError(f"sshd of host {i} ({ip}) did not start (exit code {proc.poll()}): "
                                       f"{err.strip()} {self.sshd_log(i).strip()}")
                time.sleep(0.05)
        # the hosts reach each other (TCP, not ping: ICMP passing says little about a bridge's filtering)
        probe = "import socket,sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 5).close()"
        for i in range(N_HOSTS):
            for j, ip in enumerate(self.ips):
                if i != j:
                    r = self.run_on(i, f"/usr/bin/python3 -c '{probe}' {ip} {SSH_PORT}")
                    if r.returncode != 0:
                        raise RuntimeError(f"host {i} cannot open TCP to host {j} ({ip}:{SSH_PORT}): {r.stderr}")

    # --- teardown ------------------------------------------------------------------------------------------

    def close(self) -> None:
        """Undo everything that was created, step by step; raise at the end listing what failed."""
        problems: list[str] = []

        def attempt(what: str, fn, *args) -> None:
            try:
                fn(*args)
            except Exception as e:  # collected and reported below
                problems.append(f"{what}: {type(e).__name__}: {e}")

        for i, proc in enumerate(self.sshd_procs):
            attempt(f"stop sshd of host {i}", self._stop, proc)
        for ns in self.namespaces:
            attempt(f"kill processes left in {ns}", self._kill_ns_pids, ns)
        # veths first (deleting one end removes its peer in the namespace), then the namespaces, bridge last:
        # a namespace is destroyed asynchronously after `ip netns delete`, so its veths are not left to it
        for link in self._veths:
            attempt(f"delete veth {link}", _delete_link, link)
        for ns in self.namespaces:
            attempt(f"delete namespace {ns}", _run, ["ip", "netns", "delete", ns])
        if self._bridge_made:
            attempt(f"delete bridge {self.bridge}", _delete_link, self.bridge)
        if problems:
            raise AssertionError("multihost teardown left problems:\n  " + "\n  ".join(problems))

    @staticmethod
    def _stop(proc: subprocess.Popen) -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)

    @staticmethod
    def _ns_pids(ns: str) -> list[int]:
        r = _run(["ip", "netns", "pids", ns], check=False)
        return [int(p) for p in r.stdout.split() if p.isdigit()]

    def _kill_ns_pids(self, ns: str) -> None:
        pids = self._ns_pids(ns)
        if not pids:
            return
        for sig, wait in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 5.0)):
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + wait
            while (pids := self._ns_pids(ns)) and time.monotonic() < deadline:
                time.sleep(0.05)
            if not pids:
                return
        raise RuntimeError(f"processes {pids} in {ns} survived SIGKILL")


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest):
    """Three namespaced hosts with sshd on port 22 of 10.A.B.11..13; see the module docstring."""
    if os.geteuid() != 0:
        pytest.skip("the multihost tests need root (network namespaces, bridges, mounts)")
    for tool in ("ip", "unshare", "nsenter", "ssh-keygen"):
        if shutil.which(tool) is None:
            pytest.skip(f"the multihost tests need `{tool}`")
    if not os.path.exists(SSHD):
        pytest.skip("sshd is not installed (init/install.sh installs openssh-server)")
    probe = f"mrprobe{secrets.token_hex(3)}"
    r = _run(["ip", "netns", "add", probe], check=False)
    if r.returncode != 0:
        pytest.skip(f"cannot create network namespaces here (`ip netns add` said: {r.stderr.strip()})")
    _run(["ip", "netns", "delete", probe])
    os.makedirs("/run/sshd", exist_ok=True)
    # the mount point of each host's private tmpfs; created in the root namespace (screen's usual folder)
    if not os.path.isdir("/run/screen"):
        os.mkdir("/run/screen")
        os.chmod("/run/screen", 0o1777)      # what screen (not setuid) insists on

    topology = Hosts(tmp=tmp_path_factory.mktemp("multihost"))
    request.addfinalizer(topology.close)      # registered first: a half-built topology is torn down too
    try:
        topology.start()
    except RuntimeError as e:
        pytest.fail(f"could not build the multihost topology: {e}")
    return topology
