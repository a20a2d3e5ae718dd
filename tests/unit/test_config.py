"""ClusterConfig: defaults, INI files, validation, derived folders, overrides."""
from __future__ import annotations

import os
import sys

import pytest

from cluster import defaults
from cluster.config import ClusterConfig, parse_size
from cluster.exceptions import ConfigError

DERIVED = {"base_dir": "data", "working_dir": "working", "logs_dir": "logs",
           "auxiliary_dir": "auxiliary", "code_dir": "code", "base_projects_dir": "projects"}


def write_cfg(path, body: str, section: str = "CLUSTER") -> str:
    path.write_text(f"[{section}]\n{body}\n")
    return str(path)


@pytest.fixture
def no_user_config(tmp_path, monkeypatch):
    """No $CLUSTER_CONFIG and no ~/.config file: `load()` must fall back to the defaults."""
    monkeypatch.delenv(defaults.CONFIG_ENV, raising=False)
    monkeypatch.setattr(defaults, "CONFIG_USER_PATH", str(tmp_path / "absent" / "cluster.cfg"))


# --- defaults ----------------------------------------------------------------------------
def test_defaults_describe_a_one_machine_cluster(tmp_path, monkeypatch, no_user_config):
    monkeypatch.chdir(tmp_path)
    cfg = ClusterConfig.load()
    assert cfg.source == "built-in defaults"
    assert cfg.cluster_name == "cluster"
    assert cfg.locations == ("localhost",)
    assert cfg.number_of_servers_per_location == 2
    assert (cfg.base_port, cfg.management_port, cfg.redis_port, cfg.ssh_port) == (45700, 45699, 46379, 22)
    assert cfg.redis_auth is None and cfg.ssh_user is None and cfg.ssh_key_file is None
    assert cfg.max_number_of_bytes_in_memory == 1024 ** 3
    assert cfg.poll_every == 1.0
    assert cfg.compute_dir == os.path.abspath(defaults.CONFIG_DEFAULTS["compute_dir"])
    for key, sub in DERIVED.items():
        assert getattr(cfg, key) == os.path.join(cfg.compute_dir, sub)
    # no projects_dir key: ./projects of the current folder
    assert cfg.projects_dir == str(tmp_path / "projects")
    assert cfg.server_ids() == ["S_0", "S_1"]


def test_config_keys_are_exactly_the_design_keys():
    assert list(defaults.CONFIG_DEFAULTS) == [
        "cluster_name", "locations", "number_of_servers_per_location", "base_port", "management_port",
        "redis_port", "redis_auth", "compute_dir", "base_dir", "working_dir", "logs_dir", "auxiliary_dir",
        "code_dir", "base_projects_dir", "local_working_dir", "projects_dir",
        "max_number_of_bytes_in_memory", "poll_every", "ssh_user", "ssh_key_file", "ssh_port",
        # added by the cluster runtime (issue 3): host-key checking and the locations' interpreter
        "ssh_check_host_keys", "python_executable",
        # added by the Runner (issue 4): where script jobs publish their output
        "publish_url", "s3_endpoint_url",
        # added by the dashboard (issue 6): its login password, kept on the master
        "dashboard_password",
        # added by the Dask executor (issue 15): the scheduler `mapreduce run` uses by default
        "dask_scheduler",
        # added by task attempts (issue 16): how often a server's part of a phase may run
        "max_task_attempts"]


# --- from_file ---------------------------------------------------------------------------
def test_from_file_reads_the_cluster_section(tmp_path):
    projects = tmp_path / "projects"
    projects.mkdir()
    path = write_cfg(tmp_path / "c.cfg", f"""
cluster_name = prod-1
locations = hostA, hostB ,hostC
number_of_servers_per_location = 4
base_port = 5000
redis_auth = s3cret
compute_dir = {tmp_path / 'compute'}
projects_dir = {projects}
max_number_of_bytes_in_memory = 512M
poll_every = 0.25
ssh_user = alice
""")
    cfg = ClusterConfig.from_file(path)
    assert cfg.source == path
    assert cfg.cluster_name == "prod-1"
    assert cfg.locations == ("hostA", "hostB", "hostC")
    assert cfg.number_of_servers_per_location == 4
    assert cfg.base_port == 5000
    assert cfg.redis_auth == "s3cret"
    assert cfg.ssh_user == "alice"
    assert cfg.max_number_of_bytes_in_memory == 512 * 1024 ** 2
    assert cfg.poll_every == 0.25
    assert cfg.projects_dir == str(projects)
    assert cfg.compute_dir == str(tmp_path / "compute")
    assert cfg.base_dir == str(tmp_path / "compute" / "data")


def test_unknown_key_is_an_error_naming_the_key(tmp_path):
    path = write_cfg(tmp_path / "c.cfg", "cluster_name = x\nnumber_of_server = 3\n")
    with pytest.raises(ConfigError) as info:
        ClusterConfig.from_file(path)
    msg = str(info.value)
    assert "unknown key 'number_of_server'" in msg
    assert path in msg


def test_every_problem_is_reported_at_once(tmp_path):
    path = write_cfg(tmp_path / "c.cfg", "base_port = abc\npoll_every = soon\nbogus = 1\n"
                                         "ssh_port = 0\n")
    with pytest.raises(ConfigError) as info:
        ClusterConfig.from_file(path)
    msg = str(info.value)
    assert "base_port must be a whole number, got 'abc'" in msg
    assert "poll_every must be a number of seconds, got 'soon'" in msg
    assert "unknown key 'bogus'" in msg
    assert "ssh_port must be a TCP port (1-65535), got 0" in msg
    assert msg.count("\n  - ") == 4


def test_bad_size_is_reported_once(tmp_path):
    path = write_cfg(tmp_path / "c.cfg", "max_number_of_bytes_in_memory = 12X\n")
    with pytest.raises(ConfigError) as info:
        ClusterConfig.from_file(path)
    assert "max_number_of_bytes_in_memory: not a size: '12X'" in str(info.value)


def test_bad_size_gives_no_spurious_minimum_problem(tmp_path):
    path = write_cfg(tmp_path / "c.cfg", "max_number_of_bytes_in_memory = 12X\n")
    with pytest.raises(ConfigError) as info:
        ClusterConfig.from_file(path)
    assert "at least 1M" not in str(info.value)


@pytest.mark.parametrize("body, fragment", [
    ("base_port = 70000", "base_port must be a TCP port (1-65535), got 70000"),
    ("number_of_servers_per_location = 0", "number_of_servers_per_location must be at least 1"),
    ("poll_every = 0", "poll_every must be more than 0 seconds"),
    ("max_number_of_bytes_in_memory = 1000", "max_number_of_bytes_in_memory must be at least 1M"),
    ("locations = a,b,a", "locations lists a host twice"),
    ("locations = ,", "locations must name at least one host"),
    ("cluster_name = bad name", "cluster_name must be letters"),
])
def test_bad_values_are_rejected(tmp_path, body, fragment):
    with pytest.raises(ConfigError) as info:
        ClusterConfig.from_file(write_cfg(tmp_path / "c.cfg", body))
    assert fragment in str(info.value)


def test_missing_file_no_section_and_extra_section(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        ClusterConfig.from_file(str(tmp_path / "nope.cfg"))
    with pytest.raises(ConfigError, match=r"no \[CLUSTER\] section"):
        ClusterConfig.from_file(write_cfg(tmp_path / "a.cfg", "cluster_name = x", section="cluster"))
    two = tmp_path / "b.cfg"
    two.write_text("[CLUSTER]\ncluster_name = x\n[EXTRA]\nk = v\n")
    with pytest.raises(ConfigError, match=r"unknown section\(s\) EXTRA"):
        ClusterConfig.from_file(str(two))


@pytest.mark.parametrize("text, expected", [
    ("1073741824", 1024 ** 3),
    ("512M", 512 * 1024 ** 2),
    ("512m", 512 * 1024 ** 2),
    ("1G", 1024 ** 3),
    ("1.5GiB", 3 * 1024 ** 3 // 2),
    ("64 KB", 64 * 1024),
    ("2T", 2 * 1024 ** 4),
    ("100b", 100),
])
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "M", "12X", "-5M", "1,5G", "1 G B"])
def test_parse_size_rejects(text):
    with pytest.raises(ValueError, match="not a size"):
        parse_size(text)


def test_size_suffix_in_file(tmp_path):
    cfg = ClusterConfig.from_file(write_cfg(tmp_path / "c.cfg", "max_number_of_bytes_in_memory = 1G"))
    assert cfg.max_number_of_bytes_in_memory == 1024 ** 3


def test_missing_projects_dir_is_an_error(tmp_path):
    missing = tmp_path / "no-such-projects"
    with pytest.raises(ConfigError) as info:
        ClusterConfig.from_file(write_cfg(tmp_path / "c.cfg", f"projects_dir = {missing}"))
    assert f"projects_dir {missing} is not a directory" in str(info.value)


def test_missing_ssh_key_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="ssh_key_file .*nokey does not exist"):
        ClusterConfig.from_file(write_cfg(tmp_path / "c.cfg", "ssh_key_file = nokey"))


def test_derived_dirs_follow_compute_dir_unless_given(tmp_path):
    cfg = ClusterConfig.from_file(write_cfg(tmp_path / "c.cfg", f"compute_dir = {tmp_path / 'cd'}\n"
                                                                f"logs_dir = {tmp_path / 'elsewhere'}"))
    for key, sub in DERIVED.items():
        expected = tmp_path / "elsewhere" if key == "logs_dir" else tmp_path / "cd" / sub
        assert getattr(cfg, key) == str(expected), key


def test_relative_paths_resolve_against_the_config_folder(tmp_path, monkeypatch):
    conf_dir = tmp_path / "etc"
    (conf_dir / "proj").mkdir(parents=True)
    (conf_dir / "keys").mkdir()
    (conf_dir / "keys" / "id").write_text("k")
    other = tmp_path / "cwd"
    other.mkdir()
    monkeypatch.chdir(other)
    cfg = ClusterConfig.from_file(write_cfg(conf_dir / "c.cfg", "compute_dir = compute\nprojects_dir = proj\n"
                                                               "local_working_dir = master\n"
                                                               "ssh_key_file = keys/id\n"
                                                               "working_dir = ../w"))
    assert cfg.compute_dir == str(conf_dir / "compute")
    assert cfg.base_dir == str(conf_dir / "compute" / "data")
    assert cfg.projects_dir == str(conf_dir / "proj")
    assert cfg.local_working_dir == str(conf_dir / "master")
    assert cfg.ssh_key_file == str(conf_dir / "keys" / "id")
    assert cfg.working_dir == str(tmp_path / "w")


def test_load_prefers_path_then_env_then_user_file(tmp_path, monkeypatch, no_user_config):
    env_cfg = write_cfg(tmp_path / "env.cfg", "cluster_name = from-env")
    arg_cfg = write_cfg(tmp_path / "arg.cfg", "cluster_name = from-arg")
    user_cfg = write_cfg(tmp_path / "user.cfg", "cluster_name = from-user")
    monkeypatch.setattr(defaults, "CONFIG_USER_PATH", user_cfg)
    assert ClusterConfig.load().cluster_name == "from-user"
    monkeypatch.setenv("CLUSTER_CONFIG", env_cfg)
    cfg = ClusterConfig.load()
    assert cfg.cluster_name == "from-env" and cfg.source == env_cfg
    assert ClusterConfig.load(arg_cfg).cluster_name == "from-arg"


def test_env_var_pointing_nowhere_is_an_error(tmp_path, monkeypatch, no_user_config):
    monkeypatch.setenv("CLUSTER_CONFIG", str(tmp_path / "missing.cfg"))
    with pytest.raises(ConfigError, match="missing.cfg does not exist"):
        ClusterConfig.load()


# --- derived facts -----------------------------------------------------------------------
def test_server_memory_budget_is_the_location_share(tmp_path):
    cfg = ClusterConfig.from_file(write_cfg(tmp_path / "c.cfg", "max_number_of_bytes_in_memory = 1G\n"
                                                               "number_of_servers_per_location = 3"))
    assert cfg.server_memory_budget == 1024 ** 3 // 3


def test_server_ids_span_every_location(tmp_path):
    cfg = ClusterConfig.from_file(write_cfg(tmp_path / "c.cfg", "locations = h1,h2\n"
                                                               "number_of_servers_per_location = 3"))
    assert cfg.server_ids() == ["S_0", "S_1", "S_2", "S_3", "S_4", "S_5"]


def test_with_overrides_rederives_dirs_and_keeps_explicit_ones(tmp_path):
    projects = tmp_path / "projects"
    projects.mkdir()
    cfg = ClusterConfig.from_file(write_cfg(tmp_path / "c.cfg", f"compute_dir = {tmp_path / 'old'}\n"
                                                               f"code_dir = {tmp_path / 'mycode'}\n"
                                                               f"projects_dir = {projects}"))
    new = cfg.with_overrides(compute_dir=str(tmp_path / "new"))
    assert new.compute_dir == str(tmp_path / "new")
    for key, sub in DERIVED.items():
        expected = tmp_path / "mycode" if key == "code_dir" else tmp_path / "new" / sub
        assert getattr(new, key) == str(expected), key
    assert cfg.base_dir == str(tmp_path / "old" / "data")  # the original is unchanged
    assert new.projects_dir == str(projects)
    assert new.source == cfg.source


def test_with_overrides_revalidates(tmp_path):
    projects = tmp_path / "projects"
    projects.mkdir()
    cfg = ClusterConfig.from_dict({"projects_dir": str(projects)})
    assert cfg.with_overrides(number_of_servers_per_location=5).number_of_servers_per_location == 5
    with pytest.raises(ConfigError, match="number_of_servers_per_location must be at least 1"):
        cfg.with_overrides(number_of_servers_per_location=0)


def test_with_overrides_on_a_config_without_projects_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no ./projects here
    cfg = ClusterConfig.from_dict({"compute_dir": str(tmp_path / "c")})
    new = cfg.with_overrides(number_of_servers_per_location=4)
    assert new.number_of_servers_per_location == 4
    assert cfg.with_overrides(compute_dir=str(tmp_path / "d")).base_dir == str(tmp_path / "d" / "data")


def test_to_values_round_trips(tmp_path):
    projects = tmp_path / "p"
    projects.mkdir()
    cfg = ClusterConfig.from_dict({"locations": "a,b", "projects_dir": str(projects),
                                   "compute_dir": str(tmp_path / "c"), "max_number_of_bytes_in_memory": "2G"})
    again = ClusterConfig.from_dict(cfg.to_values(), source=cfg.source)
    assert again == cfg


# --- cluster runtime keys and facts ----------------------------------------------------------
def test_servers_are_numbered_location_by_location_with_their_ports():
    cfg = ClusterConfig.from_dict({"locations": "a, b", "number_of_servers_per_location": 3, "base_port": 5000})
    assert cfg.servers_by_location() == {"a": ["S_0", "S_1", "S_2"], "b": ["S_3", "S_4", "S_5"]}
    assert [cfg.location_of(s) for s in ("S_0", "S_2", "S_3", "S_5")] == ["a", "a", "b", "b"]
    assert cfg.server_port("S_4") == 5004


def test_host_key_checking_is_on_unless_the_config_says_no():
    assert ClusterConfig.from_dict({}).ssh_check_host_keys is True
    assert ClusterConfig.from_dict({"ssh_check_host_keys": "no"}).ssh_check_host_keys is False
    with pytest.raises(ConfigError, match="ssh_check_host_keys must be yes or no, got 'maybe'"):
        ClusterConfig.from_dict({"ssh_check_host_keys": "maybe"})


def test_the_locations_python_defaults_to_the_masters():
    assert ClusterConfig.from_dict({}).python_executable == sys.executable
    chosen = ClusterConfig.from_dict({"python_executable": "/opt/py/bin/python3"})
    assert chosen.python_executable == "/opt/py/bin/python3"


def test_the_ini_a_location_gets_reads_back_to_the_same_config(tmp_path):
    cfg = ClusterConfig.from_dict({"locations": "h1,h2", "ssh_check_host_keys": "no", "redis_auth": "",
                                   "compute_dir": str(tmp_path / "c")})
    path = tmp_path / "cluster.cfg"
    path.write_text(cfg.to_ini())
    back = ClusterConfig.from_file(str(path), check_dirs=False)
    assert back.to_values() == cfg.to_values()


def test_the_dashboard_password_stays_on_the_master_and_out_of_reprs(tmp_path):
    cfg = ClusterConfig.from_dict({"dashboard_password": "s3cret pass", "compute_dir": str(tmp_path / "c")})
    assert cfg.dashboard_password == "s3cret pass"
    assert "s3cret" not in repr(cfg) and "s3cret" not in cfg.to_ini()  # the locations never get it
    assert ClusterConfig.from_dict({"dashboard_password": " "}).dashboard_password is None


def test_publish_url_is_a_folder_or_an_s3_url(tmp_path):
    cfg = ClusterConfig.from_dict({"local_working_dir": str(tmp_path / "m")})
    assert cfg.publish_url == str(tmp_path / "m" / "published") and cfg.s3_endpoint_url is None
    moved = cfg.with_overrides(local_working_dir=str(tmp_path / "n"))
    assert moved.publish_url == str(tmp_path / "n" / "published")  # the default follows local_working_dir
    assert ClusterConfig.from_dict({"publish_url": "file:///srv/pub"}).publish_url == "/srv/pub"
    s3 = ClusterConfig.from_dict({"publish_url": "s3://team-reports/daily", "s3_endpoint_url": "http://minio:9000"})
    assert s3.publish_url == "s3://team-reports/daily" and s3.s3_endpoint_url == "http://minio:9000"
    for bad in ("http://example.com/x", "s3://Bad_Bucket/x", "s3://"):
        with pytest.raises(ConfigError, match="publish_url"):
            ClusterConfig.from_dict({"publish_url": bad})
