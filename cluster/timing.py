"""Time limits and waiting: a job's Deadline, and one `wait_until` for every poll that has to be one.

Block on an event where there is one (a pipe, BLPOP); where a poll is the design (a process that
starts, a heartbeat that appears), poll with `wait_until`, which always ends.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from cluster.exceptions import JobCancelled, JobTimedOut, WaitTimedOut

T = TypeVar("T")
CANCEL_CHECK_SECONDS = 1.0


def wait_until(check: Callable[[], T], timeout: float, what: str, every: float = 0.2) -> T:
    """Call `check` every `every` seconds until it returns a true value, and return that value;
    raise WaitTimedOut (naming `what`) when `timeout` seconds pass first. `check` runs at least once."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        left = deadline - time.monotonic()
        if left <= 0:
            raise WaitTimedOut(f"{what}: not within {timeout:g}s")
        time.sleep(min(every, left))


class Deadline:
    """A run's end: its time limit, `timeout_minutes` from now (None: no limit), on the monotonic clock;
    and, when `cancelled` is given, a cancel request (what it returns: who asked; asked at most once
    every CANCEL_CHECK_SECONDS, it may read a database)."""

    def __init__(self, minutes: float | None, cancelled: Callable[[], str | None] | None = None):
        self.minutes = minutes
        self.at = None if minutes is None else time.monotonic() + 60 * minutes
        self.cancelled = cancelled
        self._asked = 0.0

    def remaining(self, at_most: float) -> float:
        """Seconds to wait at most: `at_most`, or less when the limit comes first (never below 10 ms)."""
        return at_most if self.at is None else max(0.01, min(at_most, self.at - time.monotonic()))

    def check(self, job_name: str, phase: str | None = None, what: str = "") -> None:
        """Raise JobTimedOut once the limit has passed, JobCancelled once a cancel was asked for."""
        if self.at is not None and time.monotonic() > self.at:
            assert self.minutes is not None  # self.at is set only from minutes
            raise JobTimedOut(job_name, self.minutes, phase=phase, what=what)
        if self.cancelled is not None and time.monotonic() - self._asked >= CANCEL_CHECK_SECONDS:
            self._asked = time.monotonic()
            reason = self.cancelled()
            if reason:
                raise JobCancelled(job_name, reason, phase=phase, what=what)
