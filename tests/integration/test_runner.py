"""The Runner with real script processes: priorities, run_once, force_run, group removal,
timeouts that stop whole process groups, tarballs refused, and published output."""
from __future__ import annotations

import datetime as dt
import io
import json
import os
import subprocess
import tarfile
import textwrap
import time
from pathlib import Path

import pytest
from integration_helpers import MAPREDUCE, make_config, make_job, output_dict, process_alive, write_lines

from cluster.exceptions import JobSpecError
from cluster.job_spec import get_script_template
from cluster.scheduling.runner import Runner
from cluster.scheduling.script_runs import safe_extract
from cluster.scheduling.store import RunStatus, Scheduler


@pytest.fixture
def cfg(tmp_path):
    return make_config(tmp_path / "compute")


@pytest.fixture
def runner(cfg):
    return Runner(cfg, local=True, servers=2, echo=lambda m: None)


def write_script(path: Path, body: str) -> Path:
    path.write_text(textwrap.dedent(body))
    return path


def script_job(name: str, script: Path, *args: str, **extra) -> dict:
    job = get_script_template()
    job.update(job_name=name, script_location=str(script), script_arguments=list(args), **extra)
    return job


def tarball(path: Path, files: dict[str, str], modes: dict[str, int] | None = None) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), (modes or {}).get(name, 0o644)
            tar.addfile(info, io.BytesIO(data))
    return path


def analysis_job(name: str, tar: Path, command: str, output_dir: str | None = "out", **extra) -> dict:
    job = get_script_template()
    job.update(job_name=name, code_tarball=str(tar), execution_commandline=command, output_dir=output_dir, **extra)
    return job


@pytest.fixture
def appender(tmp_path) -> tuple[Path, Path]:
    """A script that appends its first argument to a log (and exits with its second, if given)."""
    log = tmp_path / "order.log"
    script = write_script(tmp_path / "append.py", """
        import sys
        with open(sys.argv[1], "a") as fh:
            fh.write(sys.argv[2] + "\\n")
        sys.exit(int(sys.argv[3]) if len(sys.argv) > 3 else 0)
    """)
    return script, log


def lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


# --- rounds -----------------------------------------------------------------------------------
def test_a_round_runs_every_due_job_once_highest_priority_first(runner, appender):
    script, log = appender
    for name, prio in (("low", 1), ("high", 10), ("mid", 5), ("none", None)):
        runner.scheduler.submit_job(script_job(name, script, str(log), name, job_priority=prio))
    outcomes = runner.run_round()
    assert lines(log) == ["high", "mid", "low", "none"]
    assert [o.status for o in outcomes] == [RunStatus.SUCCEEDED] * 4
    runner.run_round()  # every-round jobs run again in the next round
    assert lines(log) == ["high", "mid", "low", "none"] * 2
    runs = runner.scheduler.history("high")
    assert [r["status"] for r in runs] == ["succeeded", "succeeded"]
    assert runs[0]["counters"]["exit_code"] == 0 and os.path.isfile(runs[0]["log_path"])


def test_run_once_leaves_the_queue_after_success_only(runner, appender):
    script, log = appender
    runner.scheduler.submit_job(script_job("once-ok", script, str(log), "ok", run_once=True))
    runner.scheduler.submit_job(script_job("once-bad", script, str(log), "bad", "3", run_once=True))
    runner.run_round()
    assert [j["job_name"] for j in runner.scheduler.list_jobs()] == ["once-bad"]
    assert runner.scheduler.history("once-ok")[0]["note"] == "run_once: left the queue"
    bad = runner.scheduler.history("once-bad")[0]
    assert bad["status"] == "failed" and "exited with code 3" in bad["exception"]


def test_force_run_runs_a_job_resubmitted_during_the_round_again(runner, appender, tmp_path, cfg):
    script, log = appender
    runner.scheduler.submit_job(script_job("first", script, str(log), "first", job_priority=10))
    resubmit = write_script(tmp_path / "resubmit.py", f"""
        import json, os
        from cluster.config import ClusterConfig
        from cluster.scheduling.store import Scheduler
        s = Scheduler(ClusterConfig.from_dict({{"local_working_dir": {cfg.local_working_dir!r}}}))
        job = s.get_job("first")
        job["force_run"] = {{force}}
        s.submit_job(job)
        with open({str(log)!r}, "a") as fh:
            fh.write("resubmit\\n")
    """)
    text = resubmit.read_text()
    resubmit.write_text(text.replace("{force}", "True"))
    runner.scheduler.submit_job(script_job("resubmit", resubmit, job_priority=5, run_once=True))
    runner.run_round()
    assert lines(log) == ["first", "resubmit", "first"]
    assert runner.scheduler.get_job("first")["force_run"] is False  # cleared after the forced run
    # without force_run, a job submitted again during a round waits for the next round
    resubmit.write_text(text.replace("{force}", "False"))
    runner.scheduler.submit_job(script_job("resubmit", resubmit, job_priority=5, run_once=True))
    log.unlink()
    runner.run_round()
    assert lines(log) == ["first", "resubmit"]


def test_force_run_overrides_a_schedule_once(cfg, appender):
    script, log = appender
    now = dt.datetime(2026, 11, 18, 9, 0, tzinfo=dt.UTC)  # a Wednesday
    runner = Runner(cfg, local=True, clock=lambda: now, echo=lambda m: None)
    runner.scheduler.submit_job(script_job("weekly", script, str(log), "weekly", schedule_frequency="weekly",
                                           day_of_week="sunday", time_of_day="06:00", force_run=True))
    runner.run_round()
    runner.run_round()
    assert lines(log) == ["weekly"]  # forced once; not due again before Sunday 06:00
    now = dt.datetime(2026, 11, 22, 6, 1, tzinfo=dt.UTC)
    runner.run_round()
    assert lines(log) == ["weekly", "weekly"]


def test_a_failed_job_takes_its_group_off_the_queue_and_the_history_says_which(runner, appender):
    script, log = appender
    sched = runner.scheduler
    sched.submit_job(script_job("extract", script, str(log), "extract", "1", group_name="nightly", job_priority=10))
    sched.submit_job(script_job("report", script, str(log), "report", group_name="nightly", job_priority=5))
    sched.submit_job(script_job("other", script, str(log), "other", group_name="hourly", job_priority=1))
    outcomes = runner.run_round()
    assert lines(log) == ["extract", "other"]  # report never ran on extract's missing data
    assert outcomes[0].status is RunStatus.FAILED and outcomes[0].removed == ["extract", "report"]
    assert [j["job_name"] for j in sched.list_jobs()] == ["other"]
    failed = sched.history("extract")[0]
    assert failed["phase"] == "script" and "exited with code 1" in failed["exception"]
    assert "group 'nightly' left the queue: extract, report" in failed["note"]


def test_a_failed_job_without_a_group_stays_queued_and_its_force_is_spent(runner, appender):
    script, log = appender
    runner.scheduler.submit_job(script_job("flaky", script, str(log), "flaky", "2", force_run=True))
    runner.run_round()
    assert [j["job_name"] for j in runner.scheduler.list_jobs()] == ["flaky"]
    assert "stays queued" in runner.scheduler.history("flaky")[0]["note"]
    assert runner.scheduler.get_job("flaky")["force_run"] is False


# --- timeouts -------------------------------------------------------------------------------
def test_a_sleeping_script_past_its_timeout_is_stopped_with_all_its_processes(runner, tmp_path):
    pids = tmp_path / "pids"
    script = write_script(tmp_path / "sleepy.py", f"""
        import os, subprocess, time
        child = subprocess.Popen(["sleep", "600"])
        escaped = subprocess.Popen(["sleep", "601"], start_new_session=True)  # left the process group
        with open({str(pids)!r}, "w") as fh:
            fh.write(f"{{os.getpid()}} {{child.pid}} {{escaped.pid}}")
        time.sleep(600)
    """)
    runner.scheduler.submit_job(script_job("sleepy", script, timeout_minutes=0.05))
    started = time.monotonic()
    [outcome] = runner.run_round()
    took = time.monotonic() - started
    assert outcome.status is RunStatus.TIMED_OUT, outcome.error
    assert took < 20, f"the timed-out script took {took:.1f}s to stop"
    for pid in map(int, pids.read_text().split()):
        assert not process_alive(pid), f"process {pid} of the timed-out run is still running"
    run = runner.scheduler.history("sleepy")[0]
    assert run["status"] == "timed_out" and "timeout of 0.05 minute(s)" in run["exception"]


def test_a_mapreduce_job_past_its_timeout_is_stopped_and_publishes_nothing(runner, cfg, tmp_path):
    write_lines(tmp_path / "in" / "a.txt", ["a b", "SLOW 60 c", "d"])
    write_lines(tmp_path / "in" / "b.txt", ["e f"])
    job = make_job("slowmr", "testjobs", [str(tmp_path / "in")], "slow_lines", "sum_values", timeout_minutes=0.05)
    runner.scheduler.submit_job(job)
    started = time.monotonic()
    [outcome] = runner.run_round()
    assert outcome.status is RunStatus.TIMED_OUT and time.monotonic() - started < 30
    run = runner.scheduler.history("slowmr")[0]
    assert run["phase"] == "map"
    assert not (Path(cfg.base_dir) / "slowmr" / "reduce").exists()


def test_a_mapreduce_run_keeps_each_workers_latest_counters_in_the_history(runner, tmp_path):
    for name in ("a", "b", "c"):
        write_lines(tmp_path / "in" / f"{name}.txt", [f"{name} x y", "x z"])
    runner.scheduler.submit_job(make_job("counted", "testjobs", [str(tmp_path / "in")], "words", "sum_values"))
    [outcome] = runner.run_round()
    assert outcome.status is RunStatus.SUCCEEDED, outcome.error
    progress = runner.scheduler.history("counted")[0]["progress"]  # the last phase recorded while it ran
    assert progress["phase"] in ("map", "sort", "reduce") and set(progress["servers"]) == {"S_0", "S_1"}


# --- the scheduled-analysis form ----------------------------------------------------------
def test_tarballs_with_members_outside_their_folder_are_refused(tmp_path):
    for bad in ("../escape.txt", "/etc/evil", "ok/../../x"):
        tar = tarball(tmp_path / "bad.tar.gz", {"run.sh": "echo", bad: "x"})
        with pytest.raises(JobSpecError, match="would land outside"):
            safe_extract(str(tar), str(tmp_path / "dest"), "j")
    link = tmp_path / "link.tar.gz"
    with tarfile.open(link, "w:gz") as tar:
        info = tarfile.TarInfo("data")
        info.type, info.linkname = tarfile.SYMTYPE, "../../etc"
        tar.addfile(info)
    with pytest.raises(JobSpecError, match="links to"):
        safe_extract(str(link), str(tmp_path / "dest"), "j")
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "dest" / "data").exists()


def test_a_refused_tarball_fails_the_run_with_the_reason(runner, tmp_path):
    tar = tarball(tmp_path / "bad.tar.gz", {"run.sh": "echo hi", "../../escape.sh": "x"})
    runner.scheduler.submit_job(analysis_job("evil", tar, "bash run.sh"))
    [outcome] = runner.run_round()
    assert outcome.status is RunStatus.FAILED and "would land outside the run's folder" in outcome.error


ANALYSIS = """set -e
mkdir -p out/sub
echo "rows=$1" > out/summary.txt
echo nested > out/sub/part-0.txt
echo "log line from the analysis"
[ "$2" != fail ] || { echo "it broke" >&2; exit 7; }
"""


def test_a_scheduled_analysis_publishes_its_output_dir_to_a_local_folder(runner, cfg, tmp_path):
    tar = tarball(tmp_path / "analysis.tar.gz", {"run.sh": ANALYSIS})
    data = Path(cfg.publish_url) / "daily-report" / "data"
    data.mkdir(parents=True)
    (data / "by-hand.txt").write_text("published by hand before the Runner")
    runner.scheduler.submit_job(analysis_job("daily-report", tar, "bash run.sh 42"))
    [outcome] = runner.run_round()
    assert outcome.status is RunStatus.SUCCEEDED, outcome.error
    assert not (data / "by-hand.txt").exists()
    assert (data / "summary.txt").read_text() == "rows=42\n" and (data / "sub" / "part-0.txt").exists()
    assert '"files"' in (data / "_PUBLISHED.json").read_text()
    run = runner.scheduler.history("daily-report")[0]
    assert run["counters"]["files_published"] == 2 and run["counters"]["published_to"] == f"{data}/"
    assert "log line from the analysis" in Path(run["log_path"]).read_text()
    # a failed run publishes nothing: the previous output stays
    runner.scheduler.submit_job(analysis_job("daily-report", tar, "bash run.sh 99 fail"))
    [outcome] = runner.run_round()
    assert outcome.status is RunStatus.FAILED and "exited with code 7" in outcome.error and "it broke" in outcome.error
    assert (data / "summary.txt").read_text() == "rows=42\n"
    runner.scheduler.submit_job(analysis_job("daily-report", tar, "bash run.sh 7"))
    runner.run_round()
    assert (data / "summary.txt").read_text() == "rows=7\n"
    versions = Path(cfg.publish_url) / "daily-report" / ".versions"
    assert len(os.listdir(versions)) == 3  # this one, the previous, and the folder made by hand, kept aside
    assert [p.read_text() for p in versions.glob("manual-*/by-hand.txt")] == ["published by hand before the Runner"]


def test_an_analysis_that_does_not_make_its_output_dir_fails(runner, tmp_path):
    tar = tarball(tmp_path / "a.tar.gz", {"run.sh": "echo nothing"})
    runner.scheduler.submit_job(analysis_job("no-out", tar, "bash run.sh", output_dir="results"))
    [outcome] = runner.run_round()
    assert outcome.status is RunStatus.FAILED and "output_dir" in outcome.error and "does not exist" in outcome.error


def test_a_scheduled_analysis_publishes_to_an_s3_compatible_store(tmp_path, s3_server):
    import boto3

    cfg = make_config(tmp_path / "compute").with_overrides(publish_url="s3://reports/team", s3_endpoint_url=s3_server)
    client = boto3.client("s3", endpoint_url=s3_server)
    client.create_bucket(Bucket="reports")
    client.put_object(Bucket="reports", Key="team/weekly/data/stale.txt", Body=b"old")
    runner = Runner(cfg, local=True, echo=lambda m: None)
    tar = tarball(tmp_path / "analysis.tar.gz", {"run.sh": ANALYSIS})
    runner.scheduler.submit_job(analysis_job("weekly", tar, "bash run.sh 5"))
    [outcome] = runner.run_round()
    assert outcome.status is RunStatus.SUCCEEDED, outcome.error
    keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket="reports")["Contents"])
    assert keys == ["team/weekly/data/_PUBLISHED.json", "team/weekly/data/sub/part-0.txt",
                    "team/weekly/data/summary.txt"]
    body = client.get_object(Bucket="reports", Key="team/weekly/data/summary.txt")["Body"].read()
    assert body == b"rows=5\n"
    # a store that refuses (no such bucket) fails the run with a message naming the place
    bad = cfg.with_overrides(publish_url="s3://missing-bucket/x")
    r2 = Runner(bad, local=True, echo=lambda m: None)
    r2.scheduler.submit_job(analysis_job("weekly", tar, "bash run.sh 6"))
    [outcome] = r2.run_round()
    assert outcome.status is RunStatus.FAILED and "s3://missing-bucket/x/weekly/data/" in outcome.error


# --- a pipeline of the original's kind ------------------------------------------------------
def test_a_pipeline_upload_mapreduce_download_script_auxiliary_mapreduce(runner, cfg, tmp_path):
    """The typical pipeline, all from the queue in one round, in priority order."""
    incoming = tmp_path / "incoming"
    for i in range(4):
        write_lines(incoming / f"part-{i}.txt", [f"apple banana apple line{i}", "cherry apple"])
    master = Path(cfg.local_working_dir)
    post = write_script(tmp_path / "post.py", """
        import json, pathlib, sys
        from collections import Counter
        counts = Counter()
        for f in pathlib.Path(sys.argv[1]).glob("*.jsonl"):
            for line in f.read_text().splitlines():
                key, value = json.loads(line)
                counts[key] += value
        top = {w: 100 for w, _ in counts.most_common(2)}
        pathlib.Path(sys.argv[2]).write_text(json.dumps({"weights": top}))
    """)
    from cluster.job_spec import get_file_transfer_template

    def transfer(name: str, prio: int, **keys) -> dict:
        job = get_file_transfer_template()
        job.update(job_name=name, job_priority=prio, group_name="pipeline", **keys)
        return job

    s = runner.scheduler
    s.submit_job(transfer("1-upload", 60, transfer_type="upload", input_dir=str(incoming), output_dir="incoming"))
    s.submit_job(make_job("2-count", "testjobs", [os.path.join(cfg.base_dir, "incoming")], "words", "sum_values",
                          job_priority=50, group_name="pipeline"))
    s.submit_job(transfer("3-download", 40, transfer_type="download",
                          input_dir="2-count/reduce", output_dir="counts"))
    s.submit_job(script_job("4-post", post, str(master / "counts"), str(master / "top.json"),
                            job_priority=30, group_name="pipeline"))
    s.submit_job(transfer("5-aux", 20, transfer_type="upload_auxiliary", input_file_name="top.json",
                          auxiliary_data_name="top"))
    s.submit_job(make_job("6-weighted", "testjobs", [os.path.join(cfg.base_dir, "incoming")], "weighted_words",
                          "sum_values", auxiliary_data_name_mapper="top", job_priority=10, group_name="pipeline"))
    outcomes = runner.run_round()
    assert [(o.job_name, o.status) for o in outcomes] == [
        (n, RunStatus.SUCCEEDED) for n in ("1-upload", "2-count", "3-download", "4-post", "5-aux", "6-weighted")], \
        [o.error for o in outcomes]
    weighted = output_dict(os.path.join(cfg.base_dir, "6-weighted", "reduce"))
    # apple (12 times) and one of banana/cherry (4 times each) are the top two words, weighted 100
    assert weighted["apple"] == 1200 and sorted(v for v in weighted.values() if v) == [400, 1200]
    assert weighted["line0"] == 0
    upload = s.history("1-upload")[0]["counters"]
    assert upload["files"] == 4 and upload["files_skipped"] == 0
    runner.run_round()  # the next round: the upload finds every file already there
    assert s.history("1-upload")[0]["counters"]["files_skipped"] == 4


def test_the_runner_cli_once_runs_a_round_and_history_shows_it(cfg, tmp_path, appender):
    script, log = appender
    ini = tmp_path / "cluster.cfg"
    ini.write_text(cfg.to_ini())
    job = tmp_path / "job.json"
    job.write_text(json.dumps(script_job("hello", script, str(log), "hello")))
    env = dict(os.environ, CLUSTER_CONFIG=str(ini))
    out = subprocess.run([str(MAPREDUCE), "submit", str(job)], env=env, capture_output=True, text=True)
    assert out.returncode == 0 and "queued" in out.stdout
    out = subprocess.run([str(MAPREDUCE), "runner", "--once", "--local"], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "job hello succeeded" in out.stdout and lines(log) == ["hello"]
    out = subprocess.run([str(MAPREDUCE), "history"], env=env, capture_output=True, text=True)
    assert "hello" in out.stdout and "succeeded" in out.stdout
    assert Scheduler(cfg).history("hello")[0]["runner_pid"] != os.getpid()
