"""The multihost topology itself: SSH with a pinned host key, a private compute folder and private screens per host,
and TCP between the hosts."""
from __future__ import annotations

import os
import secrets
import shutil
import subprocess

import paramiko
import pytest


def ssh(hosts, i: int) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    client.load_host_keys(hosts.known_hosts)
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(hosts.ips[i], port=22, username="root", key_filename=hosts.key_file,
                   look_for_keys=False, allow_agent=False, timeout=10)
    return client


def ssh_run(client: paramiko.SSHClient, command: str) -> tuple[int, str, str]:
    _, stdout, stderr = client.exec_command(command, timeout=30)
    out, err = stdout.read().decode(), stderr.read().decode()
    return stdout.channel.recv_exit_status(), out, err


def test_each_host_sees_only_its_own_compute_dir(hosts):
    for i, d in enumerate(hosts.host_dirs):
        (d / "whoami").write_text(f"host{i}\n")
    for i in range(3):
        client = ssh(hosts, i)
        try:
            code, out, err = ssh_run(client, f"cat {hosts.compute_dir}/whoami; ls {hosts.compute_dir}")
        finally:
            client.close()
        assert code == 0, err
        assert out == f"host{i}\nwhoami\n", f"host {i} ({hosts.ips[i]}) sees {out!r}"
    assert os.listdir(hosts.compute_dir) == [], "the bind mounts must not leak into the root namespace"


def test_an_unknown_host_key_is_rejected(hosts, tmp_path):
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    with pytest.raises(paramiko.SSHException):
        client.connect(hosts.ips[0], username="root", key_filename=hosts.key_file,
                       look_for_keys=False, allow_agent=False, timeout=10)
    client.close()


def test_host0_reaches_host1_over_tcp(hosts):
    target = hosts.ips[1]
    # run_on uses sh; /dev/tcp is a bash feature, so go through bash explicitly
    r = hosts.run_on(0, f"bash -c 'exec 3<>/dev/tcp/{target}/22 && head -c 7 <&3'", timeout=20)
    assert r.returncode == 0 and r.stdout == "SSH-2.0", (r.stdout, r.stderr)
    # and the same from a process that came in over SSH (it lives in host 0's network namespace)
    client = ssh(hosts, 0)
    try:
        code, out, err = ssh_run(client, "python3 -c 'import socket, sys; "
                                         "s = socket.create_connection((sys.argv[1], 22), 5); "
                                         f"print(s.getsockname()[0]); s.close()' {target}")
    finally:
        client.close()
    assert code == 0 and out.strip() == hosts.ips[0], (out, err)


def test_screen_sessions_are_private_to_their_host(hosts):
    if shutil.which("screen") is None:
        pytest.skip("GNU screen is not installed")
    name = f"probe{secrets.token_hex(3)}"
    client = ssh(hosts, 0)
    try:
        code, _, err = ssh_run(client, f"screen -dmS {name} sleep 60 </dev/null >/dev/null 2>&1")
        assert code == 0, err
        assert name in hosts.run_on(0, "screen -ls").stdout
        other = hosts.run_on(1, "screen -ls")
        assert name not in other.stdout and "No Sockets found" in other.stdout, other.stdout
        root = subprocess.run(["screen", "-ls"], capture_output=True, text=True, timeout=20)
        assert name not in root.stdout, "the root namespace must not see a host's screen sessions"
    finally:
        ssh_run(client, f"screen -S {name} -X quit")
        client.close()
    assert name not in hosts.run_on(0, "screen -ls").stdout
