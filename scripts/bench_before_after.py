"""The same benchmark rows before and after a change, in alternating pairs (the fairest ratio on a
noisy shared machine): `.venv/bin/python scripts/bench_before_after.py --before REV [--pairs 3]
[--rows words/exec-2,words/exec-2-c-t,...] [--size-mb 300]`.

Checks REV out in a temporary git worktree (this checkout's .venv serves both), then runs each row
with bench_one.py from the old tree and from this one, one after the other, `--pairs` times; prints
every time and, per row, the ratio old/new of the best and of the median runs (above 1: faster now).
Rows are `<kind>/<case>` as in bench.py; `skewed/exec-2-disk` is the skewed row."""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402 - the bench's helpers, beside this file

ROWS = "words/exec-2,words/exec-2-a,words/exec-2-c-t,words/exec-2-c,telemetry/exec-2-c,skewed/exec-2-disk"


def run_in(tree: str, spec: dict) -> dict:
    """bench_one.py of `tree`, importing that tree's package (and its workers too)."""
    env = dict(os.environ, PYTHONPATH=tree)
    started = time.perf_counter()
    proc = subprocess.run([bench.PY, os.path.join(tree, "scripts", "bench_one.py"), json.dumps(spec)],
                          capture_output=True, text=True, cwd=tree, env=env)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    report["wall"] = time.perf_counter() - started
    return report


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--before", required=True, help="the git revision to compare with (e.g. HEAD~3)")
    p.add_argument("--pairs", type=int, default=3)
    p.add_argument("--rows", default=ROWS)
    p.add_argument("--size-mb", type=int, default=300)
    a = p.parse_args()
    old = tempfile.mkdtemp(prefix="bench-before-")
    subprocess.run(["git", "worktree", "add", "--detach", old, a.before], cwd=bench.ROOT, check=True,
                   capture_output=True)
    os.symlink(os.path.join(bench.ROOT, ".venv"), os.path.join(old, ".venv"))
    os.symlink(bench.DATA, os.path.join(old, "bench-data"))  # the same files
    results: dict[str, dict[str, list[float]]] = {}
    try:
        for row in a.rows.split(","):
            kind, case = row.split("/")
            if kind == "skewed":
                folder, expected = bench.dataset("skewed", 120, 8)
                extra = {"budget": "64M"}
            else:
                folder, expected = bench.dataset(kind, a.size_mb, 16 if kind == "words" else 32)
                extra = {}
            spec = {"kind": kind, "case": case, "input": folder, "expected": expected, **extra}
            times: dict[str, list[float]] = {"before": [], "after": []}
            for i in range(a.pairs):
                for label, tree in (("before", old), ("after", bench.ROOT)):
                    r = run_in(tree, spec)
                    if "error" in r or not r.get("correct"):
                        raise SystemExit(f"{row} {label} failed: {r}")
                    times[label].append(round(r["seconds"], 2))
                    print(f"{row} pair {i + 1}: {label} {r['seconds']:.2f} s, rss "
                          f"{[round(x / 2**20) for x in r['rss']]} MB", flush=True)
            results[row] = times
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", old], cwd=bench.ROOT, capture_output=True)
    for row, times in results.items():
        print(json.dumps({"row": row, **times,
                          "before_over_after_best": round(min(times["before"]) / min(times["after"]), 3),
                          "before_over_after_median": round(statistics.median(times["before"])
                                                            / statistics.median(times["after"]), 3)}))


if __name__ == "__main__":
    main()
