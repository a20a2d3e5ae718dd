"""The dashboard's routes through Flask's test client, on a real queue (SQLite), real uploads,
real script runs by the Runner and a real published folder."""
from __future__ import annotations

import datetime as dt
import io
import json
import os
import re
from pathlib import Path

import pytest
from dashboard_helpers import FAILING_PY, PASSWORD, REPORT_PY, LoggedIn, csrf_token, field_errors, make_tarball
from integration_helpers import free_port

from cluster.config import ClusterConfig
from cluster.dashboard import create_app
from cluster.job_spec import get_mapreduce_job_template, get_script_template
from cluster.scheduling.runner import Runner
from cluster.scheduling.schedule import next_time_after, utc_now
from cluster.scheduling.store import RunStatus

NO_CLUSTER = {"error": "cluster 'dash' has never been started (no certificates); run `manage_cluster start`",
              "servers": [], "locations": []}


@pytest.fixture
def dash_config(tmp_path: Path) -> ClusterConfig:
    return ClusterConfig.from_dict({"cluster_name": "dash", "compute_dir": str(tmp_path / "compute"),
                                    "local_working_dir": str(tmp_path / "master")})


@pytest.fixture
def app(dash_config):
    return create_app(dash_config, PASSWORD, cluster_status=lambda: NO_CLUSTER)


@pytest.fixture
def user(app) -> LoggedIn:
    return LoggedIn(app)


def scheduler_of(app):
    return app.extensions["cluster"].scheduler


def tarball_upload(tmp_path: Path, name: str = "code.tar.gz", files: dict | None = None, **kw):
    path = make_tarball(tmp_path / name, files or {"report.py": REPORT_PY}, **kw)
    return (io.BytesIO(path.read_bytes()), name)


def form_data(tmp_path: Path, **changes) -> dict:
    data = {"job_name": "daily_report", "code_tarball": tarball_upload(tmp_path),
            "execution_commandline": "python3 report.py", "output_dir": "output",
            "schedule_frequency": "weekly", "day_of_week": "tuesday", "day_of_month": "",
            "time_of_day": "06:30", "timeout_minutes": "30"}
    data.update(changes)
    return data


def schedule(user: LoggedIn, data: dict):
    return user.post_form("/schedule", data=data, content_type="multipart/form-data")


def uploads(config: ClusterConfig) -> list[str]:
    root = Path(config.local_working_dir) / "uploads"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []


# --- login, session, CSRF ----------------------------------------------------------------------
def test_nothing_of_the_queue_is_shown_before_login(app):
    job = get_script_template()
    job.update(job_name="secret_quarterly_numbers", script_location="/bin/true.py")
    scheduler_of(app).submit_job(job)
    client = app.test_client()
    for url in ("/", "/jobs", "/jobs/secret_quarterly_numbers", "/schedule", "/results", "/runs/1/log",
                "/cluster/fragment"):
        response = client.get(url)
        assert response.status_code == 302 and response.headers["Location"].startswith("/login?next=")
        assert "secret_quarterly_numbers" not in response.text.replace(response.headers["Location"], "")
    page = client.get("/login")
    assert page.status_code == 200 and "secret_quarterly_numbers" not in page.text
    # a page refreshing itself after the session ended gets a 401 (its script reloads to the login)
    assert client.get("/cluster/fragment", headers={"X-Requested-With": "dashboard"}).status_code == 401


def test_a_wrong_password_is_refused_and_the_right_one_opens_a_strict_httponly_session(app):
    client = app.test_client()
    token = csrf_token(client.get("/login").text)
    wrong = client.post("/login", data={"password": "guess", "csrf_token": token})
    assert wrong.status_code == 401 and "Wrong password." in wrong.text
    assert client.get("/jobs").status_code == 302
    right = client.post("/login?next=/jobs", data={"password": PASSWORD, "csrf_token": token})
    assert right.status_code == 302 and right.headers["Location"] == "/jobs"
    cookie = right.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert client.get("/jobs").status_code == 200
    # a login elsewhere never sends the user to another site
    token = csrf_token(client.get("/login").text)  # a login starts a new session, with a new token
    again = client.post("/login?next=//evil.example/x", data={"password": PASSWORD, "csrf_token": token})
    assert again.headers["Location"] == "/"
    out = client.post("/logout", data={"csrf_token": csrf_token(client.get("/jobs").text)})
    assert out.status_code == 302 and client.get("/jobs").status_code == 302


def test_logout_and_a_restart_end_a_session_even_for_a_copied_cookie(dash_config, app):
    user = LoggedIn(app)
    copied = user.client.get_cookie("cluster_dashboard").value
    user.client.post("/logout", data={"csrf_token": csrf_token(user.get("/jobs").text)})
    thief = app.test_client()
    thief.set_cookie("cluster_dashboard", copied)
    assert thief.get("/jobs").status_code == 302
    user = LoggedIn(app)
    assert user.get("/jobs").status_code == 200
    other = create_app(dash_config, "a new password", cluster_status=lambda: NO_CLUSTER)
    client = other.test_client()
    client.set_cookie("cluster_dashboard", user.client.get_cookie("cluster_dashboard").value)
    assert client.get("/jobs").status_code == 302


def test_forms_without_their_csrf_token_are_refused_and_change_nothing(app, user, tmp_path):
    job = get_script_template()
    job.update(job_name="nightly", script_location="/srv/nightly.py")
    scheduler_of(app).submit_job(job)
    for url, data in (("/jobs/nightly/run", {}), ("/jobs/nightly/delete", {}),
                      ("/schedule", form_data(tmp_path, job_name="sneaky"))):
        response = user.client.post(url, data=data, content_type="multipart/form-data")
        assert response.status_code == 400 and "no valid security token" in response.text
    assert scheduler_of(app).get_job("nightly")["force_run"] is False
    assert [j["job_name"] for j in scheduler_of(app).list_jobs()] == ["nightly"]
    assert uploads(app.extensions["cluster"].config) == []
    forged = user.client.post("/jobs/nightly/run", data={"csrf_token": "forged"})
    assert forged.status_code == 400 and scheduler_of(app).get_job("nightly")["force_run"] is False
    no_token_login = app.test_client().post("/login", data={"password": PASSWORD})
    assert no_token_login.status_code == 400


def test_failed_logins_are_limited_per_client(app):
    client = app.test_client()
    for _ in range(5):
        token = csrf_token(client.get("/login").text)
        assert client.post("/login", data={"password": "guess", "csrf_token": token}).status_code == 401
    token = csrf_token(client.get("/login").text)
    blocked = client.post("/login", data={"password": PASSWORD, "csrf_token": token})
    assert blocked.status_code == 429 and "try again in" in blocked.text
    assert client.get("/jobs").status_code == 302


def test_only_the_trusted_host_names_are_answered(dash_config):
    app = create_app(dash_config, PASSWORD, trusted_hosts=["127.0.0.1", "localhost"], cluster_status=lambda: NO_CLUSTER)
    client = app.test_client()
    assert client.get("/login", headers={"Host": "127.0.0.1:8787"}).status_code == 200
    # a page of another site whose name was pointed at 127.0.0.1 (DNS rebinding) gets nothing
    assert client.get("/login", headers={"Host": "rebound.example:8787"}).status_code == 400


def test_pages_forbid_framing_and_foreign_scripts(user):
    headers = user.get("/jobs").headers
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    assert headers["X-Frame-Options"] == "DENY" and headers["Cache-Control"] == "no-store"


# --- schedule a job --------------------------------------------------------------------------
def test_the_form_queues_a_script_job_with_its_tarball_and_shows_the_next_run(app, user, tmp_path):
    form = user.get("/schedule").text
    for label in ("Job Name", "Code Tarball", "Execution Commandline", "Output Directory", "Schedule Frequency",
                  "Day of Week", "Day of Month", "Time of Day (UTC)", "Job Timeout (minutes)"):
        assert f">{label}</label>" in form
    assert "Published output is public" in form and 'value="12:00"' in form
    response = schedule(user, form_data(tmp_path))
    assert response.status_code == 302 and response.headers["Location"] == "/jobs/daily_report"
    job = scheduler_of(app).get_job("daily_report")
    config = app.extensions["cluster"].config
    assert {k: job[k] for k in ("job_type", "execution_commandline", "output_dir", "schedule_frequency",
                                "day_of_week", "day_of_month", "time_of_day", "timeout_minutes")} == {
        "job_type": "script", "execution_commandline": "python3 report.py", "output_dir": "output",
        "schedule_frequency": "weekly", "day_of_week": "tuesday", "day_of_month": None, "time_of_day": "06:30",
        "timeout_minutes": 30}
    assert job["code_tarball"].startswith(os.path.join(config.local_working_dir, "uploads", "daily_report") + "/")
    assert Path(job["code_tarball"]).read_bytes() == (tmp_path / "code.tar.gz").read_bytes()
    assert uploads(config) == [os.path.relpath(job["code_tarball"], Path(config.local_working_dir) / "uploads")]
    expected = next_time_after(job, scheduler_of(app).submitted_at("daily_report"))
    assert expected.weekday() == 1 and expected > utc_now()
    queue = user.get("/jobs").text
    assert re.search(r'<td class="next-run">([^<]+)</td>', queue).group(1) == f"{expected:%Y-%m-%d %H:%M} UTC"
    assert "weekly on tuesday at 06:30 UTC" in queue


@pytest.mark.parametrize(("changes", "field", "message"), [
    ({"job_name": "daily report!"}, "job_name", "Use letters, digits"),
    ({"job_name": ""}, "job_name", "Give the job a name."),
    ({"execution_commandline": ""}, "execution_commandline", "Say which command runs the job."),
    ({"output_dir": "../../etc"}, "output_dir", "relative, without '..'"),
    ({"output_dir": "/srv/out"}, "output_dir", "relative, without '..'"),
    ({"time_of_day": "25:00"}, "time_of_day", "HH:MM"),
    ({"schedule_frequency": "monthly", "day_of_month": ""}, "day_of_month", "needs the day of the month"),
    ({"schedule_frequency": "monthly", "day_of_month": "32"}, "day_of_month", "1 to 31"),
    ({"timeout_minutes": "0"}, "timeout_minutes", "Between 1 minute"),
    ({"code_tarball": (io.BytesIO(b"print(1)"), "report.py")}, "code_tarball", "is not a .tar.gz file"),
    ({"code_tarball": (io.BytesIO(b"not gzip at all"), "code.tar.gz")}, "code_tarball", "cannot be read"),
    ({"code_tarball": (io.BytesIO(b""), "")}, "code_tarball", "Choose the .tar.gz"),
])
def test_a_bad_field_is_named_next_to_it_and_nothing_is_saved(app, user, tmp_path, changes, field, message):
    response = schedule(user, form_data(tmp_path, **changes))
    assert response.status_code == 400 and "Nothing was saved" in response.text
    assert any(message in e for e in field_errors(response.text, field)), field_errors(response.text, field)
    assert scheduler_of(app).list_jobs() == [] and uploads(app.extensions["cluster"].config) == []


@pytest.mark.parametrize(("files", "links", "why"), [
    ({"../escape.py": "x"}, None, "would land outside"),
    ({"/etc/cron.d/evil": "x"}, None, "would land outside"),
    ({"report.py": REPORT_PY}, {"data": "/etc"}, "links to '/etc'"),
    ({"report.py": REPORT_PY}, {"up": "../../.."}, "links to '../../..'"),
])
def test_a_tarball_that_would_unpack_outside_its_folder_is_refused(app, user, tmp_path, files, links, why):
    upload = tarball_upload(tmp_path, files=files, links=links)
    response = schedule(user, form_data(tmp_path, code_tarball=upload))
    assert response.status_code == 400
    assert any(why in e for e in field_errors(response.text, "code_tarball"))
    assert scheduler_of(app).list_jobs() == [] and uploads(app.extensions["cluster"].config) == []


def test_editing_keeps_the_tarball_and_group_and_never_replaces_another_type(app, user, tmp_path):
    assert schedule(user, form_data(tmp_path)).status_code == 302
    scheduler = scheduler_of(app)
    first = scheduler.get_job("daily_report")
    scheduler.submit_job({**first, "group_name": "reports", "job_priority": 5})
    edit = user.get("/schedule?job=daily_report").text
    assert 'value="python3 report.py"' in edit and "keep the current tarball" in edit
    no_file = (io.BytesIO(b""), "")
    response = schedule(user, form_data(tmp_path, code_tarball=no_file, schedule_frequency="monthly",
                                        day_of_month="31", time_of_day="23:15"))
    assert response.status_code == 302
    job = scheduler.get_job("daily_report")
    assert job["code_tarball"] == first["code_tarball"] and job["group_name"] == "reports"
    assert (job["schedule_frequency"], job["day_of_month"], job["day_of_week"], job["job_priority"]) == (
        "monthly", 31, None, 5)
    # three more uploads: the current tarball and the one before are kept
    for i in range(3):
        upload = tarball_upload(tmp_path, name=f"v{i}.tar.gz")
        assert schedule(user, form_data(tmp_path, code_tarball=upload)).status_code == 302
    kept = uploads(app.extensions["cluster"].config)
    assert len(kept) == 2 and os.path.basename(scheduler.get_job("daily_report")["code_tarball"]) in str(kept)
    mr = get_mapreduce_job_template()
    mr.update(job_name="word_count", project_name="p", input_dirs=["/d"], map_function_name="m",
              reduce_function_name="r")
    scheduler.submit_job(mr)
    response = schedule(user, form_data(tmp_path, job_name="word_count"))
    assert response.status_code == 400
    assert any("A mapreduce job of this name is queued" in e for e in field_errors(response.text, "job_name"))
    assert scheduler.get_job("word_count")["job_type"] == "mapreduce"


def test_a_cut_tarball_upload_is_refused_and_not_kept(app, user, tmp_path):
    whole = make_tarball(tmp_path / "whole.tar.gz", {"report.py": REPORT_PY * 200}).read_bytes()
    response = schedule(user, form_data(tmp_path, code_tarball=(io.BytesIO(whole[:len(whole) // 2]), "cut.tar.gz")))
    assert response.status_code == 400
    assert any("cannot be read" in e for e in field_errors(response.text, "code_tarball"))
    assert uploads(app.extensions["cluster"].config) == []


def test_an_edit_with_a_mistake_stays_an_edit_and_a_hidden_day_does_not_block(app, user, tmp_path):
    assert schedule(user, form_data(tmp_path)).status_code == 302
    no_file = (io.BytesIO(b""), "")
    response = schedule(user, form_data(tmp_path, code_tarball=no_file, time_of_day="7h"))
    assert response.status_code == 400 and "Edit job daily_report" in response.text
    assert field_errors(response.text, "code_tarball") == [] and field_errors(response.text, "time_of_day")
    # monthly with a bad day, then daily: the day field is hidden and no longer counts
    response = schedule(user, form_data(tmp_path, code_tarball=(io.BytesIO(b""), ""), schedule_frequency="daily",
                                        day_of_month="40"))
    assert response.status_code == 302
    job = scheduler_of(app).get_job("daily_report")
    assert (job["schedule_frequency"], job["day_of_month"], job["day_of_week"]) == ("daily", None, None)


# --- the queue, a job's page, run now, delete ----------------------------------------------------
def test_run_now_and_delete_with_a_confirmation(app, user, tmp_path):
    assert schedule(user, form_data(tmp_path)).status_code == 302
    response = user.post_form("/jobs/daily_report", "/jobs/daily_report/run")
    assert response.status_code == 302 and scheduler_of(app).get_job("daily_report")["force_run"] is True
    page = user.get("/jobs/daily_report").text
    assert "no Runner works this queue" in page and "now (forced)" in page
    confirm = user.get("/jobs/daily_report/delete")
    assert confirm.status_code == 200 and "Delete job daily_report?" in confirm.text
    assert scheduler_of(app).get_job("daily_report") is not None  # asking is not deleting
    gone = user.post_form("/jobs/daily_report/delete")
    assert gone.status_code == 302 and scheduler_of(app).get_job("daily_report") is None
    assert user.post_form("/jobs", "/jobs/daily_report/run").status_code == 404
    assert user.get("/jobs/never_was").status_code == 404


def test_a_jobs_runs_show_status_log_traceback_counters_chart_and_estimate(app, user, tmp_path, dash_config):
    assert schedule(user, form_data(tmp_path)).status_code == 302
    failing = tarball_upload(tmp_path, name="bad.tar.gz", files={"load.py": FAILING_PY})
    assert schedule(user, form_data(tmp_path, job_name="broken", code_tarball=failing,
                                    execution_commandline="python3 load.py")).status_code == 302
    runner = Runner(dash_config, local=True, echo=lambda m: None)
    for _ in range(2):
        for name in ("daily_report", "broken"):
            scheduler_of(app).force_run(name)
        runner.serve(once=True)
    good = user.get("/jobs/daily_report").text
    assert good.count("status-succeeded") >= 2 and "median of its last 2 successful runs" in good
    assert '<svg class="chart"' in good and good.count('<rect class="bar status-succeeded"') == 2
    assert '"files_published": 1' in good  # the counters
    log_url = re.search(r'href="(/runs/\d+/log)"', good).group(1)
    log = user.get(log_url)
    assert log.mimetype == "text/plain" and "report written: 2 rows" in log.text and "a warning on stderr" in log.text
    assert "report.csv" in good and "Published results" in good
    bad = user.get("/jobs/broken").text
    assert "status-failed" in bad and "ValueError: no rows in input.csv: the input is empty" in bad
    assert 'Traceback (most recent call last)' in bad and "no estimate yet" in bad
    queue = user.get("/jobs").text
    row = re.search(r'<tr data-job="broken">.*?</tr>', queue, re.S).group(0)
    assert "status-failed" in row


def test_run_logs_outside_the_runs_folder_are_not_served(app, user, dash_config, tmp_path):
    scheduler = scheduler_of(app)
    job = get_script_template()
    job.update(job_name="x", script_location="/srv/x.py")
    run_id = scheduler.record_start(job)
    secret = tmp_path / "secret.txt"
    secret.write_text("do not show")
    scheduler.record_process_group(run_id, 1, str(secret))
    assert user.get(f"/runs/{run_id}/log").status_code == 404


# --- results -----------------------------------------------------------------------------------
def test_published_files_are_listed_and_downloaded_and_nothing_else(app, user, tmp_path, dash_config):
    assert schedule(user, form_data(tmp_path)).status_code == 302
    scheduler_of(app).force_run("daily_report")
    Runner(dash_config, local=True, echo=lambda m: None).serve(once=True)
    page = user.get("/results").text
    assert 'id="results-daily_report"' in page and ">report.csv</a>" in page and "_PUBLISHED.json" not in page
    download = user.get("/results/daily_report/data/report.csv")
    assert download.status_code == 200 and download.data == b"channel,clients\nrelease,42\nbeta,7\n"
    assert "attachment" in download.headers["Content-Disposition"]
    outside = Path(dash_config.publish_url) / "daily_report" / "secret.txt"
    outside.write_text("not published")
    for bad in ("/results/daily_report/data/../secret.txt", "/results/daily_report/data/%2e%2e/secret.txt",
                "/results/..%2fdaily_report/data/report.csv", "/results/daily_report/data/missing.csv"):
        assert user.get(bad).status_code == 404, bad


def test_results_from_an_s3_publish_url(tmp_path, s3_server):
    import boto3

    config = ClusterConfig.from_dict({"local_working_dir": str(tmp_path / "m"), "compute_dir": str(tmp_path / "c"),
                                      "publish_url": "s3://team-results/pub", "s3_endpoint_url": s3_server})
    client = boto3.client("s3", endpoint_url=s3_server)
    client.create_bucket(Bucket="team-results")
    client.put_object(Bucket="team-results", Key="pub/weekly/data/summary.csv", Body=b"a,b\n1,2\n")
    client.put_object(Bucket="team-results", Key="pub/weekly/data/_PUBLISHED.json",
                      Body=json.dumps({"run": "7", "published_at": "2026-11-20T06:30:00+00:00"}).encode())
    user = LoggedIn(create_app(config, PASSWORD, cluster_status=lambda: NO_CLUSTER))
    page = user.get("/results").text
    assert ">summary.csv</a>" in page and "run 7" in page
    download = user.get("/results/weekly/data/summary.csv")
    assert download.status_code == 200 and download.data == b"a,b\n1,2\n"
    assert user.get("/results/weekly/data/../../other/data/x").status_code == 404


def test_a_broken_published_folder_or_store_is_named_and_the_pages_still_work(app, user, tmp_path, dash_config):
    assert schedule(user, form_data(tmp_path)).status_code == 302
    scheduler_of(app).force_run("daily_report")
    Runner(dash_config, local=True, echo=lambda m: None).serve(once=True)
    data = Path(dash_config.publish_url) / "daily_report" / "data"
    (data / "latest.csv").symlink_to("/nonexistent/file.csv")  # dangling
    (data / "passwd").symlink_to("/etc/passwd")  # out of the published folder
    page = user.get("/results").text
    assert ">report.csv</a>" in page and "latest.csv" not in page and "passwd" not in page
    assert user.get("/results/daily_report/data/passwd").status_code == 404
    s3 = dash_config.with_overrides(publish_url="s3://team-results/pub", s3_endpoint_url=f"http://127.0.0.1:{free_port()}")
    down = LoggedIn(create_app(s3, PASSWORD, cluster_status=lambda: NO_CLUSTER))
    job_page = down.get("/jobs/daily_report")
    assert job_page.status_code == 200 and "cannot list the published files of job daily_report" in job_page.text
    results = down.get("/results")
    assert results.status_code == 503 and "check s3_endpoint_url and the credentials" in results.text


# --- cluster -----------------------------------------------------------------------------------
def test_the_cluster_page_shows_servers_locations_and_progress_never_full_before_done(dash_config):
    status = {"servers": [
        {"server": "S_0", "location": "localhost", "port": 45700, "up": True, "heartbeat_age": 0.4,
         "job": "wc", "run_id": "r1", "phase": "map", "rss_bytes": 50 * 1024 ** 2,
         "progress": {"phase": "map", "counters": {"files": 4, "files_done": 4, "records_in": 1000,
                                                   "input_bytes_total": 1000, "input_bytes_done": 1000}}},
        {"server": "S_1", "location": "localhost", "port": 45701, "up": True, "heartbeat_age": 0.2,
         "job": "wc", "run_id": "r1", "phase": "sort", "rss_bytes": 60 * 1024 ** 2,
         "progress": {"phase": "sort", "counters": {"runs_in": 3}}},
        {"server": "S_2", "location": "otherhost", "port": 45702, "up": False, "heartbeat_age": None,
         "job": None, "run_id": None, "phase": None, "rss_bytes": None, "progress": None}],
        "locations": [{"location": "localhost", "redis": "up", "redis_memory": 3 * 1024 ** 2, "management": "up",
                       "disk_free": 20 * 1024 ** 3},
                      {"location": "otherhost", "redis": "down", "redis_memory": None, "management": "down",
                       "disk_free": None}]}
    user = LoggedIn(create_app(dash_config, PASSWORD, cluster_status=lambda: status))
    page = user.get("/").text
    s0 = re.search(r'<tr data-server="S_0".*?</tr>', page, re.S).group(0)
    assert 'value="99"' in s0 and "files 4/4" in s0 and "50.0 MB" in s0  # all bytes read, not yet reported done
    s1 = re.search(r'<tr data-server="S_1".*?</tr>', page, re.S).group(0)
    assert 'data-phase="map"' in s1 and "phase-done" in s1 and "runs 3" in s1
    s2 = re.search(r'<tr data-server="S_2".*?</tr>', page, re.S).group(0)
    assert ">down<" in s2
    assert "3.0 MB" in page and "20.0 GB" in page
    assert 'data-refresh="/cluster/fragment"' in page
    fragment = user.get("/cluster/fragment").text
    assert "<html" not in fragment and 'data-server="S_0"' in fragment


def test_a_run_whose_runner_died_is_not_shown_as_running(app, user):
    job = get_script_template()
    job.update(job_name="orphan", script_location="/srv/x.py")
    run_id = scheduler_of(app).record_start(job, runner_pid=2 ** 22 + 1)  # no such process holds the lock
    page = user.get("/").text
    assert f"its Runner (pid {2 ** 22 + 1}) is gone" in page
    job_page = user.get("/jobs/orphan").text
    assert f"Run {run_id} stopped when its Runner" in job_page and "data-refresh=" not in job_page


def test_a_running_mapreduce_run_shows_each_workers_progress(app, user):
    scheduler = scheduler_of(app)
    job = get_mapreduce_job_template()
    job.update(job_name="wc", project_name="p", input_dirs=["/d"], map_function_name="m", reduce_function_name="r")
    run_id = scheduler.record_start(job, started=utc_now() - dt.timedelta(seconds=75))
    scheduler.record_progress(run_id, "map", {"S_0": {"files": 2, "files_done": 1, "input_bytes_total": 400,
                                                      "input_bytes_done": 100, "records_in": 10},
                                              "S_1": {"files": 2, "files_done": 2, "input_bytes_total": 400,
                                                      "input_bytes_done": 400, "records_in": 40, "seconds": 1.5}})
    page = user.get("/").text
    assert "Running now" in page and "1 min 15 s" in page
    assert 'value="25"' in page and "phase-done" in page
    job_page = user.get("/jobs/wc").text
    assert 'data-refresh="/jobs/wc/runs"' in job_page and f"Run {run_id} is running" in job_page


def test_the_stop_button_asks_a_running_run_to_stop_and_needs_its_token(app, user, tmp_path):
    import os

    job = get_script_template()
    job.update(job_name="busy", script_location="/bin/true.py")
    run_id = scheduler_of(app).record_start(job, runner_pid=os.getpid(), source="mapreduce run (local)")
    page = user.get("/jobs/busy").text
    assert "Stop the running run" in page
    forged = user.client.post("/jobs/busy/cancel", data={"csrf_token": "forged"})
    assert forged.status_code == 400 and scheduler_of(app).cancel_reason(run_id) is None
    stopped = user.post_form("/jobs/busy", "/jobs/busy/cancel")
    assert stopped.status_code == 302
    assert "Stop button" in scheduler_of(app).cancel_reason(run_id)
    scheduler_of(app).record_end(run_id, RunStatus.CANCELLED)
    assert "Stop the running run" not in user.get("/jobs/busy").text
    again = user.post_form("/jobs/busy", "/jobs/busy/cancel", follow_redirects=True)
    assert "is not running: nothing to stop" in again.text
