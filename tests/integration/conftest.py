"""Fixtures of the end-to-end tests: configs in tmp_path, sample data in session temp dirs."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from integration_helpers import EXAMPLE_PROJECTS, TEST_PROJECTS, free_port, make_config

from cluster import sample_data
from cluster.config import ClusterConfig


@pytest.fixture
def config(tmp_path: Path) -> ClusterConfig:
    """A config whose projects_dir holds the tests' `testjobs` project."""
    return make_config(tmp_path / "compute", TEST_PROJECTS)


@pytest.fixture
def wc_config(tmp_path: Path) -> ClusterConfig:
    """A config whose projects_dir is the repository's example projects (word_count, telemetry)."""
    return make_config(tmp_path / "compute", EXAMPLE_PROJECTS)


@pytest.fixture(scope="session")
def words_plain(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """~1 MB of words in 4 plain files: (input dir, expected)."""
    out = tmp_path_factory.mktemp("words_plain")
    expected = sample_data.generate("words", str(out), size_mb=1, files=4, seed=11)
    return out / "input", expected


@pytest.fixture(scope="session")
def words_gz(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """~1 MB of words in 4 files, every 2nd gzipped: (input dir, expected)."""
    out = tmp_path_factory.mktemp("words_gz")
    expected = sample_data.generate("words", str(out), size_mb=1, files=4, gzip_every=2, seed=12)
    return out / "input", expected


@pytest.fixture
def copy_words(tmp_path: Path, words_plain):
    """A private copy of the plain words input (for tests that add or damage files)."""
    def copy(name: str = "input") -> Path:
        dest = tmp_path / name
        shutil.copytree(words_plain[0], dest)
        return dest
    return copy


@pytest.fixture
def s3_server(monkeypatch):
    """moto's S3 in server mode on a free port, reached over real HTTP."""
    from moto.server import ThreadedMotoServer

    for key, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                       ("AWS_DEFAULT_REGION", "us-east-1")):
        monkeypatch.setenv(key, value)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()
