"""The Flask application: its settings, security headers, filters shared by every page."""
from __future__ import annotations

import datetime as dt
import logging
import secrets
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, render_template, request
from flask_wtf.csrf import CSRFError, CSRFProtect
from werkzeug.exceptions import SecurityError

from cluster import defaults
from cluster.config import ClusterConfig
from cluster.dashboard import auth, cluster_view, jobs_view, results, schedule_form
from cluster.dashboard.state import DashboardState
from cluster.exceptions import ClusterError
from cluster.progress import human_size
from cluster.scheduling.store import Scheduler

log = logging.getLogger(__name__)

# Scripts, styles and images come only from the dashboard itself; nothing may frame it.
_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


def create_app(config: ClusterConfig, password: str, *, trusted_hosts: list[str] | None = None,
               cluster_status: Callable[[], dict[str, Any]] | None = None) -> Flask:
    """The dashboard of one master (its queue, its cluster, its published results).

    `password` is the login; `trusted_hosts` the Host names it answers to (None: any; on
    loopback `serve` names only loopback ones, so a page of another site whose name was made to
    point at 127.0.0.1 gets nothing); `cluster_status` replaces asking the locations.
    Sessions live in this process: a restart (e.g. with a new password) ends them all."""
    if not password:
        raise ValueError("the dashboard needs a password")
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=secrets.token_bytes(48),
        SESSION_COOKIE_NAME="cluster_dashboard",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_REFRESH_EACH_REQUEST=False,
        MAX_CONTENT_LENGTH=defaults.DASHBOARD_MAX_UPLOAD_BYTES,
        WTF_CSRF_TIME_LIMIT=defaults.DASHBOARD_SESSION_HOURS * 3600,
        WTF_CSRF_SSL_STRICT=False,  # served over plain HTTP on loopback; SameSite=Strict guards the cookie
        TRUSTED_HOSTS=trusted_hosts,
    )
    app.extensions["cluster"] = DashboardState(config=config, scheduler=Scheduler(config), password=password,
                                               cluster_status=cluster_status)
    app.before_request(_check_host)
    app.before_request(auth.require_login)  # before CSRFProtect's check: no form is read before a login
    CSRFProtect(app)
    for blueprint in (auth.bp, cluster_view.bp, jobs_view.bp, schedule_form.bp, results.bp):
        app.register_blueprint(blueprint)
    app.after_request(_security_headers)
    app.jinja_env.filters.update(size=human_size, ago=ago, utc=utc, duration=duration)
    app.jinja_env.globals.update(refresh_seconds=defaults.DASHBOARD_REFRESH_SECONDS,
                                 config_name=config.cluster_name, publish_where=config.publish_url,
                                 logged_in=auth.logged_in)

    @app.errorhandler(CSRFError)
    def csrf_refused(exc: CSRFError):
        log.warning("refused a form without a valid CSRF token from %s: %s", request.remote_addr, exc.description)
        return render_template("error.html", title="Form refused",
                               message="This form had no valid security token (it expired, or came from "
                                       "another site). Nothing was changed. Go back, reload the page and "
                                       "send it again."), 400

    @app.errorhandler(SecurityError)
    def untrusted_host(exc: SecurityError):
        log.warning("refused a request for host %r from %s", request.headers.get("Host"), request.remote_addr)
        return Response("This dashboard answers only to its own address (e.g. http://127.0.0.1:8787/).\n",
                        status=400, mimetype="text/plain")

    @app.errorhandler(ClusterError)
    def cluster_error(exc: ClusterError):  # e.g. the published results' store cannot be reached
        log.error("%s %s: %s", request.method, request.path, exc)
        return render_template("error.html", title="Something the page needs is unavailable", message=str(exc)), 503

    @app.errorhandler(404)
    def not_found(exc: Exception):
        return render_template("error.html", title="Not found", message=str(getattr(exc, "description", exc))), 404

    @app.errorhandler(413)
    def too_large(exc: Exception):
        return render_template("error.html", title="Upload too large",
                               message=f"The upload is larger than {human_size(defaults.DASHBOARD_MAX_UPLOAD_BYTES)}, "
                                       "the most the dashboard takes. Nothing was saved."), 413

    return app


def _check_host() -> None:
    """Raise SecurityError for a Host header outside TRUSTED_HOSTS (reading it checks it)."""
    _ = request.host


def _security_headers(response):
    response.headers.setdefault("Content-Security-Policy", _CSP)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "same-origin"
    if response.mimetype == "text/html":
        response.headers["Cache-Control"] = "no-store"  # pages show the queue: not for the browser's cache
    return response


# --- template filters -------------------------------------------------------------------------
def duration(seconds: float | None) -> str:
    """75.5 -> '1 min 16 s'."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    return f"{minutes // 60} h {minutes % 60} min"


def ago(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.1f} s ago"


def utc(value: dt.datetime | str | None) -> str:
    """A time as 'YYYY-MM-DD HH:MM UTC'."""
    if value is None:
        return "-"
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    return f"{value.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S} UTC"
