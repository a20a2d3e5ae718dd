"""Counters are named once (cluster/counters.py): every name the engine and the executors count is
registered, and the job's counters are merged as the registry says."""
from __future__ import annotations

import ast
from pathlib import Path

from cluster.counters import BY_NAME, COUNTERS, Merge
from cluster.executors.base import merge_counters

PACKAGE = Path(__file__).resolve().parents[2] / "cluster"
COUNTING = ("engine", "executors", "node")  # the rooms that count
HOLDERS = {"counters", "c", "total", "m"}   # the names a counters dict goes by there


def counted_names() -> dict[str, str]:
    """name -> where, for every `counters["name"]` (and `c[...]`, `self.counters[...]`) in the counting rooms."""
    found = {}
    for room in COUNTING:
        for path in (PACKAGE / room).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if not (isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant)
                        and isinstance(node.slice.value, str)):
                    continue
                holder = node.value
                name = holder.id if isinstance(holder, ast.Name) else holder.attr \
                    if isinstance(holder, ast.Attribute) else None
                if name in HOLDERS:
                    found.setdefault(node.slice.value, f"{path.relative_to(PACKAGE)}:{node.lineno}")
    return found


def test_every_counter_counted_is_registered():
    unknown = {name: where for name, where in counted_names().items() if name not in BY_NAME}
    assert not unknown, f"counted but not in cluster/counters.py: {unknown}"


def test_the_registry_is_consistent():
    assert len(BY_NAME) == len(COUNTERS)
    assert all(c.meaning and c.phase in ("map", "sort", "reduce", "any") for c in COUNTERS)


def test_merging_follows_the_registry():
    per_server = {
        "S_0": {"map": {"records_in": 3, "bad_lines": 1, "bad_lines_by_file": {"/a": 1}, "failed_files": [],
                        "bad_line_examples": ["/a:2: x"], "peak_rss_bytes": 10},
                "reduce": {"largest_group": 7, "records_out": 2, "peak_rss_bytes": 12}},
        "S_1": {"map": {"records_in": 4, "bad_lines": 2, "bad_lines_by_file": {"/a": 1, "/b": 1},
                        "failed_files": [{"path": "/c", "reason": "cut"}], "peak_rss_bytes": 9},
                "reduce": {"largest_group": 3, "records_out": 1}},
    }
    total = merge_counters(per_server)
    assert total["records_in"] == 7 and total["bad_lines"] == 3 and total["records_out"] == 3
    assert total["bad_lines_by_file"] == {"/a": 2, "/b": 1}
    assert total["failed_files"] == [{"path": "/c", "reason": "cut"}] and total["bad_line_examples"] == ["/a:2: x"]
    assert total["peak_rss_bytes"] == {"S_0": 12, "S_1": 9} and total["largest_group"] == {"S_0": 7, "S_1": 3}
    assert all(total[c.name] == 0 for c in COUNTERS if c.how is Merge.SUM and c.name not in
               ("records_in", "bad_lines", "records_out"))
