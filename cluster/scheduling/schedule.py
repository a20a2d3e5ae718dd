"""When a scheduled job is due: daily, weekly or monthly at a UTC time of day.

A job without `schedule_frequency` runs every round. A scheduled job is due when the first
scheduled time after its reference (its last run's start, or its submission when it never
ran) has passed. A monthly `day_of_month` beyond a month's length means that month's last
day (31 runs on 28/29 February, 30 April, ...). Every function takes `now` (UTC), so the
arithmetic is tested with a frozen clock.
"""
from __future__ import annotations

import calendar
import datetime as dt
import random
from typing import Any

from cluster import defaults
from cluster.job_spec import WEEKDAYS, weekday_number

UTC = dt.UTC


def _at(day: dt.date, time_of_day: str) -> dt.datetime:
    hour, minute = (int(x) for x in time_of_day.split(":"))
    return dt.datetime(day.year, day.month, day.day, hour, minute, tzinfo=UTC)


def _month_day(year: int, month: int, day_of_month: int) -> dt.date:
    return dt.date(year, month, min(day_of_month, calendar.monthrange(year, month)[1]))


def next_time_after(job: dict[str, Any], after: dt.datetime) -> dt.datetime | None:
    """The first scheduled time strictly after `after` (None: the job runs every round)."""
    freq = job.get("schedule_frequency")
    if freq is None:
        return None
    tod = job.get("time_of_day") or "12:00"
    after = after.astimezone(UTC)
    if freq == "daily":
        t = _at(after.date(), tod)
        return t if t > after else _at(after.date() + dt.timedelta(days=1), tod)
    if freq == "weekly":
        want = weekday_number(job.get("day_of_week"))
        assert want is not None  # validate_job requires a weekly job's day_of_week
        day = after.date() + dt.timedelta(days=(want - after.weekday()) % 7)
        t = _at(day, tod)
        return t if t > after else _at(day + dt.timedelta(days=7), tod)
    if freq == "monthly":
        dom = int(job["day_of_month"])
        year, month = after.year, after.month
        t = _at(_month_day(year, month, dom), tod)
        while t <= after:
            year, month = (year + 1, 1) if month == 12 else (year, month + 1)
            t = _at(_month_day(year, month, dom), tod)
        return t
    raise ValueError(f"unknown schedule_frequency {freq!r}")


def describe(job: dict[str, Any]) -> str:
    """A job's schedule in words: 'every round', 'weekly on monday at 06:30 UTC', ..."""
    freq = job.get("schedule_frequency")
    if freq is None:
        return "every round"
    at = f"at {job.get('time_of_day') or '12:00'} UTC"
    if freq == "weekly":
        dow = weekday_number(job.get("day_of_week"))
        return f"weekly on {WEEKDAYS[dow] if dow is not None else job.get('day_of_week')} {at}"
    if freq == "monthly":
        return f"monthly on day {job.get('day_of_month')} {at}"
    return f"{freq} {at}"


def next_run(job: dict[str, Any], reference: dt.datetime, now: dt.datetime, *, retry_at: dt.datetime | None = None,
             held: str | None = None) -> tuple[dt.datetime | None, str]:
    """When the Runner runs the job next: (the scheduled time or None, the same in words); a held job
    not until a person says so, a retry at its time."""
    if job.get("force_run"):
        return None, "now (forced): when the Runner next looks at the queue"
    if held:
        return None, f"not until it is run now or submitted again ({held})"
    if retry_at is not None:
        return retry_at, f"{retry_at:%Y-%m-%d %H:%M:%S} UTC (a retry)"
    nxt = next_time_after(job, reference)
    if nxt is None:
        return None, "every round (whenever the Runner is free)"
    if nxt <= now:
        return nxt, f"due since {nxt:%Y-%m-%d %H:%M} UTC: when the Runner next looks at the queue"
    return nxt, f"{nxt:%Y-%m-%d %H:%M} UTC"


def is_due(job: dict[str, Any], reference: dt.datetime, now: dt.datetime) -> bool:
    """Whether the job should run now; `reference`: its last run's start, else its submission."""
    nxt = next_time_after(job, reference)
    return nxt is None or nxt <= now


def describe_state(job: dict[str, Any], state: dict[str, Any] | None) -> str:
    """A queued job's retry state in words: 'ready', 'try 2 of 3 at 12:30:05 UTC', 'failed: held ...'."""
    if not state:
        return "ready"
    if state.get("held"):
        return f"held: {state['held']} (force-run or submit it again)"
    if state.get("retry_at"):
        at = dt.datetime.fromisoformat(state["retry_at"])
        failures = int(state.get("failures") or 0)
        if not failures:
            return f"waits for the cluster (next look {at:%H:%M:%S} UTC)"
        return f"try {failures + 1} of {int(job.get('retries') or 0) + 1} at {at:%Y-%m-%d %H:%M:%S} UTC"
    return "ready"


def retry_delay(job: dict[str, Any], attempt: int, rng: random.Random) -> dt.timedelta:
    """The wait before retry number `attempt` (1, 2, ...): retry_delay_minutes, doubled for each retry
    before, capped at RETRY_MAX_DELAY_MINUTES; then a random half to whole of it ("equal jitter"), so
    jobs that failed together do not all come back at the same moment."""
    base = float(job.get("retry_delay_minutes") or defaults.RETRY_DELAY_MINUTES) * 2 ** (attempt - 1)
    capped = min(base, float(defaults.RETRY_MAX_DELAY_MINUTES))
    return dt.timedelta(minutes=capped * (0.5 + rng.random() / 2))


def utc_now() -> dt.datetime:
    return dt.datetime.now(UTC)
