"""What every view of one dashboard shares: the config, the queue, the cluster's status (cached),
the logged-in sessions and the failed logins."""
from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flask import current_app

from cluster import defaults
from cluster.config import ClusterConfig
from cluster.exceptions import ClusterError
from cluster.layout import flock_holder
from cluster.scheduling.store import Scheduler

FAILED_LOGINS_ALLOWED = 5       # per client address and window; then its logins are refused...
FAILED_LOGIN_WINDOW_SECONDS = 300.0  # ...until the window has passed


@dataclass
class DashboardState:
    config: ClusterConfig
    scheduler: Scheduler
    password: str
    cluster_status: Callable[[], dict[str, Any]] | None = None
    _status_lock: threading.Lock = field(default_factory=threading.Lock)
    _status: tuple[float, dict[str, Any]] | None = None
    _sessions: dict[str, float] = field(default_factory=dict)  # session id -> when it ends (monotonic)
    _failures: dict[str, list[float]] = field(default_factory=dict)  # client address -> failed login times
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # --- cluster status ---------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """The cluster's status, asked of the locations at most every DASHBOARD_STATUS_CACHE_SECONDS
        and by one request at a time: while one asks, the others get the last answer (with its
        age) instead of waiting for a slow location. {"error": ...} when it cannot be had."""
        cached = self._status
        if cached and time.monotonic() - cached[0] < defaults.DASHBOARD_STATUS_CACHE_SECONDS:
            return cached[1]
        if not self._status_lock.acquire(blocking=cached is None):
            assert cached is not None  # only a non-blocking acquire fails
            return {**cached[1], "age": time.monotonic() - cached[0]}
        try:
            try:
                if self.cluster_status is not None:
                    found = self.cluster_status()
                else:
                    from cluster.master.manager import ClusterManager

                    found = ClusterManager(self.config).status()
            except ClusterError as exc:
                found = {"error": str(exc), "servers": [], "locations": []}
            self._status = (time.monotonic(), found)
            return found
        finally:
            self._status_lock.release()

    def runner(self) -> dict[str, Any]:
        """Whether a Runner works this queue: {"pid", "holder"} or {} when none does."""
        path = self.scheduler.runner_lock_path
        pid = flock_holder(path)
        if pid is None:
            return {}
        try:
            with open(path) as fh:
                holder = fh.read().strip()
        except OSError:
            holder = f"pid {pid}"
        return {"pid": pid, "holder": holder}

    # --- sessions ---------------------------------------------------------------------------
    def open_session(self) -> str:
        """A new session id, valid for DASHBOARD_SESSION_HOURS (or until logout or a restart)."""
        sid = secrets.token_urlsafe(24)
        with self._lock:
            now = time.monotonic()
            self._sessions = {s: end for s, end in self._sessions.items() if end > now}
            self._sessions[sid] = now + defaults.DASHBOARD_SESSION_HOURS * 3600
        return sid

    def session_valid(self, sid: Any) -> bool:
        end = self._sessions.get(sid) if isinstance(sid, str) else None
        return end is not None and end > time.monotonic()

    def close_session(self, sid: Any) -> None:
        with self._lock:
            self._sessions.pop(sid, None)

    # --- failed logins ----------------------------------------------------------------------
    def login_blocked(self, client: str) -> float:
        """Seconds until `client` may try again (0: it may now)."""
        now = time.monotonic()
        with self._lock:
            recent = [t for t in self._failures.get(client, []) if now - t < FAILED_LOGIN_WINDOW_SECONDS]
            self._failures[client] = recent
        if len(recent) < FAILED_LOGINS_ALLOWED:
            return 0.0
        return FAILED_LOGIN_WINDOW_SECONDS - (now - recent[0])

    def login_failed(self, client: str) -> None:
        with self._lock:
            self._failures.setdefault(client, []).append(time.monotonic())


def state() -> DashboardState:
    """The state of the application serving this request."""
    return current_app.extensions["cluster"]
