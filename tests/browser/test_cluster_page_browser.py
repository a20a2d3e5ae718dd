"""The cluster page in a real browser, on a real cluster (redis-server, screen, RPyC over TLS):
servers up with their heartbeats, Redis memory and free disk per location, and a running job's
map progress per server arriving without a reload, never 100% before the phase is done."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from cluster_helpers import MANAGE, Cluster
from dashboard_helpers import start_dashboard
from integration_helpers import MAPREDUCE, make_job, write_lines

pytestmark = pytest.mark.browser


@pytest.fixture
def cluster(tmp_path: Path):
    (tmp_path / "cluster").mkdir()
    c = Cluster(tmp_path / "cluster")
    try:
        yield c
    finally:
        c.kill()


def test_the_cluster_page_follows_a_running_job_by_itself(cluster, page, shot, tmp_path):
    cluster.cli(MANAGE, "start")
    dashboard = start_dashboard(cluster.config_path, {"XDG_CONFIG_HOME": cluster.env["XDG_CONFIG_HOME"]})
    try:
        dashboard.login(page)
        servers = page.locator("table.servers tbody tr")
        assert servers.count() == 2
        for i in range(2):
            assert servers.nth(i).locator(".badge").inner_text() == "up"
        location = page.locator("table.locations tbody tr").first
        assert location.locator(".badge").first.inner_text() == "up" and " MB" in location.inner_text()
        assert " GB" in location.locator("td").last.inner_text() or " MB" in location.locator("td").last.inner_text()
        page.evaluate("window.loadedOnce = true")

        # a job whose map takes a few seconds per server: 3 files each, every file sleeps 1.5 s
        for i in range(6):
            write_lines(tmp_path / "in" / f"part-{i}.txt", ["SLOW 1.5 x", *(f"w{j} w{j % 7}" for j in range(200))])
        job = make_job("watched", "testjobs", [tmp_path / "in"], "slow_lines", "sum_values")
        (tmp_path / "job.json").write_text(json.dumps(job))
        run = subprocess.Popen([str(MAPREDUCE), "run", str(tmp_path / "job.json"), "--no-progress", "--config",
                                str(cluster.config_path)], env=cluster.env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
        try:
            # the page refreshes itself: a map bar strictly between 0 and 100 appears without a reload
            page.wait_for_function("""() => [...document.querySelectorAll('td[data-phase=map] progress')]
                                     .some(p => p.value > 0 && p.value < 100)""", timeout=30_000)
            assert page.evaluate("window.loadedOnce") is True
            row = page.locator("table.servers tbody tr").filter(has_text="watched").first
            assert "files" in row.inner_text() and "records" in row.inner_text()
            shot(page, "cluster")
            out, _ = run.communicate(timeout=120)
            assert run.returncode == 0, out
        finally:
            if run.poll() is None:
                run.kill()
                run.wait()
        # when the run is over, the servers show no job any more
        page.wait_for_function("""() => [...document.querySelectorAll('table.servers tbody tr')]
                                 .every(r => !r.innerText.includes('watched'))""", timeout=20_000)
        assert page.evaluate("window.loadedOnce") is True
    finally:
        dashboard.stop()
