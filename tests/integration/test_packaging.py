"""The package as a library: a wheel built from the tracked files installs into a fresh virtualenv
with the runtime only (no test, dashboard or S3 extras) and runs a local word count, from the
console script and from Python."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from integration_helpers import REPO

RUNTIME_ONLY_ABSENT = ("flask", "waitress", "boto3", "pytest", "moto", "playwright")


def sh(*cmd: str | Path, cwd: Path | None = None, timeout: float = 600,
       check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if check:
        assert proc.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv with the wheel of this checkout's tracked files (as a clean clone has them)."""
    root = tmp_path_factory.mktemp("packaging")
    src = root / "src"
    files = sh("git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", cwd=REPO).stdout.split("\0")
    for name in filter(None, files):
        if (REPO / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            (src / name).write_bytes((REPO / name).read_bytes())
    sh(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", root / "dist", src)
    wheels = list((root / "dist").glob("mapreduce_cluster-*.whl"))
    assert len(wheels) == 1, wheels
    venv = root / "venv"
    sh(sys.executable, "-m", "venv", venv)
    sh(venv / "bin" / "python", "-m", "pip", "install", "-q", wheels[0])
    return venv


def test_the_wheel_holds_the_package_and_its_data(installed):
    site = sh(installed / "bin" / "python", "-c", "import cluster, os; print(os.path.dirname(cluster.__file__))").stdout
    package = Path(site.strip())
    assert (package / "py.typed").exists() and (package / "dashboard" / "templates").is_dir()
    listed = sh(installed / "bin" / "python", "-m", "pip", "list", "--format", "json").stdout
    names = {p["name"].lower() for p in json.loads(listed)}
    assert "mapreduce-cluster" in names and not names & set(RUNTIME_ONLY_ABSENT), names


def test_the_console_scripts_tell_their_version(installed):
    import cluster

    for tool in ("mapreduce", "manage_cluster"):
        out = sh(installed / "bin" / tool, "--version").stdout
        assert out.strip() == f"{tool} (mapreduce-cluster) {cluster.__version__}"


def _word_count_setup(tmp_path: Path) -> tuple[Path, Path, dict]:
    project = tmp_path / "projects" / "wc"
    project.mkdir(parents=True)
    (project / "map_functions.py").write_text("def words(line, aux):\n    return [(w, 1) for w in line.split()]\n")
    (project / "reduce_functions.py").write_text(
        "def total(group, aux):\n    return [(group[0][0], sum(v for _, v in group))]\n")
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text("to be or not to be\n")
    (data / "b.txt").write_text("that is the question to be\n")
    config = tmp_path / "cluster.cfg"
    config.write_text(f"[CLUSTER]\ncompute_dir = {tmp_path / 'compute'}\nlocal_working_dir = {tmp_path / 'master'}\n"
                      f"projects_dir = {tmp_path / 'projects'}\nnumber_of_servers_per_location = 2\n")
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"job_type": "mapreduce", "job_name": "wc", "project_name": "wc",
                               "input_dirs": [str(data)], "map_function_name": "words",
                               "reduce_function_name": "total"}))
    expected = {"to": 3, "be": 3, "or": 1, "not": 1, "that": 1, "is": 1, "the": 1, "question": 1}
    return config, job, expected


def test_a_local_word_count_from_the_console_script(installed, tmp_path):
    config, job, expected = _word_count_setup(tmp_path)
    sh(installed / "bin" / "mapreduce", "run", job, "--local", "--config", config, "--no-progress", cwd=tmp_path)
    out = sh(installed / "bin" / "mapreduce", "output", "wc", "--config", config, cwd=tmp_path).stdout
    assert dict(json.loads(line) for line in out.splitlines()) == expected


def test_a_local_word_count_from_python(installed, tmp_path):
    config, job, expected = _word_count_setup(tmp_path)
    script = (f"import cluster, json\n"
              f"config = cluster.ClusterConfig.load({str(config)!r})\n"
              f"result = cluster.run_job(json.load(open({str(job)!r})), config, executor='local', servers=2)\n"
              "print(result.output_dir, result.counters['records_out'])\n")
    out = sh(installed / "bin" / "python", "-c", script, cwd=tmp_path).stdout.split()
    assert out[1] == str(len(expected)) and Path(out[0]).is_dir()


def test_a_feature_of_an_extra_that_is_not_installed_says_how_to_get_it(installed, tmp_path):
    config, _, _ = _word_count_setup(tmp_path)
    proc = sh(installed / "bin" / "mapreduce", "dashboard", "--config", config, check=False, cwd=tmp_path)
    assert proc.returncode == 1 and "needs the 'dashboard' extra" in proc.stderr, proc.stderr
    assert "pip install 'mapreduce-cluster[dashboard]'" in proc.stderr and "Traceback" not in proc.stderr
