"""Benchmark driver: each configuration runs in its own process, timed wall-clock, with peak RSS.

Compares, on the same files in one run: hand-written single-process loops, the same
loops over 2 processes, Dask bag with 2 processes, and the local executor with 1 and
2 workers, with and without the combiner. Ratios are to the single-process loop.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_GEN = os.path.join(ROOT, "..", "shared", "bench", "gen_data.py")
DATA = os.path.join(ROOT, "bench-data")
PY = sys.executable


def dataset(kind: str, size_mb: int, files: int) -> tuple[str, dict]:
    """(input dir, expected answers), generating the data once (per kind and size)."""
    base = os.path.join(DATA, kind if size_mb == 300 else f"{kind}-{size_mb}mb")
    meta = base + ".meta"
    if not os.path.exists(os.path.join(meta, "EXPECTED.json")):
        shutil.rmtree(base, ignore_errors=True)
        if os.path.exists(SHARED_GEN):
            subprocess.run([PY, SHARED_GEN, kind, "--size-mb", str(size_mb), "--files", str(files),
                            "--out", base], check=True)
            os.makedirs(meta, exist_ok=True)
            for name in ("EXPECTED.json", "MANIFEST.json"):
                os.replace(os.path.join(base, name), os.path.join(meta, name))
        else:
            from cluster.sample_data import generate
            tmp = base + ".gen"
            generate(kind, tmp, size_mb=size_mb, files=files)
            os.replace(os.path.join(tmp, "input"), base)
            os.makedirs(meta, exist_ok=True)
            os.replace(os.path.join(tmp, "EXPECTED.json"), os.path.join(meta, "EXPECTED.json"))
            shutil.rmtree(tmp)
    with open(os.path.join(meta, "EXPECTED.json")) as fh:
        return base, json.load(fh)


def data_bytes(folder: str) -> int:
    return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(folder) for f in fs)


def run_one(spec: dict) -> dict:
    """Run one configuration in a fresh process; return its JSON report."""
    started = time.perf_counter()
    proc = subprocess.run([PY, os.path.join(ROOT, "scripts", "bench_one.py"), json.dumps(spec)],
                          capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed",
                "wall": wall}
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    report["wall"] = wall
    return report


def table(title: str, mb: float, rows: list[tuple[str, dict]], base_key: str,
          bases: dict[str, str] | None = None) -> list[str]:
    """`bases`: a row's own base row (by label), where it is not `base_key`."""
    out = [f"### {title} ({mb:.0f} MB)", "",
           "| configuration | seconds | MB/s | vs single-process loop | peak RSS per process (MB) | correct |",
           "|---|---:|---:|---:|---|---|"]
    for name, r in rows:
        if "error" in r:
            out.append(f"| {name} | - | - | - | - | error: {r['error'][:80]} |")
            continue
        rss = ", ".join(f"{v / 2**20:.0f}" for v in r.get("rss", []))
        base = dict(rows)[(bases or {}).get(name, base_key)]
        ratio = base["seconds"] / r["seconds"]
        out.append(f"| {name} | {r['seconds']:.1f} | {mb / r['seconds']:.1f} | {ratio:.2f}x | {rss} | "
                   f"{'yes' if r.get('correct') else 'NO'} |")
    return out + [""]


def targets(results: dict) -> list[str]:
    """The issue's targets, each with the measured figure and met / MISSED."""
    out = ["### Targets", "", "| target | measured | |", "|---|---|---|"]

    def ratio(kind: str, case: str, base: str) -> float | None:
        r = results.get(kind, {})
        if case in r and base in r and "error" not in r[case] and "error" not in r[base]:
            return r[base]["seconds"] / r[case]["seconds"]
        return None

    for kind in ("words", "telemetry"):
        share = ratio(kind, "cluster-2-c", "exec-2-c")
        if share is not None:
            out.append(f"| {kind}: cluster of 2 servers within 15% of the local executor's throughput | "
                       f"{share:.2f}x the executor | {'met' if share >= 0.85 else 'MISSED'} |")
    wc = ratio("words", "exec-2-c", "loop-1")
    wc_dask = ratio("words", "exec-2-c", "dask-2")
    tel = ratio("telemetry", "exec-2-c", "loop-1")
    if wc is not None:
        out.append(f"| word count, 2 workers + combiner >= 1.2x the Counter loop | {wc:.2f}x | "
                   f"{'met' if wc >= 1.2 else 'MISSED'} |")
    if wc_dask is not None:
        out.append(f"| word count, 2 workers + combiner ahead of Dask bag | {wc_dask:.2f}x Dask | "
                   f"{'met' if wc_dask > 1 else 'MISSED'} |")
    if tel is not None:
        out.append(f"| telemetry, 2 workers >= 1.6x its loop | {tel:.2f}x | {'met' if tel >= 1.6 else 'MISSED'} |")
    for parser in ("orjson", "json"):
        js = ratio("jobscript", f"script-{parser}-2", f"loop-{parser}")
        if js is not None:
            out.append(f"| telemetry job script ({parser}), 2 mappers >= 1.6x the {parser} loop | {js:.2f}x | "
                       f"{'met' if js >= 1.6 else 'MISSED'} |")
    rs = results.get("redis")
    if rs:
        share = rs["shuffle_mb_s"] / rs["raw_mb_s"]
        out.append(f"| Redis shuffle >= half of raw Redis throughput | {share:.2f}x raw | "
                   f"{'met' if share >= 0.5 else 'MISSED'} |")
    sk = results.get("skewed", {}).get("exec-2-disk")
    if sk and "error" not in sk:
        worst = max(sk["rss"][1:]) / 2**20
        out.append(f"| skewed 120 MB through 64 MB: no process above budget + 160 MB (224 MB) | worst worker "
                   f"{worst:.0f} MB | {'met' if worst <= 224 else 'MISSED'} |")
        out.append(f"| skewed 120 MB through 64 MB: >= 3x faster than 60 s (<= 20 s) | {sk['seconds']:.1f} s | "
                   f"{'met' if sk['seconds'] <= 20 else 'MISSED'} |")
    for size, rows in sorted(results.get("scale", {}).items()):
        for case, base, label, want in (("exec-2", "loop-1", "word count, no combiner", 0.5),):
            got = rows.get(f"words/{case}"), rows.get(f"words/{base}")
            if all(g and "error" not in g for g in got):
                r = got[1]["seconds"] / got[0]["seconds"]
                out.append(f"| {label} >= {want}x the Counter loop at {size} MB | {r:.2f}x | "
                           f"{'met' if r >= want else 'MISSED'} |")
    for kind, case, base, label, want in (
            ("words", "exec-2", "loop-1", "word count, no combiner (groups from disk) >= 0.5x the Counter loop", 0.5),
            ("words", "exec-2-a", "loop-1", "word count, no combiner (in memory) >= 0.5x the Counter loop", 0.5),
            ("words", "exec-2-c-t", "loop-1", "word count, map emits plain tuples >= 0.8x the Counter loop", 0.8),
            ("words", "exec-2-c", "loop-2", "word count + combiner >= 0.95x the 2-process loop", 0.95),
            ("telemetry", "exec-2-c", "loop-2", "telemetry + combiner >= 0.95x the 2-process loop", 0.95),
            ("jobscript", "script-orjson-2", "loop-orjson-2", "telemetry job script (orjson) >= 0.95x the 2-process "
             "orjson loop", 0.95),
            ("words", "cluster-2-c", "exec-2-c", "words: our cluster within 5% of the local executor", 0.95),
            ("telemetry", "cluster-2-c", "exec-2-c", "telemetry: our cluster within 5% of the local executor", 0.95)):
        r = ratio(kind, case, base)
        if r is not None:
            out.append(f"| {label} (300 MB) | {r:.2f}x | {'met' if r >= want else 'MISSED'} |")
    for case, label, limit in (("exec", "the local executor", 0.35), ("cluster", "a running cluster", 0.6)):
        f = results.get("fixed", {}).get(case)
        if f and "error" not in f:
            out.append(f"| a 1 MB job end to end on {label} <= {limit} s | {f['median']:.2f} s (median of "
                       f"{f.get('runs', 7)}) | {'met' if f['median'] <= limit else 'MISSED'} |")
    return out + [""]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--size-mb", type=int, default=300)
    p.add_argument("--skewed-mb", type=int, default=120)
    p.add_argument("--only", default="codec,redis,words,telemetry,jobscript,skewed,fixed")
    p.add_argument("--out", default=os.path.join(ROOT, "BENCHMARKS.md"))
    p.add_argument("--repeat", type=int, default=3,
                   help="runs of each configuration, taken in rotation; the fastest counts (default 3)")
    p.add_argument("--quick", action="store_true",
                   help="the key rows at 300 MB, once each (a few minutes): words, telemetry, the job script, "
                        "the fixed cost")
    p.add_argument("--scale", default="",
                   help="comma-separated sizes in MB (e.g. 1500,3000) for the scale rows: word count with and "
                        "without a combiner and telemetry, once each, beside their loops")
    a = p.parse_args()
    if a.quick:
        a.size_mb, a.repeat = 300, 1
        if a.only == p.get_default("only"):
            a.only = "words,telemetry,jobscript,fixed"
    only = set(a.only.split(","))
    quick = a.quick
    results: dict[str, dict[str, dict]] = {}
    lines = ["# Benchmarks", "",
             f"Measured by `scripts/bench` on {time.strftime('%Y-%m-%d')}: "
             f"{platform.processor() or platform.machine()}, "
             f"{os.cpu_count()} cores, Python {platform.python_version()}. Each configuration runs in a fresh "
             "process; seconds are wall-clock through the whole job (read, map, shuffle, sort, reduce, write). "
             "Each configuration runs several times in rotation and the fastest run counts. "
             "Ratios compare configurations within this one run (the machine is shared and noisy: compare "
             "ratios, not absolute times). Peak RSS is per process (for the executor: each worker; the "
             "master is listed first).", "",
             "The executor runs the example projects: word count is `projects/word_count` `word_count`, which "
             "returns `with_value(line.split(), 1)` (no tuple per word; see README), except the 'map emits "
             "tuples' row (`word_count_tuples`: `zip(line.split(), repeat(1))`); the telemetry aggregation is "
             "`projects/telemetry` `channel_os` with the same `json.loads` as the loop. Reduce and combine "
             "are `sum(map(itemgetter(1), group))`.", ""]
    if "codec" in only:
        r = run_one({"kind": "codec"})
        lines += ["### Intermediate codec (dump + load of 200,000 (key, value) items)", "",
                  "| codec | str keys (M items/s) | tuple keys (M items/s) | faithful (tuple stays tuple) |",
                  "|---|---:|---:|---|"]
        for name, v in r["codecs"].items():
            lines.append(f"| {name} | {v['str']:.2f} | {v['tuple']:.2f} | {v['faithful']} |")
        lines.append("")
    if "redis" in only:
        best_r: dict = {}
        for _ in range(a.repeat):
            r = run_one({"kind": "redis"})
            print(f"redis shuffle: {r}", flush=True)
            if "error" not in r and (not best_r or r["shuffle_mb_s"] > best_r["shuffle_mb_s"]):
                best_r = r
        results["redis"] = best_r
        if best_r:
            lines += [f"### Redis shuffle ({best_r['files']} spill files of {best_r['file_mb']:.0f} MB through one "
                      "local redis-server)", "",
                      "| path | MB/s |", "|---|---:|",
                      f"| raw redis-py SET + GET + DEL of the same blobs | {best_r['raw_mb_s']:.0f} |",
                      f"| RedisTransport -> RedisReceiver (chunks, checksum, file written, acks) | "
                      f"{best_r['shuffle_mb_s']:.0f} |", ""]
    bench_cluster: dict = {}
    if only & {"words", "telemetry", "fixed"}:
        bench_cluster = start_cluster()
    try:
        measure(a, only, results, lines, bench_cluster, quick)
        if "fixed" in only:
            fixed(a, results, lines, bench_cluster)
    finally:
        if bench_cluster:
            stop_cluster(bench_cluster)
    if a.scale:
        scale(a, [int(x) for x in a.scale.split(",")], results, lines)
    lines += targets(results)
    write_section(a.out, lines)
    print(f"wrote {a.out}")


START, END = "<!-- scripts/bench: start -->", "<!-- scripts/bench: end -->"


def write_section(path: str, lines: list[str]) -> None:
    """Put this run's tables between the markers in `path` (at the top, after the title, the first
    time), leaving the sections written by hand as they are."""
    body = "\n".join([START, *lines[2:], END])  # lines[:2]: the title and its blank line
    old = open(path).read() if os.path.exists(path) else "# Benchmarks\n"
    if START in old and END in old:
        new = old[:old.index(START)] + body + old[old.index(END) + len(END):]
    else:
        title, _, rest = old.partition("\n")
        new = f"{title}\n\n{body}\n\n{rest.lstrip()}"
    with open(path, "w") as fh:
        fh.write(new)


def fixed(a, results: dict, lines: list, bench_cluster: dict) -> None:
    """The fixed cost of a run: a 1 MB job, on the local executor (and through the CLI) and on the cluster."""
    folder, _ = dataset("words", a.size_mb, 16)
    out = {}
    for case in ("exec", "cluster"):
        print(f"fixed cost ({case}) ...", flush=True)
        r = run_one({"kind": "fixed", "case": case, "input": folder, "runs": 7, **bench_cluster})
        print(f"   {r}", flush=True)
        out[case] = r
    results["fixed"] = out
    lines += ["### The fixed cost of a run (a 1 MB word count with its combiner, 7 runs in one process)", "",
              "| where | best (s) | median (s) | the CLI, `mapreduce run --local`, best of 3 (s) |",
              "|---|---:|---:|---:|"]
    for case, label in (("exec", "local executor, 2 workers"), ("cluster", "cluster, 1 location x 2 servers")):
        r = out[case]
        if "error" in r:
            lines.append(f"| {label} | error: {r['error'][:80]} | | |")
        else:
            cli = f"{r['cli']:.2f}" if r.get("cli") else "-"
            lines.append(f"| {label} | {r['best']:.2f} | {r['median']:.2f} | {cli} |")
    lines.append("")


def scale(a, sizes: list[int], results: dict, lines: list) -> None:
    """Word count (with and without a combiner) and telemetry at bigger sizes, once each: how the cost
    grows with the work (seconds per GB, and the workers' peak RSS)."""
    rows = [("words", 16, [("loop-1", "Counter loop, 1 process"), ("exec-2-c", "local executor, 2 workers, combiner"),
                           ("exec-2", "local executor, 2 workers, no combiner, disk_based_input")]),
            ("telemetry", 32, [("loop-1", "json.loads loop, 1 process"),
                               ("exec-2-c", "local executor, 2 workers, combiner")])]
    out = ["### Scale: the same jobs at bigger sizes (one run each)", "",
           "| data | configuration | MB | seconds | seconds per GB | vs the loop | peak RSS per worker (MB) "
           "| correct |",
           "|---|---|---:|---:|---:|---:|---|---|"]
    for size in sizes:
        got: dict = {}
        for kind, files, cases in rows:
            folder, expected = dataset(kind, size, files * max(1, size // 300))
            mb = data_bytes(folder) / 2**20
            for case, label in cases:
                print(f"scale {size} MB {kind} {label} ...", flush=True)
                r = run_one({"kind": kind, "case": case, "input": folder, "expected": expected})
                print(f"   {r}", flush=True)
                got[f"{kind}/{case}"] = r
                if "error" in r:
                    out.append(f"| {kind} | {label} | {mb:.0f} | - | - | - | - | error: {r['error'][:80]} |")
                    continue
                base = got.get(f"{kind}/loop-1")
                ratio = f"{base['seconds'] / r['seconds']:.2f}x" if base and "error" not in base else "-"
                rss = ", ".join(f"{v / 2**20:.0f}" for v in r["rss"][1:]) or f"{r['rss'][0] / 2**20:.0f}"
                out.append(f"| {kind} | {label} | {mb:.0f} | {r['seconds']:.1f} | {r['seconds'] / mb * 1024:.1f} | "
                           f"{ratio} | {rss} | {'yes' if r.get('correct') else 'NO'} |")
        results.setdefault("scale", {})[size] = got
    lines += out + [""]


def start_cluster() -> dict:
    """A one-location cluster of 2 servers for the `cluster-2-c` rows (its own name, ports and secrets)."""
    import socket

    def free() -> int:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return sock.getsockname()[1]
    base = free()
    while True:  # two consecutive free ports for S_0, S_1
        try:
            with socket.socket() as s2:
                s2.bind(("127.0.0.1", base + 1))
            break
        except OSError:
            base = free()
    data = os.path.join(ROOT, "bench-data")
    os.makedirs(data, exist_ok=True)  # a fresh clone has no bench-data/ yet
    cfg = os.path.join(data, "bench-cluster.cfg")
    with open(cfg, "w") as fh:
        fh.write("[CLUSTER]\ncluster_name = bench\n"
                 f"compute_dir = {os.path.join(data, 'compute')}\nlocal_working_dir = {os.path.join(data, 'master')}\n"
                 f"projects_dir = {os.path.join(ROOT, 'projects')}\nnumber_of_servers_per_location = 2\n"
                 f"max_number_of_bytes_in_memory = 1G\nbase_port = {base}\nmanagement_port = {free()}\n"
                 f"redis_port = {free()}\n")
    spec = {"cluster_config": cfg, "xdg": os.path.join(data, "xdg")}
    env = dict(os.environ, XDG_CONFIG_HOME=spec["xdg"])
    subprocess.run([os.path.join(ROOT, ".venv", "bin", "manage_cluster"), "start", "--config", cfg], check=True,
                   env=env)
    return spec


def stop_cluster(spec: dict) -> None:
    env = dict(os.environ, XDG_CONFIG_HOME=spec["xdg"])
    subprocess.run([os.path.join(ROOT, ".venv", "bin", "manage_cluster"), "kill", "--config", spec["cluster_config"]],
                   check=True, env=env)


QUICK = {"words": {"loop-1", "loop-2", "exec-2-c", "cluster-2-c", "exec-2-c-t", "exec-2", "exec-2-a"},
         "telemetry": {"loop-1", "loop-2", "exec-2-c", "cluster-2-c"},
         "jobscript": {"loop-orjson", "script-orjson-2", "loop-orjson-2"}}


def measure(a, only: set, results: dict, lines: list, bench_cluster: dict, quick: bool = False) -> None:
    for kind, files, cases in (
        ("words", 16, [("loop-1", "Counter loop, 1 process"), ("loop-2", "Counter loop, 2 processes"),
                       ("dask-2", "Dask bag, 2 processes"), ("exec-1-c", "local executor, 1 worker, combiner"),
                       ("exec-2-c", "local executor, 2 workers, combiner"),
                       ("cluster-2-c", "cluster, 1 location x 2 servers, combiner"),
                       ("exec-2-c-t", "local executor, 2 workers, combiner, map emits tuples"),
                       ("exec-2", "local executor, 2 workers, no combiner, disk_based_input"),
                       ("exec-2-a", "local executor, 2 workers, no combiner (big groups to disk by themselves)")]),
        ("jobscript", 32, [("loop-orjson", "orjson loop, 1 process"),
                           ("script-orjson-2", "job script (orjson), 2 mappers"),
                           ("loop-orjson-2", "orjson loop, 2 processes (hand-written, for the ceiling)"),
                           ("loop-json", "json loop, 1 process"),
                           ("script-json-2", "job script (json), 2 mappers")]),
        ("telemetry", 32, [("loop-1", "json.loads loop, 1 process"), ("loop-2", "json.loads loop, 2 processes"),
                           ("dask-2", "Dask bag, 2 processes"), ("exec-1-c", "local executor, 1 worker, combiner"),
                           ("exec-2-c", "local executor, 2 workers, combiner"),
                           ("cluster-2-c", "cluster, 1 location x 2 servers, combiner"),
                           ("exec-2", "local executor, 2 workers, no combiner")]),
    ):
        if kind not in only:
            continue
        if quick:
            cases = [c for c in cases if c[0] in QUICK[kind]]
        folder, expected = dataset("telemetry" if kind == "jobscript" else kind, a.size_mb, files)
        mb = data_bytes(folder) / 2**20
        best: dict[str, dict] = {}
        for round_ in range(a.repeat):  # in rotation, so a slow spell of the machine hits every configuration
            for case, label in cases:
                print(f"{kind} {label} (run {round_ + 1}/{a.repeat}) ...", flush=True)
                r = run_one({"kind": kind, "case": case, "input": folder, "expected": expected, **bench_cluster})
                print(f"   {r}", flush=True)
                old = best.get(case)
                if old is None or "error" in old or ("error" not in r and r["seconds"] < old["seconds"]):
                    best[case] = r
        rows = [(label, best[case]) for case, label in cases]
        results[kind] = best
        if kind == "jobscript":
            lines += table("telemetry job scripts, `python -m cluster.job` (vs the loop with the same parser)", mb,
                           rows, cases[0][1], bases={cases[4][1]: cases[3][1]} if len(cases) > 4 else None)
        else:
            lines += table(f"{kind}", mb, rows, cases[0][1])
    if "skewed" in only:
        folder, expected = dataset("skewed", a.skewed_mb, 8)
        mb = data_bytes(folder) / 2**20
        print("skewed ...", flush=True)
        r = run_one({"kind": "skewed", "case": "exec-2-disk", "input": folder, "expected": expected,
                     "budget": "64M"})
        print(f"   {r}", flush=True)
        lines += [f"### Skewed keys ({mb:.0f} MB, one key ~30% of records), 2 workers, "
                  "disk_based_input, max_number_of_bytes_in_memory = 64M", ""]
        results["skewed"] = {"exec-2-disk": r}
        if "error" in r:
            lines += [f"error: {r['error']}", ""]
        else:
            worst = max(r["rss"][1:]) / 2**20
            lines += [f"{r['seconds']:.1f} s, correct: {'yes' if r['correct'] else 'NO'}, peak RSS per "
                      f"worker: {', '.join(f'{v / 2**20:.0f} MB' for v in r['rss'][1:])} (target: under "
                      f"64 + 160 = 224 MB; worst {worst:.0f} MB)", ""]


if __name__ == "__main__":
    main()
