"""Deterministic sample data with exact expected answers, for the quick start, tests and benchmarks.

    python -m cluster.sample_data words|telemetry|skewed --out DIR [--size-mb N] [--files N]
        [--gzip-every N] [--seed N]

Writes the data files under DIR/input/ and DIR/EXPECTED.json (the truth a job's output must equal).
"""
from __future__ import annotations

import argparse
import bisect
import collections
import gzip
import itertools
import json
import os
import random
import shutil
import string
import uuid
from typing import Any

from cluster.engine.partitions import safe_filename


def _open(path: str, gz: bool):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if gz:
        return gzip.open(path + ".gz", "wt", compresslevel=1, encoding="utf-8")
    return open(path, "w", encoding="utf-8")


def words(out: str, size_mb: float = 1, files: int = 4, gzip_every: int = 0, seed: int = 1,
          vocabulary: int = 5000) -> dict[str, Any]:
    """Zipf-distributed words, 8-16 a line. Expected: every word's count."""
    rng = random.Random(seed)
    distinct: set[str] = set()
    while len(distinct) < vocabulary:
        distinct.add("".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(2, 10))))
    vocab = sorted(distinct)
    rng.shuffle(vocab)
    cdf = list(itertools.accumulate(1.0 / i ** 1.1 for i in range(1, len(vocab) + 1)))
    target = int(size_mb * 1024 * 1024 / files)
    counts: collections.Counter = collections.Counter()
    for f in range(files):
        gz = gzip_every > 0 and f % gzip_every == gzip_every - 1
        with _open(os.path.join(out, f"part-{f:05d}.txt"), gz) as fh:
            written = 0
            while written < target:
                line = [vocab[bisect.bisect_left(cdf, rng.random() * cdf[-1])] for _ in range(rng.randint(8, 16))]
                counts.update(line)
                text = " ".join(line) + "\n"
                fh.write(text)
                written += len(text)
    return {"counts": dict(counts), "total_words": sum(counts.values()),
            "top": counts.most_common(20)}


CHANNELS = ["release"] * 5 + ["beta"] * 2 + ["aurora", "nightly", "nightly"]
OSES = ["WINNT"] * 7 + ["Darwin"] * 2 + ["Linux"]


def telemetry(out: str, size_mb: float = 1, files: int = 8, gzip_every: int = 0, seed: int = 1,
              bad_every: int = 2000) -> dict[str, Any]:
    """Telemetry layout <reason>/<app>/<channel>/<version>/<build>.<date>.v1.log, '<id>\\t<json>' lines
    (folder names as the pipeline wrote them: safe names, saved_session for the reason saved-session)."""
    rng = random.Random(seed)
    target = int(size_mb * 1024 * 1024 / files)
    by_channel_os: collections.Counter = collections.Counter()
    uptime: collections.Counter = collections.Counter()
    documents = bad = 0
    for f in range(files):
        channel = rng.choice(CHANNELS)
        dims = [rng.choice(["saved-session", "idle-daily", "main"]), rng.choice(["Firefox", "Fennec"]),
                channel, rng.choice(["28.0", "29.0", "30.0a2"]), f"2014030{rng.randint(1, 3)}{f:06d}"]
        date = rng.choice(["20140301", "20140302", "20140303"])
        path = os.path.join(out, *map(safe_filename, dims[:4]), f"{dims[4]}.{date}.v1.log")
        gz = gzip_every > 0 and f % gzip_every == gzip_every - 1
        with _open(path, gz) as fh:
            written = 0
            while written < target:
                doc_id = uuid.UUID(int=rng.getrandbits(128))
                if bad_every and rng.randrange(bad_every) == 0:
                    line = rng.choice([f'{doc_id}\t{{"ver": 1, "info": {{"reason": ', "no tab on this line"]) + "\n"
                    bad += 1
                else:
                    os_name = rng.choice(OSES)
                    up = rng.randint(0, 1440)
                    doc = {"ver": 1, "info": {"reason": dims[0], "appName": dims[1], "appUpdateChannel": channel,
                                              "appVersion": dims[3], "appBuildID": dims[4], "OS": os_name,
                                              "locale": rng.choice(["en-US", "de", "fr", "ja"]),
                                              "memsize": rng.choice([2048, 4096, 8192])},
                           "simpleMeasurements": {"uptime": up, "main": rng.randint(50, 400),
                                                  "firstPaint": rng.randint(300, 4000)},
                           "histograms": {"GC_MS": {"values": {str(b): rng.randint(0, 40)
                                                               for b in rng.sample(range(1, 10000), 6)},
                                                    "sum": rng.randint(0, 50000)}},
                           "submission_date": date}
                    line = f"{doc_id}\t{json.dumps(doc, separators=(',', ':'))}\n"
                    documents += 1
                    by_channel_os[f"{channel}|{os_name}"] += 1
                    uptime[channel] += up
                fh.write(line)
                written += len(line)
    return {"documents": documents, "by_channel_os": dict(sorted(by_channel_os.items())),
            "uptime_sum_by_channel": dict(sorted(uptime.items())), "bad_lines": bad}


def skewed(out: str, size_mb: float = 1, files: int = 4, gzip_every: int = 0, seed: int = 1,
           hot_fraction: float = 0.3, keys: int = 200_000) -> dict[str, Any]:
    """'key\\tvalue' lines where the key 'hot' holds `hot_fraction` of the records."""
    rng = random.Random(seed)
    target = int(size_mb * 1024 * 1024 / files)
    sums: collections.Counter = collections.Counter()
    records = 0
    for f in range(files):
        with _open(os.path.join(out, f"part-{f:05d}.tsv"), gzip_every > 0 and f % gzip_every == gzip_every - 1) as fh:
            written = 0
            while written < target:
                key = "hot" if rng.random() < hot_fraction else f"k{rng.randint(0, keys):06d}"
                value = rng.randint(1, 1000)
                line = f"{key}\t{value}\n"
                sums[key] += value
                fh.write(line)
                written += len(line)
                records += 1
    return {"records": records, "sums": dict(sums), "distinct_keys": len(sums)}


GENERATORS = {"words": words, "telemetry": telemetry, "skewed": skewed}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m cluster.sample_data", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("kind", choices=sorted(GENERATORS))
    p.add_argument("--out", required=True, help="folder to write (created)")
    p.add_argument("--size-mb", type=float, default=10, help="total size of the data (default 10)")
    p.add_argument("--files", type=int, default=8, help="number of files (default 8)")
    p.add_argument("--gzip-every", type=int, default=0, help="gzip every Nth file (default 0: none)")
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args(argv)
    generate(a.kind, a.out, size_mb=a.size_mb, files=a.files, gzip_every=a.gzip_every, seed=a.seed)
    print(f"wrote {a.kind} data ({a.size_mb} MB, {a.files} files) to {a.out}/input, "
          f"the expected answers to {a.out}/EXPECTED.json")


def generate(kind: str, out: str, **options: Any) -> dict[str, Any]:
    """Write a data set under OUT/input/ and its truth to OUT/EXPECTED.json; return the truth."""
    os.makedirs(out, exist_ok=True)
    shutil.rmtree(os.path.join(out, "input"), ignore_errors=True)  # a smaller set must not keep old files
    expected = GENERATORS[kind](os.path.join(out, "input"), **options)
    with open(os.path.join(out, "EXPECTED.json"), "w") as fh:
        json.dump(expected, fh)
    return expected


if __name__ == "__main__":
    main()
