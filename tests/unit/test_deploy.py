"""Deploying to a location: the interpreter check, the code digest, the whole-folder push."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from cluster.config import ClusterConfig
from cluster.exceptions import ClusterError, DeployError
from cluster.master import deploy
from cluster.master.manager import ClusterManager
from cluster.master.remote import LocalRemote
from cluster.node import location


def fake_python(tmp_path: Path, body: str) -> str:
    path = tmp_path / "python"
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)
    return str(path)


def config_with(python: str, tmp_path: Path) -> ClusterConfig:
    return ClusterConfig.from_dict({"python_executable": python, "compute_dir": str(tmp_path / "c")})


def test_the_masters_own_interpreter_passes():
    deploy.check_python(LocalRemote(), config_with(sys.executable, Path("/tmp")))


def test_a_missing_interpreter_is_refused_with_the_fix(tmp_path):
    with pytest.raises(DeployError, match=r"localhost has no Python at /nowhere/python: install the project"):
        deploy.check_python(LocalRemote(), config_with("/nowhere/python", tmp_path))


def test_another_python_version_is_refused(tmp_path):
    py = fake_python(tmp_path, 'echo "2.7"')
    with pytest.raises(DeployError) as err:
        deploy.check_python(LocalRemote(), config_with(py, tmp_path))
    want = f"{sys.version_info[0]}.{sys.version_info[1]}"
    assert f"runs Python 2.7 at {py}, the master runs {want}" in str(err.value)


def test_missing_packages_are_named(tmp_path):
    want = f"{sys.version_info[0]}.{sys.version_info[1]}"
    py = fake_python(tmp_path, f'echo "{want}"; echo "ModuleNotFoundError: No module named \'rpyc\'" >&2; exit 1')
    with pytest.raises(DeployError, match=r"lacks packages the servers need \(ModuleNotFoundError: No module "
                                          r"named 'rpyc'\); run init/install.sh"):
        deploy.check_python(LocalRemote(), config_with(py, tmp_path))


def test_the_code_digest_follows_the_sources(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "a.py").write_text("x = 1\n")
    first = location.code_digest(str(pkg))
    (pkg / "notes.txt").write_text("not code")
    assert location.code_digest(str(pkg)) == first
    (pkg / "a.py").write_text("x = 2\n")
    second = location.code_digest(str(pkg))
    assert second != first
    (pkg / "engine").mkdir()
    (pkg / "engine" / "b.py").write_text("y = 1\n")  # a subpackage's sources count too
    third = location.code_digest(str(pkg))
    assert third != second
    (pkg / "engine" / "b.py").write_text("y = 2\n")
    fourth = location.code_digest(str(pkg))
    assert fourth != third
    (pkg / "engine" / "__pycache__").mkdir()
    (pkg / "engine" / "__pycache__" / "c.py").write_text("cache")
    assert location.code_digest(str(pkg)) == fourth
    assert location.code_digest() == location.code_digest(location.package_dir())


def test_push_tree_replaces_the_whole_folder_without_caches(tmp_path):
    src = tmp_path / "src"
    (src / "sub" / "__pycache__").mkdir(parents=True)
    (src / "sub" / "m.py").write_text("print(1)\n")
    (src / "sub" / "__pycache__" / "m.cpython-311.pyc").write_bytes(b"\0")
    (src / ".git").mkdir()
    dest = tmp_path / "dest" / "code"
    dest.mkdir(parents=True)
    (dest / "stale.py").write_text("old")  # a folder pushed before versions: replaced by the link
    assert deploy.push_tree(LocalRemote(), str(src), str(dest)) is True
    found = sorted(str(p.relative_to(dest)) for p in dest.rglob("*"))
    assert found == ["sub", "sub/m.py"]
    assert dest.is_symlink()
    assert sorted(os.listdir(dest.parent)) == ["code", "code.versions"]  # no .new/.old/.tar.gz beside it
    assert os.listdir(dest.parent / "code.versions") == [location.folder_digest(str(src))]


def test_a_push_of_sources_the_location_has_sends_nothing_and_old_versions_go(tmp_path):
    src, dest = tmp_path / "src", tmp_path / "dest" / "proj"
    src.mkdir()
    (src / "m.py").write_text("v = 0\n")
    assert deploy.push_tree(LocalRemote(), str(src), str(dest)) is True
    assert deploy.push_tree(LocalRemote(), str(src), str(dest)) is False
    for v in range(1, deploy.VERSIONS_KEPT + 3):
        (src / "m.py").write_text(f"v = {v}\n")
        assert deploy.push_tree(LocalRemote(), str(src), str(dest)) is True
        assert (dest / "m.py").read_text() == f"v = {v}\n"
    assert len(os.listdir(str(dest) + ".versions")) == deploy.VERSIONS_KEPT


def test_pushes_at_the_same_moment_never_collide(tmp_path):
    """Two runs of jobs in one project push it at once (a raw `tar` error before): each push succeeds
    and the folder is always one whole version."""
    import threading

    dest = tmp_path / "dest" / "proj"
    sources = []
    for i in range(6):
        src = tmp_path / f"src{i % 3}"
        src.mkdir(exist_ok=True)
        for j in range(30):
            (src / f"m{j}.py").write_text(f"v = {i % 3}\n" * 200)
        sources.append(src)
    errors: list = []

    def push(src) -> None:
        try:
            deploy.push_tree(LocalRemote(), str(src), str(dest))
        except Exception as exc:  # noqa: BLE001 - the test reports it
            errors.append(exc)
    threads = [threading.Thread(target=push, args=(s,)) for s in sources]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    values = {(dest / f"m{j}.py").read_text() for j in range(30)}
    assert len(values) == 1, "the pushed folder mixes versions"
    assert not [n for n in os.listdir(dest.parent) if n not in ("proj", "proj.versions")]


def test_attach_runs_screen_here_or_through_ssh(tmp_path):
    key = tmp_path / "key"
    key.write_text("k")
    local = ClusterManager(ClusterConfig.from_dict({"cluster_name": "an", "number_of_servers_per_location": 2}))
    assert local.attach_command("S_1") == ["screen", "-r", "an_S_1"]
    remote = ClusterManager(ClusterConfig.from_dict({
        "cluster_name": "an", "locations": "localhost,10.1.2.3", "number_of_servers_per_location": 2,
        "ssh_user": "cl", "ssh_port": 2222, "ssh_key_file": str(key)}))
    assert remote.attach_command("S_3") == ["ssh", "-t", "-p", "2222", "-i", str(key), "cl@10.1.2.3",
                                            "screen -r an_S_3"]
    with pytest.raises(ClusterError, match="no server S_9 in cluster 'an'; its servers are S_0, S_1, S_2, S_3"):
        remote.attach_command("S_9")
