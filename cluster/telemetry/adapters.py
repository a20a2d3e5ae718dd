"""Telemetry-style job scripts on the engine: one Python file with map, and optionally reduce,
combine and setup_reduce.

    def map(key, dimensions, value, map_context):   # key: text before the first tab; value: the rest
        map_context.write("record_count", 1)
    def reduce(key, values, reduce_context):        # none: a map-only job
        reduce_context.write(key, sum(values))
    combine = reduce                                 # optional partial reduce
    def setup_reduce(reduce_context):               # optional, once before the first reduce
        reduce_context.field_separator = ","

The script runs through the same mapper, shuffler and reducer as project functions, by
three adapters: `ScriptMap` (a per-file map function: each file's dimensions come from
its path), `ScriptCombine` and `ScriptReduce` (whose output items are the text records).
A map context with a combiner holds each key's values and calls combine whenever a key
has more than `combine_threshold` of them (in-mapper combining, as the original did);
what it holds goes to the shuffler in batches, where the same combine applies again.
"""
from __future__ import annotations

import csv
import hashlib
import inspect
import io
import marshal
import os
import shutil
import sys
import traceback
from collections.abc import Callable
from types import ModuleType
from typing import Any

from cluster import defaults
from cluster.engine.disk_list import DiskList, DiskValues
from cluster.engine.mapper import FileMapFunction
from cluster.engine.partitions import DimensionsFilter, dimensions_from_path
from cluster.exceptions import BadRecord, JobScriptError, NotSerializable, UnhashableKey

_PLAIN = frozenset({str, int, float, bool, type(None), bytes})
_SIGNATURES = {"map": ("key", "dimensions", "value", "map_context"), "reduce": ("key", "values", "reduce_context"),
               "combine": ("key", "values", "context"), "setup_reduce": ("reduce_context",)}


def carried(obj: Any, role: str, where: str) -> Any:
    """`obj` as the shuffle will carry it: plain values and tuples of them as they are, anything else
    as a copy made by marshal (a list the script changes after writing it must not change what was
    written); NotSerializable when marshal cannot carry it, UnhashableKey for a key that cannot be one."""
    if not (type(obj) in _PLAIN or (type(obj) is tuple and set(map(type, obj)) <= _PLAIN)):
        try:
            obj = marshal.loads(marshal.dumps(obj))
        except ValueError:
            raise NotSerializable(f"{where}: the {role} {obj!r:.120} {_holds(obj)}, which marshal cannot "
                                  "serialize; write str, int, float, bool, None, bytes, or tuples, lists, dicts "
                                  "and sets of them") from None
    if role == "key":
        try:
            hash(obj)
        except TypeError:
            raise UnhashableKey(f"{where}: the key {obj!r:.120} is a {type(obj).__name__}, which cannot be a "
                                  "key (unhashable); use a tuple instead of a list") from None
    return obj


def _holds(obj: Any) -> str:
    try:
        marshal.dumps(obj)
    except ValueError:
        inner = obj.items() if isinstance(obj, dict) else obj if isinstance(obj, (list, tuple, set, frozenset)) else ()
        for item in inner:
            for part in (item if isinstance(obj, dict) else (item,)):
                try:
                    marshal.dumps(part)
                except ValueError:
                    return f"holds {_holds(part).removeprefix('holds ').removeprefix('is ')}"
    name = f"{type(obj).__module__}.{type(obj).__qualname__}".removeprefix("builtins.")
    return f"is {'an' if name[0] in 'aeiou' else 'a'} {name}"


class JobScript:
    """The functions of a job script module, checked against the API."""

    def __init__(self, module: ModuleType) -> None:
        self.path = getattr(module, "__file__", None) or module.__name__
        found = {}
        for name, params in _SIGNATURES.items():
            fn = getattr(module, name, None)
            if fn is None:
                continue
            if not callable(fn):
                raise JobScriptError(f"job script {self.path}: {name} must be a function "
                                     f"{name}({', '.join(params)}), got a {type(fn).__name__}")
            try:
                inspect.signature(fn).bind(*params)
            except TypeError:
                raise JobScriptError(f"job script {self.path}: {name} must take {len(params)} argument(s): "
                                     f"{name}({', '.join(params)})") from None
            except ValueError:
                pass  # a builtin without a signature: trust it
            found[name] = fn
        if "map" not in found:
            raise JobScriptError(f"job script {self.path} has no map function; define "
                                 "map(key, dimensions, value, map_context)")
        self.map: Callable = found["map"]
        self.reduce: Callable | None = found.get("reduce")
        self.combine: Callable | None = found.get("combine")
        self.setup_reduce: Callable | None = found.get("setup_reduce")


class _CombineContext:
    """The context combine() writes its one value to."""

    __slots__ = ("written",)

    def __init__(self) -> None:
        self.written: list = []

    def write(self, key: Any, value: Any) -> None:
        self.written.append((key, value))


def combine_values(combine: Callable, key: Any, values: list) -> Any:
    """The one value combine(key, values, context) writes for `key`; a broken contract is an error."""
    ctx = _CombineContext()
    try:
        combine(key, values, ctx)
    except Exception as exc:
        raise JobScriptError(f"combine raised {type(exc).__name__}: {exc} (key {key!r:.100}, "
                             f"{len(values)} values)\n{traceback.format_exc().rstrip()}") from exc
    if len(ctx.written) != 1 or ctx.written[0][0] != key:
        raise JobScriptError(f"combine must write exactly one value under the key it was given; for key "
                             f"{key!r:.100} it wrote {ctx.written!r:.200} (combine replaces a key's values "
                             "with one partial result: reduce must give the same answer from it)")
    return carried(ctx.written[0][1], "value", f"combine (key {key!r:.100})")


class MapContext:
    """What map() writes to: items handed to the shuffler at the mapper's next flush."""

    __slots__ = ("_items",)

    def __init__(self) -> None:
        self._items: list = []

    def write(self, key: Any, value: Any) -> None:
        """Emit one (key, value); both must be values marshal can serialize."""
        if type(key) not in _PLAIN:
            key = carried(key, "key", "map_context.write")
        if type(value) not in _PLAIN:
            value = carried(value, "value", "map_context.write")
        self._items.append((key, value))

    def take(self, final: bool = False) -> list | None:
        items, self._items = self._items, []
        return items or None


class CombiningMapContext:
    """A map context that combines a key's values whenever it holds more than `threshold` of them."""

    __slots__ = ("_values", "_held", "_combine", "threshold", "max_held", "counters")

    def __init__(self, combine: Callable, threshold: int, max_held: int = defaults.SCRIPT_CONTEXT_MAX_ITEMS) -> None:
        self.counters = {"combine_calls": 0, "combine_items_in": 0, "combine_items_out": 0}
        self._values: dict = {}
        self._held = 0
        self._combine = combine
        self.threshold = threshold
        self.max_held = max_held

    def write(self, key: Any, value: Any) -> None:
        """Emit one (key, value); both must be values marshal can serialize."""
        if type(value) not in _PLAIN:
            value = carried(value, "value", "map_context.write")
        try:
            values = self._values[key]
        except KeyError:  # a key is checked once, when it is new
            if type(key) not in _PLAIN:
                key = carried(key, "key", "map_context.write")
            self._values[key] = [value]
            self._held += 1
            return
        except TypeError:
            carried(key, "key", "map_context.write")  # says why the key cannot be a key
            raise
        values.append(value)
        if len(values) > self.threshold:
            self._values[key] = [combine_values(self._combine, key, values)]
            self._held -= len(values) - 2
            c = self.counters
            c["combine_calls"] += 1
            c["combine_items_in"] += len(values)
            c["combine_items_out"] += 1
        else:
            self._held += 1

    def take(self, final: bool = False) -> list | None:
        """What it holds, once it holds more than `max_held` values or at the end of the input."""
        if not self._values or (not final and self._held < self.max_held):
            return None
        items = [(k, v) for k, values in self._values.items() for v in values]
        self._values = {}
        self._held = 0
        return items


class ScriptMap(FileMapFunction):
    """The engine's map function for a job script: lines of a file -> map(key, dims, value, ctx)."""

    def __init__(self, script: JobScript, input_dirs: list[str], dims_filter: DimensionsFilter | None,
                 combine: Callable | None, threshold: int) -> None:
        self.script = script
        self.roots = sorted((os.path.abspath(d) for d in input_dirs), key=len, reverse=True)
        self.count = len(dims_filter.rules) if dims_filter is not None else None
        self.context = CombiningMapContext(combine, threshold) if combine is not None else MapContext()

    def start(self, counters: dict) -> None:
        """Count in-mapper combining in the map phase's counters, beside the shuffler's."""
        if isinstance(self.context, CombiningMapContext):
            for name, value in self.context.counters.items():
                counters[name] = counters.get(name, 0) + value
            self.context.counters = counters

    def dimensions(self, path: str) -> list[str]:
        """The file's dimension values, from its path below the input dir that holds it."""
        for root in self.roots:
            if path.startswith(root + os.sep):
                dims = dimensions_from_path(os.path.relpath(path, root), self.count)
                if dims is not None:
                    return dims
        raise JobScriptError(f"input file {path} is not laid out as <dim1>/.../<dimN-1>.<dimN>.<anything> "
                             f"below {' or '.join(self.roots)}" + (f" with {self.count} dimensions" if self.count
                                                                   else ""))

    def for_file(self, path: str) -> Callable[[str, Any], None]:
        dims = self.dimensions(path)
        user_map, ctx = self.script.map, self.context

        def map_line(line: str, auxiliary_data: Any) -> None:
            key, tab, value = line.partition("\t")
            if not tab:
                raise BadRecord("no tab between the key and the value")
            try:
                user_map(key, dims, value.rstrip("\r\n"), ctx)
            except ValueError as exc:  # JSON that does not parse, a value marshal refuses: as the original counted it
                raise BadRecord(f"{type(exc).__name__}: {exc}") from None

        return map_line

    def take(self, final: bool = False) -> list | None:
        return self.context.take(final)


class ScriptCombine:
    """The engine's combine function for a job script: a group of items -> one item."""

    def __init__(self, combine: Callable) -> None:
        self.combine = combine

    def __call__(self, group: list, auxiliary_data: Any) -> list:
        key = group[0][0]
        return [(key, combine_values(self.combine, key, [v for _, v in group]))]


class ReduceContext:
    """What reduce() (and setup_reduce) write to: text records `key<field_separator>value<record_separator>`."""

    def __init__(self) -> None:
        self.field_separator = "\t"
        self.record_separator = "\n"
        self.out: list[str] = []

    def write(self, key: Any, value: Any) -> None:
        self.out.append(str(key) + self.field_separator + str(value) + self.record_separator)

    def writeline(self, text: Any) -> None:
        self.out.append(str(text) + self.record_separator)

    def writecsv(self, values: list) -> None:
        """One row through csv.writer's default dialect (comma, minimal quoting, \\r\\n), whatever the
        separators, as the original did."""
        buf = io.StringIO()
        csv.writer(buf).writerow(values)
        self.out.append(buf.getvalue())


class ScriptReduce:
    """The engine's reduce function for a job script: a group -> the text records reduce wrote
    (a map-only script writes every value of the group)."""

    writes_text = True  # the reducer writes its records as they are (.txt), not as JSON lines

    def __init__(self, script: JobScript) -> None:
        self.reduce = script.reduce
        self.setup = script.setup_reduce
        self.context = ReduceContext()

    def __call__(self, group: Any, auxiliary_data: Any) -> list[str]:
        ctx = self.context
        if self.setup is not None:  # what it writes (a CSV header) comes first, once per reducer
            setup, self.setup = self.setup, None
            setup(ctx)
        values: DiskValues | list[Any]
        if isinstance(group, DiskList):  # a group bigger than memory: its values, read from disk
            key, values = group[0][0], DiskValues(group)
        else:
            items = iter(group)
            key, first = next(items)
            values = [first]
            values += (v for _, v in items)
        if self.reduce is None:
            for v in values:
                ctx.write(key, v)
        else:
            self.reduce(key, values, ctx)
        out, ctx.out = ctx.out, []
        return out


class ScriptFunction:
    """A job script's map, combine or reduce as a project function: a factory the engine asks
    `for_job(job)` for what it runs (ScriptMap, ScriptCombine, ScriptReduce of the script). The
    script is loaded then, once for all three (load_script), not when the stub is imported."""

    def __init__(self, project_file: str, module: str, role: str) -> None:
        self.project_file = project_file
        self.module = module
        self.role = role

    def for_job(self, job: dict) -> Any:
        map_fn, combine_fn, reduce_fn = engine_functions(load_script(self.project_file, self.module), job)
        return {"map": map_fn, "combine": combine_fn, "reduce": reduce_fn}[self.role]

    def __call__(self, *args: Any) -> Any:
        raise JobScriptError(f"job script {self.module}.py: its {self.role} runs through the engine's adapters "
                             "(for_job), not directly")


def load_script(project_file: str, module: str) -> ModuleType:
    """The job script `module` of the one-file project that `project_file` (its map_functions.py or
    reduce_functions.py, written by python -m cluster.telemetry) belongs to: loaded once per version
    of its content (its map, combine and reduce share one module, as in the original job.py)."""
    from cluster.engine import functions

    folder = os.path.dirname(os.path.abspath(project_file))
    path = os.path.join(folder, module + ".py")
    with open(path, "rb") as fh:  # by content: two versions can share an mtime (one clock tick, `cp -p`)
        stamp = hashlib.blake2b(fh.read(), digest_size=16).hexdigest()
    unique = f"_cluster_project_{os.path.basename(folder).replace('.', '_').replace('-', '_')}_{module}"
    loaded = sys.modules.get(unique)
    if loaded is not None and getattr(loaded, "__file__", None) == path and \
            getattr(loaded, "_cluster_stamp", None) == stamp:
        return loaded
    script = functions.load_module(os.path.dirname(folder), os.path.basename(folder), module, isolate=False)
    script._cluster_stamp = stamp  # type: ignore[attr-defined]  # which version of the file this is
    return script


RESERVED_MODULES = ("map_functions", "reduce_functions")  # the stubs' names: a script is copied under another
PROJECT_MAP = '''"""Written by python -m cluster.telemetry: the engine's map function of a job script."""
from cluster.telemetry.adapters import ScriptFunction

map = ScriptFunction(__file__, {module!r}, "map")
'''
PROJECT_REDUCE = '''"""Written by python -m cluster.telemetry: the engine's reduce and combine of a job script."""
from cluster.telemetry.adapters import ScriptFunction

reduce = ScriptFunction(__file__, {module!r}, "reduce")
combine = ScriptFunction(__file__, {module!r}, "combine")
'''


def write_project(folder: str, script_file: str, module: str) -> None:
    """Make `folder` the one-file project of a job script: the script as `<module>.py`, and the
    map_functions.py / reduce_functions.py through which the engine runs it."""
    if module in RESERVED_MODULES:
        raise JobScriptError(f"job script module name {module!r} is taken by the project's own files; "
                             "JobScriptRunner renames such a script")
    shutil.copyfile(script_file, os.path.join(folder, module + ".py"))
    with open(os.path.join(folder, "map_functions.py"), "w") as fh:
        fh.write(PROJECT_MAP.format(module=module))
    with open(os.path.join(folder, "reduce_functions.py"), "w") as fh:
        fh.write(PROJECT_REDUCE.format(module=module))


def engine_functions(module: ModuleType, job: dict) -> tuple[ScriptMap, ScriptCombine | None, ScriptReduce]:
    """The (map, combine or None, reduce) the engine runs for a job script job."""
    script = JobScript(module)
    combine = None
    if job.get("combine_function_name"):
        if script.combine is None:
            raise JobScriptError(f"job {job['job_name']!r} asks for a combiner but job script {script.path} "
                                 "defines no combine(key, values, context)")
        if script.reduce is None:
            raise JobScriptError(f"job script {script.path} has combine but no reduce: a map-only job writes "
                                 "every map record, which combining would merge (define reduce, or run it "
                                 "with combine_threshold 0)")
        combine = script.combine
    threshold = job.get("combine_threshold") or defaults.COMBINE_THRESHOLD
    dims_filter = DimensionsFilter(job["input_filter"]) if job.get("input_filter") else None
    return (ScriptMap(script, job["input_dirs"], dims_filter, combine, threshold),
            ScriptCombine(combine) if combine is not None else None, ScriptReduce(script))
