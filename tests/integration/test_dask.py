"""The Dask executor on a real Dask cluster: a `dask scheduler` and two `dask worker` processes on
loopback ports, each output compared with what the local executor makes of the same job."""
from __future__ import annotations

import collections
import os
import shutil
import signal
import threading
import time
import traceback
from pathlib import Path

import pytest
from dask_helpers import DaskProcesses
from integration_helpers import (
    EXAMPLE_PROJECTS,
    MAPREDUCE,
    make_config,
    make_job,
    output_dict,
    output_files,
    run_job,
    write_auxiliary,
    write_lines,
)

import cluster
from cluster import sample_data
from cluster.exceptions import ConfigError, JobFailed, JobTimedOut
from cluster.executors.dask import DaskExecutor

pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory):
    procs = DaskProcesses(tmp_path_factory.mktemp("dask"))
    try:
        client = procs.client()  # waits for both workers
        client.close()
        yield procs
    finally:
        procs.stop()


def on_dask(config, job, address, **options):
    return DaskExecutor(config, address).run(job, **options)


def wc_job(name, input_dir, **extra):
    return make_job(name, "word_count", [input_dir], "word_count", "sum_counts", **extra)


@pytest.mark.parametrize("combiner", [None, "sum_counts"])
def test_word_count_is_exact_with_and_without_a_combiner(wc_config, words_plain, dask_cluster, combiner):
    input_dir, expected = words_plain
    result = on_dask(wc_config, wc_job("wc_dask", input_dir, combine_function_name=combiner), dask_cluster.address)
    assert output_dict(result) == expected["counts"]
    c = result.counters
    assert c["files"] == 4 and c["map_items_out"] == expected["total_words"]
    assert c["records_out"] == len(expected["counts"])
    if combiner:
        assert 0 < c["spilled_items"] < c["map_items_out"]
    else:
        assert c["spilled_items"] == c["map_items_out"]
    # one reduce task per worker thread, each with a share of the keys
    assert {p.name.split("-")[0] for p in output_files(result.output_dir)} == {"P_000", "P_001"}
    assert not os.path.exists(os.path.join(result.output_dir, ".attempts"))


def test_telemetry_aggregation_equals_the_local_executor(tmp_path, dask_cluster):
    sample_data.generate("telemetry", str(tmp_path / "tel"), size_mb=1, files=6, seed=5)
    config = make_config(tmp_path / "compute", EXAMPLE_PROJECTS)
    job = make_job("tel", "telemetry", [tmp_path / "tel" / "input"], "channel_os", "sum_values",
                   combine_function_name="sum_values")
    local = output_dict(run_job(config, job))
    dask = on_dask(config, job, dask_cluster.address)
    assert output_dict(dask) == local and local


def test_typed_keys_arrive_as_they_were(tmp_path, dask_cluster, config):
    lines = [f"c{c} " + " ".join(str((c * 37 + i * 11) % 997) for i in range(6)) for c in range(10) for _ in range(40)]
    write_lines(tmp_path / "typed" / "all.txt", lines)
    job = make_job("typed_dask", "testjobs", [tmp_path / "typed"], "typed_keys", "sum_by_repr")
    expected = output_dict(run_job(config, job))
    assert output_dict(on_dask(config, job, dask_cluster.address)) == expected


def add_words(tmp_path: Path, input_dir: Path, prefix: str, seed: int) -> dict:
    scratch = tmp_path / f"gen-{prefix}"
    expected = sample_data.generate("words", str(scratch), size_mb=0.2, files=3, seed=seed, vocabulary=500)
    input_dir.mkdir(parents=True, exist_ok=True)
    for p in sorted((scratch / "input").iterdir()):
        shutil.move(str(p), str(input_dir / f"{prefix}-{p.name}"))
    return expected["counts"]


def test_hold_state_and_merge_previous_output_equal_a_one_shot_run(tmp_path, config, dask_cluster):
    inc = tmp_path / "incoming"
    counts_a = add_words(tmp_path, inc, "a", seed=31)
    job = make_job("inc_dask", "testjobs", [inc], "words", "sum_values", hold_state=True,
                   merge_previous_output=True, delete_job_data=False, combine_function_name="sum_values")
    first = on_dask(config, job, dask_cluster.address)
    assert output_dict(first) == counts_a
    counts_b = add_words(tmp_path, inc, "b", seed=32)
    second = on_dask(config, job, dask_cluster.address)
    assert second.counters["files_already_mapped"] == 3
    merged = dict(collections.Counter(counts_a) + collections.Counter(counts_b))
    assert output_dict(second) == merged
    assert all(second.run_id in p.name for p in output_files(second.output_dir))
    one_shot = run_job(config, make_job("one_shot", "testjobs", [inc], "words", "sum_values"))
    assert output_dict(one_shot) == merged


def test_downsample_keeps_the_local_executors_records(tmp_path, config, dask_cluster):
    for f in range(3):
        write_lines(tmp_path / "sample" / f"part-{f}.txt", (f"line {f}-{i:05d}" for i in range(3000)))
    job = make_job("sample_dask", "testjobs", [tmp_path / "sample"], "count_records", "sum_values", downsample=0.3)
    local = output_dict(run_job(config, job))
    dask = on_dask(config, job, dask_cluster.address)
    assert output_dict(dask) == local
    assert 0.25 * 9000 < local["records"] < 0.35 * 9000


def test_a_map_function_that_raises_fails_at_once_with_file_and_line(tmp_path, config, dask_cluster):
    notes = tmp_path / "notes"
    notes.mkdir()
    write_lines(tmp_path / "in" / "a.txt", ["fine words", "more words", "this goes boom", "never read"])
    write_auxiliary(config, "notes", {"dir": str(notes)})
    job = make_job("boom_dask", "testjobs", [tmp_path / "in"], "fail_on_boom_noting", "sum_values",
                   auxiliary_data_name_mapper="notes")
    with pytest.raises(JobFailed) as err:
        on_dask(config, job, dask_cluster.address)
    message = str(err.value)
    assert "phase map" in message and "cannot map a line with boom" in message
    assert err.value.report["input_file"].endswith("a.txt") and err.value.report["line_number"] == 3
    assert "(worker tcp://127.0.0.1:" in err.value.report["server"]
    assert len(list(notes.iterdir())) == 1, "a user's error is not retried"
    assert not os.path.exists(os.path.join(config.base_dir, "boom_dask", "reduce"))


def test_a_job_past_its_timeout_is_stopped_and_publishes_nothing(tmp_path, config, dask_cluster):
    write_lines(tmp_path / "in" / "a.txt", ["SLOW 4 words", "more words"])
    job = make_job("slow_dask", "testjobs", [tmp_path / "in"], "slow_lines", "sum_values")
    with pytest.raises(JobTimedOut):
        on_dask(config, job, dask_cluster.address, timeout_minutes=0.02)
    assert not os.path.exists(os.path.join(config.base_dir, "slow_dask", "reduce"))


def _kill_a_worker_running(dask_cluster, prefix: str, done: threading.Event) -> str:
    """SIGKILL the worker process that runs a task whose key starts with `prefix`; its address."""
    client = dask_cluster.client()
    try:
        while not done.is_set():
            for worker, keys in client.processing().items():
                if any(str(k).startswith(prefix) for k in keys):
                    pid = client.run(os.getpid, workers=[worker])[worker]
                    os.kill(pid, signal.SIGKILL)
                    return worker
            time.sleep(0.05)
        raise AssertionError(f"no {prefix} task was seen running")
    finally:
        client.close()


def _run_in_thread(config, job, address):
    out: dict = {}
    done = threading.Event()

    def target():
        try:
            out["result"] = on_dask(config, job, address)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            out["error"] = exc
        finally:
            done.set()

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, done, out


@pytest.mark.parametrize("phase", ["map", "reduce"])
def test_a_worker_killed_mid_phase_costs_a_retry_not_the_job(tmp_path, config, dask_cluster, phase):
    """SIGKILL to the worker running a map task (its map sleeps on SLOW lines), or a reduce task (its
    reduce sleeps on the key SLOW): Dask runs the lost work again, and every count is exact."""
    expected: collections.Counter = collections.Counter()
    for f in range(4):
        lines = [f"SLOW 0.6 w{f}"] * 3 + [f"word{i % 50} common w{f}" for i in range(2000)]
        write_lines(tmp_path / "in" / f"f{f}.txt", lines)
        for line in lines:
            expected.update(line.split())
    write_auxiliary(config, "slow", {"seconds": 3})
    if phase == "map":
        job = make_job("kill_map", "testjobs", [tmp_path / "in"], "slow_lines", "sum_values")
    else:
        job = make_job("kill_reduce", "testjobs", [tmp_path / "in"], "words", "sum_values_slow_on_marker",
                       auxiliary_data_name_reducer="slow")
    thread, done, out = _run_in_thread(config, job, dask_cluster.address)
    killed = _kill_a_worker_running(dask_cluster, phase, done)
    thread.join(timeout=180)
    assert not thread.is_alive()
    assert "error" not in out, "".join(traceback.format_exception(out["error"]))
    assert output_dict(out["result"]) == dict(expected), f"worker {killed} killed during {phase}"


def test_a_client_of_the_callers_own_is_neither_used_nor_replaced(tmp_path, config, dask_cluster):
    """A process with a Client of its own (a job script, a notebook) made while the run waits: the run
    keeps to its own client (another's event loop fails its waits) and leaves the caller's the default."""
    from distributed import Client, default_client

    expected: collections.Counter = collections.Counter()
    for f in range(3):
        lines = [f"SLOW 0.3 w{f}"] + [f"word{i % 20} f{f}" for i in range(500)]
        write_lines(tmp_path / "in" / f"f{f}.txt", lines)
        for line in lines:
            expected.update(line.split())
    theirs: list = []

    def cancelled():  # asked once a second while the run waits: the caller makes its client then
        if not theirs:
            with pytest.raises(ValueError, match="No clients found"):
                default_client()  # the run's client is not the process's default
            theirs.append(Client(dask_cluster.address, timeout=30))
        return None

    try:
        result = DaskExecutor(config, dask_cluster.address).run(
            make_job("their_client", "testjobs", [tmp_path / "in"], "slow_lines", "sum_values"), cancelled=cancelled)
        assert theirs, "the run never waited"
        assert output_dict(result) == dict(expected)
        assert default_client() is theirs[0]
    finally:
        for c in theirs:
            c.close()


def test_workers_that_run_another_version_are_refused(config, dask_cluster, monkeypatch, tmp_path):
    monkeypatch.setattr(cluster, "__version__", "0.0.0-other")
    write_lines(tmp_path / "in" / "a.txt", ["a b"])
    with pytest.raises(ConfigError, match="do not run what this client runs") as err:
        on_dask(config, make_job("version_dask", "testjobs", [tmp_path / "in"], "words", "sum_values"),
                dask_cluster.address)
    assert "mapreduce-cluster" in str(err.value) and "0.0.0-other" in str(err.value)


def test_an_unreachable_scheduler_is_named(config, tmp_path):
    write_lines(tmp_path / "in" / "a.txt", ["a b"])
    with pytest.raises(ConfigError, match="cannot reach the Dask scheduler at tcp://127.0.0.1:9"):
        DaskExecutor(config.with_overrides(), "tcp://127.0.0.1:9").run(
            make_job("nowhere", "testjobs", [tmp_path / "in"], "words", "sum_values"))


def test_the_cli_runs_a_job_on_a_local_dask_cluster(tmp_path, words_plain):
    import json
    import subprocess

    input_dir, expected = words_plain
    config_file = tmp_path / "cluster.cfg"
    config_file.write_text(f"[CLUSTER]\ncompute_dir = {tmp_path / 'compute'}\nprojects_dir = {EXAMPLE_PROJECTS}\n")
    job_file = tmp_path / "job.json"
    job_file.write_text(json.dumps({"job_name": "cli_dask", "job_type": "mapreduce", "project_name": "word_count",
                                    "input_dirs": [str(input_dir)], "map_function_name": "word_count",
                                    "reduce_function_name": "sum_counts"}))
    proc = subprocess.run([str(MAPREDUCE), "run", str(job_file), "--config", str(config_file), "--dask", "local",
                           "--json"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert output_dict(report["output_dir"]) == expected["counts"]



def test_a_job_script_runs_on_dask_with_the_local_executors_output(tmp_path, dask_cluster):
    import json
    import subprocess
    import sys

    from integration_helpers import REPO

    sample_data.generate("telemetry", str(tmp_path / "tel"), size_mb=0.5, files=6, seed=8)
    (tmp_path / "filter.json").write_text(json.dumps({"version": 1, "dimensions": [
        {"field_name": n, "allowed_values": "*"} for n in
        ("reason", "appName", "appUpdateChannel", "appVersion", "appBuildID", "submission_date")]}))
    outputs = {}
    for name, extra in (("local", ["--num-mappers", "2"]), ("dask", ["--dask", dask_cluster.address])):
        out = tmp_path / f"{name}.out"
        proc = subprocess.run(
            [sys.executable, "-m", "cluster.job", str(REPO / "examples" / "telemetry" / "channel_os.py"),
             "--input-filter", str(tmp_path / "filter.json"), "--data-dir", str(tmp_path / "tel" / "input"),
             "--work-dir", str(tmp_path / f"work-{name}"), "--output", str(out), *extra],
            capture_output=True, text=True, cwd=REPO, timeout=300,
            env=dict(os.environ, XDG_CONFIG_HOME=str(tmp_path / "xdg"), XDG_DATA_HOME=str(tmp_path / "xdg-data")))
        assert proc.returncode == 0, proc.stderr[-3000:]
        outputs[name] = sorted(out.read_text().splitlines())
    assert outputs["dask"] == outputs["local"] and outputs["local"]


def test_the_runner_runs_a_queued_job_on_dask(tmp_path, words_plain, dask_cluster):
    import json
    import subprocess

    from cluster.scheduling.store import Scheduler

    input_dir, expected = words_plain
    config = make_config(tmp_path / "compute", EXAMPLE_PROJECTS)
    ini = tmp_path / "cluster.cfg"
    ini.write_text(config.to_ini())
    env = dict(os.environ, CLUSTER_CONFIG=str(ini))
    job_file = tmp_path / "queued.json"
    job_file.write_text(json.dumps({"job_name": "queued_dask", "job_type": "mapreduce", "project_name": "word_count",
                                    "input_dirs": [str(input_dir)], "map_function_name": "word_count",
                                    "reduce_function_name": "sum_counts", "run_once": True}))
    subprocess.run([str(MAPREDUCE), "submit", str(job_file)], env=env, check=True, capture_output=True)
    proc = subprocess.run([str(MAPREDUCE), "runner", "--once", "--dask", dask_cluster.address], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"(Dask at {dask_cluster.address}, one round)" in proc.stdout
    runs = Scheduler(config).history("queued_dask")
    assert [r["status"] for r in runs] == ["succeeded"], runs
    assert output_dict(os.path.join(config.base_dir, "queued_dask", "reduce")) == expected["counts"]


def test_two_jobs_at_once_on_one_scheduler_keep_to_their_own_data(tmp_path, words_plain, dask_cluster):
    """Two users' runs of different jobs (two `mapreduce run --dask` processes) share the workers,
    never their spec, project or auxiliary data."""
    import json
    import subprocess

    input_dir, expected = words_plain
    write_lines(tmp_path / "nums" / "n.txt", [f"{i % 7} {i % 3}" for i in range(3000)])
    runs = []
    for name, projects, job in (
            ("a", EXAMPLE_PROJECTS, wc_job("together_a", input_dir, combine_function_name="sum_counts")),
            ("b", None, make_job("together_b", "testjobs", [tmp_path / "nums"], "token_keys",
                                 "sum_values_slow_on_marker", auxiliary_data_name_reducer="slow"))):
        config = make_config(tmp_path / name, projects) if projects else make_config(tmp_path / name)
        if name == "b":
            write_auxiliary(config, "slow", {"seconds": 0})
        (tmp_path / f"{name}.cfg").write_text(config.to_ini())
        (tmp_path / f"{name}.json").write_text(json.dumps(job))
        runs.append((config, job, subprocess.Popen(
            [str(MAPREDUCE), "run", str(tmp_path / f"{name}.json"), "--config", str(tmp_path / f"{name}.cfg"),
             "--dask", dask_cluster.address, "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)))
    outputs = []
    for _, _, proc in runs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
        outputs.append(json.loads(out.strip().splitlines()[-1])["output_dir"])
    assert output_dict(outputs[0]) == expected["counts"]
    want: collections.Counter = collections.Counter()
    for i in range(3000):
        want.update([i % 7, i % 3])
    assert output_dict(outputs[1]) == dict(want)
