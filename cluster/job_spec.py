"""The job spec: every key of the three job types (mapreduce, script, file_transfer) defined once,
as annotated TypedDicts (type, default, required, meaning), from which come the templates, the
validation, `mapreduce template`, the README's key tables and the typed views.

A job is a plain JSON-serializable dict made from a template. A job file needs only the keys
without a default (`job_type`, `job_name`, and what its type cannot run without): `validate_job`
fills in the rest from the template, checks every key at once and raises one `JobSpecError`
listing every problem.
"""
from __future__ import annotations

import getpass
import json
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, TypedDict

from cluster import defaults
from cluster.exceptions import JobSpecError


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


@dataclass(frozen=True)
class Spec:
    """What a key is, beside its type: its default (or a factory for one), whether a job must set it,
    and what it means (the README's key tables are made from these)."""

    meaning: str
    default: Any = None
    factory: Callable[[], Any] | None = None
    required: bool = False


# --- every key, once: its type (None allowed where the type says so), default and meaning ---------
class CommonJob(TypedDict, total=False):
    """The keys every job type has."""

    job_submitter: Annotated[str | None, Spec("who submitted the job (the user's name)", factory=_submitter)]
    job_type: Annotated[str, Spec("mapreduce, script or file_transfer", required=True)]
    force_run: Annotated[bool, Spec("run at the Runner's next round, whatever the schedule", default=False)]
    start_time: Annotated[int | float | str | None, Spec("when the last run started (set by the Runner)")]
    end_time: Annotated[int | float | str | None, Spec("when the last run ended (set by the Runner)")]
    job_name: Annotated[str, Spec("the job's name: letters, digits, `_`, `.`, `-` (it names folders)",
                                  required=True)]
    group_name: Annotated[str | None, Spec("a pipeline the job belongs to: a failed or timed-out job takes its "
                                           "whole group off the queue")]
    job_priority: Annotated[int | float | None, Spec("higher runs first in a Runner's round")]
    run_once: Annotated[bool, Spec("leave the queue after one successful run", default=False)]
    exception: Annotated[str | dict | None, Spec("the last run's error (set by the Runner)")]
    timeout_minutes: Annotated[int | float | None, Spec("a run's time limit (null: none)")]
    schedule_frequency: Annotated[str | None, Spec("null (every round), daily, weekly or monthly")]
    day_of_week: Annotated[int | str | None, Spec("weekly: 0 (Monday) to 6, or the day's name")]
    day_of_month: Annotated[int | None, Spec("monthly: 1-31 (a month without that day: its last day)")]
    time_of_day: Annotated[str, Spec("HH:MM, UTC, for a scheduled job", default="12:00")]
    retries: Annotated[int, Spec("the Runner runs a failed job again this many times (each try in the history)",
                                 default=0)]
    retry_delay_minutes: Annotated[int | float, Spec(
        "the wait before the first retry; each next one waits twice as long (with jitter, at most "
        f"{defaults.RETRY_MAX_DELAY_MINUTES / 60:.0f} h)", default=defaults.RETRY_DELAY_MINUTES)]
    min_interval_minutes: Annotated[int | float, Spec(
        "an unscheduled job waits this long after a run before its next one (0: every round)", default=0)]


class MapReduceJob(CommonJob, total=False):
    """A mapreduce job (get_mapreduce_job_template)."""

    project_name: Annotated[str, Spec("the folder in projects_dir with map_functions.py and reduce_functions.py",
                                      required=True)]
    input_dirs: Annotated[list, Spec(
        "folders whose files (recursively) are the input: plain text, gzip, bzip2, xz, LZMA-alone (`.lzma`), "
        "lz4 frame or zstd, recognised by their content (the name is only a hint)", required=True)]
    delete_job_data: Annotated[bool, Spec("true: a successful run's output replaces the previous output; false: "
                                          "it is added beside it", default=True)]
    current_phase: Annotated[str | None, Spec("the phase a run is in (set while it runs)")]
    map_function_name: Annotated[str, Spec("the map function in map_functions.py: `f(line, auxiliary_data)` "
                                           "returning (key, value) items", required=True)]
    auxiliary_data_name_mapper: Annotated[str | None, Spec(
        "JSON at `auxiliary_dir/<name>.data`, passed to map as `auxiliary_data`")]
    hold_state: Annotated[bool, Spec("skip files a successful earlier run of this job mapped (incremental runs)",
                                     default=False)]
    downsample: Annotated[int | float, Spec("keep each record with this probability; seeded from the job name, so "
                                            "a rerun samples the same records", default=1.0)]
    max_bad_fraction: Annotated[int | float, Spec(
        "the job fails (nothing published) when more than this share of the records is bad (0: any bad record "
        "fails; 1: never)", default=defaults.MAX_BAD_FRACTION)]
    max_number_dumped_items_shuffler: Annotated[int | None, Spec(
        f"items per spill file (null: {defaults.MAX_NUMBER_DUMPED_ITEMS_SHUFFLER:,})")]
    simultaneous_files_in_redis: Annotated[int | None, Spec(
        f"spill files a server has in Redis at once (null: {defaults.SIMULTANEOUS_FILES_IN_REDIS})")]
    combine_function_name: Annotated[str | None, Spec(
        "a reduce function run on each mapper's partial groups before shuffling (it may run 0..n times, so it "
        "must be associative, like a sum, and return (key, value) pairs)")]
    reduce_function_name: Annotated[str | None, Spec(
        "the reduce function in reduce_functions.py: `f(group, auxiliary_data)` (null: a map-only job, every map "
        "item is output)")]
    auxiliary_data_name_reducer: Annotated[str | None, Spec(
        "JSON at `auxiliary_dir/<name>.data`, passed to reduce and combine as `auxiliary_data`")]
    max_number_dumped_items_reducer: Annotated[int | None, Spec(
        f"items per output file (null: {defaults.MAX_NUMBER_DUMPED_ITEMS_REDUCER:,})")]
    disk_based_input: Annotated[bool, Spec("every reduce group is disk-backed (without it, only a group that "
                                           "outgrows a quarter of the server's memory share is)", default=False)]
    disk_based_output: Annotated[bool, Spec("the reduce function gets `(disk_list, auxiliary_data)`, may append "
                                            "items to `disk_list` and return it", default=False)]
    compress: Annotated[bool, Spec("gzip the output files", default=False)]
    merge_previous_output: Annotated[bool, Spec(
        "fold the job's previous output back into the reduce (items must be `(key, value)`), so a `hold_state` "
        "run ends with f(old + new)", default=False)]
    output_url: Annotated[str | None, Spec(
        "publish the output on a store instead (any fsspec URL: `s3://bucket/prefix`, `gs://...`, `file:///...`): "
        "each run under `<output_url>/<run_id>/`, published by one marker, `<output_url>/_LATEST`, which names "
        "its files (null: `<base_dir>/<job_name>/reduce/` on each location)")]
    job_script: Annotated[str | None, Spec("set by `python -m cluster.telemetry`: the job script its one-file "
                                           "project runs (the engine runs that project's functions)")]
    input_filter: Annotated[dict | None, Spec("the dimensions filter that selects a job script's input files")]
    combine_threshold: Annotated[int | None, Spec(
        f"a job script's in-mapper combine threshold (null: {defaults.COMBINE_THRESHOLD})")]


class ScriptJob(CommonJob, total=False):
    """A script job (get_script_template): a Python script with arguments, or a scheduled analysis."""

    script_location: Annotated[str | None, Spec("a Python script on the master (relative: in local_working_dir); "
                                                "or the next three")]
    script_arguments: Annotated[list, Spec("its command-line arguments", factory=list)]
    code_tarball: Annotated[str | None, Spec("a .tar.gz unpacked for each run of a scheduled analysis")]
    execution_commandline: Annotated[str | None, Spec("the bash command run in the unpacked tarball")]
    output_dir: Annotated[str | None, Spec("the folder (inside the tarball's) published when the run succeeds")]


class FileTransferJob(CommonJob, total=False):
    """A file-transfer job between the master and the locations (get_file_transfer_template)."""

    input_dir: Annotated[str | None, Spec("the folder to copy from: on the master for uploads, on every location "
                                          "for downloads")]
    output_dir: Annotated[str | None, Spec("the folder to copy to (or, for delete, the folder removed on every "
                                           "location)")]
    transfer_type: Annotated[str, Spec("upload, upload_bulk, download, download_bulk, upload_auxiliary or delete",
                                       required=True)]
    reload_files: Annotated[bool, Spec("send files the destination already has again (else they are skipped)",
                                       default=False)]
    delete_files: Annotated[bool, Spec("remove each source file once its copy is verified", default=False)]
    compress: Annotated[bool, Spec("bulk transfers: gzip the tar on the way", default=False)]
    input_file_name: Annotated[str | None, Spec("upload_auxiliary: the JSON file on the master to upload")]
    auxiliary_data_name: Annotated[str | None, Spec("upload_auxiliary: the name jobs read it by "
                                                    "(auxiliary_data_name_mapper/_reducer)")]


@dataclass(frozen=True)
class Key:
    """One key of one job type, as its TypedDict defines it."""

    name: str
    types: tuple[type, ...]
    nullable: bool
    spec: Spec

    def default(self, job_type: JobType) -> Any:
        if self.name == "job_type":
            return job_type.value
        return self.spec.factory() if self.spec.factory is not None else self.spec.default


def _types(annotation: Any) -> tuple[tuple[type, ...], bool]:
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    args = typing.get_args(annotation) if union else (annotation,)
    return tuple(typing.get_origin(a) or a for a in args if a is not type(None)), type(None) in args


def _keys(typed: type) -> tuple[Key, ...]:
    keys = []
    for name, hint in typing.get_type_hints(typed, include_extras=True).items():
        annotation, spec = typing.get_args(hint)
        found, nullable = _types(annotation)
        keys.append(Key(name, found, nullable, spec))
    return tuple(keys)


SPECS: dict[JobType, type] = {JobType.MAPREDUCE: MapReduceJob, JobType.SCRIPT: ScriptJob,
                              JobType.FILE_TRANSFER: FileTransferJob}
KEYS: dict[JobType, tuple[Key, ...]] = {t: _keys(typed) for t, typed in SPECS.items()}


def template(job_type: JobType) -> dict[str, Any]:
    """A job of `job_type` with every key at its default."""
    return {k.name: k.default(job_type) for k in KEYS[job_type]}


def get_mapreduce_job_template() -> dict[str, Any]:
    """A mapreduce job with every key at its default; set the None ones you need."""
    return template(JobType.MAPREDUCE)


def get_script_template() -> dict[str, Any]:
    """A script job: a Python script with arguments (`script_location`, `script_arguments`), or a
    scheduled analysis: `execution_commandline` run in the unpacked `code_tarball`, whose
    `output_dir` (relative to it) is published when the run succeeds."""
    return template(JobType.SCRIPT)


def get_file_transfer_template() -> dict[str, Any]:
    """A file-transfer job between the master and the locations."""
    return template(JobType.FILE_TRANSFER)


TEMPLATES = {
    JobType.MAPREDUCE: get_mapreduce_job_template,
    JobType.SCRIPT: get_script_template,
    JobType.FILE_TRANSFER: get_file_transfer_template,
}


def key_table(job_type: JobType, which: str = "all") -> str:
    """The Markdown table of a job type's keys ("all", its "own", or the "common" ones every type has):
    key, default, meaning. The README's tables are these (a test checks it)."""
    shared = set(typing.get_type_hints(CommonJob))
    rows = ["| key | default | meaning |", "|---|---|---|"]
    for k in KEYS[job_type]:
        if (which == "own" and k.name in shared) or (which == "common" and k.name not in shared):
            continue
        default = "required" if k.spec.required else ("the user" if k.name == "job_submitter"
                                                      else f"`{json.dumps(k.default(job_type))}`")
        rows.append(f"| `{k.name}` | {default} | {k.spec.meaning} |")
    return "\n".join(rows)


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
    for k in KEYS[job_type]:
        key, value = k.name, job[k.name]
        if value is None:
            if k.spec.required or not k.nullable:
                problems.append(f"{key} is required" if k.spec.required else f"{key} must not be null")
            continue
        if isinstance(value, bool) and bool not in k.types:
            problems.append(f"{key} must be {_type_name(k.types)}, got {value!r}")
        elif not isinstance(value, k.types):
            problems.append(f"{key} must be {_type_name(k.types)}, got {type(value).__name__} {value!r:.80}")
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
        url = job.get("output_url")
        if url is not None and (not isinstance(url, str) or "://" not in url):
            problems.append(f"output_url must be a store URL such as s3://bucket/prefix (or file:///folder), got "
                            f"{url!r}; leave it out to publish under base_dir")
        elif isinstance(url, str) and isinstance(dirs, list):
            inside = [d for d in dirs if isinstance(d, str)
                      and (d.rstrip("/") + "/").startswith(url.rstrip("/") + "/")]
            if inside:
                problems.append(f"output_url {url} holds input_dirs {', '.join(inside)}: a run replaces what is "
                                "under output_url, so give the output a prefix of its own")
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
    # input_filter is checked in depth where a filter is read (engine/partitions.py: the planner,
    # `mapreduce validate`, python -m cluster.telemetry), not here: the job spec knows no room above it
    return problems


_TIME_RE = re.compile(r"([01]\d|2[0-3]):([0-5]\d)")


def _check_schedule(job: dict[str, Any]) -> list[str]:
    problems = []
    t = job.get("timeout_minutes")
    if isinstance(t, (int, float)) and not isinstance(t, bool) and t <= 0:
        problems.append(f"timeout_minutes must be more than 0 (or null for no limit), got {t}")
    for key, zero_allowed in (("retries", True), ("retry_delay_minutes", False), ("min_interval_minutes", True)):
        v = job.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and (v < 0 or (v == 0 and not zero_allowed)):
            problems.append(f"{key} must be {'0 or more' if zero_allowed else 'more than 0'}, got {v}")
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
