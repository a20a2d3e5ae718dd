"""Job templates and validate_job."""
from __future__ import annotations

import json

import pytest

from cluster.exceptions import JobSpecError
from cluster.job_spec import (
    TEMPLATES,
    TRANSFER_NEEDS,
    TRANSFER_TYPES,
    JobType,
    get_file_transfer_template,
    get_mapreduce_job_template,
    get_script_template,
    validate_job,
)

COMMON = {"job_submitter", "job_type", "force_run", "start_time", "end_time", "job_name", "group_name",
          "job_priority", "run_once", "exception",
          # the Runner's keys (issue 4)
          "timeout_minutes", "schedule_frequency", "day_of_week", "day_of_month", "time_of_day",
          # the Runner's retry policy (issue 16)
          "retries", "retry_delay_minutes", "min_interval_minutes"}
MAPREDUCE = COMMON | {
    "project_name", "input_dirs", "delete_job_data", "current_phase", "map_function_name",
    "auxiliary_data_name_mapper", "hold_state", "downsample", "max_number_dumped_items_shuffler",
    "simultaneous_files_in_redis", "reduce_function_name", "auxiliary_data_name_reducer",
    "max_number_dumped_items_reducer", "disk_based_input", "disk_based_output", "compress",
    # added by later issues
    "combine_function_name", "merge_previous_output", "output_url", "job_script", "input_filter",
    "combine_threshold", "max_bad_fraction"}
SCRIPT = COMMON | {"script_location", "script_arguments", "code_tarball", "execution_commandline", "output_dir"}
TRANSFER = COMMON | {"input_dir", "output_dir", "transfer_type", "reload_files", "delete_files", "compress",
                     "input_file_name", "auxiliary_data_name"}


def mapreduce_job(**changes):
    job = get_mapreduce_job_template()
    job.update(job_name="wc", project_name="word_count", input_dirs=["/data/in"],
               map_function_name="word_count", reduce_function_name="sum_counts")
    job.update(changes)
    return job


def problems_of(job) -> list[str]:
    with pytest.raises(JobSpecError) as info:
        validate_job(job)
    assert str(info.value).count("\n  - ") == len(info.value.problems)
    return info.value.problems


# --- templates ---------------------------------------------------------------------------
def test_mapreduce_template_keys():
    job = get_mapreduce_job_template()
    assert set(job) == MAPREDUCE
    assert job["job_type"] == "mapreduce"
    assert job["downsample"] == 1.0
    assert job["delete_job_data"] is True
    for key in ("hold_state", "disk_based_input", "disk_based_output", "compress", "merge_previous_output",
                "force_run", "run_once"):
        assert job[key] is False, key
    for key in ("job_name", "project_name", "input_dirs", "map_function_name", "reduce_function_name",
                "combine_function_name", "max_number_dumped_items_shuffler", "max_number_dumped_items_reducer"):
        assert job[key] is None, key


def test_script_and_transfer_template_keys():
    script = get_script_template()
    assert set(script) == SCRIPT
    assert script["job_type"] == "script" and script["script_arguments"] == []
    transfer = get_file_transfer_template()
    assert set(transfer) == TRANSFER
    assert transfer["job_type"] == "file_transfer"


def test_templates_are_fresh_and_json_serializable():
    a, b = get_mapreduce_job_template(), get_mapreduce_job_template()
    a["job_name"] = "changed"
    assert b["job_name"] is None
    s1, s2 = get_script_template(), get_script_template()
    s1["script_arguments"].append("x")
    assert s2["script_arguments"] == []
    for job in (a, s1, get_file_transfer_template()):
        assert json.loads(json.dumps(job)) == job


# --- validation --------------------------------------------------------------------------
def test_a_filled_template_is_valid_and_returned_unchanged():
    job = mapreduce_job()
    assert validate_job(job) == job
    script = get_script_template()
    script.update(job_name="post", script_location="/x/post.py", script_arguments=["--n", "3"])
    assert validate_job(script) == script
    for tt in TRANSFER_TYPES:
        transfer = get_file_transfer_template()
        transfer.update(job_name="t", transfer_type=tt, input_dir="/m/in", output_dir="out",
                        input_file_name="/m/aux.json", auxiliary_data_name="lookup")
        assert validate_job(transfer) == transfer


def test_each_transfer_type_names_the_keys_it_needs():
    for tt, needs in TRANSFER_NEEDS.items():
        transfer = get_file_transfer_template()
        transfer.update(job_name="t", transfer_type=tt)
        problems = problems_of(transfer)
        assert [p.split(" (")[0] for p in problems] == [f"a {tt} transfer needs {k}" for k in needs]


def test_an_empty_template_lists_every_required_key():
    problems = problems_of(get_mapreduce_job_template())
    assert sorted(problems) == sorted(f"{k} is required" for k in (
        "job_name", "project_name", "input_dirs", "map_function_name"))


def test_every_problem_is_listed_at_once():
    job = mapreduce_job(job_name="a/b", downsample=0, max_number_dumped_items_shuffler=True,
                        hold_state="yes", map_function_name=None, extra_key=1, another=2)
    del job["compress"]
    with pytest.raises(JobSpecError) as info:
        validate_job(job)
    err = info.value
    assert err.job_name == "a/b"
    problems = err.problems
    assert len(problems) == 7, problems
    expected = [
        "unknown key 'another'",
        "unknown key 'extra_key'",
        "map_function_name is required",
        "hold_state must be true/false, got str 'yes'",
        "max_number_dumped_items_shuffler must be a whole number, got True",
        "job_name 'a/b' must be letters, digits",
        "downsample must be in (0, 1], got 0",
    ]
    for fragment in expected:
        assert sum(fragment in p for p in problems) == 1, fragment
    assert "job 'a/b' is not valid (7 problem(s))" in str(err)


@pytest.mark.parametrize("job, required", [
    ({"job_type": "mapreduce", "job_name": "wc", "project_name": "p", "input_dirs": ["/d"],
      "map_function_name": "m"}, None),
    ({"job_type": "mapreduce", "job_name": "wc"}, ["project_name", "input_dirs", "map_function_name"]),
    ({"job_type": "script", "job_name": "s", "script_location": "/x.py"}, None),
    ({"job_type": "script", "job_name": "s", "code_tarball": "/c.tar.gz", "execution_commandline": "run"}, None),
    ({"job_type": "script", "job_name": "s"}, ["script_location"]),
    ({"job_type": "file_transfer", "job_name": "t", "transfer_type": "download", "input_dir": "/a",
      "output_dir": "/b"}, None),
    ({"job_type": "file_transfer", "job_name": "t", "transfer_type": "download"}, ["input_dir", "output_dir"]),
    ({"job_type": "file_transfer", "job_name": "t"}, ["transfer_type"]),
])
def test_a_minimal_job_file_is_completed_from_its_template(job, required):
    template = TEMPLATES[JobType(job["job_type"])]()
    if required is None:
        full = validate_job(dict(job))
        assert set(full) == set(template) and all(full[k] == v for k, v in job.items())
        assert all(full[k] == template[k] for k in template if k not in job and k != "job_submitter")
        return
    with pytest.raises(JobSpecError) as info:
        validate_job(job)
    text = str(info.value)
    for key in required:
        assert key in text, (key, text)
    assert "missing key" not in text


def test_a_minimal_job_file_still_refuses_unknown_keys_all_at_once():
    with pytest.raises(JobSpecError) as info:
        validate_job({"job_type": "mapreduce", "job_name": "wc", "input_dir": "/d", "map_fn": "m"})
    assert len(info.value.problems) == 5  # two unknown keys, three required keys



@pytest.mark.parametrize("value, ok", [(0, False), (0.0, False), (-0.5, False), (1.5, False), (1.0, True),
                                       (1, True), (0.25, True), (1e-9, True)])
def test_downsample_range(value, ok):
    job = mapreduce_job(downsample=value)
    if ok:
        assert validate_job(job) == job
    else:
        assert problems_of(job) == [f"downsample must be in (0, 1], got {value}"]


@pytest.mark.parametrize("key", ["max_number_dumped_items_shuffler", "simultaneous_files_in_redis",
                                 "max_number_dumped_items_reducer"])
def test_int_keys(key):
    assert validate_job(mapreduce_job(**{key: 10})) is not None
    assert problems_of(mapreduce_job(**{key: True})) == [f"{key} must be a whole number, got True"]
    assert problems_of(mapreduce_job(**{key: 2.5})) == [f"{key} must be a whole number, got float 2.5"]
    assert problems_of(mapreduce_job(**{key: 0})) == [f"{key} must be at least 1, got 0"]


def test_bool_is_not_a_number_and_number_is_not_a_bool():
    assert problems_of(mapreduce_job(downsample=True)) == ["downsample must be a whole number or a number, got True"]
    assert problems_of(mapreduce_job(job_priority=False)) == [
        "job_priority must be a whole number or a number, got False"]
    assert problems_of(mapreduce_job(compress=1)) == ["compress must be true/false, got int 1"]


def test_bad_names():
    problems = problems_of(mapreduce_job(job_name="../etc", project_name="a b", map_function_name="not-ident",
                                         combine_function_name="1abc", auxiliary_data_name_mapper="x/y"))
    assert len(problems) == 5
    assert any(p.startswith("job_name '../etc'") for p in problems)
    assert any(p.startswith("project_name 'a b'") for p in problems)
    assert any(p == "map_function_name 'not-ident' is not a Python function name" for p in problems)
    assert any(p == "combine_function_name '1abc' is not a Python function name" for p in problems)
    assert any(p.startswith("auxiliary_data_name_mapper 'x/y'") for p in problems)
    assert validate_job(mapreduce_job(job_name="Job_1.v-2")) is not None


def test_input_dirs_must_be_a_nonempty_list_of_paths():
    assert problems_of(mapreduce_job(input_dirs=[])) == ["input_dirs must list at least one folder"]
    assert problems_of(mapreduce_job(input_dirs=["/a", "", 3])) == [
        "input_dirs entries must be folder paths, got ''", "input_dirs entries must be folder paths, got 3"]
    assert problems_of(mapreduce_job(input_dirs="/a")) == ["input_dirs must be a list, got str '/a'"]


def test_not_nullable_keys():
    assert problems_of(mapreduce_job(hold_state=None)) == ["hold_state must not be null"]
    assert validate_job(mapreduce_job(combine_function_name=None, group_name=None)) is not None


def test_bad_job_type_and_not_a_dict():
    job = mapreduce_job(job_type="mapred")
    assert problems_of(job) == ["job_type must be one of mapreduce, script, file_transfer, got 'mapred'"]
    assert problems_of(["not", "a", "dict"]) == ["a job must be a dict (a JSON object), got list"]


def test_keys_of_another_job_type_are_unknown():
    script = get_script_template()
    script.update(job_name="s", script_location="/s.py", map_function_name="f")
    assert problems_of(script) == [
        "unknown key 'map_function_name' for a script job (start from `mapreduce template script`)"]


def test_transfer_type_is_checked():
    transfer = get_file_transfer_template()
    transfer.update(job_name="t", transfer_type="copy")
    problems = problems_of(transfer)
    assert problems == [f"transfer_type must be one of {', '.join(TRANSFER_TYPES)}, got 'copy'"]
    transfer["transfer_type"] = None
    assert problems_of(transfer) == ["transfer_type is required"]


def test_script_requires_location_and_list_arguments():
    script = get_script_template()
    script.update(job_name="s", script_arguments="--x")
    assert sorted(problems_of(script)) == [
        "a script job needs script_location (a Python script), or code_tarball with execution_commandline "
        "(a scheduled analysis)", "script_arguments must be a list, got str '--x'"]


def test_exception_may_be_text_or_object():
    assert validate_job(mapreduce_job(exception="boom")) is not None
    assert validate_job(mapreduce_job(exception={"server": "S_0"})) is not None
    assert problems_of(mapreduce_job(exception=3)) == ["exception must be a string or an object, got int 3"]


def test_a_scheduled_analysis_script_is_a_tarball_a_command_and_a_relative_output_dir():
    script = get_script_template()
    script.update(job_name="a", code_tarball="/srv/a.tar.gz", execution_commandline="bash run.sh", output_dir="out")
    assert validate_job(script) == script
    script.update(output_dir="../out", execution_commandline=None)
    assert sorted(problems_of(script)) == [
        "code_tarball needs execution_commandline (the bash command run in its folder)",
        "output_dir '../out' must be a folder inside the unpacked tarball (relative, no '..')"]
    script.update(script_location="x.py", execution_commandline="run", output_dir="out")
    assert problems_of(script) == ["script_location and code_tarball are two forms of script job: set one of them"]


def test_schedule_keys_are_checked_together():
    job = mapreduce_job(schedule_frequency="weekly", time_of_day="25:00", timeout_minutes=0)
    assert sorted(problems_of(job)) == [
        "a weekly job needs day_of_week (0 = Monday ... 6 = Sunday, or the day's name)",
        "time_of_day must be HH:MM (UTC, 24 h), got '25:00'",
        "timeout_minutes must be more than 0 (or null for no limit), got 0"]
    assert validate_job(mapreduce_job(schedule_frequency="weekly", day_of_week="Sunday", time_of_day="03:30"))
    assert problems_of(mapreduce_job(schedule_frequency="monthly", day_of_month=32)) == [
        "day_of_month must be 1-31, got 32"]
    assert problems_of(mapreduce_job(schedule_frequency="hourly")) == [
        "schedule_frequency must be null (every round) or one of daily, weekly, monthly, got 'hourly'"]
    assert problems_of(mapreduce_job(day_of_week="someday")) == [
        "day_of_week must be 0 (Monday) to 6 (Sunday) or a day's name, got 'someday'"]


# --- the job spec ------------------------------------------------------------------------
TODAY = {  # the templates before the spec was written once (job_submitter aside): they must not change
    "mapreduce": {"job_type": "mapreduce", "force_run": False, "start_time": None, "end_time": None, "job_name": None,
                  "group_name": None, "job_priority": None, "run_once": False, "exception": None,
                  "timeout_minutes": None, "schedule_frequency": None, "day_of_week": None, "day_of_month": None,
                  "time_of_day": "12:00", "retries": 0, "retry_delay_minutes": 5, "min_interval_minutes": 0,
                  "project_name": None, "input_dirs": None, "delete_job_data": True,
                  "current_phase": None, "map_function_name": None, "auxiliary_data_name_mapper": None,
                  "hold_state": False, "downsample": 1.0, "max_bad_fraction": 0.01,
                  "max_number_dumped_items_shuffler": None, "simultaneous_files_in_redis": None,
                  "combine_function_name": None, "reduce_function_name": None, "auxiliary_data_name_reducer": None,
                  "max_number_dumped_items_reducer": None, "disk_based_input": False, "disk_based_output": False,
                  "compress": False, "merge_previous_output": False, "output_url": None, "job_script": None,
                  "input_filter": None, "combine_threshold": None},
    "script": {"job_type": "script", "force_run": False, "start_time": None, "end_time": None, "job_name": None,
               "group_name": None, "job_priority": None, "run_once": False, "exception": None,
               "timeout_minutes": None, "schedule_frequency": None, "day_of_week": None, "day_of_month": None,
               "time_of_day": "12:00", "retries": 0, "retry_delay_minutes": 5, "min_interval_minutes": 0,
               "script_location": None, "script_arguments": [], "code_tarball": None,
               "execution_commandline": None, "output_dir": None},
    "file_transfer": {"job_type": "file_transfer", "force_run": False, "start_time": None, "end_time": None,
                      "job_name": None, "group_name": None, "job_priority": None, "run_once": False,
                      "exception": None, "timeout_minutes": None, "schedule_frequency": None, "day_of_week": None,
                      "day_of_month": None, "time_of_day": "12:00", "retries": 0,
                  "retry_delay_minutes": 5, "min_interval_minutes": 0, "input_dir": None, "output_dir": None,
                      "transfer_type": None, "reload_files": False, "delete_files": False, "compress": False,
                      "input_file_name": None, "auxiliary_data_name": None},
}


@pytest.mark.parametrize("job_type", list(JobType))
def test_the_spec_makes_the_templates_of_today_in_their_order(job_type):
    made = TEMPLATES[job_type]()
    assert isinstance(made.pop("job_submitter"), str)
    assert list(made.items()) == list(TODAY[job_type.value].items())
    if job_type is JobType.SCRIPT:
        assert made["script_arguments"] is not TEMPLATES[job_type]()["script_arguments"], "a new list each time"


def test_every_key_has_a_meaning_and_the_required_ones_are_the_issue_s():
    from cluster.job_spec import KEYS

    for job_type, keys in KEYS.items():
        assert all(k.spec.meaning for k in keys), job_type
    required = {t.value: sorted(k.name for k in keys if k.spec.required) for t, keys in KEYS.items()}
    assert required == {"mapreduce": ["input_dirs", "job_name", "job_type", "map_function_name", "project_name"],
                        "script": ["job_name", "job_type"],
                        "file_transfer": ["job_name", "job_type", "transfer_type"]}


def test_the_readme_key_tables_are_the_spec_s():
    from pathlib import Path

    from cluster.job_spec import key_table

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for job_type, which in ((JobType.MAPREDUCE, "own"), (JobType.SCRIPT, "common"), (JobType.SCRIPT, "own"),
                            (JobType.FILE_TRANSFER, "own")):
        assert key_table(job_type, which) in readme, f"README's {job_type} {which} key table is out of date"


def test_the_typed_views_are_the_spec():
    import typing

    from cluster.job_spec import FileTransferJob, MapReduceJob, ScriptJob

    for typed, job_type in ((MapReduceJob, JobType.MAPREDUCE), (ScriptJob, JobType.SCRIPT),
                            (FileTransferJob, JobType.FILE_TRANSFER)):
        assert list(typing.get_type_hints(typed)) == list(TEMPLATES[job_type]())
