"""Map phase: choose a server's input files, read them (compression by content: reading.py), call map.

The master (or the location's coordinator) plans the inputs once per location,
so servers never disagree about who maps a file; each server then runs `Mapper`
over its share and feeds every map call's output to its `Shuffler`.
"""
from __future__ import annotations

import logging
import random
import time
import traceback
import uuid
from collections.abc import Callable, Iterable
from itertools import islice
from typing import Any

import ujson

from cluster import defaults
from cluster.counters import Merge
from cluster.counters import names as counter_names
from cluster.engine.reading import Compression, InputFile, count_bad_line, decode_error_types
from cluster.engine.shuffler import Shuffler, describe_bad_output
from cluster.engine.store import StoreOptions
from cluster.engine.store import size as store_size
from cluster.exceptions import BadMapOutput, BadRecord, FailedFile, InputError, NotTheInput, UserFunctionError
from cluster.layout import JobLayout

log = logging.getLogger(__name__)

MAX_BAD_LINE_EXAMPLES = 20
# what the mapper counts itself (the shuffler counts the rest of the map phase's counters)
MAPPER_COUNTERS = ("files", "files_done", "files_decompressed", "records_in", "records_sampled_out", "bytes_in",
                   "bad_lines", "files_failed", "input_bytes_total", "input_bytes_done")


def load_auxiliary_data(layout: JobLayout, name: str | None) -> Any:
    """The JSON document `auxiliary_dir/<name>.data`, or None when no name is given."""
    if not name:
        return None
    path = layout.auxiliary_path(name)
    try:
        with open(path, "rb") as fh:
            return ujson.loads(fh.read())
    except FileNotFoundError:
        raise InputError(f"auxiliary data {name!r} not found: no file {path} "
                         "(upload it with an upload_auxiliary transfer, or fix the job's name)") from None
    except ValueError as exc:
        raise InputError(f"auxiliary data {path} is not valid JSON: {exc}") from None


class FileMapFunction:
    """A map function that depends on its input file (a job script's dimensions come from the
    file's path) and may hold its output between lines (in-mapper combining).

    The mapper calls `start(counters)` once (the map phase's counters, for the function's own),
    `for_file(path)` for the function of that file's lines, and `take()` before each flush
    (with `final=True` after the last file) for the items it holds.
    """

    def start(self, counters: dict) -> None:
        pass

    def for_file(self, path: str) -> Callable[[str, Any], Iterable | None]:
        raise NotImplementedError

    def take(self, final: bool = False) -> list | None:
        return None


# --- reading -----------------------------------------------------------------------------
def read_previous_output(line: str, auxiliary_data: Any) -> list[tuple]:
    """The 'map function' of merge_previous_output: an output line back into a (key, value) item."""
    try:
        item = ujson.loads(line)
    except ValueError as exc:
        raise BadRecord(f"previous output line is not JSON: {exc}") from None
    if not isinstance(item, list) or len(item) != 2:
        raise BadRecord("previous output items must be [key, value] pairs")
    return [(_tuplify(item[0]), item[1])]


def _tuplify(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_tuplify(v) for v in value)
    return value


class _FileState:
    """How far the mapping of one file has come, and how much of it the counters already show:
    they move forward at every checkpoint and once at the end, by the difference."""

    __slots__ = ("path", "reader", "fn", "held", "sampled", "counters", "size", "bytes_before", "done_before",
                 "lines", "skipped", "first_line", "shown_records", "shown_skipped")

    def __init__(self, path: str, reader: InputFile, fn: Callable, held: FileMapFunction | None, sampled: bool,
                 counters: dict, size: int):
        self.path, self.reader, self.fn, self.held, self.sampled = path, reader, fn, held, sampled
        self.counters = counters
        self.size = size
        self.bytes_before = counters["bytes_in"]
        self.done_before = counters["input_bytes_done"]
        self.lines = self.skipped = 0  # lines read, of which sampled out
        self.first_line = 1            # the first line whose output has not been flushed
        self.shown_records = self.shown_skipped = 0

    def show(self, unread_bytes: int = 0) -> None:
        """Counters to where the file stands (`unread_bytes`: read from the codec, not yet mapped)."""
        counters = self.counters
        self._show_records()
        counters["bytes_in"] = self.bytes_before + self.reader.tell() - unread_bytes
        counters["input_bytes_done"] = self.done_before + self.reader.raw_tell()

    def read_to_end(self) -> None:
        """The decoded bytes of a file read to its end (or to where it broke, when the codec can say)."""
        decoded = self.reader.tell()
        if decoded:
            self.counters["bytes_in"] = self.bytes_before + decoded

    def finish(self) -> None:
        """The last counts, whatever ended the file: every record counted, every byte of it done."""
        self._show_records()
        self.counters["input_bytes_done"] = self.done_before + self.size

    def _show_records(self) -> None:
        counters = self.counters
        records = self.lines - self.skipped
        counters["records_in"] += records - self.shown_records
        counters["records_sampled_out"] += self.skipped - self.shown_skipped
        self.shown_records, self.shown_skipped = records, self.skipped


class Mapper:
    """Runs one server's map phase over its files, feeding a Shuffler."""

    def __init__(self, *, server_id: str, job: dict, map_function: Callable | FileMapFunction, auxiliary_data: Any,
                 shuffler: Shuffler, counters: dict, progress: Callable[[], None] | None = None,
                 store: StoreOptions | None = None):
        """`store`: the options of the stores (fsspec URLs) the input files may be on."""
        self.server_id = server_id
        self.store = store
        self.job = job
        self.map_function = map_function
        self.auxiliary_data = auxiliary_data
        self.shuffler = shuffler
        self.counters = counters
        self.progress = progress
        for name in MAPPER_COUNTERS:
            counters.setdefault(name, 0)
        for name in counter_names(Merge.LIST, "map"):
            counters.setdefault(name, [])
        for name in counter_names(Merge.SUM_BY_KEY, "map"):
            counters.setdefault(name, {})

    def run(self, files: list[str], map_function: Callable | FileMapFunction | None = None,
            sample: bool = True) -> None:
        """Map every file; `map_function` overrides the job's (for previous output, never sampled)."""
        fn = map_function or self.map_function
        self.counters["files"] += len(files)
        sizes = {f: store_size(f, self.store) or 0 for f in files}  # once a file: a URL's costs a request
        self.counters["input_bytes_total"] += sum(sizes.values())
        if isinstance(fn, FileMapFunction):
            fn.start(self.counters)
        for path in files:
            if self.counters["files_failed"]:  # the job fails: only name the other files that cannot be read
                self._check_file(path, sizes[path])
            else:
                self._map_file(path, sizes[path], fn, sample)
            self.counters["files_done"] += 1
        if isinstance(fn, FileMapFunction):
            self.shuffler.add(fn.take(final=True))
            self.shuffler.maybe_flush()

    def _sampler(self, path: str, sampled: bool) -> Callable[[], float] | None:
        """The file's random stream when the job downsamples (and this input is `sampled`), else None."""
        fraction = float(self.job.get("downsample") or 1.0)
        if fraction >= 1.0 or not sampled:
            return None
        return random.Random(f"{self.job['job_name']}\0{path}").random

    def _map_file(self, path: str, size: int, fn: Callable | FileMapFunction, sampled: bool) -> None:
        """Map one file's lines. A file that cannot be decoded is named (the job fails after map)."""
        started = time.monotonic()
        reader = self._open(path, size)
        if reader is None:
            return
        if isinstance(fn, FileMapFunction):
            file = _FileState(path, reader, fn.for_file(path), fn, sampled, self.counters, size)
        else:
            file = _FileState(path, reader, fn, None, sampled, self.counters, size)
        held = file.held
        try:
            with reader:
                self._read_lines(file)
        finally:
            file.finish()
        log.info("%s: mapped %s (%d lines, %.1fs)", self.server_id, path, file.lines, time.monotonic() - started)
        if held is not None:
            self.shuffler.add(held.take())
        self._flush(path, file.fn, file.first_line, file.lines, sampled)
        if self.progress:
            self.progress()

    def _open(self, path: str, size: int) -> InputFile | None:
        """The file opened for reading, or None when its data cannot be decoded at all (it is named)."""
        try:
            reader = InputFile(path, self.store)
        except FailedFile as failed:
            self._failed_file(failed)
            self.counters["input_bytes_done"] += size
            return None
        if reader.compression is not Compression.PLAIN:
            self.counters["files_decompressed"] += 1
        return reader

    def _read_lines(self, file: _FileState) -> None:
        """Map the lines, telling the codec's failure (the file is named) from the shuffle's or
        the master's (raised as they are)."""
        try:
            self._map_lines(file)
        except NotTheInput as wrapped:
            raise wrapped.error from None
        except decode_error_types() as exc:  # raised by the codec, reading the next line
            try:
                file.reader.raise_failure(exc, file.lines)
            except FailedFile as failed:  # named; the job fails after the map phase
                self._failed_file(failed)
        file.read_to_end()

    def _map_lines(self, file: _FileState) -> None:
        """The hot loop: sample, decode, map, hand the output to the shuffler; a checkpoint every
        MEMORY_CHECK_EVERY_LINES lines. Everything it touches per line is a local."""
        path, fn, held = file.path, file.fn, file.held is not None
        add = self.shuffler.add
        aux = self.auxiliary_data
        sample = self._sampler(path, file.sampled)
        fraction = float(self.job.get("downsample") or 1.0)
        check_every = defaults.MEMORY_CHECK_EVERY_LINES - 1
        lineno = skipped = 0
        try:
            for lineno, data in enumerate(file.reader, 1):
                if not lineno & check_every:  # before any `continue`: every 1024th line checks
                    self._checkpoint(file, lineno - 1, skipped, len(data))
                if sample is not None and sample() >= fraction:
                    skipped += 1
                    continue
                try:
                    line = data.decode()
                except UnicodeDecodeError as exc:
                    self._bad_line(path, lineno, f"not UTF-8: {exc.reason}")
                    continue
                try:
                    if held:  # its output comes through take()
                        fn(line, aux)
                    else:
                        add(fn(line, aux))
                except BadRecord as exc:
                    self._bad_line(path, lineno, str(exc))
                except Exception as exc:
                    raise self._user_error(exc, path, lineno, line) from exc
        finally:
            file.lines, file.skipped = lineno, skipped

    def _checkpoint(self, file: _FileState, lines: int, skipped: int, unread_bytes: int) -> None:
        """Counters and progress up to date, the held items to the shuffler, and a flush (a combine or
        a spill when memory says so). What fails here is the shuffle's or the master's, not the input's."""
        try:
            file.lines, file.skipped = lines, skipped
            file.show(unread_bytes)
            if file.held is not None:
                self.shuffler.add(file.held.take())
            self._flush(file.path, file.fn, file.first_line, lines, file.sampled)
            file.first_line = lines + 1
            if self.progress:
                self.progress()
        except decode_error_types() as exc:
            raise NotTheInput(exc) from exc

    def _failed_file(self, failed: FailedFile) -> None:
        """Name a file that cannot be decoded; the job fails when the map phase ends (what it yielded
        is never published)."""
        self.counters["files_failed"] += 1
        self.counters["failed_files"].append({"path": failed.path, "reason": failed.reason})
        log.error("%s: FAILED file %s: %s", self.server_id, failed.path, failed.reason)

    def _check_file(self, path: str, size: int) -> None:
        """After a failed file: decode the next one without mapping it, to name it too if it fails."""
        lineno = 0
        try:
            with InputFile(path, self.store) as reader:
                try:
                    for lineno, _ in enumerate(reader, 1):  # noqa: B007 - lineno names where it broke
                        pass
                except decode_error_types() as exc:
                    reader.raise_failure(exc, lineno)
        except FailedFile as failed:
            self._failed_file(failed)
        self.counters["input_bytes_done"] += size

    def _flush(self, path: str, fn: Callable, first_line: int, last_line: int, sampled: bool) -> None:
        try:
            self.shuffler.maybe_flush()
        except BadMapOutput as exc:
            lineno, line = self._locate_bad_output(path, fn, first_line, last_line, sampled)
            where: dict[str, Any] = {"line_number": lineno, "line": line} if lineno else {}
            error = str(exc) if lineno else f"{exc} (in the output of lines {first_line}-{last_line})"
            raise UserFunctionError(function=f"map function {self.job['map_function_name']!r}", phase="map",
                                    server=self.server_id, error=error, traceback="", input_file=path,
                                    **where) from None

    def _locate_bad_output(self, path: str, fn: Callable, first: int, last: int,
                           sampled: bool) -> tuple[int | None, str | None]:
        """Failure path only: map the batch's lines again to name the line whose output is malformed."""
        sample = self._sampler(path, sampled)
        fraction = float(self.job.get("downsample") or 1.0)
        with InputFile(path, self.store) as reader:
            lines = list(islice(reader, last))
        for lineno, data in enumerate(lines, 1):
            if (sample is not None and sample() >= fraction) or lineno < first:
                continue
            try:
                line = data.decode()
            except UnicodeDecodeError:
                continue
            try:
                items = list(fn(line, self.auxiliary_data) or ())
            except BadRecord:
                continue
            except TypeError:  # not iterable at all
                return lineno, line
            except Exception:  # noqa: BLE001 - the first run did not raise here; keep the range
                return None, None
            if describe_bad_output(items):
                return lineno, line
        return None, None

    def _bad_line(self, path: str, lineno: int, reason: str) -> None:
        self.counters["bad_lines"] += 1
        count_bad_line(self.counters["bad_lines_by_file"], path)
        examples = self.counters["bad_line_examples"]
        if len(examples) < MAX_BAD_LINE_EXAMPLES:
            examples.append(f"{path}:{lineno}: {reason}")

    def _user_error(self, exc: Exception, path: str, lineno: int, line: str) -> UserFunctionError:
        error = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, TypeError) and "unhashable" in str(exc):
            error += " (keys must be hashable: use a tuple, not a list or dict)"
        elif _raised_in_shuffler(exc):
            error += " (a map function must return an iterable of (key, value) items, or None)"
        return UserFunctionError(function=f"map function {self.job['map_function_name']!r}", phase="map",
                                 server=self.server_id, error=error, traceback=traceback.format_exc(),
                                 input_file=path, line_number=lineno, line=line)


def _raised_in_shuffler(exc: BaseException) -> bool:
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and tb.tb_frame.f_code.co_filename.endswith("shuffler.py")


def new_run_id() -> str:
    """A sortable, unique id for one run of a job."""
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:8]
