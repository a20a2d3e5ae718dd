"""The "schedule a job" form: a code tarball, a command and a schedule become a script job.

The fields are those of the original analysis dashboard. Everything is checked before
anything is kept: the tarball is saved under a temporary name, checked (it must unpack
inside its folder), and only renamed into `<local_working_dir>/uploads/<job>/` when the
job dict is valid; `Scheduler.submit_job` then queues it in one transaction.
"""
from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable
from typing import Any

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_wtf import FlaskForm
from flask_wtf.file import FileField
from wtforms import Field, IntegerField, SelectField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import InputRequired, NumberRange, Optional, ValidationError

from cluster import defaults
from cluster.dashboard.state import state
from cluster.exceptions import JobSpecError
from cluster.job_spec import (
    SCHEDULE_FREQUENCIES,
    WEEKDAYS,
    JobType,
    get_script_template,
    is_inside,
    is_time_of_day,
    is_valid_name,
    validate_job,
    weekday_number,
)
from cluster.scheduling.schedule import next_run, utc_now
from cluster.scheduling.script_runs import TARBALL_ERRORS, tarball_problems

log = logging.getLogger(__name__)
bp = Blueprint("schedule", __name__)
TARBALL_SUFFIXES = (".tar.gz", ".tgz")
# job keys the form does not show: kept from the job it replaces (a pending "Run now" too)
_KEPT_KEYS = ("group_name", "job_priority", "run_once", "force_run")
# which day field each frequency uses
_DAY_FIELD = {"weekly": "day_of_week", "monthly": "day_of_month"}


class Check:
    """A WTForms validator from one of the job rules (job_spec.py), so the form and `validate_job` agree."""

    def __init__(self, rule: Callable[[Any], bool], message: str):
        self.rule, self.message = rule, message

    def __call__(self, form: FlaskForm, field: Field) -> None:
        if field.data and not self.rule(field.data):
            raise ValidationError(self.message)


class ScheduleForm(FlaskForm):
    job_name = StringField(
        "Job Name", validators=[InputRequired("Give the job a name."),
                                Check(is_valid_name, "Use letters, digits, '_', '.' and '-' (it names folders).")],
        description="Its unique identifier. A queued script job of the same name is replaced.")
    code_tarball = FileField(
        "Code Tarball", description="A .tar.gz of your code. The command runs in the folder it unpacks to.")
    execution_commandline = StringField(
        "Execution Commandline", validators=[InputRequired("Say which command runs the job.")],
        description="A bash command run in the unpacked tarball, e.g. python3 report.py --out output")
    output_dir = StringField(
        "Output Directory",
        validators=[InputRequired("Say which folder the command writes its results to."),
                    Check(is_inside, "A folder inside the unpacked tarball: relative, without '..'.")],
        description="The folder (inside the unpacked tarball) the command writes; published when a run succeeds.")
    schedule_frequency = SelectField("Schedule Frequency",
                                     choices=[SelectChoice(f, f.capitalize()) for f in SCHEDULE_FREQUENCIES])
    day_of_week = SelectField("Day of Week", choices=[SelectChoice(d, d.capitalize()) for d in WEEKDAYS],
                              description="For weekly jobs.")
    day_of_month = IntegerField(
        "Day of Month", validators=[Optional(), NumberRange(1, 31, "A day of the month: 1 to 31.")],
        description="For monthly jobs (1-31; a month without that day runs on its last day).")
    time_of_day = StringField(
        "Time of Day (UTC)", default="12:00",
        validators=[InputRequired("Give a time, HH:MM."), Check(is_time_of_day, "A time of day in UTC, HH:MM (24 h).")],
        description="When it runs, in UTC (24 h).")
    timeout_minutes = IntegerField(
        "Job Timeout (minutes)", default=60,
        validators=[InputRequired("Give a time limit in minutes."),
                    NumberRange(1, 7 * 24 * 60, "Between 1 minute and a week (10080).")],
        description="A run still going after this long is stopped and counts as timed out.")

    def validate(self, extra_validators: Any = None) -> bool:
        super().validate(extra_validators)
        used = _DAY_FIELD.get(self.schedule_frequency.data)
        for name in _DAY_FIELD.values():  # the day field the frequency does not use is hidden: ignore it
            if name != used:
                getattr(self, name).errors = []
        if used == "day_of_month" and self.day_of_month.data is None and not self.day_of_month.errors:
            self.day_of_month.errors = ["A monthly job needs the day of the month it runs on."]
        return not self.errors


def _field_for(problem: str, form: ScheduleForm) -> Any:
    """The form field a job-validation problem is about (None: the form as a whole)."""
    for name in ("job_name", "code_tarball", "execution_commandline", "output_dir", "schedule_frequency",
                 "day_of_week", "day_of_month", "time_of_day", "timeout_minutes"):
        if name in problem:
            return getattr(form, name)
    return None


def _prefill(form: ScheduleForm, job: dict[str, Any]) -> None:
    for name in ("job_name", "execution_commandline", "output_dir", "time_of_day", "timeout_minutes"):
        if job.get(name) is not None:
            getattr(form, name).data = job[name]
    form.schedule_frequency.data = job.get("schedule_frequency") or "daily"
    if job.get("day_of_week") is not None:
        day = weekday_number(job["day_of_week"])
        assert day is not None  # validated when queued
        form.day_of_week.data = WEEKDAYS[day]
    form.day_of_month.data = job.get("day_of_month")


def _receive_tarball(form: ScheduleForm, incoming: str) -> str | None:
    """Save the uploaded tarball under a temporary name and check it; return its path (None: no
    upload, or refused, with the reason on the field; nothing is left behind either way)."""
    upload = form.code_tarball.data
    if not upload or not upload.filename:
        return None
    if not upload.filename.endswith(TARBALL_SUFFIXES):
        form.code_tarball.errors.append(f"{upload.filename} is not a .tar.gz file.")
        return None
    os.makedirs(incoming, exist_ok=True)
    fd, path = tempfile.mkstemp(dir=incoming, prefix="upload-", suffix=".tar.gz")
    os.close(fd)
    try:
        upload.save(path)
        problems = tarball_problems(path)
    except TARBALL_ERRORS as exc:
        problems = [f"it cannot be read as a .tar.gz ({exc})"]
    except BaseException:
        os.unlink(path)
        raise
    if problems:
        os.unlink(path)
        form.code_tarball.errors += [f"Refused: {p}." for p in problems]
        return None
    return path


def _prune_tarballs(folder: str, keep: str) -> None:
    """Keep the job's current tarball and the one before it (a run may be unpacking it)."""
    found = []
    for n in os.listdir(folder):
        try:
            found.append((os.path.getmtime(os.path.join(folder, n)), os.path.join(folder, n)))
        except FileNotFoundError:  # another save of this job pruned it
            continue
    older = [p for _, p in sorted(found) if p != keep]
    for old in older[:max(0, len(older) - (defaults.DASHBOARD_TARBALLS_KEPT - 1))]:
        try:
            os.unlink(old)
        except FileNotFoundError:
            pass


@bp.route("/schedule", methods=["GET", "POST"])
def schedule():
    form = ScheduleForm()
    config, scheduler = state().config, state().scheduler
    if request.method == "GET":
        editing = scheduler.get_job(request.args["job"]) if is_valid_name(request.args.get("job")) else None
        if editing and editing["job_type"] == JobType.SCRIPT.value and editing.get("code_tarball"):
            _prefill(form, editing)
        else:
            editing = None
        return render_template("schedule.html", form=form, current=editing)
    valid = form.validate()  # (CSRFProtect refused a form without its token before this view ran)
    uploaded = _receive_tarball(form, os.path.join(config.local_working_dir, "uploads", ".incoming"))
    try:
        return _submit(form, valid, uploaded)
    finally:
        if uploaded and os.path.exists(uploaded):  # not taken: nothing half-saved
            os.unlink(uploaded)


def _submit(form: ScheduleForm, valid: bool, uploaded: str | None):
    config, scheduler = state().config, state().scheduler
    name = form.job_name.data
    current = scheduler.get_job(name) if is_valid_name(name) else None
    if current and current["job_type"] != JobType.SCRIPT.value:
        form.job_name.errors.append(f"A {current['job_type']} job of this name is queued; choose another name "
                                    "or delete that job first.")
        current = None
    tarball = None
    if uploaded:
        tarball = os.path.join(config.local_working_dir, "uploads", name if is_valid_name(name) else "_",
                               f"{utc_now():%Y%m%dT%H%M%S%f}.tar.gz")
    elif current and current.get("code_tarball") and not form.code_tarball.errors:
        tarball = current["code_tarball"]  # editing: keep the tarball it has
    elif not form.code_tarball.errors:
        form.code_tarball.errors.append("Choose the .tar.gz with your code.")
    job = get_script_template()
    if current:
        job.update({k: current.get(k) for k in _KEPT_KEYS})
    freq = form.schedule_frequency.data
    job.update(job_submitter=f"{job['job_submitter']} (dashboard)", job_name=name, code_tarball=tarball,
               execution_commandline=form.execution_commandline.data, output_dir=form.output_dir.data,
               schedule_frequency=freq, day_of_week=form.day_of_week.data if freq == "weekly" else None,
               day_of_month=form.day_of_month.data if freq == "monthly" else None,
               time_of_day=form.time_of_day.data, timeout_minutes=form.timeout_minutes.data)
    form_errors: list[str] = []
    if valid and tarball:
        try:
            validate_job(job)
        except JobSpecError as exc:
            for problem in exc.problems:
                field = _field_for(problem, form)
                (field.errors if field is not None else form_errors).append(problem)
    if form.errors or form_errors or not valid:
        return render_template("schedule.html", form=form, current=current, form_errors=form_errors), 400
    if uploaded:
        assert tarball is not None  # named above for the upload
        os.makedirs(os.path.dirname(tarball), exist_ok=True)
        os.replace(uploaded, tarball)
    try:
        replaced = scheduler.submit_job(job)
    except BaseException:
        if uploaded:
            assert tarball is not None  # named above for the upload
            os.unlink(tarball)
        raise
    if uploaded:
        assert tarball is not None  # named above for the upload
        _prune_tarballs(os.path.dirname(tarball), keep=tarball)
    log.info("job %s %s from the dashboard (tarball %s)", name, "replaced" if replaced else "scheduled", tarball)
    entry = next((q for q in scheduler.queued() if q.name == name), None)
    when = f": next run {next_run(entry.job, entry.reference, utc_now())[1]}" if entry else ""
    flash(f"Job {name} {'replaced the queued job of that name' if replaced else 'is scheduled'}{when}.", "ok")
    return redirect(url_for("jobs.job", name=name))
