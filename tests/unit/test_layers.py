"""The rooms and the one way imports run (../shared/DESIGN.md, "Layout"; the README's module map):
core <- engine <- node <- executors <- master <- scheduling / telemetry <- cli / dashboard. A module
may import its own room and rooms below it, never one above: the engine knows nothing of machines,
queues or job scripts."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "cluster"
CORE = {"cluster", "cluster.config", "cluster.counters", "cluster.defaults", "cluster.exceptions", "cluster.layout",
        "cluster.emit", "cluster.job_spec", "cluster.logfile", "cluster.progress", "cluster.timing"}
RANKS = {"engine": 1, "node": 2, "executors": 3, "master": 4, "scheduling": 5, "telemetry": 5, "cli": 6,
         "dashboard": 6}
TOP = {"cluster.api": 4, "cluster.sample_data": 6, "cluster.job": 6}  # the user API, tools, an alias


def rank(module: str) -> int:
    if module in CORE:
        return 0
    if module in TOP:
        return TOP[module]
    room = module.split(".")[1]
    if room not in RANKS:
        raise AssertionError(f"{module} is in no room: put it in one (and in this test's table)")
    return RANKS[room]


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports_of(path: Path, name: str, known: set[str]) -> set[str]:
    """The cluster modules a module imports (function-level too; not those under `if TYPE_CHECKING:`)."""
    tree = ast.parse(path.read_text())
    skipped = {id(n) for node in ast.walk(tree)
               if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
               for child in node.body for n in ast.walk(child)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("cluster")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("cluster") and not node.level:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in known}
    return {m for m in found if m in known and m != name}


MODULES = modules()


def test_every_module_is_in_a_room():
    for name in MODULES:
        rank(name)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_run_one_way(name):
    upward = sorted(m for m in imports_of(MODULES[name], name, set(MODULES)) if rank(m) > rank(name))
    assert not upward, f"{name} (rank {rank(name)}) imports a room above it: {upward}"


def test_the_engine_needs_no_network_and_no_processes():
    for name, path in MODULES.items():
        if name.startswith("cluster.engine"):
            source = path.read_text()
            for forbidden in ("import redis", "import rpyc", "import paramiko", "import subprocess", "import socket"):
                assert forbidden not in source, f"{name}: {forbidden}"
