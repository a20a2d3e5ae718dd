"""Job templates and validation for the three job types: mapreduce, script, file_transfer.

A job is a plain JSON-serializable dict made from a template. A job file needs only the keys
without a default (`job_type`, `job_name`, and what its type cannot run without): `validate_job`
fills in the rest from the template, checks every key at once and raises one `JobSpecError`
listing every problem.
"""
from __future__ import annotations

import getpass
import re
from enum import StrEnum
from typing import Any

from cluster import defaults
from cluster.dimensions import DimensionsFilter
from cluster.exceptions import FilterError, JobSpecError


class JobType(StrEnum):
    MAPREDUCE = "mapreduce"
    SCRIPT = "script"
    FILE_TRANSFER = "file_transfer"


SCHEDULE_FREQUENCIES = ("daily", "weekly", "monthly")
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
TRANSFER_TYPES = ("upload", "upload_bulk", "download", "download_bulk", "upload_auxiliary", "delete")
TRANSFER_NEEDS = {
    "upload": ("input_dir", "output_dir"), "upload_bulk": ("input_dir", "output_dir"),
    "download": ("input_dir", "output_dir"), "download_bulk": ("input_dir", "output_dir"),
    "upload_auxiliary": ("input_file_name", "auxiliary_data_name"), "delete": ("output_dir",),
}
TRANSFER_KEY_HELP = {
    "input_dir": "the folder to copy from: on the master for uploads, on every location for downloads",
    "output_dir": "the folder to copy to (or, for delete, the folder removed on every location)",
    "input_file_name": "the JSON file on the master to upload",
    "auxiliary_data_name": "the name jobs use to read it: auxiliary_data_name_mapper/_reducer",
}
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,199}")


def _submitter() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _common(job_type: JobType) -> dict[str, Any]:
    return {
        "job_submitter": _submitter(),
        "job_type": job_type.value,
        "force_run": False,
        "start_time": None,
        "end_time": None,
        "job_name": None,
        "group_name": None,
        "job_priority": None,
        "run_once": False,
        "exception": None,
        # the Runner: a time limit and a schedule (None: run every round); times are UTC
        "timeout_minutes": None,
        "schedule_frequency": None,
        "day_of_week": None,
        "day_of_month": None,
        "time_of_day": "12:00",
    }


def get_mapreduce_job_template() -> dict[str, Any]:
    """A mapreduce job with every key at its default; set the None ones you need."""
    job = _common(JobType.MAPREDUCE)
    job.update({
        "project_name": None,
        "input_dirs": None,
        "delete_job_data": True,
        "current_phase": None,
        # mapper
        "map_function_name": None,
        "auxiliary_data_name_mapper": None,
        "hold_state": False,
        "downsample": 1.0,
        "max_bad_fraction": defaults.MAX_BAD_FRACTION,
        # shuffler
        "max_number_dumped_items_shuffler": None,
        "simultaneous_files_in_redis": None,
        "combine_function_name": None,
        # reducer
        "reduce_function_name": None,
        "auxiliary_data_name_reducer": None,
        "max_number_dumped_items_reducer": None,
        "disk_based_input": False,
        "disk_based_output": False,
        "compress": False,
        "merge_previous_output": False,
        # a Telemetry-style job script (python -m cluster.job): its file in the project, the
        # dimensions filter that selects the input files, and the in-mapper combine threshold
        "job_script": None,
        "input_filter": None,
        "combine_threshold": None,
    })
    return job


def get_script_template() -> dict[str, Any]:
    """A script job: a Python script with arguments (`script_location`, `script_arguments`), or a
    scheduled analysis: `execution_commandline` run in the unpacked `code_tarball`, whose
    `output_dir` (relative to it) is published when the run succeeds."""
    job = _common(JobType.SCRIPT)
    job.update({"script_location": None, "script_arguments": [],
                "code_tarball": None, "execution_commandline": None, "output_dir": None})
    return job


def get_file_transfer_template() -> dict[str, Any]:
    """A file-transfer job between the master and the locations."""
    job = _common(JobType.FILE_TRANSFER)
    job.update({
        "input_dir": None,
        "output_dir": None,
        "transfer_type": None,
        "reload_files": False,
        "delete_files": False,
        "compress": False,
        "input_file_name": None,
        "auxiliary_data_name": None,
    })
    return job


TEMPLATES = {
    JobType.MAPREDUCE: get_mapreduce_job_template,
    JobType.SCRIPT: get_script_template,
    JobType.FILE_TRANSFER: get_file_transfer_template,
}

# key -> (accepted types, may be None, required)
_STR, _BOOL, _INT, _NUM, _LIST = (str,), (bool,), (int,), (int, float), (list,)
_RULES: dict[str, tuple[tuple[type, ...], bool, bool]] = {
    "job_submitter": (_STR, True, False),
    "job_type": (_STR, False, True),
    "force_run": (_BOOL, False, False),
    "start_time": (_NUM + _STR, True, False),
    "end_time": (_NUM + _STR, True, False),
    "job_name": (_STR, False, True),
    "group_name": (_STR, True, False),
    "job_priority": (_NUM, True, False),
    "run_once": (_BOOL, False, False),
    "exception": (_STR + (dict,), True, False),
    "project_name": (_STR, False, True),
    "input_dirs": (_LIST, False, True),
    "delete_job_data": (_BOOL, False, False),
    "current_phase": (_STR, True, False),
    "map_function_name": (_STR, False, True),
    "auxiliary_data_name_mapper": (_STR, True, False),
    "hold_state": (_BOOL, False, False),
    "downsample": (_NUM, False, False),
    "max_bad_fraction": (_NUM, False, False),
    "max_number_dumped_items_shuffler": (_INT, True, False),
    "simultaneous_files_in_redis": (_INT, True, False),
    "combine_function_name": (_STR, True, False),
    "reduce_function_name": (_STR, True, False),
    "auxiliary_data_name_reducer": (_STR, True, False),
    "max_number_dumped_items_reducer": (_INT, True, False),
    "disk_based_input": (_BOOL, False, False),
    "disk_based_output": (_BOOL, False, False),
    "compress": (_BOOL, False, False),
    "merge_previous_output": (_BOOL, False, False),
    "job_script": (_STR, True, False),
    "input_filter": ((dict,), True, False),
    "combine_threshold": (_INT, True, False),
    "timeout_minutes": (_NUM, True, False),
    "schedule_frequency": (_STR, True, False),
    "day_of_week": (_INT + _STR, True, False),
    "day_of_month": (_INT, True, False),
    "time_of_day": (_STR, False, False),
    "script_location": (_STR, True, False),
    "code_tarball": (_STR, True, False),
    "execution_commandline": (_STR, True, False),
    "script_arguments": (_LIST, False, False),
    "input_dir": (_STR, True, False),
    "output_dir": (_STR, True, False),
    "transfer_type": (_STR, False, True),
    "reload_files": (_BOOL, False, False),
    "delete_files": (_BOOL, False, False),
    "input_file_name": (_STR, True, False),
    "auxiliary_data_name": (_STR, True, False),
}


def _type_name(types: tuple[type, ...]) -> str:
    names = {bool: "true/false", int: "a whole number", float: "a number", str: "a string",
             list: "a list", dict: "an object"}
    return " or ".join(dict.fromkeys(names[t] for t in types))


def validate_job(job: Any) -> dict[str, Any]:
    """Check a job dict against its template; raise JobSpecError listing every problem.

    Returns the complete job: the template's defaults for every key the dict leaves out, then
    the dict's own keys (a new dict; the one given is not changed), so `job =
    validate_job(json.load(f))` reads well.
    """
    if not isinstance(job, dict):
        raise JobSpecError([f"a job must be a dict (a JSON object), got {type(job).__name__}"])
    name = job.get("job_name") if isinstance(job.get("job_name"), str) else None
    given_type: Any = job.get("job_type")  # any JSON value: JobType() raises ValueError for a wrong one
    try:
        job_type = JobType(given_type)
    except ValueError:
        raise JobSpecError([f"job_type must be one of {', '.join(t.value for t in JobType)}, "
                            f"got {job.get('job_type')!r}"], name) from None
    template = TEMPLATES[job_type]()
    problems: list[str] = []
    for key in sorted(set(job) - set(template)):
        problems.append(f"unknown key {key!r} for a {job_type.value} job "
                        f"(start from `mapreduce template {job_type.value}`)")
    job = {**template, **job}
    for key in template:
        types, nullable, required = _RULES[key]
        value = job[key]
        if value is None:
            if required or not nullable:
                problems.append(f"{key} is required" if required else f"{key} must not be null")
            continue
        if isinstance(value, bool) and bool not in types:
            problems.append(f"{key} must be {_type_name(types)}, got {value!r}")
        elif not isinstance(value, types):
            problems.append(f"{key} must be {_type_name(types)}, got {type(value).__name__} {value!r:.80}")
    problems += _check_values(job_type, job)
    if problems:
        raise JobSpecError(problems, name)
    return job


def is_valid_name(value: Any) -> bool:
    """A job, project or auxiliary data name: it names folders, so letters, digits, '_', '.', '-'."""
    return isinstance(value, str) and bool(_NAME_RE.fullmatch(value))


def is_inside(path: str) -> bool:
    """A path that stays inside the folder it is relative to (not absolute, no '..')."""
    return bool(path) and not path.startswith("/") and ".." not in path.replace("\\", "/").split("/")


def is_time_of_day(value: Any) -> bool:
    """'HH:MM', 24 h."""
    return isinstance(value, str) and bool(_TIME_RE.fullmatch(value))


def _check_values(job_type: JobType, job: dict[str, Any]) -> list[str]:
    problems = []
    name = job.get("job_name")
    if isinstance(name, str) and not is_valid_name(name):
        problems.append(f"job_name {name!r} must be letters, digits, '_', '.', '-' (it names folders)")
    problems += _check_schedule(job)
    if job_type is JobType.MAPREDUCE:
        dirs = job.get("input_dirs")
        if isinstance(dirs, list):
            if not dirs:
                problems.append("input_dirs must list at least one folder")
            for d in dirs:
                if not isinstance(d, str) or not d:
                    problems.append(f"input_dirs entries must be folder paths, got {d!r}")
        ds = job.get("downsample")
        if isinstance(ds, (int, float)) and not isinstance(ds, bool) and not 0 < ds <= 1:
            problems.append(f"downsample must be in (0, 1], got {ds}")
        mbf = job.get("max_bad_fraction")
        if isinstance(mbf, (int, float)) and not isinstance(mbf, bool) and not 0 <= mbf <= 1:
            problems.append(f"max_bad_fraction must be in [0, 1] (0: any bad record fails the job, 1: never), "
                            f"got {mbf}")
        problems += _check_job_script(job)
        for key in ("max_number_dumped_items_shuffler", "simultaneous_files_in_redis",
                    "max_number_dumped_items_reducer", "combine_threshold"):
            v = job.get(key)
            if isinstance(v, int) and not isinstance(v, bool) and v < 1:
                problems.append(f"{key} must be at least 1, got {v}")
        for key in ("project_name", "auxiliary_data_name_mapper", "auxiliary_data_name_reducer"):
            v = job.get(key)
            if isinstance(v, str) and not is_valid_name(v):
                problems.append(f"{key} {v!r} must be letters, digits, '_', '.', '-'")
        if job.get("combine_function_name") and not job.get("reduce_function_name") and not job.get("job_script"):
            problems.append("combine_function_name needs reduce_function_name: a map-only job (no reduce function) "
                            "outputs every map item, which combining would merge")
        for key in ("map_function_name", "reduce_function_name", "combine_function_name"):
            v = job.get(key)
            if isinstance(v, str) and not v.isidentifier():
                problems.append(f"{key} {v!r} is not a Python function name")
    elif job_type is JobType.SCRIPT:
        script, tarball, command = (job.get(k) for k in ("script_location", "code_tarball", "execution_commandline"))
        if script is None and tarball is None:
            problems.append("a script job needs script_location (a Python script), or code_tarball with "
                            "execution_commandline (a scheduled analysis)")
        elif script is not None and tarball is not None:
            problems.append("script_location and code_tarball are two forms of script job: set one of them")
        elif tarball is not None and not command:
            problems.append("code_tarball needs execution_commandline (the bash command run in its folder)")
        elif tarball is not None and not str(tarball).endswith((".tar.gz", ".tgz")):
            problems.append(f"code_tarball must be a .tar.gz file, got {tarball!r}")
        out = job.get("output_dir")
        if isinstance(out, str) and not is_inside(out):
            problems.append(f"output_dir {out!r} must be a folder inside the unpacked tarball (relative, no '..')")
    elif job_type is JobType.FILE_TRANSFER:
        tt: Any = job.get("transfer_type")  # any JSON value: TRANSFER_NEEDS.get gives () for a wrong one
        if isinstance(tt, str) and tt not in TRANSFER_TYPES:
            problems.append(f"transfer_type must be one of {', '.join(TRANSFER_TYPES)}, got {tt!r}")
        for key in TRANSFER_NEEDS.get(tt, ()):
            if job.get(key) is None:
                problems.append(f"a {tt} transfer needs {key} ({TRANSFER_KEY_HELP[key]})")
        aux = job.get("auxiliary_data_name")
        if isinstance(aux, str) and not is_valid_name(aux):
            problems.append(f"auxiliary_data_name {aux!r} must be letters, digits, '_', '.', '-'")
    return problems


def _check_job_script(job: dict[str, Any]) -> list[str]:
    problems = []
    script = job.get("job_script")
    if isinstance(script, str) and (not script.endswith(".py") or "/" in script or not script[:-3].isidentifier()):
        problems.append(f"job_script {script!r} must be the file name of a Python module in the project "
                        "folder (e.g. my_analysis.py)")
    spec = job.get("input_filter")
    if isinstance(spec, dict):
        try:
            DimensionsFilter(spec, source="input_filter")
        except FilterError as exc:
            problems.append(str(exc))
    return problems


_TIME_RE = re.compile(r"([01]\d|2[0-3]):([0-5]\d)")


def _check_schedule(job: dict[str, Any]) -> list[str]:
    problems = []
    t = job.get("timeout_minutes")
    if isinstance(t, (int, float)) and not isinstance(t, bool) and t <= 0:
        problems.append(f"timeout_minutes must be more than 0 (or null for no limit), got {t}")
    freq = job.get("schedule_frequency")
    if isinstance(freq, str) and freq not in SCHEDULE_FREQUENCIES:
        problems.append(f"schedule_frequency must be null (every round) or one of {', '.join(SCHEDULE_FREQUENCIES)}, "
                        f"got {freq!r}")
    tod = job.get("time_of_day")
    if isinstance(tod, str) and not is_time_of_day(tod):
        problems.append(f"time_of_day must be HH:MM (UTC, 24 h), got {tod!r}")
    dow = job.get("day_of_week")
    if freq == "weekly" and dow is None:
        problems.append("a weekly job needs day_of_week (0 = Monday ... 6 = Sunday, or the day's name)")
    if dow is not None and weekday_number(dow) is None:
        problems.append(f"day_of_week must be 0 (Monday) to 6 (Sunday) or a day's name, got {dow!r}")
    dom = job.get("day_of_month")
    if freq == "monthly" and dom is None:
        problems.append("a monthly job needs day_of_month (1-31; a month without that day runs on its last day)")
    if isinstance(dom, int) and not isinstance(dom, bool) and not 1 <= dom <= 31:
        problems.append(f"day_of_month must be 1-31, got {dom}")
    return problems


def weekday_number(value: Any) -> int | None:
    """0 (Monday) .. 6 (Sunday) from an int or an English day name; None when it is neither."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value if 0 <= value <= 6 else None
    if isinstance(value, str) and value.strip().lower() in WEEKDAYS:
        return WEEKDAYS.index(value.strip().lower())
    return None
