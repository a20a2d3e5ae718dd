"""Run a script job on the master: a Python script, or a command in an unpacked tarball.

Each run gets a fresh folder `<local_working_dir>/runs/<job_name>/<run>/` holding `run.log`
(the command's stdout and stderr) and, for the tarball form, `code/` (the unpacked
tarball, the command's working folder). A plain script runs in `local_working_dir`, where
relative paths of file transfers point on the master; relative `script_location` and
`code_tarball` are found there too. The command runs in its own process group, so a
timeout or a restarted Runner stops it and everything it started; every process carries
`CLUSTER_RUN_MARK` in its environment, so only this run's processes are ever signalled.
"""
from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import zlib
from collections.abc import Callable
from typing import Any

from cluster import defaults
from cluster.config import ClusterConfig
from cluster.exceptions import JobSpecError, ScriptFailed, WaitTimedOut
from cluster.job_spec import is_inside
from cluster.scheduling.publish import publish
from cluster.timing import Deadline, wait_until

log = logging.getLogger(__name__)
MARK_ENV = "CLUSTER_RUN_MARK"


def run_mark(queue_path: str, run_id: int) -> str:
    """The environment mark of one run's processes (unique per queue and run)."""
    return f"{os.path.abspath(queue_path)}#{run_id}"


# what reading a missing, cut or corrupt .tar.gz raises
TARBALL_ERRORS = (OSError, EOFError, zlib.error, tarfile.TarError)


def _member_problems(members: list[tarfile.TarInfo]) -> list[str]:
    """What makes these tar members unsafe to unpack: absolute paths, `..`, links out, devices."""
    problems = []
    for m in members:
        if not is_inside(m.name):
            problems.append(f"{m.name!r} would land outside the run's folder")
        elif m.issym() or m.islnk():
            if not is_inside(m.linkname):
                problems.append(f"{m.name!r} links to {m.linkname!r}, outside the run's folder")
        elif not (m.isfile() or m.isdir()):
            problems.append(f"{m.name!r} is a device or fifo")
    return problems


def tarball_problems(tarball: str) -> list[str]:
    """What makes a .tar.gz unsafe to unpack (an empty list: it is safe). Raises one of
    TARBALL_ERRORS when it cannot be read."""
    with tarfile.open(tarball, "r:*") as tar:
        return _member_problems(tar.getmembers())


def safe_extract(tarball: str, dest: str, job_name: str) -> None:
    """Unpack a .tar.gz into dest, refusing absolute paths, `..`, links out of it and devices."""
    try:
        with tarfile.open(tarball, "r:*") as tar:  # read once: checked, then unpacked
            members = tar.getmembers()
            problems = _member_problems(members)
            if problems:
                raise JobSpecError([f"code_tarball {tarball} is refused: {p}" for p in problems], job_name)
            os.makedirs(dest, exist_ok=True)
            tar.extractall(dest, members=members, filter="data")
    except TARBALL_ERRORS as exc:
        raise JobSpecError([f"code_tarball {tarball} cannot be unpacked: {exc}"], job_name) from None


def _group_members(pgid: int | None, mark: str | None = None) -> list[int]:
    """Live (not zombie) processes of a group (None: of any group) whose environment carries `mark`
    (None: whatever their environment)."""
    found = []
    wanted = f"{MARK_ENV}={mark}".encode() if mark else None
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
            if fields[0] == b"Z" or (pgid is not None and int(fields[2]) != pgid):
                continue
            if wanted is not None:
                with open(f"/proc/{entry}/environ", "rb") as fh:
                    if wanted not in fh.read().split(b"\0"):
                        continue
            found.append(int(entry))
        except (OSError, IndexError, ValueError):
            continue
    return found


def _term_then_kill(send: Callable[[signal.Signals], None], left: Callable[[], bool], grace: float) -> None:
    """send(SIGTERM); if something is `left` after `grace` seconds, send(SIGKILL) and wait as long again."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        send(sig)
        try:
            wait_until(lambda: not left(), grace, f"processes to end after {sig.name}", every=0.05)
            return
        except WaitTimedOut:
            continue


def stop_process_group(pgid: int, leader: subprocess.Popen | None = None,
                       grace: float = defaults.KILL_GRACE_SECONDS) -> None:
    """SIGTERM a process group we started, then SIGKILL what is left after `grace` seconds."""
    def send(sig: signal.Signals) -> None:
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            pass

    def left() -> bool:
        if leader is not None:
            leader.poll()  # reap the leader, or its zombie counts as left
        return bool(_group_members(pgid))

    _term_then_kill(send, left, grace)
    if leader is not None:
        leader.wait()


def stop_leftover_run(mark: str, grace: float = defaults.KILL_GRACE_SECONDS) -> list[int]:
    """Stop every process of a run that carries its mark (also those that left its process group,
    and those a Runner killed before it recorded the group); return their pids."""
    def send(sig: signal.Signals) -> None:
        for pid in _group_members(None, mark):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    pids = _group_members(None, mark)
    if pids:
        _term_then_kill(send, lambda: bool(_group_members(None, mark)), grace)
    return pids


def _log_tail(path: str, lines: int = 20) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, os.path.getsize(path) - 16384))
            text = fh.read().decode(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(the log is empty)"


def _prune_run_dirs(job_dir: str, keep: int) -> None:
    runs = sorted((d for d in os.listdir(job_dir) if d.isdigit()), key=int)
    for old in runs[:-keep]:
        shutil.rmtree(os.path.join(job_dir, old), ignore_errors=True)


def run_script_job(config: ClusterConfig, job: dict[str, Any], run_id: int, *, mark: str,
                   on_started: Callable[[int, str], None] | None = None,
                   cancelled: Callable[[], str | None] | None = None) -> dict[str, Any]:
    """Run one script job to its end and return its counters (`mark`: see `run_mark`).

    `on_started(pgid, log_path)` is called as soon as the command runs (the Runner records
    the process group, so a restarted Runner can stop it). Raises ScriptFailed on a non-zero
    exit, JobTimedOut past timeout_minutes, JobCancelled once `cancelled()` names who cancelled it (the
    whole process group is stopped either way); nothing is published unless the command succeeded."""
    name = job["job_name"]
    job_dir = os.path.join(config.local_working_dir, "runs", name)
    run_dir = os.path.join(job_dir, str(run_id))
    shutil.rmtree(run_dir, ignore_errors=True)
    os.makedirs(run_dir)
    _prune_run_dirs(job_dir, defaults.RUN_DIRS_KEPT)
    log_path = os.path.join(run_dir, "run.log")
    if job.get("code_tarball"):
        cwd = os.path.join(run_dir, "code")
        safe_extract(config.master_path(job["code_tarball"]), cwd, name)
        command = ["bash", "-c", job["execution_commandline"]]
    else:
        script = config.master_path(job["script_location"])
        if not os.path.isfile(script):
            raise ScriptFailed(name, f"script_location {script} does not exist on the master")
        cwd = config.local_working_dir  # where file transfers' relative master paths point too
        command = [sys.executable, script, *[str(a) for a in job.get("script_arguments") or []]]
    env = dict(os.environ, CLUSTER_JOB_NAME=name, CLUSTER_RUN_ID=str(run_id), CLUSTER_RUN_DIR=run_dir,
               **{MARK_ENV: mark})
    if os.path.isfile(config.source):
        env["CLUSTER_CONFIG"] = config.source
    timeout = job.get("timeout_minutes")
    started = time.monotonic()
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(command, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    log.info("job %s: started %s (pid %d), log %s", name, " ".join(command)[:200], proc.pid, log_path)
    deadline = Deadline(timeout, cancelled)
    try:
        if on_started is not None:
            on_started(proc.pid, log_path)
        while True:
            try:
                code = proc.wait(timeout=deadline.remaining(1.0))
                break
            except subprocess.TimeoutExpired:
                deadline.check(name, "script", what=f" (its process group {proc.pid} was ended; log {log_path})")
    except BaseException:
        stop_process_group(proc.pid, proc)
        stop_leftover_run(env[MARK_ENV])  # processes that left the group (setsid, daemons)
        raise
    left = _group_members(None, env[MARK_ENV])
    if left:  # the command exited but left processes behind: they belong to the run
        log.warning("job %s: the command exited but left process(es) %s running; stopping them", name, left)
        stop_leftover_run(env[MARK_ENV])
    counters: dict[str, Any] = {"exit_code": code, "seconds": round(time.monotonic() - started, 3),
                                "log_path": log_path}
    if code != 0:
        how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
        raise ScriptFailed(name, f"the command {how}; the end of its log {log_path}:\n{_log_tail(log_path)}")
    if job.get("code_tarball") and job.get("output_dir"):
        counters.update(publish(config, name, os.path.join(cwd, job["output_dir"]), str(run_id)))
    return counters
