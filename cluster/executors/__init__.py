"""Executors: one job lifecycle (base.py), and where it runs: this machine's worker processes
(local.py) or the running cluster (cluster.py). `cluster.api.make_executor` chooses."""
from __future__ import annotations

from cluster.executors.base import Executor, JobResult, Progress

__all__ = ["Executor", "JobResult", "Progress"]
