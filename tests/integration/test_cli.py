"""The `mapreduce` console script, driven as a user drives it: a subprocess with --config."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from integration_helpers import EXAMPLE_PROJECTS, MAPREDUCE

from cluster.job_spec import get_mapreduce_job_template, get_script_template


def mapreduce(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "CLUSTER_CONFIG"}
    env["HOME"] = str(cwd)  # no ~/.config/cluster/cluster.cfg of the person running the tests
    return subprocess.run([str(MAPREDUCE), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)


@pytest.fixture
def cli_config(tmp_path) -> Path:
    path = tmp_path / "cluster.cfg"
    path.write_text("[CLUSTER]\n"
                    f"compute_dir = {tmp_path / 'compute'}\n"
                    f"projects_dir = {EXAMPLE_PROJECTS}\n"
                    "max_number_of_bytes_in_memory = 256M\n"
                    "number_of_servers_per_location = 2\n")
    return path


def write_job(path: Path, **changes) -> Path:
    job = get_mapreduce_job_template()
    job.update(changes)
    path.write_text(json.dumps(job))
    return path


def test_template_prints_a_valid_job_template(tmp_path):
    r = mapreduce("template", "mapreduce", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    job = json.loads(r.stdout)
    assert set(job) == set(get_mapreduce_job_template())
    assert job["job_type"] == "mapreduce"
    assert job["job_name"] is None and job["map_function_name"] is None


def test_run_then_output_prints_every_item(tmp_path, cli_config, words_plain):
    input_dir, expected = words_plain
    job = write_job(tmp_path / "job.json", job_name="cli_wc", project_name="word_count",
                    input_dirs=[str(input_dir)], map_function_name="word_count",
                    reduce_function_name="sum_counts", combine_function_name="sum_counts")
    r = mapreduce("validate", str(job), "--config", str(cli_config), cwd=tmp_path)
    assert r.returncode == 0 and "cli_wc" in r.stdout, r.stderr
    r = mapreduce("run", str(job), "--local", "--servers", "2", "--config", str(cli_config), "--json",
                  "--no-progress", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["job_name"] == "cli_wc"
    assert Path(result["output_dir"]) == tmp_path / "compute" / "data" / "cli_wc" / "reduce"
    assert set(result["counters"]["peak_rss_bytes"]) == {"S_0", "S_1"}

    r = mapreduce("output", "cli_wc", "--config", str(cli_config), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    items = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(items) == len(expected["counts"])
    assert dict(items) == expected["counts"]

    r = mapreduce("output", "cli_wc", "--limit", "7", "--config", str(cli_config), cwd=tmp_path)
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 7
    assert [json.loads(line) for line in r.stdout.splitlines()] == items[:7]


def test_output_limit_zero_prints_nothing(tmp_path, cli_config, words_plain):
    job = write_job(tmp_path / "job.json", job_name="cli_limit", project_name="word_count",
                    input_dirs=[str(words_plain[0])], map_function_name="word_count",
                    reduce_function_name="sum_counts")
    r = mapreduce("run", str(job), "--local", "--config", str(cli_config), "--no-progress", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = mapreduce("output", "cli_limit", "--limit", "0", "--config", str(cli_config), cwd=tmp_path)
    assert r.returncode == 0
    assert r.stdout == ""


def test_run_prints_counters_for_a_person(tmp_path, cli_config, words_plain):
    input_dir, expected = words_plain
    job = write_job(tmp_path / "job.json", job_name="cli_human", project_name="word_count",
                    input_dirs=[str(input_dir)], map_function_name="word_count",
                    reduce_function_name="sum_counts", compress=True, max_number_dumped_items_reducer=1000)
    r = mapreduce("run", str(job), "--config", str(cli_config), cwd=tmp_path)
    assert r.returncode == 1 and "no running cluster" in r.stderr and "--local" in r.stderr, r.stderr
    r = mapreduce("run", str(job), "--local", "--config", str(cli_config), "--progress", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "cli_human" in r.stdout and "succeeded" in r.stdout
    assert f"{len(expected['counts']):,}" in r.stdout, "the counters show the records out"
    assert "map" in r.stderr, "progress bars (forced on) go to stderr"
    assert "Traceback" not in r.stderr
    r = mapreduce("output", "cli_human", "--config", str(cli_config), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert dict(json.loads(line) for line in r.stdout.splitlines()) == expected["counts"], \
        "output reads the compressed, rotated files"


def test_malformed_job_lists_every_problem(tmp_path, cli_config):
    job = get_mapreduce_job_template()
    job.update(job_name="bad name!", project_name="word_count", input_dirs="not-a-list",
               reduce_function_name="sum_counts", downsample=5, colour="red")
    del job["map_function_name"]
    (tmp_path / "bad.json").write_text(json.dumps(job))
    problems = ["colour", "map_function_name", "input_dirs", "downsample", "job_name"]
    for args in (["run", "bad.json", "--local", "--config", str(cli_config)], ["validate", "bad.json"]):
        r = mapreduce(*args, cwd=tmp_path)
        assert r.returncode != 0, f"{args}: a malformed job must fail"
        assert "Traceback" not in r.stderr
        assert r.stderr.count("problem(s)") == 1, r.stderr
        for word in problems:
            assert word in r.stderr, f"{args}: stderr does not mention {word}:\n{r.stderr}"
        assert "5 problem(s)" in r.stderr, r.stderr
    assert not (tmp_path / "compute" / "data").exists()


def test_job_file_that_is_not_json(tmp_path, cli_config):
    (tmp_path / "broken.json").write_text("{not json")
    r = mapreduce("run", "broken.json", "--local", "--config", str(cli_config), cwd=tmp_path)
    assert r.returncode != 0 and "broken.json" in r.stderr and "JSON" in r.stderr
    assert "Traceback" not in r.stderr


def test_missing_project_is_named(tmp_path, cli_config, words_plain):
    job = write_job(tmp_path / "job.json", job_name="cli_noproj", project_name="no_such_project",
                    input_dirs=[str(words_plain[0])], map_function_name="word_count",
                    reduce_function_name="sum_counts")
    r = mapreduce("run", str(job), "--local", "--config", str(cli_config), "--no-progress", cwd=tmp_path)
    assert r.returncode != 0
    assert "no_such_project" in r.stderr and "not found" in r.stderr, r.stderr
    assert "word_count" in r.stderr, "the error should list the projects that exist"
    assert "Traceback" not in r.stderr


def test_missing_function_is_named(tmp_path, cli_config, words_plain):
    job = write_job(tmp_path / "job.json", job_name="cli_nofn", project_name="word_count",
                    input_dirs=[str(words_plain[0])], map_function_name="no_such_function",
                    reduce_function_name="sum_counts")
    r = mapreduce("run", str(job), "--local", "--config", str(cli_config), "--no-progress", cwd=tmp_path)
    assert r.returncode != 0
    assert "no_such_function" in r.stderr and "word_count_filtered" in r.stderr, r.stderr


def test_map_error_reaches_the_user(tmp_path, words_plain):
    cfg = tmp_path / "cluster.cfg"
    cfg.write_text(f"[CLUSTER]\ncompute_dir = {tmp_path / 'compute'}\n"
                   f"projects_dir = {Path(__file__).resolve().parents[1] / 'projects'}\n"
                   "number_of_servers_per_location = 2\n")
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "x.txt").write_text("fine words\nBOOM here\n")
    (tmp_path / "in" / "y.txt").write_text("more fine words\n")
    job = write_job(tmp_path / "job.json", job_name="cli_boom", project_name="testjobs",
                    input_dirs=[str(tmp_path / "in")], map_function_name="fail_on_boom",
                    reduce_function_name="sum_values")
    r = mapreduce("run", str(job), "--local", "--config", str(cfg), "--no-progress", cwd=tmp_path)
    assert r.returncode != 0
    for part in ("phase map", str(tmp_path / "in" / "x.txt"), "line 2", "ValueError"):
        assert part in r.stderr, f"{part!r} not in stderr:\n{r.stderr}"
    r = mapreduce("output", "cli_boom", "--config", str(cfg), cwd=tmp_path)
    assert r.returncode != 0 and "cli_boom" in r.stderr


def test_output_of_a_job_that_never_ran(tmp_path, cli_config):
    r = mapreduce("output", "never_ran", "--config", str(cli_config), cwd=tmp_path)
    assert r.returncode != 0 and "never_ran" in r.stderr
    assert "Traceback" not in r.stderr


def test_unknown_config_key_is_named(tmp_path):
    cfg = tmp_path / "bad.cfg"
    cfg.write_text("[CLUSTER]\ncompute_dir = x\nnumber_of_srevers = 2\n")
    r = mapreduce("output", "anything", "--config", str(cfg), cwd=tmp_path)
    assert r.returncode != 0 and "number_of_srevers" in r.stderr
    assert "Traceback" not in r.stderr


def test_the_queue_from_the_command_line(tmp_path, cli_config):
    with open(cli_config, "a") as fh:
        fh.write(f"local_working_dir = {tmp_path / 'master'}\n")
    cfg = ("--config", str(cli_config))
    script = get_script_template()
    script.update(job_name="post", script_location="post.py", job_priority=1, schedule_frequency="weekly",
                  day_of_week="monday", timeout_minutes=5)
    (tmp_path / "post.json").write_text(json.dumps(script))
    job = write_job(tmp_path / "wc.json", job_name="wc", project_name="word_count", input_dirs=["in"],
                    map_function_name="word_count", reduce_function_name="sum_counts", job_priority=5)
    assert mapreduce("queue", *cfg, cwd=tmp_path).stdout.strip() == "the queue is empty"
    r = mapreduce("submit", str(tmp_path / "post.json"), *cfg, cwd=tmp_path)
    assert r.returncode != 0 and f"script_location {tmp_path / 'master' / 'post.py'} does not exist" in r.stderr
    (tmp_path / "master").mkdir(exist_ok=True)
    (tmp_path / "master" / "post.py").write_text("print('post')\n")
    r = mapreduce("submit", str(tmp_path / "post.json"), *cfg, cwd=tmp_path)
    assert r.returncode == 0 and "job 'post' queued" in r.stdout
    mapreduce("submit", str(job), *cfg, cwd=tmp_path)
    r = mapreduce("submit", str(job), *cfg, cwd=tmp_path)
    assert "replaced the queued job of that name" in r.stdout
    table = mapreduce("queue", *cfg, cwd=tmp_path).stdout.splitlines()
    assert [line.split()[0] for line in table] == ["JOB", "wc", "post"]
    assert "weekly on monday at 12:00 UTC" in table[2] and "5 min" in table[2]
    listed = json.loads(mapreduce("queue", "--json", *cfg, cwd=tmp_path).stdout)
    assert [j["job_name"] for j in listed] == ["wc", "post"]
    bad = write_job(tmp_path / "bad.json", job_name="bad", schedule_frequency="hourly")
    r = mapreduce("submit", str(bad), *cfg, cwd=tmp_path)
    assert r.returncode != 0 and "schedule_frequency must be null" in r.stderr
    assert mapreduce("history", *cfg, cwd=tmp_path).stdout.strip() == "no runs recorded"
    r = mapreduce("estimate", "wc", *cfg, cwd=tmp_path)
    assert r.returncode != 0 and "no successful run yet" in r.stderr
    assert "deleted" in mapreduce("delete", "wc", *cfg, cwd=tmp_path).stdout
    r = mapreduce("delete", "wc", *cfg, cwd=tmp_path)
    assert r.returncode != 0 and "no job 'wc' in the queue" in r.stderr
