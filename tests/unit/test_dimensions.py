"""Dimensions filters: parsing with every problem named, matching, and the pruned walk."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from cluster.engine.partitions import DimensionsFilter, dimensions_from_path, local_lister, select_local_files
from cluster.exceptions import FilterError

NAMES = ["reason", "appName", "channel", "version", "build", "date"]


def spec(**allowed) -> dict:
    return {"version": 1, "dimensions": [{"field_name": n, "allowed_values": allowed.get(n, "*")} for n in NAMES]}


def make_tree(root: Path) -> list[str]:
    paths = []
    for reason in ("saved-session", "idle-daily"):
        for app in ("Firefox", "Fennec"):
            for channel in ("release", "beta", "nightly"):
                for version in ("28.0", "29.0"):
                    for build, date in (("20140301000000", "20140301"), ("20140302000000", "20140303")):
                        rel = f"{reason}/{app}/{channel}/{version}/{build}.{date}.v1.log"
                        (root / rel).parent.mkdir(parents=True, exist_ok=True)
                        (root / rel).write_text("x\t{}\n")
                        paths.append(rel)
    (root / "saved-session" / "Firefox" / "release" / "28.0" / "notlayout.log").write_text("")  # one dot
    (root / "saved-session" / "Firefox" / "release" / "28.0" / ".hidden.20140301.v1.log").write_text("")
    (root / "saved-session" / "Firefox" / "release" / "extra.20140301.v1.log").write_text("")  # wrong depth
    return sorted(paths)


def selected(root: Path, s: dict) -> list[str]:
    return [str(Path(p).relative_to(root)) for p, _ in select_local_files(str(root), DimensionsFilter(s))]


def test_star_selects_every_file_of_the_layout_and_nothing_else(tmp_path):
    every = make_tree(tmp_path)
    assert selected(tmp_path, spec()) == every


@pytest.mark.parametrize("allowed, keep", [
    ({"channel": "beta"}, lambda d: d[2] == "beta"),
    ({"channel": ["beta", "nightly"], "app": "x"}, lambda d: d[2] in ("beta", "nightly")),
    ({"date": {"min": "20140302"}}, lambda d: d[5] >= "20140302"),
    ({"date": {"max": "20140301"}}, lambda d: d[5] <= "20140301"),
    ({"version": {"min": "28.5", "max": "29.0"}, "reason": "idle-daily"},
     lambda d: d[3] == "29.0" and d[0] == "idle-daily"),
    ({"build": 20140301000000}, lambda d: d[4] == "20140301000000"),
])
def test_each_kind_of_allowed_values(tmp_path, allowed, keep):
    every = make_tree(tmp_path)
    allowed.pop("app", None)
    want = [p for p in every if keep(dimensions_from_path(p, 6))]
    assert want and selected(tmp_path, spec(**allowed)) == want


def test_the_walk_lists_only_folders_that_can_match(tmp_path):
    make_tree(tmp_path)
    listed = []
    inner = local_lister(str(tmp_path))

    def lister(prefix):
        listed.append(prefix)
        return inner(prefix)

    f = DimensionsFilter(spec(reason="idle-daily", channel=["beta"], version={"min": "29"}))
    found = [rel for rel, _, _ in f.walk(lister)]
    assert len(found) == 4 and all(r.startswith("idle-daily/") and "/beta/29.0/" in r for r in found)
    # named values are visited without listing their parent; ranges list one folder each
    assert "" not in listed and "idle-daily" in listed
    assert not any(p.startswith("saved-session") for p in listed)
    assert not any("/release" in p or "/28.0" in p for p in listed)


def test_dimensions_from_path():
    assert dimensions_from_path("a/b/c.d.e.log", 4) == ["a", "b", "c", "d"]
    assert dimensions_from_path("a/b/c.d.e.log") == ["a", "b", "c", "d"]
    assert dimensions_from_path("a/b/c.d.e.log", 5) is None
    assert dimensions_from_path("a/b/cd.log", 4) is None


def test_every_problem_of_a_filter_is_named():
    bad = {"version": 2, "extra": 1, "dimensions": [
        {"field_name": "a", "allowed_values": ["x", 1.5]},
        {"field_name": "", "allowed_values": "*"},
        {"field_name": "c"},
        {"field_name": "d", "allowed_values": {"min": "b", "max": "a"}},
        {"field_name": "e", "allowed_values": {"from": "a"}},
        {"field_name": "f", "allowed_values": True}]}
    with pytest.raises(FilterError) as err:
        DimensionsFilter(bad, source="f.json")
    text = str(err.value)
    for needle in ("f.json", "'extra'", "version must be 1", "dimension 1 (a)", "dimension 2",
                   "dimension 3 (c): allowed_values is missing", "min 'b' is above max 'a'", "dimension 5 (e)",
                   "dimension 6 (f)"):
        assert needle in text, needle


def test_load_names_the_file(tmp_path):
    with pytest.raises(FilterError, match="not found"):
        DimensionsFilter.load(str(tmp_path / "none.json"))
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(FilterError, match="bad.json is not valid JSON"):
        DimensionsFilter.load(str(tmp_path / "bad.json"))
    (tmp_path / "ok.json").write_text(json.dumps(spec()))
    assert DimensionsFilter.load(str(tmp_path / "ok.json")).field_names == NAMES


def test_a_missing_data_dir_is_an_error(tmp_path):
    with pytest.raises(FilterError, match="not found"):
        select_local_files(str(tmp_path / "nope"), DimensionsFilter(spec()))


def test_a_filter_shallower_than_the_layout_selects_nothing_and_says_why(tmp_path, caplog):
    make_tree(tmp_path)
    short = {"version": 1, "dimensions": [{"field_name": n, "allowed_values": "*"} for n in NAMES[:4]]}
    assert selected(tmp_path, short) == []
    assert "the layout has more levels than the filter has dimensions" in caplog.text
