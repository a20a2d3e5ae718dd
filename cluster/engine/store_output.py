"""A job's output on a store (the job key `output_url`: s3://bucket/prefix, gs://..., file://...).

A run's files go under a prefix of their own, `<output_url>/<run_id>/`, written while nothing points
there; the run is published by one small object written whole, `<output_url>/_LATEST`:

    {"run_id": ..., "prefix": "<output_url>/<run_id>/", "files": [every output file, as URLs],
     "mapped": {input file: size, ...}}      # hold_state: every file successful runs have mapped

A reader reads `_LATEST` and then its files, so no reader ever sees half a run, and the run's
`_SUCCESS` marks a finished prefix for tools that key on it (Spark, Hadoop). With `replace`
(delete_job_data, merge_previous_output) the files are the new run's alone and the older prefixes
are removed after the switch; without it, the new files are added to the previous ones. Keeping the
hold_state record in the same object makes the output and the record one commit: a crash leaves
both as they were before, or both new.
"""
from __future__ import annotations

import logging
import os
import re
from typing import Any

import ujson

from cluster.engine import store as stores
from cluster.engine.store import StoreOptions
from cluster.exceptions import OutputError

LATEST = "_LATEST"
SUCCESS = "_SUCCESS"
ATTEMPTS = "_attempts"
RUN_ID = re.compile(r"\d{8}T\d{6}-[0-9a-f]{8}")  # new_run_id's names: nothing else under output_url is removed
log = logging.getLogger(__name__)


class StoreOutput:
    """The published output of one job at `url`, and the steps that publish a run there."""

    def __init__(self, url: str, store: StoreOptions | None = None) -> None:
        self.url = url.rstrip("/")
        self.store = store

    def run_prefix(self, run_id: str) -> str:
        return stores.join(self.url, run_id)

    def attempt_prefix(self, run_id: str, attempt: str) -> str:
        """Where one reduce attempt writes before the run is committed (`_attempts/<run>/<attempt>`)."""
        return stores.join(self.url, ATTEMPTS, run_id, attempt)

    def latest(self) -> dict[str, Any] | None:
        """The marker of the published run, None before the first."""
        try:
            data = stores.read_bytes(stores.join(self.url, LATEST), self.store)
        except OSError as exc:
            raise OutputError(f"cannot read {stores.join(self.url, LATEST)}: {exc}") from exc
        if data is None:
            return None
        try:
            marker = ujson.loads(data)
        except ValueError as exc:
            raise OutputError(f"{stores.join(self.url, LATEST)} is not this package's marker ({exc}); "
                              "output_url must be a prefix only this job writes") from None
        return marker if isinstance(marker, dict) else None

    def output_files(self) -> list[tuple[str, int]]:
        """The published files with their sizes (merge_previous_output reads them back)."""
        marker = self.latest() or {}
        return [(url, stores.size(url, self.store) or 0) for url in marker.get("files", [])]

    def mapped(self, location: str | None = None) -> set[str]:
        """The input files successful runs have mapped (hold_state): store URLs and one machine's paths,
        and with `location`, the local paths that cluster location mapped."""
        marker = self.latest() or {}
        return set(marker.get("mapped", {})) | set(marker.get("mapped_by_location", {}).get(location or "", {}))

    def upload(self, run_id: str, local_files: list[str]) -> list[str]:
        """Put a run's local output files under its prefix; their URLs."""
        prefix = self.run_prefix(run_id)
        pairs = [(path, stores.join(prefix, os.path.basename(path))) for path in sorted(local_files)]
        try:
            stores.put_files(pairs, self.store)
        except OSError as exc:
            raise OutputError(f"uploading the output to {prefix} failed: {exc}") from exc
        return [url for _, url in pairs]

    def adopt(self, run_id: str, attempt_files: list[str]) -> list[str]:
        """Move the files of the reduce attempts that count (already on the store) under the run's
        prefix; their URLs."""
        prefix = self.run_prefix(run_id)
        fs = stores.filesystem(self.url, self.store)
        out = []
        try:
            for url in sorted(attempt_files, key=lambda u: u.rsplit("/", 1)[1]):
                dest = stores.join(prefix, url.rsplit("/", 1)[1])
                fs.mv(url, dest)
                out.append(dest)
        except OSError as exc:
            raise OutputError(f"moving the output under {prefix} failed: {exc}") from exc
        return out

    def commit(self, run_id: str, files: list[str], mapped: dict[str, int | None], replace: bool,
               mapped_by_location: dict[str, dict[str, int | None]] | None = None) -> str:
        """Publish the run whose files are under its prefix: `_SUCCESS`, then `_LATEST` (the one step
        readers see), then, with `replace`, the older runs' prefixes go. Returns the run's prefix.
        `mapped`: hold_state's new files (URLs, or this machine's paths); `mapped_by_location`: a
        cluster's local files, by location (two machines may have the same path)."""
        previous = self.latest() or {}
        prefix = self.run_prefix(run_id)
        by_location = {host: dict(paths) for host, paths in previous.get("mapped_by_location", {}).items()}
        for host, paths in (mapped_by_location or {}).items():
            by_location.setdefault(host, {}).update(paths)
        marker = {"run_id": run_id, "prefix": prefix + "/",
                  "files": sorted(files) if replace else [*previous.get("files", []), *sorted(files)],
                  "mapped": {**previous.get("mapped", {}), **mapped}, "mapped_by_location": by_location}
        try:
            stores.write_bytes(stores.join(prefix, SUCCESS), b"", self.store)
            stores.write_bytes(stores.join(self.url, LATEST), ujson.dumps(marker).encode(), self.store)
        except OSError as exc:
            raise OutputError(f"publishing run {run_id} at {self.url} failed: {exc} (_LATEST names the previous "
                              "run, or this one if the store took the write before the error)") from exc
        # published: what follows only tidies, and no failure of it may undo the run
        try:
            self._remove_attempts(run_id)
            if replace:
                self._remove_runs_except(run_id, previous.get("run_id"))
        except Exception as exc:  # noqa: BLE001 - a store client's errors are of many kinds; none matters now
            log.warning("run %s is published at %s, but removing what it replaced failed: %s", run_id, self.url, exc)
        return prefix

    def discard(self, run_id: str) -> None:
        """Remove what a failed run wrote; the published output is untouched (a run that failed after its
        marker was written is published, and stays)."""
        try:
            if (self.latest() or {}).get("run_id") == run_id:
                log.warning("run %s failed after it was published at %s; its output stays", run_id, self.url)
                return
            self._remove_attempts(run_id)
            fs = stores.filesystem(self.url, self.store)
            fs.invalidate_cache()
            fs.rm(self.run_prefix(run_id), recursive=True)
        except FileNotFoundError:
            pass  # the run wrote nothing there
        except Exception as exc:  # noqa: BLE001 - a leftover prefix is never read: nothing names it
            log.warning("could not remove %s of the failed run: %s", self.run_prefix(run_id), exc)

    def _remove_attempts(self, run_id: str) -> None:
        fs = stores.filesystem(self.url, self.store)
        path = stores.join(self.url, ATTEMPTS, run_id)
        try:
            fs.invalidate_cache()
            fs.rm(path, recursive=True)
        except FileNotFoundError:
            pass  # no reduce attempt wrote to the store
        except OSError as exc:  # leftovers of an attempt are never read
            log.warning("could not remove the reduce attempts under %s: %s", path, exc)

    def _remove_runs_except(self, run_id: str, previous: str | None) -> None:
        """Remove older runs' prefixes, all but the new run and the one before it (a reader that read the
        previous marker a moment ago still finds its files); only names that are run ids."""
        fs = stores.filesystem(self.url, self.store)
        try:
            entries = fs.ls(self.url, detail=True, refresh=True)
        except OSError as exc:
            log.warning("could not list %s to remove the older runs: %s", self.url, exc)
            return
        for entry in entries:
            name = entry["name"].rstrip("/").rsplit("/", 1)[-1]
            if entry.get("type") == "directory" and name not in (run_id, previous) and RUN_ID.fullmatch(name):
                try:
                    fs.rm(entry["name"], recursive=True)
                except OSError as exc:  # an older run's files: unnamed by _LATEST, never read
                    log.warning("could not remove the older run %s: %s", entry["name"], exc)
