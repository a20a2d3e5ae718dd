"""Open any input file by what it is, not by its name: gzip, bzip2, xz, LZMA-alone, lz4 frame, zstd, plain.

The first bytes decide (magic numbers; LZMA-alone, which has none, by its 13-byte header and a
trial decode), never the name, so a gzip file named `.log` reads as gzip and a plain file named
`.gz` as text. A file that is not text (a NUL byte, or more than a tenth not UTF-8, in the first
64 KiB of its decoded data), or whose codec fails part way (truncated, corrupt), is a *failed file*: `FailedFile`
names it with the reason, and the job's lifecycle decides what that costs. Nothing here knows
about map functions or jobs.
"""
from __future__ import annotations

import bz2
import codecs
import functools
import gzip
import io
import lzma
import zlib
from collections.abc import Iterator
from enum import StrEnum
from types import ModuleType
from typing import IO, NoReturn

from cluster import defaults
from cluster.counters import worst_files
from cluster.engine.store import StoreOptions, open_binary
from cluster.exceptions import FailedFile, InputError

SNIFF_BYTES = 64 * 1024
_LZMA_ALONE_HEADER = 13
_UNKNOWN_SIZE = (1 << 64) - 1
NOT_TEXT_SHARE = 0.1  # more undecodable characters than this in the first 64 KiB: not text


class Compression(StrEnum):
    """What an input file holds, by its content."""

    PLAIN = "plain"
    GZIP = "gzip"
    BZIP2 = "bzip2"
    XZ = "xz"
    LZMA = "lzma"       # the legacy LZMA "alone" format (.lzma)
    LZ4 = "lz4"         # lz4 frame format
    ZSTD = "zstd"


_MAGIC = ((b"\x1f\x8b", Compression.GZIP), (b"\xfd7zXZ\x00", Compression.XZ),
          (b"\x04\x22\x4d\x18", Compression.LZ4), (b"\x28\xb5\x2f\xfd", Compression.ZSTD))
_ZSTD_SKIPPABLE = frozenset(bytes([0x50 + i, 0x2A, 0x4D, 0x18]) for i in range(16))
_BZIP2_BLOCKS = (b"1AY&SY", b"\x17rE8P\x90")  # a block, or the end of an empty stream


def _is_lzma_alone(head: bytes) -> bool:
    """An LZMA-alone header: properties < 225, a dictionary of 2^n or 2^n + 2^(n-1) bytes, a sane
    size, and the first bytes decode. Text never passes: a valid dictionary size has zero bytes."""
    if len(head) < _LZMA_ALONE_HEADER or head[0] >= 225:
        return False
    dictionary = int.from_bytes(head[1:5], "little")
    size = int.from_bytes(head[5:13], "little")
    top = dictionary.bit_length() - 1
    if dictionary < 4096 or dictionary not in (1 << top, (1 << top) | (1 << (top - 1))):
        return False
    if size != _UNKNOWN_SIZE and size >= 1 << 48:
        return False
    try:
        lzma.LZMADecompressor(format=lzma.FORMAT_ALONE).decompress(head, max_length=1)
    except lzma.LZMAError:
        return False
    return True


def sniff(head: bytes) -> Compression:
    """The compression of a file whose first bytes are `head` (PLAIN when none is recognised)."""
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    if head[:4] in _ZSTD_SKIPPABLE:  # a zstd stream may open with a skippable frame (pzstd writes one)
        return Compression.ZSTD
    if head[:3] == b"BZh" and head[3:4] in b"123456789" and head[4:10] in _BZIP2_BLOCKS:
        return Compression.BZIP2
    if _is_lzma_alone(head):
        return Compression.LZMA
    return Compression.PLAIN


def _open_codec(kind: Compression, raw: IO[bytes]) -> IO[bytes] | gzip.GzipFile:
    if kind is Compression.GZIP:
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if kind is Compression.BZIP2:
        return bz2.BZ2File(raw, mode="rb")
    if kind is Compression.XZ:
        return lzma.LZMAFile(raw, mode="rb", format=lzma.FORMAT_XZ)
    if kind is Compression.LZMA:
        return lzma.LZMAFile(raw, mode="rb", format=lzma.FORMAT_ALONE)
    if kind is Compression.LZ4:
        try:
            import lz4.frame  # lazily: only a machine that reads lz4 input pays for the import
        except ImportError:
            raise FailedFile(raw.name, "lz4 data, but the lz4 package is not installed on this machine "
                             "(pip install lz4)") from None
        return lz4.frame.LZ4FrameFile(raw, mode="rb")
    if kind is Compression.ZSTD:
        try:
            import zstandard
        except ImportError:
            raise FailedFile(raw.name, "zstd data, but the zstandard package is not installed on this machine "
                             "(pip install zstandard)") from None
        return io.BufferedReader(_ZstdRaw(raw, zstandard), 1 << 16)
    return raw


class _ZstdRaw(io.RawIOBase):
    """zstd frames (one after another) as a raw stream; tell() is the decompressed position. A stream
    that ends inside a frame raises EOFError, as the standard library's codecs do."""

    READ = 1 << 15  # compressed bytes per read: what one read can expand to stays small

    def __init__(self, raw: IO[bytes], zstandard: ModuleType) -> None:
        self._raw = raw
        self._new = zstandard.ZstdDecompressor(max_window_size=1 << 31).decompressobj  # zstd --long too
        self._obj = self._new()
        self._pending = memoryview(b"")
        self._pos = 0
        self._started = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while not self._pending:
            if self._obj.eof:  # a frame ended: what follows it is the next frame
                rest = self._obj.unused_data
                self._obj, self._started = self._new(), False
                if rest:
                    self._pending = memoryview(self._obj.decompress(rest))
                    self._started = True
                    continue
            chunk = self._raw.read(self.READ)
            if not chunk:
                if self._started and not self._obj.eof:
                    raise EOFError("Compressed file ended before the end-of-stream marker was reached")
                return 0
            self._started = True
            self._pending = memoryview(self._obj.decompress(chunk))
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]  # a view: no copy of what is left
        self._pos += n
        return n

    def tell(self) -> int:
        return self._pos


@functools.cache
def decode_error_types() -> tuple[type[BaseException], ...]:
    """What a codec raises for data it cannot decode (a disk error is an OSError with an errno)."""
    types: list[type[BaseException]] = [EOFError, zlib.error, lzma.LZMAError, OSError, RuntimeError]
    try:
        import zstandard

        types.append(zstandard.ZstdError)
    except ImportError:
        pass
    return tuple(types)


class InputFile:
    """One input file opened by its content: iterate it for its lines (bytes, with their newline).

    `tell()` is the position in the decoded data, `raw_tell()` in the file (progress);
    `compression` says what it was. Opening reads the first 64 KiB: a file that is not text
    there raises FailedFile, as does a codec failing while the lines are read.
    """

    def __init__(self, path: str, store: StoreOptions | None = None) -> None:
        """`path`: a local path or a store URL (any fsspec one; `store`: its options)."""
        self.path = path
        try:
            self.raw: IO[bytes] = open_binary(path, store)
        except OSError as exc:
            raise InputError(f"cannot open input file {path}: {exc.strerror or exc}") from exc
        try:
            try:
                head = self.raw.read(SNIFF_BYTES)
                self.raw.seek(0)
            except OSError as exc:
                raise InputError(f"cannot read input file {path}: {exc.strerror or exc}") from exc
            self.compression = sniff(head)
            self.stream = _open_codec(self.compression, self.raw)
            if self.stream is not self.raw:
                head = self._decoded_head()
            self._check_text(head)
        except BaseException:
            self.close()
            raise

    def _decoded_head(self) -> bytes:
        """The first 64 KiB of the decoded data; the codec is then opened afresh to read from the start."""
        try:
            head = self.stream.read(SNIFF_BYTES)
        except decode_error_types() as exc:
            self.raise_failure(exc, 0)
        self.stream.close()
        self.raw.seek(0)
        self.stream = _open_codec(self.compression, self.raw)
        return head

    def _check_text(self, head: bytes) -> None:
        what = f"{self.compression} data that is" if self.compression is not Compression.PLAIN else "data"
        if b"\0" in head:
            at = head.index(b"\0")
            raise FailedFile(self.path, f"binary {what} not text (a NUL byte at offset {at:,})")
        text = codecs.getincrementaldecoder("utf-8")("replace").decode(head, final=len(head) < SNIFF_BYTES)
        bad = text.count("\ufffd")
        if bad > max(4, len(text) * NOT_TEXT_SHARE):  # a stray byte is a bad line, not a failed file
            raise FailedFile(self.path, f"{what} not UTF-8 text ({bad:,} of the first {len(text):,} characters "
                             "do not decode)")

    def failure(self, exc: BaseException, after_line: int) -> InputError | None:
        """The error for an exception raised while reading: FailedFile for undecodable data, an
        InputError (infrastructure) for a disk error, None when it is neither (re-raise it)."""
        if isinstance(exc, OSError) and exc.errno is not None:
            return InputError(f"reading input file {self.path} failed after line {after_line}: "
                              f"{exc.strerror or exc}")
        if isinstance(exc, RuntimeError) and self.compression is not Compression.LZ4:
            return None  # not a codec's error: a bug, which must not pass for bad data
        reason = f"{self.compression} data cannot be decoded after line {after_line:,}: {type(exc).__name__}: {exc}"
        if isinstance(exc, EOFError):
            reason = f"{self.compression} data ends early (truncated) after line {after_line:,}: {exc}"
        return FailedFile(self.path, reason, after_line=after_line)

    def raise_failure(self, exc: BaseException, after_line: int) -> NoReturn:
        """Raise what `failure` makes of `exc` (FailedFile or InputError), or `exc` itself when it is neither."""
        error = self.failure(exc, after_line)
        if error is None:
            raise exc
        raise error from exc

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.stream)

    def tell(self) -> int:
        """Decoded bytes read so far (0 when a broken stream cannot say)."""
        try:
            return self.stream.tell()
        except (OSError, ValueError, EOFError):
            return 0

    def raw_tell(self) -> int:
        try:
            return self.raw.tell()
        except (OSError, ValueError):
            return 0

    def close(self) -> None:
        stream = getattr(self, "stream", None)
        if stream is not None and stream is not self.raw:
            try:
                stream.close()
            except decode_error_types():
                pass  # closing a broken codec: the failure was already reported while reading
        self.raw.close()

    def __enter__(self) -> InputFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


OTHER_FILES = "(other files)"


def count_bad_line(by_file: dict[str, int], path: str) -> None:
    """One more bad record of `path` (past MAX_BAD_FILES_NAMED files, counted under OTHER_FILES)."""
    if path not in by_file and len(by_file) >= defaults.MAX_BAD_FILES_NAMED:
        path = OTHER_FILES
    by_file[path] = by_file.get(path, 0) + 1


def input_problems(counters: dict, max_bad_fraction: float | None) -> str | None:
    """Why a map phase's input makes the job's answer untrustworthy (failed files; more bad records
    than `max_bad_fraction` of the records), or None. `counters` are the job's summed map counters."""
    problems = []
    failed = counters.get("failed_files") or []
    if failed:
        problems.append(f"{len(failed)} input file(s) cannot be read, so the output would miss part of them "
                        "(nothing was published; fix or remove them, then run the job again):"
                        + "".join(f"\n  {f['path']}: {f['reason']}" for f in failed[:20])
                        + (f"\n  ... and {len(failed) - 20} more" if len(failed) > 20 else ""))
    limit = defaults.MAX_BAD_FRACTION if max_bad_fraction is None else max_bad_fraction
    bad, records = counters.get("bad_lines", 0), counters.get("records_in", 0)
    if bad > limit * records:
        worst = worst_files(counters.get("bad_lines_by_file") or {})[:5]
        problems.append(f"{bad:,} of {records:,} records ({bad / max(records, 1):.2%}) are bad, more than "
                        f"max_bad_fraction allows ({limit:.2%}); nothing was published. Worst files:"
                        + "".join(f"\n  {path}: {n:,} bad" for path, n in worst)
                        + "\nFirst bad lines:" + "".join(f"\n  {e}" for e in counters.get("bad_line_examples", [])[:5])
                        + "\n(fix the input or the map function, or raise max_bad_fraction / --max-bad-fraction "
                        "to accept them: 1 never fails)")
    return "\n".join(problems) or None


def iter_lines(path: str) -> Iterator[str]:
    """Decoded lines of a plain or compressed file (for reading output back)."""
    with InputFile(path) as f:
        for data in f:
            yield data.decode()
