"""Cluster vs local executor on the same word count, in alternating pairs (the fairest ratio
on a noisy shared machine): `.venv/bin/python scripts/bench_ab.py [--pairs 5] [--size-mb 300]`.

Starts a one-location cluster of 2 servers (bench.start_cluster), runs `exec-2-c` and
`cluster-2-c` one after the other `--pairs` times, prints every time and the ratios of the
best and of the median runs, and kills the cluster."""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402 - the bench's helpers, beside this file


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--pairs", type=int, default=5)
    p.add_argument("--size-mb", type=int, default=300)
    p.add_argument("--kind", choices=["words", "telemetry"], default="words")
    a = p.parse_args()
    folder, expected = bench.dataset(a.kind, a.size_mb, 16 if a.kind == "words" else 32)
    spec = bench.start_cluster()
    times: dict[str, list[float]] = {"exec-2-c": [], "cluster-2-c": []}
    try:
        for i in range(a.pairs):
            for case in times:
                r = bench.run_one({"kind": a.kind, "case": case, "input": folder, "expected": expected, **spec})
                if "error" in r or not r.get("correct"):
                    raise SystemExit(f"{case} failed: {r}")
                times[case].append(round(r["seconds"], 2))
                print(f"pair {i + 1}: {case} {r['seconds']:.2f} s {r.get('phase_seconds')}", flush=True)
    finally:
        bench.stop_cluster(spec)
    best = min(times["exec-2-c"]) / min(times["cluster-2-c"])
    median = statistics.median(times["exec-2-c"]) / statistics.median(times["cluster-2-c"])
    print(json.dumps({"times": times, "cluster_vs_executor_best": round(best, 3),
                      "cluster_vs_executor_median": round(median, 3)}))


if __name__ == "__main__":
    main()
