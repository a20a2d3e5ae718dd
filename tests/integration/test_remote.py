"""Commands and copies on a location: here, and over real SSH into an sshd the test starts."""
from __future__ import annotations

import os
import subprocess

import pytest
from integration_helpers import free_port, wait_for_port

from cluster.exceptions import RemoteCommandError
from cluster.master.remote import LocalRemote, SSHRemote, is_local

SSHD = "/usr/sbin/sshd"


def test_localhost_and_loopback_run_here():
    assert is_local("localhost") and is_local("127.0.0.5") and not is_local("10.0.0.2")


def test_local_run_and_failure_say_what_where_and_why(tmp_path):
    r = LocalRemote()
    assert r.run("echo hello").stdout == "hello\n"
    with pytest.raises(RemoteCommandError) as info:
        r.run("echo oops >&2; exit 3")
    message = str(info.value)
    assert "localhost" in message and "exit 3" in message and "exit code 3" in message and "oops" in message
    assert r.run("exit 4", check=False).exit_code == 4
    with pytest.raises(RemoteCommandError, match="did not finish within 1s"):
        r.run("sleep 5", timeout=1)


def test_local_copy_round_trip(tmp_path):
    src = tmp_path / "a.bin"
    src.write_bytes(os.urandom(300_000))
    LocalRemote().put(str(src), str(tmp_path / "b.bin"))
    LocalRemote().get(str(tmp_path / "b.bin"), str(tmp_path / "c.bin"))
    assert (tmp_path / "c.bin").read_bytes() == src.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "b.bin", "c.bin"]


@pytest.fixture
def sshd(tmp_path):
    if not os.path.exists(SSHD):
        pytest.skip("sshd is not installed (init/install.sh installs openssh-server)")
    if os.geteuid() != 0:
        pytest.skip("the test sshd runs as root (it needs its privilege-separation folder /run/sshd)")
    os.makedirs("/run/sshd", exist_ok=True)
    d = tmp_path / "sshd"
    d.mkdir()
    for name in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / name)], check=True)
    (d / "authorized_keys").write_text((d / "client_key.pub").read_text())
    port = free_port()
    (d / "sshd_config").write_text("\n".join([
        f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {d / 'host_key'}",
        f"AuthorizedKeysFile {d / 'authorized_keys'}", f"PidFile {d / 'sshd.pid'}", "StrictModes no",
        "UsePAM no", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
        "PermitRootLogin prohibit-password", "Subsystem sftp internal-sftp"]) + "\n")
    proc = subprocess.Popen([SSHD, "-D", "-f", str(d / "sshd_config"), "-E", str(d / "sshd.log")])
    if not wait_for_port(port, alive=lambda: proc.poll() is None):
        proc.kill()
        pytest.fail(f"sshd did not start: {(d / 'sshd.log').read_text()}")
    host_key = (d / "host_key.pub").read_text().split()
    (d / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_key[0]} {host_key[1]}\n")
    yield {"port": port, "key": str(d / "client_key"), "known_hosts": str(d / "known_hosts"), "dir": d}
    proc.terminate()
    proc.wait(timeout=10)


def connect(sshd, known_hosts=None) -> SSHRemote:
    return SSHRemote("127.0.0.1", user="root", key_file=sshd["key"], port=sshd["port"],
                     known_hosts=known_hosts or sshd["known_hosts"])


def test_ssh_run_copy_and_failure(sshd, tmp_path):
    r = connect(sshd)
    try:
        assert r.run("echo $((6 * 7))").stdout == "42\n"
        with pytest.raises(RemoteCommandError) as info:
            r.run("echo broken >&2; exit 5")
        assert "127.0.0.1" in str(info.value) and "exit code 5" in str(info.value) and "broken" in str(info.value)
        src = tmp_path / "payload.bin"
        src.write_bytes(os.urandom(2_000_000))
        r.put(str(src), str(tmp_path / "remote.bin"))
        r.get(str(tmp_path / "remote.bin"), str(tmp_path / "back.bin"))
        assert (tmp_path / "back.bin").read_bytes() == src.read_bytes()
        assert not [p for p in tmp_path.iterdir() if ".part-" in p.name], "no temporary file is left behind"
        with pytest.raises(RemoteCommandError, match="did not finish within 1s"):
            r.run("sleep 10", timeout=1)
    finally:
        r.close()


def test_an_unknown_host_key_is_refused_with_the_fix(sshd, tmp_path):
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    with pytest.raises(RemoteCommandError, match="ssh-keyscan"):
        connect(sshd, known_hosts=str(empty))
