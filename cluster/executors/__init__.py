"""Executors: one job lifecycle (base.py), and where it runs: this machine's worker processes
(local.py), the running cluster (cluster.py) or Dask (dask.py). `cluster.api.make_executor` chooses.

The names below are imported when first asked for, so a local worker (`local_worker.py`, which runs
no lifecycle) starts without the lifecycle's imports."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cluster.executors.base import Executor, JobResult, Progress

__all__ = ["Executor", "JobResult", "Progress"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from cluster.executors import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
