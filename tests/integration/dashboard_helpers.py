"""Helpers of the dashboard tests: code tarballs, a logged-in test client, form tokens."""
from __future__ import annotations

import html
import io
import os
import re
import signal
import subprocess
import tarfile
from pathlib import Path

from integration_helpers import MAPREDUCE, free_port, wait_for_port

from cluster import defaults

PASSWORD = "correct horse battery"
_TOKEN_RE = re.compile(r'<input[^>]*name="csrf_token"[^>]*value="([^"]+)"')

# a report job: writes output/report.csv (and a line to stdout and stderr); REPORT_FAIL=1 makes it raise
REPORT_PY = """\
import os, sys
os.makedirs("output", exist_ok=True)
with open("output/report.csv", "w") as fh:
    fh.write("channel,clients\\nrelease,42\\nbeta,7\\n")
print("report written: 2 rows")
print("a warning on stderr", file=sys.stderr)
"""
FAILING_PY = """\
def load_rows(path):
    raise ValueError(f"no rows in {path}: the input is empty")

load_rows("input.csv")
"""


def make_tarball(path: Path, files: dict[str, str], *, links: dict[str, str] | None = None) -> Path:
    """A .tar.gz holding `files` (name -> text) and symbolic `links` (name -> target)."""
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return path


def csrf_token(page: str) -> str:
    found = _TOKEN_RE.search(page)
    assert found, "the page has no CSRF token"
    return found.group(1)


def field_errors(page: str, field: str) -> list[str]:
    """The error messages shown inside one field's block of a form."""
    block = re.search(rf'<div class="field[^"]*" id="field-{field}">(.*?)</div>', page, re.S)
    assert block, f"no field {field} on the page"
    return [html.unescape(e) for e in re.findall(r'class="field-error"[^>]*>([^<]+)<', block.group(1))]


def stop_process(proc: subprocess.Popen) -> None:
    """SIGTERM a process a test started (by its pid), SIGKILL it if it is still there after 10 s."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class LoggedIn:
    """A Flask test client that logged in, and posts forms with the token of the page they are on."""

    def __init__(self, app, password: str = PASSWORD):
        self.client = app.test_client()
        page = self.client.get("/login")
        response = self.client.post("/login", data={"password": password, "csrf_token": csrf_token(page.text)})
        assert response.status_code == 302, response.text

    def get(self, url: str, **kw):
        return self.client.get(url, **kw)

    def post_form(self, page_url: str, action: str | None = None, data: dict | None = None, **kw):
        token = csrf_token(self.client.get(page_url).text)
        return self.client.post(action or page_url, data={"csrf_token": token, **(data or {})}, **kw)


class Dashboard:
    """A `mapreduce dashboard` process and the config it serves."""

    def __init__(self, config_path: Path, env: dict[str, str]):
        self.config_path, self.env = config_path, env
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = config_path.parent / "dashboard.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> Dashboard:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen([str(MAPREDUCE), "-v", "dashboard", "--config", str(self.config_path),
                                          "--port", str(self.port)], env=self.env, stdout=out, stderr=out)
        assert wait_for_port(self.port, 20, alive=lambda: self.proc.poll() is None), self.log.read_text()
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)

    def mapreduce(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """Run a `mapreduce` command on the same config, as the user would in a terminal."""
        return subprocess.run([str(MAPREDUCE), *args, "--config", str(self.config_path)], env=self.env,
                              capture_output=True, text=True, timeout=timeout)

    def login(self, pg, password: str = PASSWORD) -> None:
        pg.goto(self.url + "/")
        pg.fill("input[name=password]", password)
        pg.click("button[type=submit]")


def start_dashboard(config_path: Path, extra_env: dict[str, str] | None = None) -> Dashboard:
    env = dict(os.environ, **{defaults.DASHBOARD_PASSWORD_ENV: PASSWORD}, **(extra_env or {}))
    return Dashboard(config_path, env).start()
