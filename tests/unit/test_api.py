"""The user API: lazy exports, and the one factory that chooses the executor."""
from __future__ import annotations

import subprocess
import sys

import pytest

import cluster
from cluster.api import executor_kind, make_executor
from cluster.config import ClusterConfig
from cluster.exceptions import ConfigError
from cluster.executors.cluster import ClusterExecutor
from cluster.executors.dask import DaskExecutor
from cluster.executors.local import LocalExecutor


def test_every_exported_name_resolves_and_import_cluster_loads_none_of_them():
    for name in cluster.__all__:
        assert getattr(cluster, name) is not None, name
    code = ("import sys, cluster; heavy = [m for m in ('cluster.config', 'cluster.job_spec', 'cluster.executors', "
            "'cluster.api', 'ujson', 'click') if m in sys.modules]; print(heavy)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "[]"
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        cluster.nope  # noqa: B018


def test_the_factory_picks_the_executor(tmp_path):
    config = ClusterConfig.from_dict({"compute_dir": str(tmp_path), "number_of_servers_per_location": 3})
    local = make_executor("local", config, servers=2)
    assert isinstance(local, LocalExecutor) and local.mappers == ["S_0", "S_1"]
    assert make_executor("local", config).mappers == ["S_0", "S_1", "S_2"]
    on_cluster = make_executor("cluster", config)
    assert isinstance(on_cluster, ClusterExecutor) and on_cluster.config is config
    assert on_cluster.server_ids == ["S_0", "S_1", "S_2"]
    with pytest.raises(ConfigError, match="are the local executor's"):
        make_executor("cluster", config, servers=2)
    with pytest.raises(ConfigError, match="unknown executor 'spark': one of local, cluster, dask"):
        make_executor("spark", config)
    on_dask = make_executor("dask", config, address="tcp://127.0.0.1:8786")
    assert isinstance(on_dask, DaskExecutor) and on_dask.address == "tcp://127.0.0.1:8786"
    with pytest.raises(ConfigError, match="needs a scheduler address"):
        make_executor("dask", config)
    named = config.with_overrides(dask_scheduler="tcp://10.0.0.5:8786")
    assert make_executor("dask", named).address == "tcp://10.0.0.5:8786"
    with pytest.raises(ConfigError, match="on Dask, every worker thread"):
        make_executor("dask", named, servers=2)


def test_which_executor_a_command_runs_on(tmp_path):
    config = ClusterConfig.from_dict({"compute_dir": str(tmp_path)})
    assert executor_kind(config) == "cluster"
    assert executor_kind(config, local=True) == "local"
    assert executor_kind(config, dask="local") == "dask"
    assert executor_kind(config.with_overrides(dask_scheduler="tcp://h:8786")) == "dask"
    assert executor_kind(config.with_overrides(dask_scheduler="tcp://h:8786"), local=True) == "local"
    with pytest.raises(ConfigError, match="exclude each other"):
        executor_kind(config, local=True, dask="local")
