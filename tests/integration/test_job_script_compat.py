"""Job scripts, filters and command lines written for Telemetry's job.py, run unchanged over a v2
storage layout (LZMA-alone, xz, gzip, plain and mislabelled files; hyphenated values in safe-named
folders), checked against a hand-written reading of the same data."""
from __future__ import annotations

import collections
import csv
import gzip
import io
import json
import lzma
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from integration_helpers import REPO

FIELDS = ["reason", "appName", "appUpdateChannel", "appVersion", "appBuildID", "submission_date"]
REASONS = ["saved-session", "idle-daily"]

COUNT_BY_DATE = '''
def map(key, dims, value, context):
    context.write(dims[-1], 1)

def reduce(key, values, context):
    context.write(key, sum(values))
'''

CSV_REPORT = '''
import json

def map(key, dims, value, context):
    info = json.loads(value)["info"]          # a ValueError for bad JSON: a bad line
    context.write((dims[0], info["note"]), 1)

def setup_reduce(context):
    context.field_separator = ";"             # writecsv ignores the separators, as the original did
    context.record_separator = "|"

def reduce(key, values, context):
    context.writecsv([key[0], key[1], sum(values)])
'''


def safe(value: str) -> str:
    return "".join(c if c.isascii() and (c.isalnum() or c in "_/.") else "_" for c in value)


@pytest.fixture(scope="module")
def v2(tmp_path_factory) -> tuple[Path, list[tuple[list[str], str]]]:
    """A v2 layout: <reason>/<app>/<channel>/<version>/<build>.<date>.v2.log.<uuid>.lzma and other codecs."""
    root = tmp_path_factory.mktemp("v2") / "data"
    records = []
    codecs = [("lzma", lambda b: lzma.compress(b, format=lzma.FORMAT_ALONE)), ("xz", lzma.compress),
              ("gz", gzip.compress), ("log", lambda b: b), ("log", gzip.compress),  # a gzip file named .log
              ("lzma", lambda b: b)]                                              # plain text named .lzma
    n = 0
    for reason in REASONS:
        for channel in ("nightly", "release"):
            for date in ("20131101", "20131102", "20131103"):
                ext, pack = codecs[n % len(codecs)]
                n += 1
                dims = [reason, "Firefox", channel, "28.0a1", "20131101030205", date]
                folder = root.joinpath(*map(safe, dims[:4]))
                folder.mkdir(parents=True, exist_ok=True)
                lines = []
                for i in range(50 + n):
                    note = ["plain", 'with "quotes"', "a, comma", "new\nline"][i % 4]
                    doc = {"ver": 2, "info": {"reason": reason, "appUpdateChannel": channel, "note": note}}
                    lines.append(f"{uuid.UUID(int=n * 1000 + i)}\t{json.dumps(doc)}")
                    records.append(([safe(d) for d in dims], note))
                name = f"{dims[4]}.{date}.v2.log.{uuid.UUID(int=n).hex}.{ext}"
                (folder / name).write_bytes(pack(("\n".join(lines) + "\n").encode()))
    return root, records


def write_filter(path: Path, **allowed) -> Path:
    path.write_text(json.dumps({"version": 1, "dimensions": [
        {"field_name": f, "allowed_values": allowed.get(f, "*")} for f in FIELDS]}))
    return path


def job_py(tmp_path: Path, script: str, *args: str) -> subprocess.CompletedProcess:
    path = tmp_path / "job_script.py"
    path.write_text(script)
    env = dict(os.environ, XDG_CONFIG_HOME=str(tmp_path / "xdg"), XDG_DATA_HOME=str(tmp_path / "xdg-data"))
    env.pop("CLUSTER_CONFIG", None)
    return subprocess.run([sys.executable, "-m", "cluster.job", str(path), *args], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=180)


def output(path: Path) -> dict[str, str]:
    return dict(line.split("\t") for line in path.read_text().splitlines())


def test_the_original_command_line_with_short_options(tmp_path, v2):
    root, records = v2
    out = tmp_path / "out.txt"
    flt = write_filter(tmp_path / "f.json", reason=["saved-session"], appUpdateChannel=["nightly", "aurora"],
                       submission_date={"min": "20131101", "max": "20131102"})
    r = job_py(tmp_path, COUNT_BY_DATE, "-d", str(root), "-o", str(out), "-f", str(flt), "-w", str(tmp_path / "w"),
               "-m", "2", "-r", "2", "-l", "-v", "-p")
    assert r.returncode == 0, r.stderr
    expected = collections.Counter(d[-1] for d, _ in records
                                   if d[0] == "saved_session" and d[2] == "nightly" and d[-1] <= "20131102")
    assert {k: int(v) for k, v in output(out).items()} == expected and len(expected) == 2
    assert list((tmp_path / "w").glob("map-S_*.prof")), "-p writes profiles into the work dir"


def test_every_compression_of_the_layout_is_read_by_its_content(tmp_path, v2):
    root, records = v2
    out = tmp_path / "out.txt"
    r = job_py(tmp_path, COUNT_BY_DATE, "-d", str(root), "-o", str(out), "-f", str(write_filter(tmp_path / "f.json")),
               "-w", str(tmp_path / "w"), "-m", "3")
    assert r.returncode == 0, r.stderr
    assert {k: int(v) for k, v in output(out).items()} == collections.Counter(d[-1] for d, _ in records)
    assert " 0 bad lines" in r.stderr and "12 files, 678 rows read" in r.stderr


@pytest.mark.parametrize("allowed, selects", [
    (["saved-session"], {"saved_session"}),           # a list: safe_filename, as the pipeline named folders
    (["saved-session", "idle-daily"], set(map(safe, REASONS))),
    ("saved_session", {"saved_session"}),             # a string: one value, as written
    ("saved-session", set()),                         # ... so the hyphenated string selects nothing
    ("*", set(map(safe, REASONS))),
    (["*"], set()),                                    # "*" inside a list is the folder name "_"
    ({"min": "saved"}, {"saved_session"}),
])
def test_filter_values_select_as_the_original_did(tmp_path, v2, allowed, selects):
    root, records = v2
    out = tmp_path / "out.txt"
    script = COUNT_BY_DATE.replace("dims[-1]", "dims[0]")
    r = job_py(tmp_path, script, "-d", str(root), "-o", str(out), "-f",
               str(write_filter(tmp_path / "f.json", reason=allowed)), "-w", str(tmp_path / "w"), "-m", "2")
    assert r.returncode == 0, r.stderr
    assert {k: int(v) for k, v in output(out).items()} == {
        k: n for k, n in collections.Counter(d[0] for d, _ in records).items() if k in selects}
    if allowed == "saved-session":
        assert "compared as written" in r.stderr and "['saved-session']" in r.stderr


def test_writecsv_uses_the_csv_default_dialect_whatever_the_separators(tmp_path, v2):
    root, records = v2
    out = tmp_path / "out.csv"
    r = job_py(tmp_path, CSV_REPORT, "-d", str(root), "-o", str(out), "-f", str(write_filter(tmp_path / "f.json")),
               "-w", str(tmp_path / "w"), "-m", "2", "-r", "2")
    assert r.returncode == 0, r.stderr
    data = out.read_bytes()
    assert b'"with ""quotes"""' in data and b'"a, comma"' in data and b'"new\nline"' in data and b"\r\n" in data
    rows = list(csv.reader(io.StringIO(data.decode(), newline="")))
    got = {(row[0], row[1]): int(row[2]) for row in rows}
    assert got == collections.Counter((d[0], note) for d, note in records)


def test_delete_data_removes_only_the_cache(tmp_path, v2):
    root, _ = v2
    out = tmp_path / "out.txt"
    flt = str(write_filter(tmp_path / "f.json"))
    r = job_py(tmp_path, COUNT_BY_DATE, "-d", str(root), "-o", str(out), "-f", flt, "-w", str(tmp_path / "w"), "-X")
    assert r.returncode == 2 and "never deletes other data" in r.stderr
    cache = tmp_path / "w" / "cache"
    import shutil
    shutil.copytree(root, cache)
    r = job_py(tmp_path, COUNT_BY_DATE, "-l", "-d", str(cache), "-o", str(out), "-f", flt, "-w", str(tmp_path / "w"),
               "-X", "-m", "2")
    assert r.returncode == 0, r.stderr
    assert not [p for p in cache.rglob("*") if p.is_file()] and any(p.is_file() for p in root.rglob("*"))


def test_a_binary_file_among_the_inputs_fails_the_job_named(tmp_path, v2):
    import shutil
    root = tmp_path / "data"
    shutil.copytree(v2[0], root)
    broken = next(root.rglob("*.xz"))
    broken.write_bytes(os.urandom(4096) + b"\0")
    out = tmp_path / "out.txt"
    r = job_py(tmp_path, COUNT_BY_DATE, "-d", str(root), "-o", str(out), "-f", str(write_filter(tmp_path / "f.json")),
               "-w", str(tmp_path / "w"), "-m", "2")
    assert r.returncode == 1 and f"{broken}: binary data not text" in r.stderr, r.stderr
    assert not out.exists()


@pytest.mark.parametrize("limit, status", [("0", 1), (None, 1), ("1", 0)])
def test_the_bad_record_limit_of_a_job_script(tmp_path, v2, limit, status):
    import shutil
    root = tmp_path / "data"
    shutil.copytree(v2[0], root)
    plain = next(p for p in root.rglob("*.log") if not p.read_bytes().startswith(b"\x1f\x8b"))
    lines = plain.read_text().splitlines()
    plain.write_text("\n".join(lines + ["no tab here"] * 10) + "\n")  # 10 bad of ~1,000: over 0.01
    out = tmp_path / "out.txt"
    extra = ["--max-bad-fraction", limit] if limit else []
    r = job_py(tmp_path, COUNT_BY_DATE, "-d", str(root), "-o", str(out), "-f", str(write_filter(tmp_path / "f.json")),
               "-w", str(tmp_path / "w"), "-m", "2", *extra)
    assert r.returncode == status, r.stderr
    if status:
        assert f"{plain}: 10 bad" in r.stderr and "no tab between the key and the value" in r.stderr
        assert not out.exists()
    else:
        assert out.exists()


COUNTS_ITS_LOADS = '''
import os
with open(os.environ["LOADS"], "a") as fh:   # one line each time the module's code runs
    fh.write(f"{os.getpid()}\\n")

def map(key, dims, value, context):
    context.write(dims[-1], 1)

def combine(key, values, context):
    context.write(key, sum(values))

def reduce(key, values, context):
    context.write(key, sum(values))
'''


@pytest.mark.parametrize("name", ["counter.py", "map_functions.py", "reduce_functions.py"])
def test_a_script_runs_once_per_process_whatever_its_name(tmp_path, v2, name):
    root, records = v2
    script = tmp_path / name
    script.write_text(COUNTS_ITS_LOADS)
    out = tmp_path / "out.txt"
    env = dict(os.environ, XDG_CONFIG_HOME=str(tmp_path / "xdg"), XDG_DATA_HOME=str(tmp_path / "xdg-data"),
               LOADS=str(tmp_path / "loads"))
    env.pop("CLUSTER_CONFIG", None)
    r = subprocess.run([sys.executable, "-m", "cluster.job", str(script), "-d", str(root), "-o", str(out), "-f",
                        str(write_filter(tmp_path / "f.json")), "-w", str(tmp_path / "w"), "-m", "2", "-r", "1"],
                       capture_output=True, text=True, cwd=REPO, env=env, timeout=180)
    assert r.returncode == 0, r.stderr
    assert {k: int(v) for k, v in output(out).items()} == collections.Counter(d[-1] for d, _ in records)
    pids = collections.Counter((tmp_path / "loads").read_text().split())
    # the master: once to check the script, once to load its functions (map, combine and reduce share
    # one module); each of the two workers once
    assert sorted(pids.values()) == [1, 1, 2], pids
