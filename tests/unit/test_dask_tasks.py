"""The Dask tasks' own checks, called directly (not on a worker): a file changed since the plan, a
worker of another version, and a map result computed again that failed."""
from __future__ import annotations

import pytest

pytest.importorskip("distributed")

from cluster.exceptions import TaskFailed  # noqa: E402
from cluster.executors import dask_tasks  # noqa: E402 - after the skip


def spec(**extra) -> dict:
    return {"job": {"job_name": "j"}, "run_id": "r", "partitions": ["P_000"], "memory_budget": 1 << 20,
            "store": None, "versions": dask_tasks.versions(), **extra}


def test_a_file_that_changed_since_the_plan_is_an_error_not_another_answer(tmp_path):
    path = tmp_path / "a.log"
    path.write_text("one two\n")
    result = dask_tasks.map_task("M_0000", spec(), {str(path): 3}, [], {}, None, None)
    assert result["error"]["type"] == "InputError"
    assert "changed during the run (planned at 3 bytes, now 8 bytes)" in result["error"]["message"]
    gone = dask_tasks.map_task("M_0000", spec(), {str(tmp_path / "gone.log"): 3}, [], {}, None, None)
    assert "now gone" in gone["error"]["message"]


def test_a_worker_of_another_version_refuses_the_task(tmp_path):
    other = spec(versions={**dask_tasks.versions(), "mapreduce-cluster": "0.0.1"})
    result = dask_tasks.map_task("M_0000", other, {}, [], {}, None, None)
    assert result["error"]["type"] == "ConfigError" and "the client's 0.0.1" in result["error"]["message"]
    reduced = dask_tasks.reduce_task("P_000", other, {}, None)
    assert reduced["error"]["type"] == "ConfigError"


def test_a_recomputed_map_result_that_failed_stops_its_reduce():
    failed = {"error": {"server": "M_0003 (worker tcp://w)", "type": "InputError", "message": "changed"}}
    with pytest.raises(TaskFailed, match="map task M_0003 .*run again after a worker was lost, failed"):
        dask_tasks.partition_of(failed, "P_000")
    broken = {"task": "M_0001", "counters": {"files_failed": 1, "failed_files": [{"path": "x"}]}, "parts": {}}
    with pytest.raises(TaskFailed, match="could not read a file the first run read"):
        dask_tasks.partition_of(broken, "P_000")
    fine = {"task": "M_0001", "counters": {"files_failed": 0}, "parts": {"P_000": [("a.spill", b"")]}}
    assert dask_tasks.partition_of(fine, "P_000") == [("a.spill", b"")]
    assert dask_tasks.partition_of(fine, "P_001") == []


def test_a_project_bundle_is_named_by_its_project_too(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "map_functions.py").write_text("def m(line, aux):\n    return []\n")
    one, two = (dask_tasks.bundle_project(str(tmp_path), n) for n in ("a", "b"))
    assert one["files"] == two["files"] and one["digest"] != two["digest"]
