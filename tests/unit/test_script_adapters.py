"""Job script adapters: the contexts' contracts, without workers."""
from __future__ import annotations

import decimal
import types

import pytest

from cluster.cli.preflight import check_master
from cluster.config import ClusterConfig
from cluster.engine.inputs import plan_inputs
from cluster.exceptions import BadRecord, FilterError, JobScriptError, NotSerializable, UnhashableKey
from cluster.job_spec import get_mapreduce_job_template, validate_job
from cluster.layout import JobLayout
from cluster.telemetry.adapters import (
    CombiningMapContext,
    JobScript,
    MapContext,
    ScriptCombine,
    ScriptMap,
    ScriptReduce,
    engine_functions,
)


def module(**functions) -> types.ModuleType:
    mod = types.ModuleType("script")
    mod.__file__ = "/scripts/script.py"
    for name, fn in functions.items():
        setattr(mod, name, fn)
    return mod


def total(key, values, context):
    context.write(key, sum(values))


def test_combine_runs_whenever_a_key_holds_more_than_the_threshold():
    calls = []

    def combine(key, values, context):
        calls.append(len(values))
        context.write(key, sum(values))

    ctx = CombiningMapContext(combine, threshold=3, max_held=10 ** 6)
    for _ in range(10):
        ctx.write("k", 1)
    ctx.write("other", 5)
    assert calls == [4, 4, 4]  # 4 > 3 values -> one; then that one + 3 new -> one again...
    assert ctx.counters == {"combine_calls": 3, "combine_items_in": 12, "combine_items_out": 3}
    assert ctx.take() is None  # holds little: nothing handed over before the end
    assert sorted(ctx.take(final=True)) == [("k", 10), ("other", 5)]
    assert ctx.take(final=True) is None


def test_a_combining_context_hands_over_what_it_holds_past_its_limit():
    ctx = CombiningMapContext(total, threshold=50, max_held=5)
    for i in range(4):
        ctx.write(i, i)
    assert ctx.take() is None
    ctx.write(4, 4)
    assert sorted(ctx.take()) == [(i, i) for i in range(5)]


def test_combine_must_write_one_value_under_its_key():
    def renames(key, values, context):
        context.write(str(key) + "!", sum(values))

    ctx = CombiningMapContext(renames, threshold=1)
    ctx.write("k", 1)
    with pytest.raises(JobScriptError, match="exactly one value under the key"):
        ctx.write("k", 1)

    def raises(key, values, context):
        raise ValueError("boom")

    ctx = CombiningMapContext(raises, threshold=1)
    ctx.write("k", 1)
    with pytest.raises(JobScriptError, match="combine raised ValueError: boom") as err:
        ctx.write("k", 1)
    assert not isinstance(err.value, ValueError)  # never mistaken for a bad line


@pytest.mark.parametrize("context", [MapContext(), CombiningMapContext(total, 50)])
def test_values_marshal_cannot_carry_are_refused_with_their_type(context):
    context.write(("a", 1), {"x": [1, 2.5, None]})  # containers of plain values are fine
    with pytest.raises(NotSerializable, match="value .* is a decimal.Decimal"):
        context.write("k", decimal.Decimal("1.5"))
    with pytest.raises(NotSerializable, match="holds a decimal.Decimal"):
        context.write("k", [1, decimal.Decimal("1.5")])
    with pytest.raises(NotSerializable, match="key .* is an object"):
        context.write(object(), 1)
    with pytest.raises(UnhashableKey, match="unhashable"):
        context.write(["a", "list"], 1)


def test_written_containers_are_copies_and_combine_output_is_checked():
    ctx = MapContext()
    shared = [1]
    ctx.write("a", shared)
    shared.append(2)
    assert ctx.take() == [("a", [1])]

    def bad_combine(key, values, context):
        context.write(key, decimal.Decimal(1))

    ctx = CombiningMapContext(bad_combine, threshold=1)
    ctx.write("k", 1)
    with pytest.raises(NotSerializable, match=r"combine \(key 'k'\): the value"):
        ctx.write("k", 1)


def test_map_lines_split_key_and_value_and_count_value_errors_as_bad():
    seen = []

    def map_(key, dimensions, value, context):
        seen.append((key, dimensions, value))
        if value == "bad":
            raise ValueError("no JSON")
        context.write(key, 1)

    fn = ScriptMap(JobScript(module(map=map_)), ["/data"], None, None, 50)
    line = fn.for_file("/data/a/b/c.d.log")
    line("id1\t{\"x\": 1}\r\n", None)
    assert seen[-1] == ("id1", ["a", "b", "c", "d"], "{\"x\": 1}")
    with pytest.raises(BadRecord, match="no tab"):
        line("no tab here\n", None)
    with pytest.raises(BadRecord, match="ValueError: no JSON"):
        line("id2\tbad\n", None)
    assert fn.take() == [("id1", 1)]
    with pytest.raises(JobScriptError, match="not laid out"):
        fn.for_file("/data/flat")


def test_reduce_context_formats_records():
    def setup(context):
        context.field_separator = ","
        context.record_separator = "\r\n"

    def reduce_(key, values, context):
        context.write(key, sum(values))
        context.writecsv([key, "a,b", 'say "hi"'])
        context.writeline("plain")

    def header(context):
        setup(context)
        context.writeline("key,total")

    fn = ScriptReduce(JobScript(module(map=lambda k, d, v, c: None, reduce=reduce_, setup_reduce=header)))
    assert fn([("k", 1), ("k", 2)], None) == ["key,total\r\n", "k,3\r\n", 'k,"a,b","say ""hi"""\r\n',
                                              "plain\r\n"]
    assert fn([("j", 5)], None)[0] == "j,5\r\n"  # setup once, before the first reduce
    map_only = ScriptReduce(JobScript(module(map=lambda k, d, v, c: None)))
    assert map_only(iter([(("t", 1), "a"), (("t", 1), "b")]), None) == ["('t', 1)\ta\n", "('t', 1)\tb\n"]


def test_the_script_api_is_checked():
    with pytest.raises(JobScriptError, match="has no map function"):
        JobScript(module(reduce=total))
    with pytest.raises(JobScriptError, match=r"map must take 4 argument\(s\)"):
        JobScript(module(map=lambda key, value: None))
    with pytest.raises(JobScriptError, match="reduce must be a function"):
        JobScript(module(map=lambda k, d, v, c: None, reduce=3))


def test_engine_functions_follow_the_job():
    job = get_mapreduce_job_template()
    job.update(job_name="j", project_name="p", input_dirs=["/d"], map_function_name="map",
               reduce_function_name="reduce", job_script="s.py", combine_function_name="combine",
               input_filter={"version": 1, "dimensions": [{"field_name": "a", "allowed_values": "*"},
                                                          {"field_name": "b", "allowed_values": "*"}]})
    validate_job(job)
    map_fn, combine_fn, reduce_fn = engine_functions(module(map=lambda k, d, v, c: None, combine=total,
                                                            reduce=total), job)
    assert isinstance(combine_fn, ScriptCombine) and combine_fn([("k", 2), ("k", 3)], None) == [("k", 5)]
    assert map_fn.count == 2 and map_fn.context.threshold == 50
    with pytest.raises(JobScriptError, match="defines no combine"):
        engine_functions(module(map=lambda k, d, v, c: None), job)
    with pytest.raises(JobScriptError, match="combine but no reduce"):
        engine_functions(module(map=lambda k, d, v, c: None, combine=total), job)


def test_job_script_keys_are_validated(tmp_path):
    job = get_mapreduce_job_template()
    job.update(job_name="j", project_name="p", input_dirs=["/d"], map_function_name="map",
               reduce_function_name="reduce", job_script="../x.py", combine_threshold=0,
               input_filter={"version": 1})
    with pytest.raises(Exception) as err:
        validate_job(job)
    text = str(err.value)
    assert "job_script '../x.py'" in text and "combine_threshold must be at least 1" in text
    # a filter is checked in depth where it is read: `mapreduce validate`, and the planner
    job.update(job_script="x.py", combine_threshold=None)
    problems = check_master(validate_job(job), ClusterConfig.from_dict({"projects_dir": str(tmp_path),
                                                                         "compute_dir": str(tmp_path)}))
    assert any("input_filter is not a valid dimensions filter" in p for p in problems), problems
    with pytest.raises(FilterError, match="input_filter is not a valid dimensions filter"):  # the planner
        plan_inputs(validate_job(job), ["S_0"], JobLayout(str(tmp_path), str(tmp_path), "j"))


def test_loading_a_job_script_project_again_and_again_keeps_sys_path_as_it_was(tmp_path):
    import sys

    from cluster.engine import functions
    from cluster.telemetry.adapters import write_project

    script = tmp_path / "s.py"
    script.write_text("def map(key, dims, value, context):\n    context.write(key, 1)\n\n"
                      "def reduce(key, values, context):\n    context.write(key, len(values))\n")
    project = tmp_path / "projects" / "s"
    project.mkdir(parents=True)
    write_project(str(project), str(script), "s")
    job = get_mapreduce_job_template()
    job.update(job_name="s", project_name="s", input_dirs=[str(tmp_path)], map_function_name="map",
               reduce_function_name="reduce", job_script="s.py")
    before = list(sys.path)
    for _ in range(3):
        map_fn, combine_fn, reduce_fn = functions.load_job_functions(str(tmp_path / "projects"), job)
        assert type(map_fn).__name__ == "ScriptMap" and combine_fn is None and reduce_fn.writes_text
        assert map_fn.script.map.__module__ == reduce_fn.reduce.__module__, "one module for map and reduce"
    assert [p for p in sys.path if p not in before] in ([], [str(project)])  # at most the project, once


def test_a_job_script_changed_within_one_mtime_is_loaded_afresh(tmp_path):
    """A new version of a script with the old one's mtime (one clock tick, `cp -p`, `rsync -t`) must not
    run the old version's functions: a long-lived worker keeps the script it loaded."""
    import os

    from cluster.telemetry.adapters import load_script, write_project

    project = tmp_path / "projects" / "s"
    project.mkdir(parents=True)
    script = tmp_path / "s.py"
    first_mtime = None
    for version in (1, 2):
        script.write_text(f"VERSION = {version}\n\ndef map(key, dims, value, context):\n    context.write(key, 1)\n")
        write_project(str(project), str(script), "s")
        if first_mtime is None:
            first_mtime = os.stat(project / "s.py").st_mtime_ns
        else:
            os.utime(project / "s.py", ns=(first_mtime, first_mtime))  # the first version's, to the nanosecond
        assert load_script(str(project / "map_functions.py"), "s").VERSION == version
