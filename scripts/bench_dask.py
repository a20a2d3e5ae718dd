"""The Dask executor beside the local executor, our cluster and Dask bag, in one run on the same data:
`.venv/bin/python scripts/bench_dask.py [--sizes 300,1500] [--kinds words,telemetry] [--repeat 2]`.

Starts a `dask scheduler` and two single-threaded `dask worker` processes (3 GiB memory limit each,
so a task's budget is the local executor's 512 MB share) and the bench cluster (1 location x 2
servers), runs each configuration in a fresh process, in rotation, `--repeat` times (the fastest
counts), prints a Markdown table per data set and writes them to `--out`."""
from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402 - the bench's helpers, beside this file

CASES = [("loop-1", "hand-written loop, 1 process"), ("exec-2-c", "local executor, 2 workers, combiner"),
         ("daskexec-2-c", "Dask executor, 2 workers, combiner"),
         ("cluster-2-c", "our cluster, 1 location x 2 servers, combiner"), ("dask-2", "Dask bag, 2 processes")]


def start_dask(folder: str) -> tuple[str, list[subprocess.Popen]]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dask = os.path.join(bench.ROOT, ".venv", "bin", "dask")
    address = f"tcp://127.0.0.1:{port}"
    os.makedirs(folder, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=bench.ROOT)
    procs = [subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)]
    time.sleep(2)
    for i in range(2):
        procs.append(subprocess.Popen([dask, "worker", address, "--nthreads", "1", "--nworkers", "1",
                                       "--memory-limit", "3GiB", "--no-dashboard", "--host", "127.0.0.1",
                                       "--local-directory", os.path.join(folder, f"w{i}")],
                                      env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                      start_new_session=True))
    from distributed import Client

    with Client(address, timeout=60) as client:
        client.wait_for_workers(2, timeout=60)
    return address, procs


def stop_dask(procs: list[subprocess.Popen]) -> None:
    for p in reversed(procs):
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--sizes", default="300,1500")
    p.add_argument("--kinds", default="words,telemetry")
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--cases", default=",".join(c for c, _ in CASES), help="which configurations (default: all)")
    p.add_argument("--out", default=os.path.join(bench.ROOT, "bench-data", "dask-bench.md"))
    a = p.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # the finally below stops what this started
    address, procs = start_dask(os.path.join(bench.DATA, "dask"))
    spec_cluster = bench.start_cluster()
    lines: list[str] = []
    try:
        for size in map(int, a.sizes.split(",")):
            for kind in a.kinds.split(","):
                folder, expected = bench.dataset(kind, size, 16 if kind == "words" else 32)
                mb = bench.data_bytes(folder) / 2**20
                best: dict[str, dict] = {}
                for round_ in range(a.repeat):
                    for case, label in CASES:
                        if case not in a.cases.split(","):
                            continue
                        r = bench.run_one({"kind": kind, "case": case, "input": folder, "expected": expected,
                                           "dask": address, **spec_cluster})
                        print(f"{kind} {size} MB {label} (run {round_ + 1}): {r}", flush=True)
                        old = best.get(case)
                        if old is None or "error" in old or ("error" not in r and r["seconds"] < old["seconds"]):
                            best[case] = r
                lines += table(kind, mb, best, a.cases.split(","))
    finally:
        bench.stop_cluster(spec_cluster)
        stop_dask(procs)
    with open(a.out, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    print("\n".join(lines))


def table(kind: str, mb: float, best: dict[str, dict], cases: list[str]) -> list[str]:
    out = [f"### {kind} ({mb:.0f} MB)", "",
           "| configuration | seconds | MB/s | vs the local executor | vs the loop | peak RSS per process (MB) "
           "| correct |", "|---|---:|---:|---:|---:|---|---|"]
    base, loop = best.get("exec-2-c", {}), best.get("loop-1", {})
    for case, label in CASES:
        if case not in cases:
            continue
        r = best.get(case, {"error": "not run"})
        if "error" in r:
            out.append(f"| {label} | - | - | - | - | - | error: {str(r['error'])[:80]} |")
            continue
        rss = ", ".join(f"{v / 2**20:.0f}" for v in r.get("rss", []))
        vs_exec = f"{base['seconds'] / r['seconds']:.2f}x" if "seconds" in base else "-"
        vs_loop = f"{loop['seconds'] / r['seconds']:.2f}x" if "seconds" in loop else "-"
        out.append(f"| {label} | {r['seconds']:.1f} | {mb / r['seconds']:.0f} | {vs_exec} | {vs_loop} | {rss} | "
                   f"{'yes' if r.get('correct') else 'NO'} |")
    return out + [""]


if __name__ == "__main__":
    main()
