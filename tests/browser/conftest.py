"""Fixtures of the browser tests: Debian's Chromium driven by Playwright, and `mapreduce dashboard`
started as a user starts it (a real process on a free port, its password in the environment).

Screenshots go to $DASHBOARD_SCREENSHOTS when set (`scripts/screenshots` sets it to docs/),
else to the test's tmp_path."""
from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from dashboard_helpers import Dashboard, start_dashboard

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-dev-shm-usage"]


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    executable = shutil.which("chromium")
    assert executable, "Debian's chromium is not installed: run init/install.sh (it installs it with the test extras)"
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    context.set_default_timeout(15_000)
    pg = context.new_page()
    try:
        yield pg
    finally:
        context.close()


@pytest.fixture
def shot(tmp_path: Path):
    """shot(page, "name") saves a full-page screenshot as name.png."""
    folder = Path(os.environ.get("DASHBOARD_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)

    def take(pg, name: str) -> Path:
        path = folder / f"{name}.png"
        pg.screenshot(path=str(path), full_page=True)
        return path
    return take


@pytest.fixture
def dashboard(tmp_path: Path) -> Iterator[Dashboard]:
    """The dashboard of a one-machine config in tmp_path (no cluster started)."""
    config_path = tmp_path / "cluster.cfg"
    config_path.write_text("[CLUSTER]\ncluster_name = browser\n"
                           f"compute_dir = {tmp_path / 'compute'}\nlocal_working_dir = {tmp_path / 'master'}\n")
    d = start_dashboard(config_path)
    try:
        yield d
    finally:
        d.stop()
