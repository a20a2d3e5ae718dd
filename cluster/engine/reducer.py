"""Sort phase and reduce phase of one server, its output files, and the job's commit.

Sort: every spill file addressed to this server is already a sorted run; the
sort phase adds them to a DiskSort and pre-merges until one final merge fits
the memory budget. Reduce: groups in key order through the reduce function into
rotating ujson-lines files in the run's staging folder (a job script's reduce writes text
records, which land as they are, in .txt files). `commit_output` makes a
successful run's output the job's output; nothing is published before.
"""
from __future__ import annotations

import gzip
import logging
import os
import shutil
import traceback
from collections.abc import Callable, Iterable
from itertools import islice
from typing import IO, Any

import ujson

from cluster import defaults
from cluster.engine.disk_list import DiskList
from cluster.engine.disk_sort import DiskSort
from cluster.exceptions import OrderConflict, OutputError, UserFunctionError
from cluster.layout import SPILL_SUFFIX, UNIVERSAL_MARK, JobLayout, spill_sender

log = logging.getLogger(__name__)
OUTPUT_SUFFIX = ".jsonl"
TEXT_SUFFIX = ".txt"


class OutputWriter:
    """Writes items as ujson lines (or, with `text`, str records as they are), a new file every
    `max_items`, gzip when `compress`."""

    def __init__(self, directory: str, prefix: str, max_items: int, compress: bool, text: bool = False):
        self.text = text
        self.directory = directory
        self.prefix = prefix
        self.max_items = max(1, max_items)
        self.compress = compress
        self.files: list[str] = []
        self.items = 0
        self.bytes = 0
        self._fh: IO[bytes] | gzip.GzipFile | None = None
        self._in_file = 0
        os.makedirs(directory, exist_ok=True)

    def _open(self) -> None:
        suffix = TEXT_SUFFIX if self.text else OUTPUT_SUFFIX
        name = f"{self.prefix}-{len(self.files):05d}{suffix}" + (".gz" if self.compress else "")
        path = os.path.join(self.directory, name)
        self.files.append(path)
        try:
            raw = open(path, "wb")
        except OSError as exc:
            raise OutputError(f"cannot create reduce output {path}: {exc.strerror or exc}") from exc
        self._fh = gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=defaults.GZIP_LEVEL) \
            if self.compress else raw
        self._raw = raw
        self._in_file = 0

    def write_many(self, items: Iterable, key: Any = None) -> int:
        """Write every item (encoded and written in chunks, so a huge output stays small); return how many."""
        if isinstance(items, (str, bytes, dict)):
            raise OutputError(f"the reduce function returned a {type(items).__name__} for key {key!r:.100}; "
                              "it must return an iterable of output items (e.g. a list of (key, value))")
        count = 0
        it = iter(items)
        while True:
            room = self.max_items - self._in_file if self._fh is not None else self.max_items
            chunk = islice(it, min(room or self.max_items, 4096))
            lines = list(chunk) if self.text else _json_lines(chunk, key)
            if not lines:
                return count
            self._write_lines(lines, key)
            count += len(lines)

    def _write_lines(self, lines: list[str], key: Any) -> None:
        if self._fh is None or self._in_file >= self.max_items:
            self.close()
            self._open()
        try:
            data = ("".join(lines) if self.text else "\n".join(lines) + "\n").encode()
        except UnicodeEncodeError as exc:
            raise OutputError(f"reduce output for key {key!r:.100} holds a string that is not valid "
                              f"Unicode ({exc.reason}); clean it in the reduce function") from None
        assert self._fh is not None  # opened above
        try:
            self._fh.write(data)
        except OSError as exc:
            raise OutputError(f"writing reduce output {self.files[-1]} failed: {exc.strerror or exc}") from exc
        self._in_file += len(lines)
        self.bytes += len(data)
        self.items += len(lines)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            if self._raw is not self._fh:
                self._raw.close()
            self._fh = None


def _json_lines(items: Iterable, key: Any) -> list[str]:
    """Each item as a ujson line; an item that is not JSON is an error naming it and its key."""
    dumps = ujson.dumps
    lines = []
    for item in items:
        try:
            lines.append(dumps(item, ensure_ascii=False, allow_nan=False))
        except (TypeError, ValueError, OverflowError) as exc:
            raise OutputError(f"reduce output item {item!r:.200} (key {key!r:.100}) is not JSON: {exc}; "
                              "reduce functions must yield JSON-serializable items (no NaN, Infinity, "
                              "sets or objects)") from None
    return lines


class Reducer:
    """One server's sort and reduce phases for one run of a job."""

    def __init__(self, *, server_id: str, layout: JobLayout, run_id: str, job: dict,
                 reduce_function: Callable, auxiliary_data: Any, memory_budget: int, counters: dict,
                 progress: Callable[[], None] | None = None):
        self.server_id = server_id
        self.layout = layout
        self.run_id = run_id
        self.job = job
        self.reduce_function = reduce_function
        self.auxiliary_data = auxiliary_data
        self.memory_budget = memory_budget
        self.counters = counters
        self.progress = progress
        self._sort: DiskSort | None = None

    def _input_runs(self) -> list[str]:
        folder = self.layout.map_dir(self.server_id)
        if not os.path.isdir(folder):
            return []
        return sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.endswith(SPILL_SUFFIX))

    def _new_sort(self, universal: bool) -> DiskSort:
        sort_dir = self.layout.sort_dir(self.server_id)
        os.makedirs(sort_dir, exist_ok=True)
        ds = DiskSort(sort_dir, self.memory_budget, universal=universal)
        for path in self._input_runs():
            ds.add_run(path, universal=os.path.basename(path).endswith(UNIVERSAL_MARK + SPILL_SUFFIX))
        return ds

    def drop_other_attempts(self, accepted: dict[str, int]) -> int:
        """Remove the spill files of map attempts that do not count (a server whose map ran again sent
        its output again); return how many."""
        dropped = 0
        for path in self._input_runs():
            sender, attempt = spill_sender(os.path.basename(path))
            if attempt is not None and accepted.get(sender, attempt) != attempt:
                os.unlink(path)
                dropped += 1
        return dropped

    def sort(self, accepted: dict[str, int] | None = None) -> None:
        """Collect this server's runs (of the map attempts in `accepted`, when given) and merge them down
        to what one final merge can hold."""
        if self._sort is not None:
            self._sort.close()
        shutil.rmtree(self.layout.sort_dir(self.server_id), ignore_errors=True)  # an earlier attempt's runs
        if accepted is not None:
            self.counters["spill_files_dropped"] = self.drop_other_attempts(accepted)
        self._sort = self._new_sort(universal=False)
        self.counters["runs_in"] = self._sort.run_count
        try:
            self._sort.premerge()
        except OrderConflict:
            self._fall_back_to_universal()
            self._sort.premerge()
        self.counters["merge_passes"] = self._sort.counters["merge_passes"]

    def reduce(self, accepted: dict[str, int] | None = None) -> None:
        """Reduce every group into the run's staging folder."""
        if self._sort is None:
            self.sort(accepted)
        try:
            self._reduce_once()
        except OrderConflict:
            self._fall_back_to_universal()
            self._reduce_once()

    def _fall_back_to_universal(self) -> None:
        """Keys of different runs were not comparable: start the merge again in the universal order."""
        log.warning("%s: keys are not mutually comparable; merging in the universal key order", self.server_id)
        self.counters["order_fallbacks"] = self.counters.get("order_fallbacks", 0) + 1
        assert self._sort is not None  # reduce() sorted first
        self._sort.close()
        self._sort = self._new_sort(universal=True)

    def _reduce_once(self) -> None:
        assert self._sort is not None  # reduce() sorted first
        job = self.job
        staging = self.layout.staging_dir(self.run_id)
        for f in os.listdir(staging) if os.path.isdir(staging) else []:
            if f.startswith(self.server_id + "-"):
                os.unlink(os.path.join(staging, f))
        writer = OutputWriter(staging, f"{self.server_id}-{self.run_id}",
                              job.get("max_number_dumped_items_reducer") or defaults.MAX_NUMBER_DUMPED_ITEMS_REDUCER,
                              bool(job.get("compress")),
                              text=bool(getattr(self.reduce_function, "writes_text", False)))
        fn, aux = self.reduce_function, self.auxiliary_data
        disk_based_output = bool(job.get("disk_based_output"))
        c = self.counters
        c.update(groups=0, items_reduced=0, records_out=0)
        for name in ("output_bytes", "output_files", "order_fallbacks", "largest_group", "groups_on_disk"):
            c.setdefault(name, 0)
        sort_dir = self.layout.sort_dir(self.server_id)
        try:
            for n, (key, group) in enumerate(self._sort.groups(disk_based=bool(job.get("disk_based_input"))), 1):
                size = len(group)
                c["items_reduced"] += size
                if size > c["largest_group"]:
                    c["largest_group"] = size
                try:
                    if disk_based_output:
                        with DiskList(sort_dir) as sink:
                            out = fn(group, (sink, aux))
                            c["records_out"] += writer.write_many(sink if out is None else out, key)
                    else:
                        out = fn(group, aux)
                        if out is not None:
                            c["records_out"] += writer.write_many(out, key)
                except (OutputError, OrderConflict):
                    raise
                except Exception as exc:
                    raise UserFunctionError(function=f"reduce function {job['reduce_function_name'] or 'every_item'!r}",
                                            phase="reduce", server=self.server_id,
                                            error=f"{type(exc).__name__}: {exc}",
                                            traceback=traceback.format_exc(), key=key) from exc
                c["groups"] = n
                if isinstance(group, DiskList):
                    c["groups_on_disk"] = self._sort.counters["groups_on_disk"]
                if self.progress and not n & 1023:
                    self.progress()
        finally:
            writer.close()
        c["output_files"] = len(writer.files)
        c["output_bytes"] = writer.bytes
        c["groups_on_disk"] = self._sort.counters.get("groups_on_disk", 0)
        self._sort.close()  # the input runs stay until the commit: a reduce that runs again reads them

    def close(self) -> None:
        if self._sort is not None:
            self._sort.close()


def commit_output(layout: JobLayout, run_id: str, replace: bool) -> str:
    """Publish a successful run's staged output as the job's output; return the output dir.

    `replace`: the new output takes the place of the previous one (delete_job_data,
    merge_previous_output); otherwise the new files are added beside the old ones.
    """
    staging = layout.staging_dir(run_id)
    os.makedirs(staging, exist_ok=True)
    out = layout.output_dir
    if replace or not os.path.isdir(out):
        old = os.path.join(layout.job_dir, f".reduce-old-{run_id}")
        if os.path.isdir(out):
            os.replace(out, old)
        os.replace(staging, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        for name in sorted(os.listdir(staging)):
            os.replace(os.path.join(staging, name), os.path.join(out, name))
    layout.clear_intermediate()
    return out


def discard_run(layout: JobLayout, run_id: str) -> None:
    """Remove what a failed run left; the previous output is untouched."""
    shutil.rmtree(layout.staging_dir(run_id), ignore_errors=True)
    layout.clear_intermediate()
