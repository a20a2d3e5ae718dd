"""The dashboard in a real browser: a user who never used the command line schedules a job,
watches it run, reads its log and traceback, and downloads its published file.

Only `mapreduce runner --once --local` is typed in a terminal: it stands for the Runner that
a real master keeps running in screen or as a service."""
from __future__ import annotations

from pathlib import Path

import pytest
from dashboard_helpers import FAILING_PY, REPORT_PY, make_tarball

from cluster.config import ClusterConfig
from cluster.scheduling.schedule import next_time_after
from cluster.scheduling.store import Scheduler

pytestmark = pytest.mark.browser


def schedule_through_the_form(pg, url: str, name: str, tarball: Path, command: str, *,
                              frequency: str = "weekly", day: str = "friday", time_of_day: str = "07:45") -> None:
    pg.goto(url + "/")
    pg.get_by_role("link", name="Schedule a job").first.click()
    pg.fill("input[name=job_name]", name)
    pg.set_input_files("input[name=code_tarball]", str(tarball))
    pg.fill("input[name=execution_commandline]", command)
    pg.fill("input[name=output_dir]", "output")
    pg.select_option("select[name=schedule_frequency]", frequency)
    if frequency == "weekly":
        pg.select_option("select[name=day_of_week]", day)
    pg.fill("input[name=time_of_day]", time_of_day)
    pg.fill("input[name=timeout_minutes]", "15")


def test_schedule_watch_and_fetch_a_job_from_the_browser(dashboard, page, shot, tmp_path):
    pg, url = page, dashboard.url
    # the login: nothing before it, a wrong password refused
    pg.goto(url + "/jobs")
    assert "/login" in pg.url and pg.locator("table").count() == 0
    pg.fill("input[name=password]", "not the password")
    pg.click("button[type=submit]")
    assert pg.locator(".field-error").inner_text() == "Wrong password."
    shot(pg, "login")
    dashboard.login(pg)
    assert pg.locator("h1").inner_text().startswith("Cluster")

    # schedule a weekly job through the form, with a real tarball
    tarball = make_tarball(tmp_path / "weekly_report.tar.gz", {"report.py": REPORT_PY})
    schedule_through_the_form(pg, url, "weekly_report", tarball, "python3 report.py")
    assert pg.locator("#field-day_of_month").is_hidden() and pg.locator("#field-day_of_week").is_visible()
    assert "Published output is public" in pg.locator(".notice").inner_text()
    shot(pg, "schedule")
    pg.click("form.schedule button[type=submit]")
    assert pg.url.endswith("/jobs/weekly_report")
    assert "weekly_report is scheduled" in pg.locator(".flash.ok").inner_text()

    # the queue shows it, with the next Friday 07:45 UTC after its submission
    config = ClusterConfig.from_file(str(dashboard.config_path))
    scheduler = Scheduler(config)
    expected = next_time_after(scheduler.get_job("weekly_report"), scheduler.submitted_at("weekly_report"))
    assert expected.weekday() == 4 and expected.strftime("%H:%M") == "07:45"
    pg.get_by_role("link", name="Jobs", exact=True).click()
    row = pg.locator("tr[data-job=weekly_report]")
    assert row.locator(".next-run").inner_text() == f"{expected:%Y-%m-%d %H:%M} UTC"
    assert "never ran" in row.inner_text()

    # run it now; the Runner (typed in a terminal) takes it
    row.get_by_role("link", name="weekly_report").click()
    pg.get_by_role("button", name="Run now").click()
    assert "no Runner works this queue" in pg.locator(".flash.warning").inner_text()
    runner = dashboard.mapreduce("runner", "--once", "--local")
    assert runner.returncode == 0, runner.stdout + runner.stderr
    pg.reload()
    run = pg.locator("table.history tbody tr").first
    assert "succeeded" in run.locator(".badge").inner_text()
    assert pg.locator("dd.estimate").inner_text().startswith(tuple("0123456789"))
    assert pg.locator("svg.chart rect.status-succeeded").count() == 1
    shot(pg, "job")
    run.get_by_role("link", name="stdout / stderr").click()
    assert "report written: 2 rows" in pg.locator("body").inner_text()
    pg.go_back()

    # its published file, from the Results page
    pg.get_by_role("link", name="Results", exact=True).click()
    section = pg.locator("section[data-job=weekly_report]")
    assert "report.csv" in section.inner_text()
    shot(pg, "results")
    with pg.expect_download() as got:
        section.get_by_role("link", name="report.csv").click()
    saved = tmp_path / "downloaded.csv"
    got.value.save_as(saved)
    assert saved.read_text() == "channel,clients\nrelease,42\nbeta,7\n"

    # a failing job shows its traceback
    broken = make_tarball(tmp_path / "broken.tar.gz", {"load.py": FAILING_PY})
    schedule_through_the_form(pg, url, "broken_report", broken, "python3 load.py", frequency="daily")
    pg.click("form.schedule button[type=submit]")
    pg.get_by_role("button", name="Run now").click()
    assert dashboard.mapreduce("runner", "--once", "--local").returncode == 1  # a job of the round failed
    pg.reload()
    failed = pg.locator("table.history tbody tr").first
    assert "failed" in failed.locator(".badge").inner_text()
    failed.locator("details.error summary").click()
    traceback = failed.locator("pre.traceback").inner_text()
    assert "Traceback (most recent call last)" in traceback
    assert "ValueError: no rows in input.csv: the input is empty" in traceback
    shot(pg, "job_failed")

    # a form without its CSRF token is refused, and changes nothing
    pg.evaluate("document.querySelectorAll('input[name=csrf_token]').forEach(e => e.remove())")
    pg.get_by_role("button", name="Run now").click()
    assert pg.locator("h1").inner_text() == "Form refused"
    assert scheduler.get_job("broken_report")["force_run"] is False

    # the queue with both, and delete one after confirming
    pg.goto(url + "/jobs")
    shot(pg, "jobs")
    pg.locator("tr[data-job=broken_report]").get_by_role("link", name="broken_report").click()
    pg.get_by_role("link", name="Delete…").click()
    assert scheduler.get_job("broken_report") is not None
    pg.get_by_role("button", name="Delete broken_report").click()
    assert pg.locator("tr[data-job=broken_report]").count() == 0 and scheduler.get_job("broken_report") is None


def test_form_errors_appear_next_to_their_fields_and_nothing_is_saved(dashboard, page, tmp_path):
    dashboard.login(page)
    evil = make_tarball(tmp_path / "evil.tar.gz", {"../../outside.py": "print('escaped')"})
    schedule_through_the_form(page, dashboard.url, "bad name!", evil, "", frequency="monthly")
    page.click("form.schedule button[type=submit]")
    errors = {f: page.locator(f"#field-{f} .field-error").all_inner_texts()
              for f in ("job_name", "code_tarball", "execution_commandline", "day_of_month")}
    assert "Use letters" in errors["job_name"][0]
    assert "would land outside" in errors["code_tarball"][0]
    assert errors["execution_commandline"] == ["Say which command runs the job."]
    assert "needs the day of the month" in errors["day_of_month"][0]
    config = ClusterConfig.from_file(str(dashboard.config_path))
    assert Scheduler(config).list_jobs() == []
    assert not [p for p in (Path(config.local_working_dir) / "uploads").rglob("*") if p.is_file()]
