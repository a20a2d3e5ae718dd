"""Opening inputs by their content: every codec, mislabelled names, and files that cannot be decoded."""
from __future__ import annotations

import bz2
import gzip
import lzma
import os

import lz4.frame
import pytest
import zstandard

from cluster.engine.reading import (
    OTHER_FILES,
    Compression,
    InputFile,
    count_bad_line,
    decode_error_types,
    input_problems,
    iter_lines,
    sniff,
)
from cluster.exceptions import FailedFile, InputError

LINES = ["first line\n", "ünïcode ✓\n", "\n", "a\ttab\tline\r\n", "last without newline"]
DATA = "".join(LINES).encode()
BIG = b"".join(b"key%d\tsome value %d\n" % (i, i) for i in range(50_000))

CODECS = {
    Compression.PLAIN: lambda b: b,
    Compression.GZIP: gzip.compress,
    Compression.BZIP2: bz2.compress,
    Compression.XZ: lzma.compress,
    Compression.LZMA: lambda b: lzma.compress(b, format=lzma.FORMAT_ALONE),
    Compression.LZ4: lz4.frame.compress,
    Compression.ZSTD: lambda b: zstandard.ZstdCompressor().compress(b),
}
NAMES = {Compression.PLAIN: ".log", Compression.GZIP: ".gz", Compression.BZIP2: ".bz2", Compression.XZ: ".xz",
         Compression.LZMA: ".lzma", Compression.LZ4: ".lz4", Compression.ZSTD: ".zst"}


def read_all(path) -> tuple[Compression, list[bytes], int, int]:
    with InputFile(str(path)) as f:
        lines = list(f)
        return f.compression, lines, f.tell(), f.raw_tell()


@pytest.mark.parametrize("kind", list(CODECS))
def test_every_codec_reads_by_its_content(tmp_path, kind):
    path = tmp_path / f"in{NAMES[kind]}"
    path.write_bytes(CODECS[kind](DATA))
    found, lines, decoded, raw = read_all(path)
    assert found is kind
    assert [x.decode() for x in lines] == LINES
    assert decoded == len(DATA) and raw == os.path.getsize(path)
    assert list(iter_lines(str(path))) == LINES


@pytest.mark.parametrize("kind", list(CODECS))
@pytest.mark.parametrize("name", ["data.txt", "data.log", "no_extension", "wrong.gz", "wrong.bz2", "x.lzma.v2"])
def test_a_mislabelled_file_reads_by_what_it_is(tmp_path, kind, name):
    path = tmp_path / name
    path.write_bytes(CODECS[kind](BIG))
    found, lines, _, _ = read_all(path)
    assert found is kind
    assert b"".join(lines) == BIG


def test_the_v2_layout_file_name_reads_as_lzma_alone(tmp_path):
    path = tmp_path / "20131101030205.20131103.v2.log.0bf2c1edf2634ca5bdc865a54957a690.lzma"
    path.write_bytes(lzma.compress(BIG, format=lzma.FORMAT_ALONE, preset=9))
    assert read_all(path)[0] is Compression.LZMA


@pytest.mark.parametrize("text", [b"", b"a", b"hello world\n", b"1234567890123\n",
                                  b"\t\n" * 100, "ÿ¡¢£¤¥¦§¨©ª«¬".encode()])
def test_text_is_never_taken_for_a_codec(text):
    assert sniff(text) is Compression.PLAIN


def test_multi_member_gzip_and_multi_frame_zstd(tmp_path):
    gz = tmp_path / "cat.gz"
    gz.write_bytes(gzip.compress(b"a\nb\n") + gzip.compress(b"c\n"))
    assert list(iter_lines(str(gz))) == ["a\n", "b\n", "c\n"]
    zst = tmp_path / "cat.zst"
    c = zstandard.ZstdCompressor()
    zst.write_bytes(c.compress(BIG) + c.compress(b"last\n"))
    assert b"".join(read_all(zst)[1]) == BIG + b"last\n"


@pytest.mark.parametrize("kind", [k for k in CODECS if k is not Compression.PLAIN])
@pytest.mark.parametrize("keep", [0.5, 0.05])
def test_a_truncated_file_fails_with_the_reason(tmp_path, kind, keep):
    data = CODECS[kind](os.urandom(1 << 18).hex().encode() + b"\n" + BIG)  # incompressible enough to cut mid-stream
    path = tmp_path / f"cut{NAMES[kind]}"
    path.write_bytes(data[:int(len(data) * keep)])
    with pytest.raises(FailedFile) as info:
        with InputFile(str(path)) as f:
            n = 0
            try:
                for _ in f:
                    n += 1
            except decode_error_types() as exc:
                error = f.failure(exc, n)
                assert error is not None
                raise error from exc
    assert info.value.path == str(path)
    assert kind.value in info.value.reason and "truncated" in info.value.reason


def test_corrupt_gzip_data_fails(tmp_path):
    data = bytearray(gzip.compress(BIG))
    data[len(data) // 2:len(data) // 2 + 50] = b"x" * 50
    path = tmp_path / "bad.gz"
    path.write_bytes(bytes(data))
    with InputFile(str(path)) as f, pytest.raises(decode_error_types()) as info:
        for _ in f:
            pass
    assert isinstance(f.failure(info.value, 1), FailedFile)


@pytest.mark.parametrize("content, why", [
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "NUL byte"),
    (bytes(range(256)) * 40, "NUL byte"),
    (bytes(range(128, 256)) * 100, "not UTF-8"),
    ("café\n".encode("latin-1") * 500, "not UTF-8"),
])
def test_binary_or_not_text_is_a_failed_file(tmp_path, content, why):
    path = tmp_path / "data.log"
    path.write_bytes(content)
    with pytest.raises(FailedFile, match=why):
        InputFile(str(path))
    gz = tmp_path / "data.gz"  # the check reads the decoded data
    gz.write_bytes(gzip.compress(content))
    with pytest.raises(FailedFile, match="gzip data that is"):
        InputFile(str(gz))


def test_a_stray_byte_is_a_bad_line_not_a_failed_file(tmp_path):
    path = tmp_path / "mostly.log"
    path.write_bytes(b"good line\n" * 1000 + b"caf\xe9\n" + b"good line\n" * 1000)
    lines = read_all(path)[1]
    assert len(lines) == 2001


def test_a_missing_file_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="cannot open input file"):
        InputFile(str(tmp_path / "nope.gz"))


def test_a_disk_error_is_not_taken_for_bad_data(tmp_path):
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(b"a\n"))
    with InputFile(str(path)) as f:
        error = f.failure(OSError(5, "Input/output error"), 3)
        assert type(error) is InputError and "Input/output error" in str(error)
        assert f.failure(RuntimeError("a bug"), 3) is None


def test_bad_lines_are_counted_per_file_and_capped(monkeypatch):
    monkeypatch.setattr("cluster.defaults.MAX_BAD_FILES_NAMED", 2)
    by_file: dict = {}
    for path in ["a", "a", "b", "c", "d", "a"]:
        count_bad_line(by_file, path)
    assert by_file == {"a": 3, "b": 1, OTHER_FILES: 2}


def test_input_problems_names_failed_files_and_the_worst_files():
    counters = {"failed_files": [{"path": "/d/x.gz", "reason": "gzip data ends early"}], "bad_lines": 0,
                "records_in": 10}
    assert "/d/x.gz: gzip data ends early" in input_problems(counters, 0.01)
    counters = {"failed_files": [], "bad_lines": 3, "records_in": 100, "bad_lines_by_file": {"/a": 1, "/b": 2},
                "bad_line_examples": ["/b:7: no tab"]}
    message = input_problems(counters, 0.01)
    assert "3 of 100 records (3.00%)" in message
    assert message.index("/b: 2 bad") < message.index("/a: 1 bad") and "/b:7: no tab" in message
    assert input_problems(counters, 0.03) is None
    assert input_problems(counters, 1) is None
    assert input_problems({**counters, "bad_lines": 1}, 0) is not None
    assert input_problems({"bad_lines": 0, "records_in": 0}, 0) is None


def test_a_zstd_stream_that_opens_with_a_skippable_frame(tmp_path):
    skippable = (0x184D2A5A).to_bytes(4, "little") + (3).to_bytes(4, "little") + b"pad"
    path = tmp_path / "skip.zst"
    path.write_bytes(skippable + zstandard.ZstdCompressor().compress(BIG) + skippable)
    found, lines, _, _ = read_all(path)
    assert found is Compression.ZSTD and b"".join(lines) == BIG


def test_text_that_starts_like_a_bzip2_header_is_text(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_bytes(b"BZh9 is how bzip2 files begin\nsecond line\n")
    assert read_all(path)[0] is Compression.PLAIN


@pytest.mark.parametrize("kind", [k for k in CODECS if k is not Compression.PLAIN])
def test_the_text_check_reads_64_kib_of_decoded_data_and_the_file_then_reads_whole(tmp_path, kind):
    text = b"x" * 40_000 + b"\n"
    path = tmp_path / f"late-nul{NAMES[kind]}"
    path.write_bytes(CODECS[kind](text + b"\0" + b"y\n"))
    with pytest.raises(FailedFile, match="NUL byte at offset 40,001"):
        InputFile(str(path))
    fine = tmp_path / f"fine{NAMES[kind]}"
    fine.write_bytes(CODECS[kind](text * 3))
    assert b"".join(read_all(fine)[1]) == text * 3
