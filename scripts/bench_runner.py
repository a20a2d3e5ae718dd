"""What the Runner and file transfers cost over a hand-written Python loop doing the same work:
`.venv/bin/python scripts/bench_runner.py [--jobs 40] [--files 200] [--file-kb 512] [--repeats 3]`.

- runner: `--jobs` script jobs (each a Python script that writes one line) through one
  Runner round (queue in SQLite, history, per-run folder and log, process group), against a
  loop of `subprocess.run([python, script])`.
- upload: `--files` files of `--file-kb` KB uploaded to a localhost location (SHA-256 of
  every file, temporary names, one rename each), against a `shutil.copyfile` loop; and
  the same with `upload_bulk` (one tar).
Best of `--repeats` for each, in one run; prints JSON with the times and the ratios.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from cluster.config import ClusterConfig
from cluster.job_spec import get_script_template
from cluster.scheduling.file_transfer import FileTransfer
from cluster.scheduling.runner import Runner
from cluster.scheduling.store import Scheduler


def best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=40)
    p.add_argument("--files", type=int, default=200)
    p.add_argument("--file-kb", type=int, default=512)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    root = tempfile.mkdtemp(prefix="bench-runner-")
    try:
        script = os.path.join(root, "job.py")
        with open(script, "w") as fh:
            fh.write("import sys\nopen(sys.argv[1], 'a').write('x\\n')\n")
        out = os.path.join(root, "out.txt")

        def loop() -> None:
            for _ in range(a.jobs):
                subprocess.run([sys.executable, script, out], check=True)

        counter = iter(range(1_000_000))

        def runner_round() -> None:
            n = next(counter)
            cfg = ClusterConfig.from_dict({"local_working_dir": os.path.join(root, f"master{n}"),
                                           "compute_dir": os.path.join(root, "compute")})
            runner = Runner(cfg, scheduler=Scheduler(cfg), local=True, echo=lambda m: None)
            for i in range(a.jobs):
                job = get_script_template()
                job.update(job_name=f"j{i}", script_location=script, script_arguments=[out], run_once=True)
                runner.scheduler.submit_job(job)
            outcomes = runner.run_round()
            assert len(outcomes) == a.jobs and all(o.status.value == "succeeded" for o in outcomes)

        t_loop, t_runner = best(loop, a.repeats), best(runner_round, a.repeats)

        src = os.path.join(root, "src")
        os.makedirs(src)
        for i in range(a.files):
            with open(os.path.join(src, f"f{i:04d}.bin"), "wb") as fh:
                fh.write(os.urandom(a.file_kb * 1024))
        cfg = ClusterConfig.from_dict({"local_working_dir": os.path.join(root, "m"),
                                       "compute_dir": os.path.join(root, "compute")})

        def copy_loop() -> None:
            dest = os.path.join(root, "copied")
            shutil.rmtree(dest, ignore_errors=True)
            os.makedirs(dest)
            for name in os.listdir(src):
                shutil.copyfile(os.path.join(src, name), os.path.join(dest, name))

        def upload(bulk: bool) -> None:
            shutil.rmtree(os.path.join(cfg.base_dir, "up"), ignore_errors=True)
            got = FileTransfer(cfg).upload(src, "up", bulk=bulk)
            assert got["files"] == a.files

        t_copy = best(copy_loop, a.repeats)
        t_upload = best(lambda: upload(False), a.repeats)
        t_bulk = best(lambda: upload(True), a.repeats)
        print(json.dumps({
            "jobs": a.jobs, "runner_seconds": round(t_runner, 3), "loop_seconds": round(t_loop, 3),
            "runner_per_job_ms": round(1000 * t_runner / a.jobs, 1),
            "runner_vs_loop": round(t_runner / t_loop, 2),
            "files": a.files, "file_kb": a.file_kb, "copy_loop_seconds": round(t_copy, 3),
            "upload_seconds": round(t_upload, 3), "upload_bulk_seconds": round(t_bulk, 3),
            "upload_vs_copy_loop": round(t_upload / t_copy, 2), "upload_bulk_vs_copy_loop": round(t_bulk / t_copy, 2),
        }, indent=1))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
