"""A pure-Python MapReduce cluster: map and reduce functions in plain Python, jobs as plain dicts.

The user API (imported on first use, so `import cluster` stays cheap for the worker processes):

    from cluster import run_job, get_mapreduce_job_template, with_value, BadRecord, ClusterConfig

    job = get_mapreduce_job_template()
    job.update(job_name="wc", project_name="word_count", input_dirs=["/data/logs"],
               map_function_name="word_count", reduce_function_name="sum_counts")
    result = run_job(job, executor="local")        # or "cluster": the running cluster
    print(result.output_dir, result.counters["records_out"])
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"

_EXPORTS = {
    "with_value": "cluster.emit",
    "BadRecord": "cluster.exceptions",
    "ClusterError": "cluster.exceptions",
    "ClusterConfig": "cluster.config",
    "get_mapreduce_job_template": "cluster.job_spec",
    "get_script_template": "cluster.job_spec",
    "get_file_transfer_template": "cluster.job_spec",
    "validate_job": "cluster.job_spec",
    "run_job": "cluster.api",
    "JobResult": "cluster.executors.base",
}
__all__ = ["BadRecord", "ClusterConfig", "ClusterError", "JobResult", "__version__", "get_file_transfer_template",
           "get_mapreduce_job_template", "get_script_template", "run_job", "validate_job", "with_value"]

if TYPE_CHECKING:  # what the lazy names are, for type checkers and editors
    from cluster.api import run_job
    from cluster.config import ClusterConfig
    from cluster.emit import with_value
    from cluster.exceptions import BadRecord, ClusterError
    from cluster.executors.base import JobResult
    from cluster.job_spec import (
        get_file_transfer_template,
        get_mapreduce_job_template,
        get_script_template,
        validate_job,
    )


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'cluster' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
