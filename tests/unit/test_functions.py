"""Loading map, combine and reduce functions from project folders."""
from __future__ import annotations

import sys
import textwrap

import pytest

from cluster.engine import functions
from cluster.exceptions import ProjectError

PLAIN_MAP = """
def word_count(line, auxiliary_data):
    return [(w, 1) for w in line.split()]

def upper_words(line, auxiliary_data):
    return [(w.upper(), 1) for w in line.split()]

def _private(line, auxiliary_data):
    return []
"""
PLAIN_REDUCE = """
def sum_counts(group, auxiliary_data):
    return [(group[0][0], sum(v for _, v in group))]

def max_count(group, auxiliary_data):
    return [(group[0][0], max(v for _, v in group))]
"""
WRAPPED_MAP = """
def f(line, auxiliary_data):
    return [(line.strip(), len(line.strip()))]

class MapFunctions:
    def __init__(self, name):
        if name == 'f':
            self.map_function = f

    def get_map_function(self):
        return self.map_function
"""
WRAPPED_REDUCE = """
def g(group, auxiliary_data):
    return [(group[0][0], [v for _, v in group])]

class ReduceFunctions:
    def __init__(self, name):
        if name == 'g':
            self.reduce_function = g

    def get_reduce_function(self):
        return self.reduce_function
"""


def make_project(root, name, map_src=PLAIN_MAP, reduce_src=PLAIN_REDUCE, **extra):
    folder = root / name
    folder.mkdir(parents=True)
    if map_src is not None:
        (folder / "map_functions.py").write_text(textwrap.dedent(map_src))
    if reduce_src is not None:
        (folder / "reduce_functions.py").write_text(textwrap.dedent(reduce_src))
    for filename, src in extra.items():
        (folder / f"{filename}.py").write_text(textwrap.dedent(src))
    return folder


def test_plain_functions_are_found_by_name(tmp_path):
    make_project(tmp_path, "wc")
    fn = functions.load_function(str(tmp_path), "wc", "map_functions", "word_count")
    assert fn("a b a", None) == [("a", 1), ("b", 1), ("a", 1)]
    red = functions.load_function(str(tmp_path), "wc", "reduce_functions", "max_count")
    assert red([("a", 1), ("a", 7), ("a", 3)], None) == [("a", 7)]


def test_original_wrapper_classes_keep_working(tmp_path):
    make_project(tmp_path, "old", map_src=WRAPPED_MAP, reduce_src=WRAPPED_REDUCE)
    job = {"project_name": "old", "map_function_name": "f", "reduce_function_name": "g"}
    map_fn, combine_fn, reduce_fn = functions.load_job_functions(str(tmp_path), job)
    assert map_fn("abc\n", None) == [("abc", 3)]
    assert combine_fn is None
    assert reduce_fn([("k", 1), ("k", 2)], None) == [("k", [1, 2])]


def test_wrapper_with_unknown_name_reports_available_functions(tmp_path):
    make_project(tmp_path, "old", map_src=WRAPPED_MAP + "\ndef h(line, aux):\n    return []\n",
                 reduce_src=WRAPPED_REDUCE)
    with pytest.raises(ProjectError) as info:
        functions.load_function(str(tmp_path), "old", "map_functions", "missing")
    msg = str(info.value)
    assert "no function 'missing' in project 'old' map_functions.py" in msg
    assert msg.endswith("functions there: f, h")


def test_missing_function_lists_the_available_ones(tmp_path):
    make_project(tmp_path, "wc")
    with pytest.raises(ProjectError) as info:
        functions.load_function(str(tmp_path), "wc", "reduce_functions", "sum_count")
    msg = str(info.value)
    assert "no function 'sum_count' in project 'wc' reduce_functions.py" in msg
    assert str(tmp_path / "wc" / "reduce_functions.py") in msg
    assert msg.endswith("functions there: max_count, sum_counts")
    with pytest.raises(ProjectError) as info:
        functions.load_function(str(tmp_path), "wc", "map_functions", "nope")
    assert str(info.value).endswith("functions there: upper_words, word_count")  # _private is not listed


def test_missing_project_names_it_and_lists_projects(tmp_path):
    make_project(tmp_path, "beta")
    make_project(tmp_path, "alpha")
    (tmp_path / "not_a_project.txt").write_text("")
    with pytest.raises(ProjectError) as info:
        functions.load_function(str(tmp_path), "gamma", "map_functions", "word_count")
    msg = str(info.value)
    assert "project 'gamma' not found" in msg
    assert str(tmp_path / "gamma") in msg
    assert msg.endswith("projects there: alpha, beta)")


def test_missing_projects_root(tmp_path):
    root = tmp_path / "nothing"
    with pytest.raises(ProjectError) as info:
        functions.project_dir(str(root), "wc")
    assert f"projects_dir is {root}; that folder has no projects" in str(info.value)


def test_missing_module_file(tmp_path):
    make_project(tmp_path, "half", reduce_src=None)
    with pytest.raises(ProjectError) as info:
        functions.load_job_functions(str(tmp_path), {"project_name": "half", "map_function_name": "word_count",
                                                     "reduce_function_name": "sum_counts"})
    assert str(info.value) == (f"project 'half' has no reduce_functions.py "
                               f"(looked for {tmp_path / 'half' / 'reduce_functions.py'})")


def test_import_error_names_the_file(tmp_path):
    make_project(tmp_path, "broken", map_src="def f(line, aux):\n    return [\n")
    with pytest.raises(ProjectError) as info:
        functions.load_module(str(tmp_path), "broken", "map_functions")
    assert f"importing {tmp_path / 'broken' / 'map_functions.py'} failed: SyntaxError" in str(info.value)


def test_combine_comes_from_reduce_functions(tmp_path):
    make_project(tmp_path, "wc")
    job = {"project_name": "wc", "map_function_name": "word_count", "reduce_function_name": "sum_counts",
           "combine_function_name": "max_count"}
    map_fn, combine_fn, reduce_fn = functions.load_job_functions(str(tmp_path), job)
    assert combine_fn([("a", 2), ("a", 5)], None) == [("a", 5)]
    assert reduce_fn([("a", 2), ("a", 5)], None) == [("a", 7)]
    job["combine_function_name"] = "word_count"  # a map function is not in reduce_functions.py
    with pytest.raises(ProjectError, match="no function 'word_count' in project 'wc' reduce_functions.py"):
        functions.load_job_functions(str(tmp_path), job)


def test_a_class_is_not_a_function(tmp_path):
    make_project(tmp_path, "cls", map_src="class Thing:\n    pass\n\ndef f(line, aux):\n    return []\n")
    with pytest.raises(ProjectError, match="functions there: f$"):
        functions.load_function(str(tmp_path), "cls", "map_functions", "Thing")


def test_project_helpers_are_importable_and_sys_path_is_restored(tmp_path):
    make_project(tmp_path, "helped", map_src="import helper_mod_x1\n\ndef f(line, aux):\n"
                                              "    return [(helper_mod_x1.PREFIX + line, 1)]\n",
                 helper_mod_x1="PREFIX = 'p:'\n")
    before = list(sys.path)
    try:
        fn = functions.load_function(str(tmp_path), "helped", "map_functions", "f")
        assert fn("x", None) == [("p:x", 1)]
        assert sys.path == before
    finally:
        sys.modules.pop("helper_mod_x1", None)


def test_modules_are_loaded_afresh(tmp_path):
    folder = make_project(tmp_path, "wc")
    first = functions.load_function(str(tmp_path), "wc", "map_functions", "word_count")
    (folder / "map_functions.py").write_text("def word_count(line, aux):\n    return [('changed', 1)]\n")
    second = functions.load_function(str(tmp_path), "wc", "map_functions", "word_count")
    assert first("a", None) == [("a", 1)]
    assert second("a", None) == [("changed", 1)]


def test_helpers_of_two_projects_do_not_collide(tmp_path):
    src = "import helpers_dup_zz\n\ndef f(line, aux):\n    return [(helpers_dup_zz.VALUE, 1)]\n"
    make_project(tmp_path, "one", map_src=src, helpers_dup_zz="VALUE = 'one'\n")
    make_project(tmp_path, "two", map_src=src, helpers_dup_zz="VALUE = 'two'\n")
    try:
        f1 = functions.load_function(str(tmp_path), "one", "map_functions", "f")
        f2 = functions.load_function(str(tmp_path), "two", "map_functions", "f")
        assert (f1("", None), f2("", None)) == ([("one", 1)], [("two", 1)])
    finally:
        sys.modules.pop("helpers_dup_zz", None)


def test_a_project_module_with_dataclasses_and_lazy_helper_imports_loads(tmp_path):
    project = tmp_path / "dc"
    project.mkdir()
    (project / "helper_for_dc.py").write_text("def double(x):\n    return 2 * x\n")
    (project / "map_functions.py").write_text(textwrap.dedent("""
        from __future__ import annotations
        from dataclasses import dataclass

        @dataclass
        class Point:
            x: int

        def mapper(line, auxiliary_data):
            import helper_for_dc  # imported when called, as some users write it
            return [(line.strip(), helper_for_dc.double(Point(1).x))]
    """))
    fn = functions.load_function(str(tmp_path), "dc", "map_functions", "mapper")
    assert fn  # the dataclass did not break the import
    worker_fn = functions.load_module(str(tmp_path), "dc", "map_functions", isolate=False).mapper
    try:
        assert worker_fn("a\n", None) == [("a", 2)]
    finally:
        sys.path.remove(str(project))
        sys.modules.pop("helper_for_dc", None)


def test_an_import_error_names_the_file_and_line(tmp_path):
    project = tmp_path / "broken"
    project.mkdir()
    (project / "map_functions.py").write_text("x = 1\ny = undefined_name\n")
    with pytest.raises(ProjectError, match=r"NameError.*map_functions.py:2"):
        functions.load_module(str(tmp_path), "broken", "map_functions")
