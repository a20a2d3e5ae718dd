"""Inputs and engine paths end to end: every compression format, corrupt files, hidden and
locked files, empty and missing folders, non-UTF-8 lines, many small spill files (extra merge
passes), a tiny memory budget, disk-based output, and output that is not JSON."""
from __future__ import annotations

import bz2
import collections
import fcntl
import gzip
import lzma
import marshal
from pathlib import Path

import lz4.frame
import pytest
import zstandard
from integration_helpers import (
    TEST_PROJECTS,
    make_config,
    make_job,
    output_dict,
    output_files,
    run_job,
    write_lines,
)

from cluster.exceptions import ClusterError, JobFailed
from cluster.progress import format_counters

WORDS = ["alpha", "beta", "gamma", "delta", "café", "naïve", "日本語", "🎉", "Ωmega", "x"]


def lines_of(n: int, seed: int) -> list[str]:
    return [" ".join(WORDS[(seed * 7 + i * 3 + j * j) % len(WORDS)] for j in range(1 + (i + seed) % 6))
            for i in range(n)]


def counts(*groups: list[str]) -> dict:
    return dict(collections.Counter(w for lines in groups for line in lines for w in line.split()))


def text(lines: list[str]) -> bytes:
    return ("\n".join(lines) + "\n").encode()


def wc(name: str, folders, **extra) -> dict:
    return make_job(name, "testjobs", list(folders), "bad_record_on_bad", "sum_values", **extra)


COMPRESSORS = {".gz": gzip.compress, ".bz2": bz2.compress, ".xz": lzma.compress,
               ".lzma": lambda b: lzma.compress(b, format=lzma.FORMAT_ALONE), ".lz4": lz4.frame.compress,
               ".zst": lambda b: zstandard.ZstdCompressor().compress(b)}


@pytest.mark.parametrize("suffix", [
    ".txt",
    ".gz",
    ".bz2",  # regression: the opener once passed fileobj= to BZ2File / LZMAFile (TypeError)
    ".xz",
    ".lzma",
    ".lz4",
    ".zst",
])
def test_compressed_input_and_non_ascii_words(config, tmp_path, suffix):
    folder = tmp_path / "formats"
    folder.mkdir()
    plain, packed = lines_of(500, 1), lines_of(700, 2)
    (folder / "plain.txt").write_bytes(text(plain))
    name = "packed.txt" + ("" if suffix == ".txt" else suffix)
    (folder / name).write_bytes(COMPRESSORS.get(suffix, bytes)(text(packed)))
    result = run_job(config, wc("formats", [folder]), servers=3)
    assert output_dict(result) == counts(plain, packed)
    assert result.counters["files"] == 2 and result.counters["files_failed"] == 0
    raw = b"".join(p.read_bytes() for p in output_files(result.output_dir))
    assert "日本語".encode() in raw, "non-ASCII keys are written as UTF-8 text"


def _truncate(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _flip_middle(data: bytes) -> bytes:
    mid = len(data) // 2
    return data[:mid] + bytes([data[mid] ^ 0xFF]) + data[mid + 1:]


@pytest.mark.parametrize(("name", "compress", "damage"), [
    ("t.gz", gzip.compress, _truncate),
    ("f.gz", gzip.compress, _flip_middle),
    ("t.bz2", bz2.compress, _truncate),
    ("t.xz", lzma.compress, _truncate),
    ("t.v2.log.lzma", COMPRESSORS[".lzma"], _truncate),
    ("t.zst", COMPRESSORS[".zst"], _truncate),
    ("t.lz4", lz4.frame.compress, _truncate),
    ("binary.log", lambda b: bytes(range(256)) * 64, lambda b: b),
])
def test_a_file_that_cannot_be_decoded_fails_the_job_and_is_named(config, tmp_path, name, compress, damage):
    folder = tmp_path / "corrupt"
    folder.mkdir()
    (folder / "good.txt").write_bytes(text(lines_of(300, 1)))
    (folder / "good2.txt.gz").write_bytes(gzip.compress(text(lines_of(100, 2))))
    (folder / name).write_bytes(damage(compress(text(lines_of(20000, 3)))))
    (folder / "late.txt").write_bytes(b"\x00" * 100)  # a second failed file on some server: named too
    with pytest.raises(JobFailed) as info:
        run_job(config, wc("corrupt", [folder]))
    message = str(info.value)
    assert info.value.phase == "map"
    assert f"{folder / name}: " in message and f"{folder / 'late.txt'}: binary data not text" in message
    assert "2 input file(s) cannot be read" in message
    assert not (Path(config.base_dir) / "corrupt" / "reduce").exists(), "nothing of the job is published"


@pytest.mark.parametrize("name, compress", [("plain.gz", lambda b: b), ("packed.log", gzip.compress),
                                            ("packed.txt", lz4.frame.compress), ("x.lzma", lzma.compress)])
def test_a_mislabelled_file_is_read_by_its_content(config, tmp_path, name, compress):
    folder = tmp_path / "mislabelled"
    folder.mkdir()
    lines = lines_of(2000, 4)
    (folder / name).write_bytes(compress(text(lines)))
    result = run_job(config, wc("mislabelled", [folder]))
    assert output_dict(result) == counts(lines) and result.counters["bad_lines"] == 0


def test_hidden_and_tmp_files_are_skipped_subfolders_are_read(config, tmp_path):
    folder = tmp_path / "tree"
    a, b = lines_of(50, 1), lines_of(60, 2)
    write_lines(folder / "a.txt", a)
    write_lines(folder / "deep" / "er" / "b.txt", b)
    write_lines(folder / ".hidden.txt", ["hidden words"])
    write_lines(folder / ".git" / "c.txt", ["hidden folder"])
    write_lines(folder / "being-written.tmp", ["temporary file"])
    result = run_job(config, wc("tree", [folder]))
    assert output_dict(result) == counts(a, b)
    assert result.counters["files"] == 2


def test_two_input_folders(config, tmp_path):
    a, b = lines_of(70, 4), lines_of(80, 5)
    write_lines(tmp_path / "one" / "a.txt", a)
    write_lines(tmp_path / "two" / "a.txt", b)
    assert output_dict(run_job(config, wc("two", [tmp_path / "one", tmp_path / "two"]))) == counts(a, b)


def test_overlapping_input_folders_map_each_file_once(config, tmp_path):
    a, b = lines_of(70, 4), lines_of(80, 5)
    write_lines(tmp_path / "top" / "a.txt", a)
    write_lines(tmp_path / "top" / "sub" / "b.txt", b)
    folders = [tmp_path / "top", tmp_path / "top" / "sub", tmp_path / "top"]
    result = run_job(config, wc("overlap", folders))
    assert result.counters["files"] == 2
    assert output_dict(result) == counts(a, b)


def test_leftovers_of_a_crashed_run_are_not_reduced(config, tmp_path):
    """Spill and staging files that a crashed run left behind must not leak into the next run."""
    a, b = lines_of(70, 4), lines_of(80, 5)
    write_lines(tmp_path / "in" / "a.txt", a)
    write_lines(tmp_path / "in" / "b.txt", b)
    job_dir = Path(config.base_dir) / "leftovers"
    for server in ("S_0", "S_1"):
        for sub in ("map", "spill"):
            d = job_dir / sub / server
            d.mkdir(parents=True)
            (d / "S_7-000009.spill").write_bytes(marshal.dumps([("alpha", 1000), ("ghost", 1)]))
    staging = job_dir / "staging" / "20000101T000000-deadbeef"
    staging.mkdir(parents=True)
    (staging / "S_0-20000101T000000-deadbeef-00000.jsonl").write_text('["ghost", 1]\n')
    result = run_job(config, wc("leftovers", [tmp_path / "in"]))
    assert output_dict(result) == counts(a, b)


def test_empty_input_succeeds_with_empty_output(config, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "zero.txt").write_bytes(b"")
    result = run_job(config, wc("empty", [tmp_path / "empty"]))
    assert Path(result.output_dir).is_dir()
    assert output_dict(result) == {}


def test_missing_input_folder_is_named(config, tmp_path):
    (tmp_path / "here").mkdir()
    with pytest.raises(ClusterError, match="not-there"):
        run_job(config, wc("missing", [tmp_path / "here", tmp_path / "not-there"]))
    assert not (Path(config.base_dir) / "missing" / "reduce").exists()


def test_non_utf8_lines_are_bad_lines(config, tmp_path):
    folder = tmp_path / "enc"
    folder.mkdir()
    good = lines_of(40, 6)
    (folder / "a.txt").write_bytes(text(good[:20]) + b"caf\xe9 latin-1\n" + text(good[20:]))
    (folder / "b.txt").write_bytes(text(lines_of(10, 7)))
    result = run_job(config, wc("enc", [folder], max_bad_fraction=0.05))
    assert result.counters["bad_lines"] == 1
    assert result.counters["bad_line_examples"][0].startswith(f"{folder / 'a.txt'}:21:")
    assert output_dict(result) == counts(good, lines_of(10, 7))


def test_no_trailing_newline_and_blank_lines(config, tmp_path):
    folder = tmp_path / "nl"
    folder.mkdir()
    (folder / "a.txt").write_bytes(b"one two\n\n\nthree")
    (folder / "b.txt").write_bytes(b"\r\nfour one\r\n")
    assert output_dict(run_job(config, wc("nl", [folder]))) == {"one": 2, "two": 1, "three": 1, "four": 1}


def test_locked_file_is_skipped_then_mapped_next_time(config, tmp_path):
    folder = tmp_path / "locked"
    a, b = lines_of(100, 8), lines_of(100, 9)
    write_lines(folder / "a.txt", a)
    locked = write_lines(folder / "b.txt", b)
    job = wc("locked", [folder], hold_state=True, merge_previous_output=True)
    with open(locked, "rb") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        first = run_job(config, job)
        fcntl.flock(fh, fcntl.LOCK_UN)
    assert first.counters["locked_files_skipped"] == [str(locked)]
    assert output_dict(first) == counts(a)
    second = run_job(config, job)
    assert second.counters["locked_files_skipped"] == []
    assert output_dict(second) == counts(a, b)


def test_many_small_spill_files_need_extra_merge_passes(config, words_plain):
    input_dir, expected = words_plain
    job = make_job("small_spills", "testjobs", [input_dir], "bad_record_on_bad", "sum_values",
                   max_number_dumped_items_shuffler=150)
    result = run_job(config, job)
    assert result.counters["spill_files"] > 2 * 64, "the test needs more runs than one merge takes"
    assert max(ph["sort"].get("merge_passes", 0) for ph in result.per_server.values()) >= 1
    assert output_dict(result) == expected["counts"]


@pytest.mark.parametrize("combiner", [None, "sum_values"])
def test_tiny_memory_budget_spills_and_stays_exact(tmp_path, words_plain, combiner):
    config = make_config(tmp_path / "compute", TEST_PROJECTS, memory="2M")
    input_dir, expected = words_plain
    job = make_job("tiny", "testjobs", [input_dir], "bad_record_on_bad", "sum_values",
                   combine_function_name=combiner, disk_based_input=True)
    result = run_job(config, job)
    assert output_dict(result) == expected["counts"]
    assert result.counters["spill_files"] > 2, "a 1 MiB share must spill more than once"


def test_a_group_bigger_than_the_budget_goes_to_disk_by_itself(tmp_path, words_plain):
    config = make_config(tmp_path / "compute", TEST_PROJECTS, memory="2M")
    input_dir, expected = words_plain
    result = run_job(config, make_job("hot", "testjobs", [input_dir], "bad_record_on_bad", "sum_values"))
    assert output_dict(result) == expected["counts"]
    assert result.counters["groups_on_disk"] >= 1, "the hottest words outgrow a 1 MiB share as lists"
    assert "groups read from disk" in format_counters(result)


@pytest.mark.parametrize("reduce_function", ["sum_into_disk_list", "sum_into_disk_list_return_none"])
def test_disk_based_output(config, tmp_path, reduce_function):
    a, b = lines_of(300, 10), lines_of(300, 11)
    write_lines(tmp_path / "d" / "a.txt", a)
    write_lines(tmp_path / "d" / "b.txt", b)
    job = make_job("dbo", "testjobs", [tmp_path / "d"], "bad_record_on_bad", reduce_function,
                   disk_based_output=True, disk_based_input=True)
    got = output_dict(run_job(config, job))
    expected = counts(a, b)
    if reduce_function == "sum_into_disk_list":
        expected = {**expected, **{("count", k): v for k, v in expected.items()}}
    assert got == expected


def test_reduce_output_that_is_not_json_fails_clearly(config, tmp_path):
    write_lines(tmp_path / "j" / "a.txt", lines_of(20, 1))
    write_lines(tmp_path / "j" / "b.txt", lines_of(20, 2))
    with pytest.raises(JobFailed) as info:
        run_job(config, make_job("notjson", "testjobs", [tmp_path / "j"], "bad_record_on_bad", "not_json"))
    msg = str(info.value)
    assert info.value.phase == "reduce" and "not JSON" in msg
    assert not (Path(config.base_dir) / "notjson" / "reduce").exists()
