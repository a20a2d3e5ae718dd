"""What every view of one dashboard shares: the config, the queue, the cluster's status (cached)."""
from __future__ import annotations

import os
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
from cluster.scheduler import Scheduler


@dataclass
class DashboardState:
    config: ClusterConfig
    scheduler: Scheduler
    password: str
    password_digest: str
    cluster_status: Callable[[], dict[str, Any]] | None = None
    _status_lock: threading.Lock = field(default_factory=threading.Lock)
    _status: tuple[float, dict[str, Any]] | None = None

    def status(self) -> dict[str, Any]:
        """The cluster's status, asked of the locations at most every DASHBOARD_STATUS_CACHE_SECONDS
        (several open pages do not multiply the load); {"error": ...} when it cannot be had."""
        with self._status_lock:
            if self._status and time.monotonic() - self._status[0] < defaults.DASHBOARD_STATUS_CACHE_SECONDS:
                return self._status[1]
            try:
                if self.cluster_status is not None:
                    found = self.cluster_status()
                else:
                    from cluster.manage_cluster import ManageCluster

                    found = ManageCluster(self.config).status()
            except ClusterError as exc:
                found = {"error": str(exc), "servers": [], "locations": []}
            self._status = (time.monotonic(), found)
            return found

    def runner(self) -> dict[str, Any]:
        """Whether a Runner works this queue: {"pid", "holder"} or {} when none does."""
        path = os.path.join(os.path.dirname(os.path.abspath(self.scheduler.path)), "runner.lock")
        pid = flock_holder(path)
        if pid is None:
            return {}
        try:
            with open(path) as fh:
                holder = fh.read().strip()
        except OSError:
            holder = f"pid {pid}"
        return {"pid": pid, "holder": holder}


def state() -> DashboardState:
    """The state of the application serving this request."""
    return current_app.extensions["cluster"]
