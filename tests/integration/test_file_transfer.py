"""File transfers to a local location: reload and delete semantics, and no half file at the
destination when a copy is damaged or breaks off (the SSH path runs in tests/multihost)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from integration_helpers import make_config

from cluster.exceptions import TransferError
from cluster.master.remote import LocalRemote
from cluster.scheduling import file_transfer
from cluster.scheduling.file_transfer import FileTransfer


@pytest.fixture
def cfg(tmp_path):
    return make_config(tmp_path / "compute")


@pytest.fixture
def source(tmp_path) -> Path:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    for i in range(3):
        (src / f"f{i}.bin").write_bytes(os.urandom(50_000 + i))
    (src / "sub" / "g.txt").write_text("g\n")
    (src / ".hidden").write_text("not sent")
    return src


def visible(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_upload_skips_what_is_there_unless_reload_and_delete_files_moves(cfg, source):
    t = FileTransfer(cfg)
    dest = Path(cfg.base_dir) / "in"
    assert t.upload(str(source), "in")["files"] == 4
    assert visible(dest) == {k: v for k, v in visible(source).items() if k != ".hidden"}
    (source / "f0.bin").write_bytes(b"changed")
    assert t.upload(str(source), "in")["files_skipped"] == 4
    assert (dest / "f0.bin").read_bytes() != b"changed"
    again = t.upload(str(source), "in", reload_files=True, delete_files=True)
    assert again["files"] == 4 and again["files_deleted"] == 4
    assert (dest / "f0.bin").read_bytes() == b"changed"
    assert sorted(p.name for p in source.rglob("*") if p.is_file()) == [".hidden"]


def test_relative_master_paths_are_under_local_working_dir(cfg, source):
    FileTransfer(cfg).upload(str(source), "in")
    got = FileTransfer(cfg).download("in", "back", bulk=True, compress=True)
    assert got["files"] == 4
    assert visible(Path(cfg.local_working_dir) / "back") == visible(Path(cfg.base_dir) / "in")


class Damaging(LocalRemote):
    """A location whose copies arrive damaged (the middle byte flipped), or break off halfway."""

    def __init__(self, host: str, mode: str):
        super().__init__(host)
        self.mode = mode

    def put(self, local_path: str, remote_path: str, timeout: float = 60.0) -> None:
        data = Path(local_path).read_bytes()
        if self.mode == "break":
            Path(remote_path).write_bytes(data[: len(data) // 2])
            raise OSError("connection reset")
        mid = len(data) // 2
        Path(remote_path).write_bytes(data[:mid] + bytes([data[mid] ^ 1]) + data[mid + 1:])


@pytest.mark.parametrize("mode", ["damage", "break"])
@pytest.mark.parametrize("bulk", [False, True])
def test_a_damaged_or_broken_copy_leaves_no_file_at_the_destination(cfg, source, monkeypatch, mode, bulk):
    monkeypatch.setattr(file_transfer, "remote_for", lambda config, host: Damaging(host, mode))
    dest = Path(cfg.base_dir) / "in"
    dest.mkdir(parents=True)
    (dest / "old.txt").write_text("kept")
    with pytest.raises(Exception) as caught:
        FileTransfer(cfg).upload(str(source), "in", bulk=bulk)
    if mode == "damage":
        assert isinstance(caught.value, TransferError) and "another checksum" in str(caught.value)
    assert sorted(p.name for p in dest.rglob("*") if p.is_file()) == ["old.txt"], "a half or temporary file was left"


def test_a_download_whose_source_is_missing_everywhere_says_so(cfg):
    with pytest.raises(TransferError, match="no location has the folder"):
        FileTransfer(cfg).download("never-written", "x")


def test_delete_refuses_the_cluster_folders_and_their_parents(cfg, tmp_path):
    for folder in (cfg.base_dir, cfg.compute_dir, str(tmp_path), "/"):
        with pytest.raises(TransferError, match="refusing to delete"):
            FileTransfer(cfg).delete(folder)
