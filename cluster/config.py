"""ClusterConfig: one object, read from an INI file, passed explicitly to every part."""
from __future__ import annotations

import configparser
import os
import re
import sys
from dataclasses import dataclass, field, fields
from typing import Any

from cluster import defaults
from cluster.exceptions import ConfigError

_INT_KEYS = ("number_of_servers_per_location", "base_port", "management_port", "redis_port", "ssh_port",
             "max_task_attempts")
_SIZE_KEYS = ("max_number_of_bytes_in_memory",)
_FLOAT_KEYS = ("poll_every",)
_DERIVED_DIRS = {
    "base_dir": "data", "working_dir": "working", "logs_dir": "logs",
    "auxiliary_dir": "auxiliary", "code_dir": "code", "base_projects_dir": "projects",
}
MASTER_ONLY_KEYS = ("dashboard_password",)  # secrets of the master that the locations never get
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024 ** 2, "g": 1024 ** 3, "t": 1024 ** 4}


def parse_size(text: str) -> int:
    """Parse '1073741824', '512M', '1.5GiB' into bytes."""
    m = _SIZE_RE.match(str(text))
    if not m:
        raise ValueError(f"not a size: {text!r} (use bytes, or a number with K, M, G or T)")
    unit = (m.group(2) or "").lower()[:1]
    return int(float(m.group(1)) * _SIZE_UNITS[unit])


@dataclass(frozen=True)
class ClusterConfig:
    """The whole configuration of one cluster; build it with `load`, `from_file` or `from_dict`."""

    cluster_name: str
    locations: tuple[str, ...]
    number_of_servers_per_location: int
    base_port: int
    management_port: int
    redis_port: int
    redis_auth: str | None
    compute_dir: str
    base_dir: str
    working_dir: str
    logs_dir: str
    auxiliary_dir: str
    code_dir: str
    base_projects_dir: str
    local_working_dir: str
    projects_dir: str
    max_number_of_bytes_in_memory: int
    poll_every: float
    ssh_user: str | None
    ssh_key_file: str | None
    ssh_port: int
    ssh_check_host_keys: bool
    python_executable: str
    publish_url: str
    s3_endpoint_url: str | None
    dask_scheduler: str | None = None
    max_task_attempts: int = 4
    source: str = "built-in defaults"
    dashboard_password: str | None = field(default=None, repr=False)  # the master's only; never shipped

    # --- construction ------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | None = None) -> ClusterConfig:
        """`--config PATH`, else $CLUSTER_CONFIG, else ~/.config/cluster/cluster.cfg, else defaults."""
        if path:
            return cls.from_file(path)
        env = os.environ.get(defaults.CONFIG_ENV)
        if env:
            return cls.from_file(env)
        if os.path.exists(defaults.CONFIG_USER_PATH):
            return cls.from_file(defaults.CONFIG_USER_PATH)
        return cls.from_dict({})

    @classmethod
    def from_file(cls, path: str, check_dirs: bool = True) -> ClusterConfig:
        """Read the [CLUSTER] section of an INI file."""
        if not os.path.isfile(path):
            raise ConfigError(f"config file {path} does not exist (given by --config or ${defaults.CONFIG_ENV})")
        parser = configparser.ConfigParser(interpolation=None)
        try:
            with open(path) as fh:
                parser.read_file(fh)
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
        except configparser.Error as exc:
            raise ConfigError(f"config file {path} is not a valid INI file: {exc}") from exc
        if defaults.CONFIG_SECTION not in parser:
            raise ConfigError(f"config file {path} has no [{defaults.CONFIG_SECTION}] section; "
                              f"put the cluster's keys under [{defaults.CONFIG_SECTION}]")
        extra = [s for s in parser.sections() if s != defaults.CONFIG_SECTION]
        if extra:
            raise ConfigError(f"config file {path}: unknown section(s) {', '.join(extra)}; "
                              f"only [{defaults.CONFIG_SECTION}] is read")
        values = dict(parser[defaults.CONFIG_SECTION])
        base = os.path.dirname(os.path.abspath(path))
        return cls.from_dict(values, source=path, relative_to=base, check_dirs=check_dirs)

    @classmethod
    def from_dict(cls, values: dict, source: str = "built-in defaults",
                  relative_to: str | None = None, check_dirs: bool = True) -> ClusterConfig:
        """Validate raw values (strings or typed) against the known keys and derive the rest."""
        unknown = sorted(set(values) - set(defaults.CONFIG_DEFAULTS))
        problems = [f"unknown key {k!r} (known keys: {', '.join(defaults.CONFIG_DEFAULTS)})" for k in unknown]
        merged: dict[str, Any] = dict(defaults.CONFIG_DEFAULTS)  # raw values: strings or typed
        merged.update({k: v for k, v in values.items() if k in defaults.CONFIG_DEFAULTS})
        for key in ("redis_auth", "ssh_user", "ssh_key_file", *_DERIVED_DIRS, "projects_dir", "python_executable",
                    "publish_url", "s3_endpoint_url", "dashboard_password", "dask_scheduler"):
            if isinstance(merged[key], str) and not merged[key].strip():
                merged[key] = None
        out: dict[str, Any] = {}  # the typed fields, each of its own type
        for key in _INT_KEYS:
            try:
                out[key] = int(str(merged[key]).strip())
            except ValueError:
                problems.append(f"{key} must be a whole number, got {merged[key]!r}")
        for key in _SIZE_KEYS:
            try:
                out[key] = parse_size(str(merged[key]))
            except ValueError as exc:
                problems.append(f"{key}: {exc}")
        for key in _FLOAT_KEYS:
            try:
                out[key] = float(str(merged[key]).strip())
            except ValueError:
                problems.append(f"{key} must be a number of seconds, got {merged[key]!r}")
        check_keys = str(merged["ssh_check_host_keys"]).strip().lower()
        if check_keys in ("yes", "true", "1", "on"):
            out["ssh_check_host_keys"] = True
        elif check_keys in ("no", "false", "0", "off"):
            out["ssh_check_host_keys"] = False
        else:
            problems.append(f"ssh_check_host_keys must be yes or no, got {merged['ssh_check_host_keys']!r}")
        if out.get("number_of_servers_per_location", 1) < 1:
            problems.append("number_of_servers_per_location must be at least 1")
        if out.get("max_task_attempts", 1) < 1:
            problems.append("max_task_attempts must be at least 1 (1: no second attempt)")
        if out.get("poll_every", 1.0) <= 0:
            problems.append("poll_every must be more than 0 seconds")
        if out.get("max_number_of_bytes_in_memory", 1024 ** 2) < 1024 ** 2:
            problems.append("max_number_of_bytes_in_memory must be at least 1M")
        for key in ("base_port", "management_port", "redis_port", "ssh_port"):
            if key in out and not 0 < out[key] < 65536:
                problems.append(f"{key} must be a TCP port (1-65535), got {out[key]}")
        locations = tuple(x.strip() for x in str(merged["locations"]).split(",") if x.strip())
        if not locations:
            problems.append("locations must name at least one host")
        if len(set(locations)) != len(locations):
            problems.append(f"locations lists a host twice: {merged['locations']}")
        name = str(merged["cluster_name"]).strip()
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
            problems.append(f"cluster_name must be letters, digits, '_', '.', '-', got {name!r}")

        def absolute(p: str) -> str:
            p = os.path.expanduser(str(p).strip())
            if relative_to and not os.path.isabs(p):
                p = os.path.join(relative_to, p)
            return os.path.abspath(p)

        compute_dir = absolute(merged["compute_dir"])
        for key, sub in _DERIVED_DIRS.items():
            out[key] = absolute(merged[key]) if merged[key] else os.path.join(compute_dir, sub)
        out["projects_dir"] = (absolute(merged["projects_dir"]) if merged["projects_dir"]
                               else os.path.abspath("projects"))
        if check_dirs and merged["projects_dir"] and not os.path.isdir(out["projects_dir"]):
            problems.append(f"projects_dir {out['projects_dir']} is not a directory; create it or fix the key")
        key_file = absolute(merged["ssh_key_file"]) if merged["ssh_key_file"] else None
        if check_dirs and key_file and not os.path.isfile(key_file):
            problems.append(f"ssh_key_file {key_file} does not exist")
        local_working_dir = absolute(merged["local_working_dir"])
        publish_url = str(merged["publish_url"] or os.path.join(local_working_dir, "published")).strip()
        if publish_url.startswith("s3://"):
            if not re.fullmatch(r"s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?", publish_url):
                problems.append(f"publish_url {publish_url!r} must be s3://BUCKET[/PREFIX] with a valid bucket name")
        elif "://" in publish_url and not publish_url.startswith("file://"):
            problems.append(f"publish_url must be a folder or s3://bucket/prefix, got {publish_url!r}")
        else:
            publish_url = absolute(publish_url.removeprefix("file://"))
        if problems:
            raise ConfigError(f"configuration from {source} is not valid:\n" +
                              "\n".join(f"  - {p}" for p in problems))
        return cls(cluster_name=name, locations=locations, compute_dir=compute_dir,
                   redis_auth=merged["redis_auth"], local_working_dir=local_working_dir, publish_url=publish_url,
                   s3_endpoint_url=merged["s3_endpoint_url"], dask_scheduler=merged["dask_scheduler"],
                   dashboard_password=merged["dashboard_password"],
                   ssh_user=merged["ssh_user"], ssh_key_file=key_file, source=source,
                   python_executable=str(merged["python_executable"] or sys.executable), **out)

    # --- derived facts -----------------------------------------------------------------
    @property
    def server_memory_budget(self) -> int:
        """Each server's share of its location's `max_number_of_bytes_in_memory`."""
        return self.max_number_of_bytes_in_memory // self.number_of_servers_per_location

    def server_ids(self) -> list[str]:
        """Server names across all locations: S_0, S_1, ... numbered location by location."""
        n = self.number_of_servers_per_location
        return [f"S_{i}" for i in range(n * len(self.locations))]

    def servers_by_location(self) -> dict[str, list[str]]:
        """Each location's servers, in the order of `locations`."""
        ids, n = self.server_ids(), self.number_of_servers_per_location
        return {host: ids[i * n:(i + 1) * n] for i, host in enumerate(self.locations)}

    def location_of(self, server_id: str) -> str:
        """The location a server runs on."""
        return self.locations[int(server_id.split("_")[1]) // self.number_of_servers_per_location]

    def server_port(self, server_id: str) -> int:
        """The RPyC port of a server: base_port + its number."""
        return self.base_port + int(server_id.split("_")[1])

    def master_path(self, path: str) -> str:
        """A path on the master: absolute as given, relative ones under `local_working_dir`."""
        return os.path.abspath(os.path.join(self.local_working_dir, os.path.expanduser(path)))

    def as_dict(self) -> dict[str, object]:
        """The resolved configuration, for display."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def to_values(self) -> dict[str, object]:
        """The keys as `from_dict` takes them (to hand a config to another process)."""
        raw = {k: v for k, v in self.as_dict().items() if k in defaults.CONFIG_DEFAULTS}
        raw["locations"] = ",".join(self.locations)
        return raw

    def to_ini(self) -> str:
        """This configuration as an INI file (what the master hands to every location)."""
        lines = [f"[{defaults.CONFIG_SECTION}]"]
        for key, value in self.to_values().items():
            if key in MASTER_ONLY_KEYS:
                continue
            lines.append(f"{key} = {'' if value is None else value}")
        return "\n".join(lines) + "\n"

    def with_overrides(self, **changes: object) -> ClusterConfig:
        """A copy with some keys changed, re-validated."""
        raw = self.to_values()
        if "compute_dir" in changes:  # let the derived dirs follow the new compute_dir
            for key, sub in _DERIVED_DIRS.items():
                if raw[key] == os.path.join(self.compute_dir, sub):
                    raw[key] = None
        if "local_working_dir" in changes and raw["publish_url"] == os.path.join(self.local_working_dir, "published"):
            raw["publish_url"] = None
        raw.update(changes)
        return ClusterConfig.from_dict(raw, source=self.source, check_dirs="projects_dir" in changes)
