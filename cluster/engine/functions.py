"""Load map, combine and reduce functions from a project's sources, by name.

A project is a folder `<projects_root>/<NAME>/` with `map_functions.py` and
`reduce_functions.py`. Plain module-level functions are found by name; the
original `MapFunctions(name).get_map_function()` and `ReduceFunctions(name)
.get_reduce_function()` wrapper classes keep working.

A function object with a `for_job(job)` method is a factory: the engine runs what it returns
for the job (how a Telemetry-style job script's project hands its adapted functions to the
engine, which knows nothing of job scripts).
"""
from __future__ import annotations

import importlib.util
import inspect
import os
import sys
import traceback
from collections.abc import Callable, Iterable
from types import ModuleType
from typing import Any

from cluster.engine.mapper import FileMapFunction
from cluster.exceptions import ProjectError

MAP_MODULE = "map_functions"
REDUCE_MODULE = "reduce_functions"
_WRAPPERS = {MAP_MODULE: ("MapFunctions", "get_map_function"),
             REDUCE_MODULE: ("ReduceFunctions", "get_reduce_function")}


def project_dir(projects_root: str, project_name: str) -> str:
    """The folder of a project, checked to exist."""
    path = os.path.join(projects_root, project_name)
    if not os.path.isdir(path):
        known = sorted(d for d in os.listdir(projects_root)
                       if os.path.isdir(os.path.join(projects_root, d))) if os.path.isdir(projects_root) else []
        hint = f"projects there: {', '.join(known)}" if known else "that folder has no projects"
        raise ProjectError(f"project {project_name!r} not found: no folder {path} "
                           f"(projects_dir is {projects_root}; {hint})")
    return path


def load_module(projects_root: str, project_name: str, module: str, isolate: bool = True) -> ModuleType:
    """Import `<project>/<module>.py` afresh, with the project folder importable for its helpers.

    `isolate`: take the project folder off sys.path and forget its helper modules afterwards
    (the master); a worker that runs the project keeps both, so imports inside functions work.
    """
    folder = project_dir(projects_root, project_name)
    path = os.path.join(folder, module + ".py")
    if not os.path.isfile(path):
        raise ProjectError(f"project {project_name!r} has no {module}.py (looked for {path})")
    unique = f"_cluster_project_{project_name.replace('.', '_').replace('-', '_')}_{module}"
    spec = importlib.util.spec_from_file_location(unique, path)
    assert spec is not None and spec.loader is not None  # a .py file always has a spec with a loader
    mod = importlib.util.module_from_spec(spec)
    before = set(sys.modules)
    inserted = folder not in sys.path  # a load inside a load (a factory's) adds no second entry
    if inserted:
        sys.path.insert(0, folder)
    sys.modules[unique] = mod  # dataclasses and pickling look the module up while it runs
    try:
        spec.loader.exec_module(mod)
    except Exception as exc:
        sys.modules.pop(unique, None)
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        raise ProjectError(f"importing {path} failed: {type(exc).__name__}: {exc} "
                           f"(at {frame.filename}:{frame.lineno})") from exc
    finally:
        if isolate:
            if inserted and folder in sys.path:
                sys.path.remove(folder)
            # The project's own helper modules are loaded afresh each time, never shared between projects.
            for name in set(sys.modules) - before:
                if (getattr(sys.modules[name], "__file__", None) or "").startswith(folder + os.sep):
                    del sys.modules[name]
    return mod


def _find(mod: ModuleType, module: str, name: str, project_name: str) -> Callable:
    fn = getattr(mod, name, None)
    if callable(fn) and not inspect.isclass(fn):
        return fn
    wrapper_name, getter = _WRAPPERS[module]
    wrapper = getattr(mod, wrapper_name, None)
    if isinstance(wrapper, type):  # inspect.isclass, which types it as type[object]
        try:
            fn = getattr(wrapper(name), getter)()
        except AttributeError:
            fn = None  # the original wrappers leave the attribute unset for unknown names
        if callable(fn):
            return fn
    available = sorted(n for n, v in vars(mod).items()
                       if inspect.isfunction(v) and v.__module__ == mod.__name__ and not n.startswith("_"))
    raise ProjectError(f"no function {name!r} in project {project_name!r} {module}.py "
                       f"({mod.__file__}); functions there: {', '.join(available) or 'none'}")


def load_function(projects_root: str, project_name: str, module: str, name: str) -> Callable:
    """Find one function by name in a project's map_functions or reduce_functions module."""
    return _find(load_module(projects_root, project_name, module), module, name, project_name)


def every_item(group: Iterable, auxiliary_data: Any) -> Iterable:
    """The reduce of a map-only job (no reduce_function_name): the group's items, as they are."""
    return group


def load_job_functions(projects_root: str, job: dict, isolate: bool = True
                       ) -> tuple[Callable | FileMapFunction, Callable | None, Callable]:
    """The (map, combine or None, reduce) functions a mapreduce job names (a factory's, for this job)."""
    name = job["project_name"]
    map_mod = load_module(projects_root, name, MAP_MODULE, isolate)
    map_fn = _for_job(_find(map_mod, MAP_MODULE, job["map_function_name"], name), job)
    if not job.get("reduce_function_name"):  # a map-only job: every map item is output, grouped by key
        return map_fn, None, every_item
    reduce_mod = load_module(projects_root, name, REDUCE_MODULE, isolate)
    reduce_fn = _for_job(_find(reduce_mod, REDUCE_MODULE, job["reduce_function_name"], name), job)
    combine_fn = None
    if job.get("combine_function_name"):
        combine_fn = _for_job(_find(reduce_mod, REDUCE_MODULE, job["combine_function_name"], name), job)
    return map_fn, combine_fn, reduce_fn


def _for_job(fn: Any, job: dict) -> Any:
    """What a factory (an object with `for_job`) makes for this job; a plain function as it is."""
    make = getattr(fn, "for_job", None)
    return make(job) if callable(make) else fn
