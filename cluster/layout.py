"""Where a job's files live on a location, in one place.

    <base_dir>/<job_name>/
        map/<server_id>/        spill files addressed to that server (its reduce input)
        spill/<server_id>/      spill files being written by that server
        sort/<server_id>/       that server's merge runs
        staging/<run_id>/       reduce output of a run that has not succeeded yet
        reduce/                 the job's published output
    <auxiliary_dir>/<name>.data               auxiliary data (JSON)
    <auxiliary_dir>/STATE_<job_name>/*.json   hold_state: files mapped by successful runs
"""
from __future__ import annotations

import fcntl
import os
import shutil
from dataclasses import dataclass
from typing import IO

from cluster.exceptions import JobFailed

SPILL_SUFFIX = ".spill"
UNIVERSAL_MARK = "-u"
ATTEMPT_MARK = "~"  # a cluster server's spill files: <server>~<map attempt>-<seq>.spill


def spill_sender(name: str) -> tuple[str, int | None]:
    """Who wrote a spill file, and in which map attempt (None: a name without one, from the local or
    the Dask executor)."""
    writer = name.split("-", 1)[0]
    sender, _, attempt = writer.partition(ATTEMPT_MARK)
    return sender, int(attempt) if attempt.isdigit() else None


INTERMEDIATE = ("map", "spill", "sort", "staging")


@dataclass(frozen=True)
class JobLayout:
    base_dir: str
    auxiliary_dir: str
    job_name: str

    @property
    def job_dir(self) -> str:
        return os.path.join(self.base_dir, self.job_name)

    def map_dir(self, server_id: str) -> str:
        return os.path.join(self.job_dir, "map", server_id)

    def spill_dir(self, server_id: str) -> str:
        return os.path.join(self.job_dir, "spill", server_id)

    def sort_dir(self, server_id: str) -> str:
        return os.path.join(self.job_dir, "sort", server_id)

    def staging_dir(self, run_id: str) -> str:
        return os.path.join(self.job_dir, "staging", run_id)

    @property
    def output_dir(self) -> str:
        return os.path.join(self.job_dir, "reduce")

    @property
    def state_dir(self) -> str:
        return os.path.join(self.auxiliary_dir, f"STATE_{self.job_name}")

    def auxiliary_path(self, name: str) -> str:
        return os.path.join(self.auxiliary_dir, name + ".data")

    def server_dirs(self, server_id: str) -> list[str]:
        return [self.map_dir(server_id), self.spill_dir(server_id), self.sort_dir(server_id)]

    def lock(self) -> IO:
        """Hold the job's lock (an flock on <job_dir>/.lock) until the returned file is closed.

        Two runs of one job at once would clear each other's intermediate files; the
        second is refused instead.
        """
        fh, holder = take_flock(os.path.join(self.job_dir, ".lock"))
        if fh is None:
            raise JobFailed(self.job_name, f"another run of this job is in progress ({holder}); "
                            "wait for it to finish, or stop it")
        return fh

    def clear_intermediate(self) -> None:
        """Remove what an earlier (possibly crashed) run left between phases."""
        for name in INTERMEDIATE:
            shutil.rmtree(os.path.join(self.job_dir, name), ignore_errors=True)

    def output_files(self) -> list[str]:
        """The published output files, in name order."""
        if not os.path.isdir(self.output_dir):
            return []
        return sorted(os.path.join(self.output_dir, f) for f in os.listdir(self.output_dir)
                      if not f.startswith("."))


def take_flock(path: str, note: str = "") -> tuple[IO | None, str]:
    """Take the flock of `path` (the kernel frees it however this process ends) and write who holds
    it into the file: (open file, "") -- or (None, what the holder wrote) when another process has it."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fh = open(path, "a+")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.seek(0)
        holder = fh.read().strip() or "another process"
        fh.close()
        return None, holder
    fh.seek(0)
    fh.truncate()
    fh.write(f"pid {os.getpid()} on {os.uname().nodename}{note}\n")
    fh.flush()
    return fh, ""


def flock_holder(path: str) -> int | None:
    """The pid holding an exclusive flock on `path`, read from /proc/locks (None: nobody, or not Linux).

    Only looks: trying the lock to find out would make a process that takes it at that moment fail."""
    try:
        st = os.stat(path)
        with open("/proc/locks") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 4242 00:2a:1234 0 EOF" (a waiting lock has "->" after the number)
        if "->" in fields or len(fields) < 6 or fields[1] != "FLOCK" or fields[3] != "WRITE":
            continue
        try:
            major, minor, inode = fields[5].split(":")
            same = (int(major, 16), int(minor, 16), int(inode)) == (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)
        except ValueError:
            continue
        if same:
            return int(fields[4])
    return None
