"""Input selection for job scripts: the partitioned storage layout and its dimensions filter.

The data dir is laid out as `<dim1>/<dim2>/.../<dimN-2>/<dimN-1>.<dimN>.<anything>`:
directories are the leading dimensions, the first two dot-separated parts of the file
name the last two. A filter file names the N dimensions and what each may be:

    {"version": 1, "dimensions": [
        {"field_name": "reason", "allowed_values": ["saved-session"]},        any of these (safe names)
        {"field_name": "appName", "allowed_values": "*"},                     anything
        {"field_name": "appUpdateChannel", "allowed_values": "release"},      exactly this
        {"field_name": "submission_date", "allowed_values": {"min": "20140301", "max": "20140302"}}]}

As in Telemetry's TelemetrySchema, the values of a list are the folder names the pipeline wrote:
each character outside [a-zA-Z0-9_/.] becomes '_' (`safe_filename`), so "saved-session" selects
the folder saved_session (and "*" inside a list is the name "_"); a folder named as written (a
layout made by hand) is selected too. A single string is compared as written, and so are range
bounds. Ranges are inclusive, either bound optional, compared as strings.
The walk descends only into directories that can match (named values are visited directly, without listing
their parent), so a narrow filter over a big tree costs a few directory reads. The same
walk serves a local folder and an S3 bucket (`remote_data.py`): only the listing differs.
"""
from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, cast

from cluster.exceptions import FilterError

log = logging.getLogger(__name__)
FILTER_VERSION = 1
ANY = "*"
_UNSAFE = re.compile(r"[^a-zA-Z0-9_/.]")


def safe_filename(value: str) -> str:
    """A dimension value as the pipeline named its folder: each character outside [a-zA-Z0-9_/.] -> '_'."""
    return _UNSAFE.sub("_", value)
# (subdirectory names, [(file name, size)]) of one folder of the layout; a missing folder lists as empty
Lister = Callable[[str], tuple[list[str], list[tuple[str, int]]]]


@dataclass(frozen=True)
class Rule:
    """What one dimension may be: anything, one of a set of values, or an inclusive string range."""

    field_name: str
    values: frozenset[str] | None = None   # None: no set restriction
    low: str | None = None
    high: str | None = None

    def allows(self, value: str) -> bool:
        if self.values is not None:
            return value in self.values
        return (self.low is None or value >= self.low) and (self.high is None or value <= self.high)

    @property
    def named(self) -> list[str] | None:
        """The exact values, when the rule is a finite set (the walk visits them without listing)."""
        return sorted(self.values) if self.values is not None else None


class DimensionsFilter:
    """A parsed filter file: one Rule per dimension of the layout, in layout order."""

    def __init__(self, spec: Any, source: str = "the filter"):
        self.source = source
        self.spec = spec
        problems: list[str] = []
        self.rules: list[Rule] = _parse(spec, problems)
        if problems:
            raise FilterError(f"{source} is not a valid dimensions filter:\n"
                              + "\n".join(f"  - {p}" for p in problems)
                              + '\n(expected {"version": 1, "dimensions": [{"field_name": ..., '
                                '"allowed_values": "*" | "value" | [values] | {"min": a, "max": b}}, ...]})')

    @classmethod
    def load(cls, path: str) -> DimensionsFilter:
        """Read a filter file (JSON)."""
        try:
            with open(path, encoding="utf-8") as fh:
                spec = json.load(fh)
        except FileNotFoundError:
            raise FilterError(f"filter file {path} not found") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise FilterError(f"cannot read filter file {path}: {exc}") from None
        except ValueError as exc:
            raise FilterError(f"filter file {path} is not valid JSON: {exc}") from None
        return cls(spec, source=f"filter file {path}")

    @property
    def field_names(self) -> list[str]:
        return [r.field_name for r in self.rules]

    def matches(self, dims: list[str]) -> bool:
        return len(dims) == len(self.rules) and all(r.allows(v) for r, v in zip(self.rules, dims, strict=True))

    def walk(self, lister: Lister) -> Iterator[tuple[str, int, list[str]]]:
        """(relative path, size, dimensions) of every matching file, in path order."""
        depth = len(self.rules) - 2
        deeper: list[str] = []
        yield from self._walk(lister, [], depth, deeper)
        if deeper:
            log.warning("%s names %d dimensions, but folders such as %r hold subfolders where the files "
                        "(<%s>.<%s>.<anything>) should be: the layout has more levels than the filter has "
                        "dimensions, and files below that depth are not selected", self.source, len(self.rules),
                        deeper[0], self.rules[-2].field_name, self.rules[-1].field_name)

    def _walk(self, lister: Lister, dirs: list[str], depth: int,
              deeper: list[str]) -> Iterator[tuple[str, int, list[str]]]:
        prefix = "/".join(dirs)
        if len(dirs) < depth:
            rule = self.rules[len(dirs)]
            names = rule.named
            if names is None:  # a range or anything: list the folder and keep what can match
                names = sorted(n for n in lister(prefix)[0] if not _hidden(n) and rule.allows(n))
            for name in names:
                if "/" not in name and name not in ("", ".", ".."):
                    yield from self._walk(lister, dirs + [name], depth, deeper)
            return
        subdirs, files = lister(prefix)
        if not deeper and any(not _hidden(d) for d in subdirs):
            deeper.append(prefix or ".")
        for name, size in sorted(files):
            if _hidden(name):
                continue
            dims = _dimensions(dirs, name, len(self.rules))
            if dims is not None and self.matches(dims):
                yield (f"{prefix}/{name}" if prefix else name), size, dims


def _hidden(name: str) -> bool:
    """Names the walk never takes: hidden files (partial downloads) and files being written."""
    return name.startswith(".") or name.endswith(".tmp")


def _dimensions(dirs: list[str], file_name: str, count: int) -> list[str] | None:
    pieces = file_name.split(".")
    if len(dirs) != count - 2 or len(pieces) < 3 or not pieces[0] or not pieces[1]:
        return None
    return [*dirs, pieces[0], pieces[1]]


def filter_problems(spec: Any, source: str = "input_filter") -> list[str]:
    """Why `spec` is not a valid dimensions filter (one message listing every problem), or []."""
    try:
        DimensionsFilter(spec, source=source)
    except FilterError as exc:
        return [str(exc)]
    return []


def dimensions_from_path(relative_path: str, count: int | None = None) -> list[str] | None:
    """A file's dimension values from its path relative to the data dir; None when the path does
    not have the layout's shape (`count` dimensions; any depth when None; two dots in the name)."""
    parts = relative_path.replace(os.sep, "/").split("/")
    return _dimensions(parts[:-1], parts[-1], len(parts) + 1 if count is None else count)


def local_lister(root: str) -> Lister:
    """List folders of a local data dir (symlinks followed)."""
    def lister(prefix: str) -> tuple[list[str], list[tuple[str, int]]]:
        folder = os.path.join(root, prefix) if prefix else root
        dirs, files = [], []
        try:
            with os.scandir(folder) as entries:
                for e in entries:
                    try:
                        if e.is_dir():
                            dirs.append(e.name)
                        elif e.is_file():
                            files.append((e.name, e.stat().st_size))
                    except FileNotFoundError:
                        continue  # removed while listed
        except (FileNotFoundError, NotADirectoryError):
            pass
        except PermissionError as exc:
            raise FilterError(f"cannot list data folder {folder}: {exc.strerror} (check its permissions)") from None
        return dirs, files
    return lister


def select_local_files(root: str, dims_filter: DimensionsFilter) -> list[tuple[str, int]]:
    """(absolute path, size) of every file under `root` the filter selects."""
    if not os.path.isdir(root):
        raise FilterError(f"data dir {root} not found (or not a folder) on this machine")
    top = os.path.abspath(root)
    return [(os.path.join(top, rel), size) for rel, size, _ in dims_filter.walk(local_lister(top))]


def _parse(spec: Any, problems: list[str]) -> list[Rule]:
    if not isinstance(spec, dict):
        problems.append(f"a filter is a JSON object, got {type(spec).__name__}")
        return []
    unknown = sorted(set(spec) - {"version", "dimensions"})
    if unknown:
        problems.append(f"unknown key(s) {', '.join(map(repr, unknown))} (a filter has version and dimensions)")
    if spec.get("version") != FILTER_VERSION:
        problems.append(f"version must be {FILTER_VERSION}, got {spec.get('version')!r}")
    dims = spec.get("dimensions")
    if not isinstance(dims, list) or len(dims) < 2:
        problems.append("dimensions must be a list of at least two {field_name, allowed_values} objects "
                        "(the last two are the first two dot-separated parts of the file name), "
                        f"got {dims!r:.100}")
        return []
    rules = []
    for i, d in enumerate(dims, 1):
        if not isinstance(d, dict):
            problems.append(f"dimension {i} must be an object, got {d!r:.80}")
            continue
        name = d.get("field_name")
        label = f"dimension {i}" + (f" ({name})" if isinstance(name, str) else "")
        extra = sorted(set(d) - {"field_name", "allowed_values"})
        if extra:
            problems.append(f"{label}: unknown key(s) {', '.join(map(repr, extra))}")
        if not isinstance(name, str) or not name:
            problems.append(f"{label}: field_name must be a non-empty string, got {name!r}")
            name = f"dimension_{i}"
        if "allowed_values" not in d:
            problems.append(f"{label}: allowed_values is missing (use \"*\" for anything)")
            continue
        rule = _rule(name, d["allowed_values"], label, problems)
        if rule is not None:
            rules.append(rule)
    return rules


def _text(value: Any) -> str | None:
    """A filter value as the string it is compared as; whole numbers are taken as their digits."""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _rule(name: str, allowed: Any, label: str, problems: list[str]) -> Rule | None:
    if allowed == ANY:
        return Rule(name)
    if isinstance(allowed, (str, int)) and not isinstance(allowed, bool):
        value = _text(allowed)
        assert value is not None  # a str or a non-bool int always has a text
        if _UNSAFE.search(value):
            log.warning("%s: allowed_values %r is compared as written (a single string is, as in the original); "
                        "folders are written with safe names such as %r: write [%r] to select that folder",
                        label, value, safe_filename(value), value)
        return Rule(name, values=frozenset([value]))
    if isinstance(allowed, list):
        values = [_text(v) for v in allowed]
        if not allowed or None in values:
            problems.append(f"{label}: a list of allowed_values must hold one or more strings, got {allowed!r:.100}")
            return None
        strings = cast("list[str]", values)  # None is not in values (checked above)
        # the safe name (the pipeline's folders); the value as written too, for a layout made by hand
        return Rule(name, values=frozenset(strings) | {safe_filename(v) for v in strings})
    if isinstance(allowed, dict):
        extra = sorted(set(allowed) - {"min", "max"})
        low, high = allowed.get("min"), allowed.get("max")
        bad = [k for k in ("min", "max") if k in allowed and allowed[k] is not None and _text(allowed[k]) is None]
        if extra or bad:
            problems.append(f"{label}: a range is {{\"min\": a, \"max\": b}} with string bounds (either optional), "
                            f"got {allowed!r:.100}")
            return None
        low, high = (None if v is None else _text(v) for v in (low, high))
        if low is not None and high is not None and low > high:
            problems.append(f"{label}: min {low!r} is above max {high!r} (compared as strings): nothing can match")
            return None
        return Rule(name, low=low, high=high)
    problems.append(f"{label}: allowed_values must be \"*\", a string, a list of strings or "
                    f"{{\"min\": a, \"max\": b}}, got {allowed!r:.100}")
    return None
