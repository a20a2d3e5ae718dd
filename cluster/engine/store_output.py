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
from typing import Any

import ujson

from cluster.engine import store as stores
from cluster.engine.store import StoreOptions
from cluster.exceptions import OutputError

LATEST = "_LATEST"
SUCCESS = "_SUCCESS"
ATTEMPTS = "_attempts"
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

    def mapped(self) -> set[str]:
        """The input files successful runs have mapped (hold_state)."""
        return set((self.latest() or {}).get("mapped", {}))

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

    def commit(self, run_id: str, files: list[str], mapped: dict[str, int | None], replace: bool) -> str:
        """Publish the run whose files are under its prefix: `_SUCCESS`, then `_LATEST` (the one step
        readers see), then, with `replace`, the older runs' prefixes go. Returns the run's prefix."""
        previous = self.latest() or {}
        prefix = self.run_prefix(run_id)
        marker = {"run_id": run_id, "prefix": prefix + "/",
                  "files": sorted(files) if replace else [*previous.get("files", []), *sorted(files)],
                  "mapped": {**previous.get("mapped", {}), **mapped}}
        try:
            stores.write_bytes(stores.join(prefix, SUCCESS), b"", self.store)
            stores.write_bytes(stores.join(self.url, LATEST), ujson.dumps(marker).encode(), self.store)
        except OSError as exc:
            raise OutputError(f"publishing run {run_id} at {self.url} failed: {exc} (the previous output is "
                              "still what _LATEST names)") from exc
        self._remove_attempts(run_id)
        if replace:
            self._remove_runs_except(run_id)
        return prefix

    def discard(self, run_id: str) -> None:
        """Remove what a failed run wrote; the published output is untouched."""
        self._remove_attempts(run_id)
        fs = stores.filesystem(self.url, self.store)
        try:
            if fs.exists(self.run_prefix(run_id)):
                fs.rm(self.run_prefix(run_id), recursive=True)
        except OSError as exc:  # a leftover prefix is never read: nothing names it
            log.warning("could not remove %s of the failed run: %s", self.run_prefix(run_id), exc)

    def _remove_attempts(self, run_id: str) -> None:
        fs = stores.filesystem(self.url, self.store)
        path = stores.join(self.url, ATTEMPTS, run_id)
        try:
            if fs.exists(path):
                fs.rm(path, recursive=True)
        except OSError as exc:  # leftovers of an attempt are never read
            log.warning("could not remove the reduce attempts under %s: %s", path, exc)

    def _remove_runs_except(self, run_id: str) -> None:
        fs = stores.filesystem(self.url, self.store)
        try:
            entries = fs.ls(self.url, detail=True, refresh=True)
        except OSError as exc:
            log.warning("could not list %s to remove the older runs: %s", self.url, exc)
            return
        for entry in entries:
            name = entry["name"].rstrip("/").rsplit("/", 1)[-1]
            if entry.get("type") == "directory" and name != run_id and not name.startswith("_"):
                try:
                    fs.rm(entry["name"], recursive=True)
                except OSError as exc:  # an older run's files: unnamed by _LATEST, never read
                    log.warning("could not remove the older run %s: %s", entry["name"], exc)
