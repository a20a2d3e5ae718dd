"""Schedule arithmetic with a frozen clock: daily, weekly, monthly, around month and year ends."""
from __future__ import annotations

import datetime as dt

from cluster.job_spec import get_script_template
from cluster.scheduling.schedule import is_due, next_time_after

UTC = dt.UTC


def t(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


def job(**schedule) -> dict:
    j = get_script_template()
    j.update(job_name="s", script_location="x.py", **schedule)
    return j


def test_an_unscheduled_job_is_due_every_round():
    assert next_time_after(job(), t("2026-01-01T00:00")) is None
    assert is_due(job(), t("2026-01-01T00:00"), t("2026-01-01T00:00"))


def test_daily_is_today_when_the_time_is_still_ahead_else_tomorrow():
    daily = job(schedule_frequency="daily", time_of_day="06:30")
    assert next_time_after(daily, t("2026-03-10T06:29")) == t("2026-03-10T06:30")
    assert next_time_after(daily, t("2026-03-10T06:30")) == t("2026-03-11T06:30")
    assert next_time_after(daily, t("2026-12-31T23:00")) == t("2027-01-01T06:30")
    assert next_time_after(daily, t("2028-02-28T07:00")) == t("2028-02-29T06:30")  # leap day


def test_weekly_lands_on_the_named_day():
    weekly = job(schedule_frequency="weekly", day_of_week="sunday", time_of_day="02:00")
    # 2026-12-30 is a Wednesday: the next Sunday is 2027-01-03
    assert next_time_after(weekly, t("2026-12-30T12:00")) == t("2027-01-03T02:00")
    assert next_time_after(weekly, t("2027-01-03T01:59")) == t("2027-01-03T02:00")
    assert next_time_after(weekly, t("2027-01-03T02:00")) == t("2027-01-10T02:00")
    assert next_time_after(job(schedule_frequency="weekly", day_of_week=0), t("2026-12-30T12:00")) == \
        t("2027-01-04T12:00")


def test_monthly_on_a_day_a_month_lacks_runs_on_its_last_day():
    monthly = job(schedule_frequency="monthly", day_of_month=31, time_of_day="00:15")
    assert next_time_after(monthly, t("2026-01-31T00:15")) == t("2026-02-28T00:15")
    assert next_time_after(monthly, t("2028-02-01T00:00")) == t("2028-02-29T00:15")
    assert next_time_after(monthly, t("2026-04-01T00:00")) == t("2026-04-30T00:15")
    assert next_time_after(monthly, t("2026-12-31T00:16")) == t("2027-01-31T00:15")
    first = job(schedule_frequency="monthly", day_of_month=1)
    assert next_time_after(first, t("2026-12-01T12:00")) == t("2027-01-01T12:00")


def test_a_scheduled_job_runs_once_per_slot():
    daily = job(schedule_frequency="daily", time_of_day="12:00")
    submitted = t("2026-05-01T13:00")  # after today's slot: the first run is tomorrow
    assert not is_due(daily, submitted, t("2026-05-02T11:59"))
    assert is_due(daily, submitted, t("2026-05-02T12:00"))
    ran = t("2026-05-02T12:00:05")
    assert not is_due(daily, ran, t("2026-05-02T23:00"))
    assert is_due(daily, ran, t("2026-05-04T09:00"))  # a missed day runs once, not twice


def test_times_in_other_zones_are_read_as_utc():
    daily = job(schedule_frequency="daily", time_of_day="12:00")
    paris = dt.timezone(dt.timedelta(hours=1))
    # 12:30 in Paris is 11:30 UTC: today's 12:00 UTC is still ahead
    assert next_time_after(daily, dt.datetime(2026, 1, 5, 12, 30, tzinfo=paris)) == t("2026-01-05T12:00")


def test_schedules_in_words_and_the_next_run():
    from cluster.scheduling.schedule import describe, next_run

    job = get_script_template()
    assert describe(job) == "every round"
    job.update(schedule_frequency="weekly", day_of_week=4, time_of_day="07:45")
    assert describe(job) == "weekly on friday at 07:45 UTC"
    job.update(schedule_frequency="monthly", day_of_month=31, day_of_week=None)
    assert describe(job) == "monthly on day 31 at 07:45 UTC"
    ref = dt.datetime(2026, 2, 1, tzinfo=dt.UTC)
    at, text = next_run(job, ref, ref)
    assert at == dt.datetime(2026, 2, 28, 7, 45, tzinfo=dt.UTC) and text == "2026-02-28 07:45 UTC"
    assert next_run(job, ref, at + dt.timedelta(minutes=1))[1].startswith("due since 2026-02-28 07:45 UTC")
    assert next_run({**job, "force_run": True}, ref, ref)[1].startswith("now (forced)")


def test_phase_progress_is_never_full_before_the_server_says_done():
    from cluster.progress import server_progress

    reading = {"files": 1, "files_done": 0, "input_bytes_total": 100, "input_bytes_done": 100}
    m, s, r = server_progress("map", reading)
    assert (m.state, m.percent, s.state, r.state) == ("running", 99, "pending", "pending")
    m, s, r = server_progress("map", {**reading, "files_done": 1, "seconds": 2.0})
    assert (m.state, m.percent) == ("done", 100)
    m, s, r = server_progress("reduce", {"groups": 5, "records_out": 5})
    assert (m.state, s.state, r.state, r.fraction) == ("done", "done", "running", None)
    assert [p.state for p in server_progress("start", None)] == ["pending"] * 3
