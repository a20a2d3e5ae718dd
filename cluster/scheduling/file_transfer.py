"""File-transfer jobs between the master and the locations, over the cluster's local/SSH layer.

- `upload`: the files of a master folder spread across the locations' `output_dir`, each
  file to one location (the least loaded so far, biggest files first; a file a location
  already has stays there). `upload_bulk`: the same, one tar per location (gzip'd when
  `compress`).
- `download` / `download_bulk`: a folder of every location into one master folder (one
  tar per location for bulk). Two locations with a file of the same name are an error.
- `upload_auxiliary`: a JSON file becomes `auxiliary_dir/<auxiliary_data_name>.data` on
  every location. `delete`: a folder on every location.

`reload_files`: send files the destination already has (by name) again; without it they
are skipped. `delete_files`: remove each source file once its copy is verified.
Every file is copied under a hidden temporary name, its SHA-256 compared with the
source's, and only then renamed into place: a failed or partial transfer leaves no half
file at its destination. Master paths may be relative to `local_working_dir`, location
paths relative to `base_dir`.
"""
from __future__ import annotations

import hashlib
import logging
import os
import shlex
import shutil
import sys
import tarfile
import tempfile
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import ujson

from cluster.config import ClusterConfig
from cluster.exceptions import TransferError
from cluster.job_spec import validate_job
from cluster.master.manager import for_each_host
from cluster.master.remote import Remote, remote_for
from cluster.timing import Deadline

log = logging.getLogger(__name__)
_BATCH = 200  # files per checksum or rename command


def sha256_of(path: str) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _local_files(folder: str) -> dict[str, int]:
    """relative path -> size of every visible file under a master folder."""
    found = {}
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for n in names:
            if not n.startswith("."):
                path = os.path.join(root, n)
                found[os.path.relpath(path, folder)] = os.path.getsize(path)
    return found


def _q(path: str) -> str:
    return shlex.quote(path)


class FileTransfer:
    """Runs file-transfer jobs for one cluster (one config)."""

    def __init__(self, config: ClusterConfig, *, timeout_minutes: float | None = None, job_name: str = "transfer",
                 cancelled: Callable[[], str | None] | None = None):
        self.config = config
        self.job_name = job_name
        self.deadline = Deadline(timeout_minutes, cancelled)  # checked between files
        self.token = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"

    # --- the job ------------------------------------------------------------------------------
    def run(self, job: dict[str, Any]) -> dict[str, Any]:
        """Do one file-transfer job; return its counters (files, bytes, skipped, deleted per location)."""
        job = validate_job(job)
        self.job_name = job["job_name"]
        tt = job["transfer_type"]
        if tt in ("upload", "upload_bulk"):
            return self.upload(job["input_dir"], job["output_dir"], reload_files=job["reload_files"],
                               delete_files=job["delete_files"], bulk=tt == "upload_bulk", compress=job["compress"])
        if tt in ("download", "download_bulk"):
            return self.download(job["input_dir"], job["output_dir"], reload_files=job["reload_files"],
                                 delete_files=job["delete_files"], bulk=tt == "download_bulk",
                                 compress=job["compress"])
        if tt == "upload_auxiliary":
            return self.upload_auxiliary(job["input_file_name"], job["auxiliary_data_name"])
        return self.delete(job["output_dir"])

    # --- paths and checks ----------------------------------------------------------------------
    def master_path(self, path: str) -> str:
        return self.config.master_path(path)

    def location_path(self, path: str) -> str:
        return os.path.normpath(os.path.join(self.config.base_dir, path))

    def _check_time(self) -> None:
        self.deadline.check(self.job_name, what=" (files copied so far are complete; no half file was left)")

    def _each_location(self, fn: Callable[[Remote], Any]) -> dict[str, Any]:
        def one(host: str) -> Any:
            with remote_for(self.config, host) as remote:
                return fn(remote)
        return for_each_host(self.config.locations, one)

    @staticmethod
    def _list(remote: Remote, folder: str) -> dict[str, int] | None:
        """relative path -> size of every visible file under a location's folder (None: no such folder)."""
        out = remote.run(f"test -d {_q(folder)} || exit 3; cd {_q(folder)} && "
                         r"find . -type f ! -path '*/.*' -printf '%P\0%s\0'", check=False)
        if out.exit_code == 3:
            return None
        if out.exit_code != 0:
            raise TransferError(f"cannot list {remote.host}:{folder}: {out.stderr.strip()}")
        fields = out.stdout.split("\0")[:-1]
        return {fields[i]: int(fields[i + 1]) for i in range(0, len(fields), 2)}

    @staticmethod
    def _remote_sums(remote: Remote, folder: str, rels: list[str]) -> dict[str, str]:
        sums = {}
        for i in range(0, len(rels), _BATCH):
            batch = rels[i:i + _BATCH]
            out = remote.run(f"cd {_q(folder)} && sha256sum -z -- " + " ".join(_q(r) for r in batch), timeout=600)
            for line in out.stdout.split("\0"):
                if line:
                    digest, _, name = line.partition("  ")
                    sums[name] = digest
        return sums

    # --- upload --------------------------------------------------------------------------------
    def upload(self, input_dir: str, output_dir: str, *, reload_files: bool = False, delete_files: bool = False,
               bulk: bool = False, compress: bool = False) -> dict[str, Any]:
        """Spread a master folder's files across the locations' output_dir, each file to one location."""
        source, dest = self.master_path(input_dir), self.location_path(output_dir)
        if not os.path.isdir(source):
            raise TransferError(f"job {self.job_name!r}: input_dir {source} is not a folder on the master")
        files = _local_files(source)
        present = self._each_location(lambda r: self._list(r, dest) or {})
        plan: dict[str, list[str]] = {h: [] for h in self.config.locations}
        load = {h: sum(present[h].values()) for h in self.config.locations}
        skipped = 0
        for rel in sorted(files, key=lambda r: (-files[r], r)):
            holder = next((h for h in self.config.locations if rel in present[h]), None)
            if holder is not None and not reload_files:
                skipped += 1
                continue
            host = holder or min(self.config.locations, key=lambda h: (load[h], self.config.locations.index(h)))
            plan[host].append(rel)
            load[host] += files[rel]

        def send(remote: Remote) -> dict[str, int]:
            rels = sorted(plan[remote.host])
            if rels:
                sources = {r: os.path.join(source, r) for r in rels}
                if bulk:
                    self._send_bulk(remote, dest, sources, compress)
                else:
                    self._send_files(remote, dest, sources)
            return {"files": len(rels), "bytes": sum(files[r] for r in rels)}

        sent = self._each_location(send)
        deleted = 0
        if delete_files:
            for rels in plan.values():
                for rel in rels:
                    os.unlink(os.path.join(source, rel))
                    deleted += 1
        return self._counters(sent, skipped=skipped, deleted=deleted)

    def _send_files(self, remote: Remote, dest: str, sources: dict[str, str]) -> None:
        """Copy master files (relative name -> path) into a location's folder, verified, then renamed."""
        rels = sorted(sources)
        sums = {rel: sha256_of(sources[rel]) for rel in rels}
        temps = {rel: self._temp_name(rel) for rel in rels}
        try:
            self._mkdirs(remote, dest, rels)
            for rel in rels:
                self._check_time()
                remote.put(sources[rel], os.path.join(dest, temps[rel]), timeout=600)
            got = self._remote_sums(remote, dest, list(temps.values()))
            self._verify(remote.host, {rel: got.get(temps[rel]) for rel in rels}, sums)
            self._rename_into_place(remote, dest, temps)
        except BaseException:
            names = sorted(temps.values())
            for i in range(0, len(names), _BATCH):
                remote.run(f"cd {_q(dest)} 2>/dev/null && rm -f -- " + " ".join(_q(t) for t in names[i:i + _BATCH]),
                           check=False)
            raise

    def _send_bulk(self, remote: Remote, dest: str, sources: dict[str, str], compress: bool) -> None:
        """The same as _send_files, in one tar (gzip'd when compress) unpacked beside the destination."""
        rels = sorted(sources)
        sums = {rel: sha256_of(sources[rel]) for rel in rels}
        stage = f".upload-{self.token}"
        tar_name = f"{stage}.tar" + (".gz" if compress else "")
        with tempfile.TemporaryDirectory(prefix="cluster-upload-") as scratch:
            local_tar = os.path.join(scratch, tar_name)
            with (tarfile.open(local_tar, "w:gz", compresslevel=3) if compress
                  else tarfile.open(local_tar, "w")) as tar:
                for rel in rels:
                    self._check_time()
                    tar.add(sources[rel], arcname=rel, recursive=False)
            try:
                remote.run(f"mkdir -p {_q(dest)}")
                remote.put(local_tar, os.path.join(dest, tar_name), timeout=3600)
                self._check_time()
                remote.run(f"cd {_q(dest)} && mkdir {_q(stage)} && tar -xf {_q(tar_name)} -C {_q(stage)} && "
                           f"rm -f {_q(tar_name)}", timeout=3600)
                got = self._remote_sums(remote, os.path.join(dest, stage), rels)
                self._verify(remote.host, got, sums)
                self._rename_into_place(remote, dest, {rel: os.path.join(stage, rel) for rel in rels})
            finally:
                remote.run(f"cd {_q(dest)} 2>/dev/null && rm -rf -- {_q(stage)} {_q(tar_name)}", check=False)

    # --- download ------------------------------------------------------------------------------
    def download(self, input_dir: str, output_dir: str, *, reload_files: bool = False, delete_files: bool = False,
                 bulk: bool = False, compress: bool = False) -> dict[str, Any]:
        """Copy a folder of every location into one master folder."""
        source, dest = self.location_path(input_dir), self.master_path(output_dir)
        listings = self._each_location(lambda r: self._list(r, source))
        if all(v is None for v in listings.values()):
            raise TransferError(f"job {self.job_name!r}: no location has the folder {source} (input_dir); "
                                "has the job that writes it run?")
        owners: dict[str, list[str]] = {}
        for host, found in listings.items():
            for rel in found or {}:
                owners.setdefault(rel, []).append(host)
        clashes = {rel: hosts for rel, hosts in owners.items() if len(hosts) > 1}
        if clashes:
            shown = "; ".join(f"{rel} on {', '.join(h)}" for rel, h in sorted(clashes.items())[:10])
            raise TransferError(f"job {self.job_name!r}: {len(clashes)} file name(s) exist on more than one location "
                                f"and would overwrite each other in {dest}: {shown}")
        os.makedirs(dest, exist_ok=True)
        have = _local_files(dest)
        skipped = sum(1 for rel in owners if rel in have and not reload_files)

        def fetch(remote: Remote) -> dict[str, int]:
            found = listings[remote.host] or {}
            rels = sorted(rel for rel in found if reload_files or rel not in have)
            if not rels:
                return {"files": 0, "bytes": 0, "deleted": 0}
            sums = self._remote_sums(remote, source, rels)
            stage = os.path.join(dest, f".download-{self.token}-{remote.host}")
            try:
                (self._fetch_bulk if bulk else self._fetch_files)(remote, source, stage, rels, compress)
                self._verify(remote.host, {rel: sha256_of(os.path.join(stage, rel)) for rel in rels}, sums)
                for rel in rels:
                    os.makedirs(os.path.dirname(os.path.join(dest, rel)), exist_ok=True)
                    os.replace(os.path.join(stage, rel), os.path.join(dest, rel))
            finally:
                shutil.rmtree(stage, ignore_errors=True)
            if delete_files:
                for i in range(0, len(rels), _BATCH):
                    remote.run(f"cd {_q(source)} && rm -f -- " + " ".join(_q(r) for r in rels[i:i + _BATCH]))
            return {"files": len(rels), "bytes": sum(found[r] for r in rels), "deleted": len(rels) * delete_files}

        got = self._each_location(fetch)
        return self._counters(got, skipped=skipped, deleted=sum(g.pop("deleted") for g in got.values()))

    def _fetch_files(self, remote: Remote, source: str, stage: str, rels: list[str], compress: bool) -> None:
        for rel in rels:
            self._check_time()
            os.makedirs(os.path.dirname(os.path.join(stage, rel)), exist_ok=True)
            remote.get(os.path.join(source, rel), os.path.join(stage, rel), timeout=600)

    def _fetch_bulk(self, remote: Remote, source: str, stage: str, rels: list[str], compress: bool) -> None:
        os.makedirs(stage, exist_ok=True)
        remote_tar = os.path.join(source, f".download-{self.token}.tar" + (".gz" if compress else ""))
        local_tar = os.path.join(stage, ".bundle.tar")
        remote_list = os.path.join(source, f".download-{self.token}.list")
        local_list = os.path.join(stage, ".bundle.list")
        with open(local_list, "wb") as fh:  # the names go in a file: a command line has a length limit
            fh.write(b"".join(rel.encode() + b"\0" for rel in rels))
        try:
            remote.put(local_list, remote_list)
            remote.run(f"cd {_q(source)} && tar -c{'z' if compress else ''}f {_q(remote_tar)} --null "
                       f"--verbatim-files-from -T {_q(remote_list)}", timeout=3600)
            self._check_time()
            remote.get(remote_tar, local_tar, timeout=3600)
        finally:
            remote.run(f"rm -f {_q(remote_tar)} {_q(remote_list)}", check=False)
            os.unlink(local_list)
        with tarfile.open(local_tar, "r:*") as tar:
            tar.extractall(stage, filter="data")
        os.unlink(local_tar)

    # --- auxiliary data and delete -------------------------------------------------------------
    def upload_auxiliary(self, input_file_name: str, auxiliary_data_name: str) -> dict[str, Any]:
        """Put a JSON file on every location as auxiliary_dir/<auxiliary_data_name>.data."""
        path = self.master_path(input_file_name)
        try:
            with open(path, "rb") as fh:
                ujson.loads(fh.read())
        except OSError as exc:
            raise TransferError(f"job {self.job_name!r}: cannot read input_file_name {path}: {exc.strerror}") from None
        except ValueError as exc:
            raise TransferError(f"job {self.job_name!r}: {path} is not valid JSON ({exc}); auxiliary data must be "
                                "one JSON document") from None
        name, size = f"{auxiliary_data_name}.data", os.path.getsize(path)

        def send(remote: Remote) -> dict[str, int]:
            self._send_files(remote, self.config.auxiliary_dir, {name: path})
            return {"files": 1, "bytes": size}
        return self._counters(self._each_location(send))

    def delete(self, output_dir: str) -> dict[str, Any]:
        """Remove a folder on every location (never one of the cluster's own folders or their parents)."""
        target = self.location_path(output_dir)
        cfg = self.config
        protected = {cfg.compute_dir, cfg.base_dir, cfg.working_dir, cfg.logs_dir, cfg.auxiliary_dir, cfg.code_dir,
                     cfg.base_projects_dir, cfg.local_working_dir, cfg.projects_dir, os.path.expanduser("~"),
                     sys.prefix, os.path.dirname(os.path.dirname(cfg.python_executable))}
        if not cfg.publish_url.startswith("s3://"):
            protected.add(cfg.publish_url)
        if target == "/" or any(p == target or p.startswith(target.rstrip("/") + "/") for p in protected):
            raise TransferError(f"job {self.job_name!r}: refusing to delete {target}: it is or holds one of the "
                                "cluster's own folders (or a home folder); name the folder inside it to remove")

        def remove(remote: Remote) -> dict[str, int]:
            found = self._list(remote, target)
            remote.run(f"rm -rf -- {_q(target)}", timeout=3600)
            return {"files": len(found or {}), "bytes": sum((found or {}).values())}
        return self._counters(self._each_location(remove), deleted=None)

    # --- shared steps --------------------------------------------------------------------------
    def _temp_name(self, rel: str) -> str:
        head, tail = os.path.split(rel)
        return os.path.join(head, f".{tail}.part-{self.token}")

    @staticmethod
    def _mkdirs(remote: Remote, dest: str, rels: list[str]) -> None:
        dirs = sorted({os.path.join(dest, os.path.dirname(r)) for r in rels})
        for i in range(0, len(dirs), _BATCH):
            remote.run("mkdir -p -- " + " ".join(_q(d) for d in dirs[i:i + _BATCH]))

    def _verify(self, host: str, got: Mapping[str, str | None], want: dict[str, str]) -> None:
        bad = sorted(rel for rel in want if got.get(rel) != want[rel])
        if bad:
            raise TransferError(f"job {self.job_name!r}: {len(bad)} file(s) arrived at {host} with another checksum "
                                f"than they left with ({', '.join(bad[:5])}); nothing of this transfer was put in "
                                "place there; run the job again")

    def _rename_into_place(self, remote: Remote, dest: str, temps: dict[str, str]) -> None:
        rels = sorted(temps)
        self._mkdirs(remote, dest, rels)
        for i in range(0, len(rels), _BATCH):
            moves = " && ".join(f"mv -fT -- {_q(temps[r])} {_q(r)}" for r in rels[i:i + _BATCH])
            remote.run(f"cd {_q(dest)} && {moves}")

    def _counters(self, per_location: dict[str, dict[str, int]], skipped: int = 0,
                  deleted: int | None = 0) -> dict[str, Any]:
        out: dict[str, Any] = {"files": sum(v["files"] for v in per_location.values()),
                               "bytes": sum(v["bytes"] for v in per_location.values()),
                               "files_skipped": skipped, "per_location": per_location}
        if deleted is not None:
            out["files_deleted"] = deleted
        log.info("job %s: %d file(s), %d bytes (%d skipped)", self.job_name, out["files"], out["bytes"], skipped)
        return out
