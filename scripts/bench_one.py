"""One benchmark configuration, run in its own process by scripts/bench.py; prints a JSON report."""
from __future__ import annotations

import collections
import gzip
import json
import multiprocessing as mp
import os
import resource
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def files_of(folder: str) -> list[str]:
    return sorted(os.path.join(r, f) for r, _, fs in os.walk(folder) for f in fs)


def open_text(path: str):
    return gzip.open(path, "rt") if path.endswith(".gz") else open(path)


def count_words(path: str) -> collections.Counter:
    c: collections.Counter = collections.Counter()
    with open_text(path) as fh:
        for line in fh:
            c.update(line.split())
    return c


def telemetry_file(path: str, parser: str = "json", binary: bool = False) -> tuple[dict, dict, int]:
    """The hand-written loop: text lines and json.loads (the executor's rows), or binary lines and the
    named parser, undecoded, as a careful user writes it for orjson (the job script rows)."""
    loads = __import__(parser).loads
    tab = b"\t" if binary else "\t"
    by_co: dict = {}
    uptime: dict = {}
    bad = 0
    opener = (gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")) if binary else open_text(path)
    with opener as fh:
        for line in fh:
            _, sep, payload = line.partition(tab)
            if not sep:
                bad += 1
                continue
            try:
                doc = loads(payload)
            except ValueError:
                bad += 1
                continue
            info = doc["info"]
            ch = info["appUpdateChannel"]
            k = f"{ch}|{info['OS']}"
            by_co[k] = by_co.get(k, 0) + 1
            uptime[ch] = uptime.get(ch, 0) + doc["simpleMeasurements"]["uptime"]
    return by_co, uptime, bad


def merge_telemetry(parts) -> tuple[dict, dict, int]:
    by_co: collections.Counter = collections.Counter()
    up: collections.Counter = collections.Counter()
    bad = 0
    for a, b, n in parts:
        by_co.update(a)
        up.update(b)
        bad += n
    return dict(by_co), dict(up), bad


def check_words(counts: dict, exp: dict) -> bool:
    top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:20]
    return (sum(counts.values()) == exp["total_words"] and len(counts) == exp["distinct_words"]
            and [c for _, c in top] == [c for _, c in exp["top"]])


def check_telemetry(by_co: dict, up: dict, bad: int | None, exp: dict) -> bool:
    return by_co == exp["by_channel_os"] and up == exp["uptime_sum_by_channel"] and \
        (bad is None or bad == exp["bad_lines"])


def rss_self() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def rss_children() -> int:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024


def loop(spec: dict) -> dict:
    files = files_of(spec["input"])
    fn = count_words if spec["kind"] == "words" else telemetry_file
    if spec["case"] == "loop-1":
        parts = [fn(f) for f in files]
        rss = [rss_self()]
    else:
        with mp.get_context("fork").Pool(2) as pool:
            parts = list(pool.imap_unordered(fn, sorted(files, key=os.path.getsize, reverse=True)))
        rss = [rss_self(), rss_children()]
    if spec["kind"] == "words":
        total: collections.Counter = collections.Counter()
        for c in parts:
            total.update(c)
        ok = check_words(total, spec["expected"])
    else:
        ok = check_telemetry(*merge_telemetry(parts), spec["expected"])
    return {"correct": ok, "rss": rss}


def dask_case(spec: dict) -> dict:
    import dask.bag as db
    files = files_of(spec["input"])
    b = db.read_text(files)
    if spec["kind"] == "words":
        counts = dict(b.str.split().flatten().frequencies().compute(scheduler="processes", num_workers=2))
        ok = check_words(counts, spec["expected"])
    else:
        def parse(line):
            _, sep, payload = line.partition("\t")
            if not sep:
                return []
            try:
                doc = json.loads(payload)
            except ValueError:
                return []
            info = doc["info"]
            ch = info["appUpdateChannel"]
            return [("c", f"{ch}|{info['OS']}", 1), ("u", ch, doc["simpleMeasurements"]["uptime"])]
        res = b.map(parse).flatten().foldby(
            key=lambda t: (t[0], t[1]), binop=lambda acc, t: acc + t[2], initial=0,
            combine=lambda x, y: x + y, combine_initial=0).compute(scheduler="processes", num_workers=2)
        by_co = {k[1]: v for k, v in res if k[0] == "c"}
        up = {k[1]: v for k, v in res if k[0] == "u"}
        ok = check_telemetry(by_co, up, None, spec["expected"])
    return {"correct": ok, "rss": [rss_self(), rss_children()]}


def executor_case(spec: dict) -> dict:
    from cluster.config import ClusterConfig
    from cluster.engine.reading import iter_lines
    from cluster.executors.local import LocalExecutor
    from cluster.job_spec import get_mapreduce_job_template

    servers = int(spec["case"].split("-")[1])
    config = ClusterConfig.from_dict({
        "compute_dir": os.path.join(ROOT, "bench-data", "compute"),
        "projects_dir": os.path.join(ROOT, "projects"),
        "max_number_of_bytes_in_memory": spec.get("budget", "1G"),
        "number_of_servers_per_location": servers})
    job = get_mapreduce_job_template()
    combine = "-c" in spec["case"]
    if spec["kind"] == "words":
        job.update(project_name="word_count", reduce_function_name="sum_counts",
                   map_function_name="word_count_tuples" if spec["case"].endswith("-t") else "word_count")
    elif spec["kind"] == "telemetry":
        job.update(project_name="telemetry", map_function_name="channel_os", reduce_function_name="sum_values")
    else:
        job.update(project_name="bench_skewed", map_function_name="key_value", reduce_function_name="sum_group",
                   disk_based_input=True)
        config = config.with_overrides(projects_dir=os.path.join(ROOT, "scripts", "bench_projects"))
    job.update(job_name=f"bench_{spec['kind']}_{spec['case']}", input_dirs=[spec["input"]])
    if combine:
        job["combine_function_name"] = job["reduce_function_name"]
    elif spec["kind"] == "words" and not spec["case"].endswith("-a"):
        # every group from disk (`-a`: only the groups that outgrow a quarter of a worker's share, the
        # default: the hottest words)
        job["disk_based_input"] = True
    if spec["case"].startswith("daskexec"):  # the Dask cluster bench_dask.py started (a scheduler, 2 workers)
        from cluster.executors.dask import DaskExecutor

        result = DaskExecutor(config, spec["dask"]).run(job)
    elif spec["case"].startswith("cluster"):  # the running bench cluster (bench.py starts it, kills it after)
        from cluster.master.manager import ClusterManager

        os.environ["XDG_CONFIG_HOME"] = spec["xdg"]
        result = ClusterManager(ClusterConfig.from_file(spec["cluster_config"])).run(job)
    else:
        result = LocalExecutor(config, servers=servers).run(job)
    items = [json.loads(line) for path in sorted(os.listdir(result.output_dir))
             for line in iter_lines(os.path.join(result.output_dir, path))]
    exp = spec["expected"]
    if spec["kind"] == "words":
        ok = check_words(dict(items), exp)
    elif spec["kind"] == "telemetry":
        by_co = {f"{k[1]}|{k[2]}": v for k, v in items if k[0] == "documents"}
        up = {k[1]: v for k, v in items if k[0] == "uptime"}
        ok = check_telemetry(by_co, up, result.counters["bad_lines"], exp)
    else:
        sums = dict(items)
        ok = sum(1 for _ in items) > 0 and all(sums.get(k) == v for k, v in exp["sum_by_key_top"])
    rss = [rss_self()] + [result.counters["peak_rss_bytes"][s] for s in sorted(result.counters["peak_rss_bytes"])]
    return {"correct": ok, "rss": rss, "phase_seconds": result.counters["seconds"]}


def jobscript_case(spec: dict) -> dict:
    """`loop-<parser>[-2]`: the loop in 1 (or 2) processes; `script-<parser>-N`: the job script with N mappers."""
    parts = spec["case"].split("-")
    parser = parts[1]
    if parts[0] == "loop":
        files = sorted(files_of(spec["input"]), key=os.path.getsize, reverse=True)
        if len(parts) == 2:
            merged = merge_telemetry(telemetry_file(f, parser, binary=True) for f in files)
            return {"correct": check_telemetry(*merged, spec["expected"]), "rss": [rss_self()]}
        with mp.get_context("fork").Pool(int(parts[2])) as pool:
            merged = merge_telemetry(pool.starmap(telemetry_file, [(f, parser, True) for f in files]))
        return {"correct": check_telemetry(*merged, spec["expected"]), "rss": [rss_self(), rss_children()]}
    import logging
    import tempfile

    from cluster.telemetry.script import JobScriptRunner, ScriptRun

    logging.basicConfig(level=logging.WARNING)
    work = tempfile.mkdtemp(prefix="bench-job-", dir=os.path.join(ROOT, "bench-data"))
    fields = ["reason", "appName", "appUpdateChannel", "appVersion", "appBuildID", "submission_date"]
    with open(os.path.join(work, "filter.json"), "w") as fh:
        json.dump({"version": 1, "dimensions": [{"field_name": f, "allowed_values": "*"} for f in fields]}, fh)
    out = os.path.join(work, "out.txt")
    script = os.path.join(work, f"telemetry_{parser}.py")
    with open(os.path.join(ROOT, "scripts", "bench_telemetry_script.py")) as src, open(script, "w") as dst:
        dst.write(src.read().replace("from orjson import loads", f"from {parser} import loads"))
    run = ScriptRun(script=script,
                    input_filter=os.path.join(work, "filter.json"), data_dir=spec["input"], work_dir=work,
                    output=out, num_mappers=int(parts[2]), num_reducers=1, progress=False)
    status = JobScriptRunner(run).execute()
    by_co, up = {}, {}
    with open(out) as fh:
        for line in fh:
            key, value = line.rstrip("\n").split("\t")
            kind, _, rest = key.partition("|")
            (by_co if kind == "documents" else up)[rest] = int(value)
    import shutil
    shutil.rmtree(work)
    return {"correct": status == 0 and check_telemetry(by_co, up, None, spec["expected"]),
            "rss": [rss_self(), rss_children()]}


def codec_case() -> dict:
    import marshal
    import pickle
    import random

    import ujson
    rng = random.Random(1)
    words = ["".join(rng.choice("abcdefghij") for _ in range(rng.randint(3, 9))) for _ in range(5000)]
    str_items = [(rng.choice(words), rng.randint(0, 1000)) for _ in range(200_000)]
    tup_items = [((rng.choice(words), rng.randint(0, 50)), rng.randint(0, 1000)) for _ in range(200_000)]
    codecs = {"marshal (v4, used)": (lambda x: marshal.dumps(x, 4), marshal.loads),
              "marshal (v2)": (lambda x: marshal.dumps(x, 2), marshal.loads),
              "pickle (protocol 5)": (lambda x: pickle.dumps(x, 5), pickle.loads),
              "ujson": (ujson.dumps, ujson.loads)}
    out = {}
    for name, (dumps, loads) in codecs.items():
        res = {}
        for label, items in (("str", str_items), ("tuple", tup_items)):
            best = 1e9
            for _ in range(3):
                t = time.perf_counter()
                back = loads(dumps(items))
                best = min(best, time.perf_counter() - t)
            res[label] = len(items) / best / 1e6
        res["faithful"] = "yes" if back == tup_items else "no"
        out[name] = res
    return {"codecs": out}


def redis_case(spec: dict) -> dict:
    """Spill files through RedisTransport/RedisReceiver vs raw SET/GET/DEL of the same blobs, one redis-server."""
    import socket
    import tempfile

    from cluster.layout import JobLayout
    from cluster.node.redis_server import RedisServer
    from cluster.node.redis_transport import RedisReceiver, RedisTransport, job_namespace

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    work = tempfile.mkdtemp(prefix="bench-redis-")
    srv = RedisServer(os.path.join(work, "redis"), "127.0.0.1", port)
    password = "bench-password-0123456789abcdef"
    srv.start(password)
    try:
        files, size = spec.get("files", 24), spec.get("file_mb", 8) * 1024 * 1024
        blobs = [os.urandom(size) for _ in range(files)]
        client = srv.client(password, timeout=120)
        t = time.perf_counter()
        for i, blob in enumerate(blobs):
            client.set(f"raw:{i}", blob)
            assert len(client.get(f"raw:{i}")) == size
            client.delete(f"raw:{i}")
        raw = time.perf_counter() - t
        a = JobLayout(os.path.join(work, "a"), os.path.join(work, "aux"), "job")
        b = JobLayout(os.path.join(work, "b"), os.path.join(work, "aux"), "job")
        os.makedirs(a.spill_dir("S_0"))
        paths = []
        for i, blob in enumerate(blobs):
            paths.append(os.path.join(a.spill_dir("S_0"), f"S_0-{i:06d}.spill"))
            with open(paths[-1], "wb") as fh:
                fh.write(blob)
        ns = job_namespace("bench", "job", "r")
        tx = RedisTransport(layout=a, client=srv.client(password, timeout=300), namespace=ns, server_id="S_0",
                            local_servers=["S_0"], remote_servers=["S_1"], max_files_in_redis=10, timeout=120)
        rx = RedisReceiver(layout=b, server_id="S_1", namespace=ns, sources={"a": srv.client(password, timeout=300)})
        t = time.perf_counter()
        rx.start()
        for p in paths:
            tx.send(p, "S_1")
        tx.close()  # every file acked: received whole
        rx.stop()
        shuffle = time.perf_counter() - t
        mb = files * size / 2**20
        return {"mb": mb, "raw_mb_s": mb / raw, "shuffle_mb_s": mb / shuffle, "files": files,
                "file_mb": size / 2**20, "correct": rx.files == files}
    finally:
        srv.stop()


def fixed_case(spec: dict) -> dict:
    """The fixed cost of a run: a 1 MB word count (with its combiner) `runs` times, each timed end to end
    through the executor (`exec`: local, 2 workers) or the running bench cluster (`cluster`), in this
    process after its imports; and once through the CLI, `mapreduce run` in a process of its own."""
    import shutil
    import subprocess
    import tempfile

    from cluster.config import ClusterConfig
    from cluster.job_spec import get_mapreduce_job_template

    work = tempfile.mkdtemp(prefix="bench-fixed-", dir=os.path.join(ROOT, "bench-data"))
    inp = os.path.join(work, "in")
    os.makedirs(inp)
    with open(files_of(spec["input"])[0], "rb") as fh:
        data = fh.read(1 << 20)
    with open(os.path.join(inp, "a.txt"), "wb") as fh:
        fh.write(data[:data.rfind(b"\n") + 1])

    def job(name: str) -> dict:
        j = get_mapreduce_job_template()
        j.update(project_name="word_count", map_function_name="word_count", reduce_function_name="sum_counts",
                 combine_function_name="sum_counts", job_name=name, input_dirs=[inp])
        return j

    seconds = []
    cli: float | None = None
    try:
        if spec["case"] == "cluster":
            from cluster.master.manager import ClusterManager

            os.environ["XDG_CONFIG_HOME"] = spec["xdg"]
            manager = ClusterManager(ClusterConfig.from_file(spec["cluster_config"]))
            run = manager.run
        else:
            from cluster.executors.local import LocalExecutor

            config = ClusterConfig.from_dict({"compute_dir": os.path.join(work, "compute"),
                                              "projects_dir": os.path.join(ROOT, "projects"),
                                              "number_of_servers_per_location": 2})

            def run(j: dict):
                return LocalExecutor(config, servers=2).run(j)
        for i in range(spec.get("runs", 7)):
            started = time.perf_counter()
            run(job(f"bench_fixed_{spec['case']}_{i}"))
            seconds.append(time.perf_counter() - started)
        if spec["case"] == "exec":
            path = os.path.join(work, "job.json")
            with open(path, "w") as fh:
                json.dump({"job_type": "mapreduce", **{k: v for k, v in job("bench_fixed_cli").items()
                                                       if v is not None}}, fh)
            cfg = os.path.join(work, "cluster.cfg")
            with open(cfg, "w") as fh:
                fh.write(f"[CLUSTER]\ncompute_dir = {os.path.join(work, 'compute')}\n"
                         f"local_working_dir = {os.path.join(work, 'master')}\n"
                         f"projects_dir = {os.path.join(ROOT, 'projects')}\nnumber_of_servers_per_location = 2\n")
            best = None
            for _ in range(3):
                started = time.perf_counter()
                subprocess.run([os.path.join(ROOT, ".venv", "bin", "mapreduce"), "run", path, "--local",
                                "--config", cfg], check=True, capture_output=True)
                took = time.perf_counter() - started
                best = took if best is None else min(best, took)
            cli = best
    finally:
        shutil.rmtree(work, ignore_errors=True)
    seconds.sort()
    return {"best": seconds[0], "median": seconds[len(seconds) // 2], "cli": cli, "correct": True,
            "rss": [rss_self()]}


def main() -> None:
    spec = json.loads(sys.argv[1])
    if spec["kind"] == "fixed":
        print(json.dumps(fixed_case(spec)))
        return
    if spec["kind"] == "codec":
        print(json.dumps(codec_case()))
        return
    if spec["kind"] == "redis":
        print(json.dumps(redis_case(spec)))
        return
    started = time.perf_counter()
    case = spec["case"]
    if spec["kind"] == "jobscript":
        report = jobscript_case(spec)
    elif case.startswith("loop"):
        report = loop(spec)
    elif case.startswith("dask-"):  # Dask bag (`daskexec-...` is our Dask executor, in executor_case)
        report = dask_case(spec)
    else:
        report = executor_case(spec)
    report["seconds"] = time.perf_counter() - started
    print(json.dumps(report))


if __name__ == "__main__":
    main()
