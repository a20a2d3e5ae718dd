"""Run a command and copy files on a location: locally for localhost/127.*, else over SSH.

Every call has a timeout; a failed command raises RemoteCommandError with the host,
the command, its exit code and its stderr. Over SSH (paramiko) the host key must be
known (known_hosts), the key comes from `ssh_key_file`, and a copied file appears at
its destination only when complete (written beside it, then renamed).
"""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from cluster.config import ClusterConfig
from cluster.exceptions import RemoteCommandError

DEFAULT_TIMEOUT = 60.0


@dataclass(frozen=True)
class CommandResult:
    host: str
    command: str
    exit_code: int
    stdout: str
    stderr: str


class Remote(Protocol):
    host: str

    def __enter__(self) -> Remote: ...
    def __exit__(self, *exc_info: object) -> None: ...
    def run(self, command: str, timeout: float = DEFAULT_TIMEOUT, check: bool = True) -> CommandResult: ...
    def put(self, local_path: str, remote_path: str, timeout: float = DEFAULT_TIMEOUT) -> None: ...
    def get(self, remote_path: str, local_path: str, timeout: float = DEFAULT_TIMEOUT) -> None: ...
    def close(self) -> None: ...


def is_local(host: str) -> bool:
    """localhost and 127.* run here, with no SSH."""
    return host == "localhost" or host.startswith("127.")


def _failed(result: CommandResult, what: str = "failed") -> RemoteCommandError:
    err = result.stderr.strip()[-2000:] or "(no stderr)"
    return RemoteCommandError(f"on {result.host}: `{result.command}` {what} with exit code {result.exit_code}: {err}")


class _Closing:
    """`with remote_for(config, host) as remote:` closes the connection however the block ends."""

    close: Callable[[], None]  # each subclass's own (declared only: no attribute here)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _replace_into(src_open, dest: str) -> None:
    """Copy a stream to dest through a temporary name, so dest is never half written."""
    tmp = f"{dest}.part-{os.getpid()}"
    try:
        with src_open() as src, open(tmp, "wb") as out:
            shutil.copyfileobj(src, out, 1024 * 1024)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


class LocalRemote(_Closing):
    """This machine."""

    def __init__(self, host: str = "localhost"):
        self.host = host

    def run(self, command: str, timeout: float = DEFAULT_TIMEOUT, check: bool = True) -> CommandResult:
        try:
            proc = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=timeout,
                                  stdin=subprocess.DEVNULL, process_group=0)
        except subprocess.TimeoutExpired:
            raise RemoteCommandError(f"on {self.host}: `{command}` did not finish within {timeout:.0f}s") from None
        result = CommandResult(self.host, command, proc.returncode, proc.stdout, proc.stderr)
        if check and proc.returncode != 0:
            raise _failed(result)
        return result

    def put(self, local_path: str, remote_path: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        _replace_into(lambda: open(local_path, "rb"), remote_path)

    def get(self, remote_path: str, local_path: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        _replace_into(lambda: open(remote_path, "rb"), local_path)

    def close(self) -> None:
        pass


class SSHRemote(_Closing):
    """Another machine, over SSH with a key; its host key must be in known_hosts."""

    def __init__(self, host: str, *, user: str | None, key_file: str | None, port: int = 22,
                 known_hosts: str | None = None, check_host_keys: bool = True, timeout: float = 15.0):
        import paramiko  # here: a master of localhost locations never needs it (~0.1 s to import)

        self.host = host
        self._client = paramiko.SSHClient()
        self._client.load_system_host_keys()
        known = known_hosts or os.path.expanduser("~/.ssh/known_hosts")
        if os.path.exists(known):
            self._client.load_host_keys(known)
        self._client.set_missing_host_key_policy(paramiko.RejectPolicy() if check_host_keys
                                                 else paramiko.WarningPolicy())
        try:
            self._client.connect(host, port=port, username=user, key_filename=key_file, timeout=timeout,
                                 banner_timeout=timeout, auth_timeout=timeout, allow_agent=key_file is None,
                                 look_for_keys=key_file is None)
        except paramiko.SSHException as exc:
            hint = (f"; add its host key with `ssh-keyscan -p {port} {host} >> {known}`"
                    if "not found in known_hosts" in str(exc) else "")
            raise RemoteCommandError(f"cannot reach {host}:{port} over SSH as {user or 'the current user'}: "
                                     f"{exc}{hint}") from None
        except OSError as exc:
            raise RemoteCommandError(f"cannot reach {host}:{port} over SSH: {exc}") from None

    def run(self, command: str, timeout: float = DEFAULT_TIMEOUT, check: bool = True) -> CommandResult:
        import paramiko

        try:
            _, stdout, stderr = self._client.exec_command(command, timeout=timeout)
            channel = stdout.channel
            out = stdout.read().decode(errors="replace")
            err = stderr.read().decode(errors="replace")
            if not channel.status_event.wait(timeout):
                raise TimeoutError
            code = channel.recv_exit_status()
        except (TimeoutError, paramiko.SSHException, OSError) as exc:
            raise RemoteCommandError(f"on {self.host}: `{command}` did not finish within {timeout:.0f}s "
                                     f"({type(exc).__name__}: {exc})") from None
        result = CommandResult(self.host, command, code, out, err)
        if check and code != 0:
            raise _failed(result)
        return result

    def put(self, local_path: str, remote_path: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        import paramiko

        tmp = f"{remote_path}.part-{os.getpid()}-{int(time.time() * 1000)}"
        sftp = self._client.open_sftp()
        try:
            sftp.get_channel().settimeout(timeout)
            sftp.put(local_path, tmp)
            sftp.posix_rename(tmp, remote_path)
        except (OSError, paramiko.SSHException) as exc:
            self.run(f"rm -f {shlex.quote(tmp)}", check=False)
            raise RemoteCommandError(f"copying {local_path} to {self.host}:{remote_path} failed: {exc}") from None
        finally:
            sftp.close()

    def get(self, remote_path: str, local_path: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        import paramiko

        sftp = self._client.open_sftp()
        try:
            sftp.get_channel().settimeout(timeout)
            _replace_into(lambda: sftp.open(remote_path, "rb"), local_path)
        except (OSError, paramiko.SSHException) as exc:
            raise RemoteCommandError(f"copying {self.host}:{remote_path} to {local_path} failed: {exc}") from None
        finally:
            sftp.close()

    def close(self) -> None:
        self._client.close()


def remote_for(config: ClusterConfig, host: str) -> Remote:
    """The way to reach one location of this cluster."""
    if is_local(host):
        return LocalRemote(host)
    return SSHRemote(host, user=config.ssh_user, key_file=config.ssh_key_file, port=config.ssh_port,
                     check_host_keys=config.ssh_check_host_keys)
