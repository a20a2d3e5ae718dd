"""Fixtures of the fault suite: a cluster on localhost (real redis-server, screen, RPyC over TLS)
that the tests break with real signals (the helpers are in fault_helpers.py)."""
from __future__ import annotations

import pytest
from cluster_helpers import MANAGE, Cluster, master_of


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("faults")
    with master_of(Cluster(root)) as c:
        c.cli(MANAGE, "start")
        yield c
