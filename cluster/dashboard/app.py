"""The Flask application: its settings, security headers, filters shared by every page."""
from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import os
import secrets
from collections.abc import Callable
from typing import Any

from flask import Flask, render_template, request
from flask_wtf.csrf import CSRFError, CSRFProtect

from cluster import defaults
from cluster.config import ClusterConfig
from cluster.dashboard import auth, cluster_view, jobs_view, results, schedule_form
from cluster.dashboard.state import DashboardState
from cluster.exceptions import ClusterError
from cluster.progress import human_size
from cluster.scheduler import Scheduler

log = logging.getLogger(__name__)

# Scripts, styles and images come only from the dashboard itself; nothing may frame it.
_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


def secret_key(config: ClusterConfig) -> bytes:
    """The key that signs session cookies: made once, kept in local_working_dir (owner-only), so a
    restarted dashboard keeps its users logged in."""
    path = os.path.join(config.local_working_dir, "dashboard_secret_key")
    os.makedirs(config.local_working_dir, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        with open(path, "rb") as fh:
            key = fh.read()
        if len(key) >= 32:
            return key
        os.unlink(path)  # an empty or cut file (a crash while writing): make a new one
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    key = secrets.token_bytes(48)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key)
    return key


def create_app(config: ClusterConfig, password: str, *, key: bytes | None = None,
               cluster_status: Callable[[], dict[str, Any]] | None = None) -> Flask:
    """The dashboard of one master (its queue, its cluster, its published results).

    `password` is the login; `key` signs the session cookie (default: kept in local_working_dir);
    `cluster_status` replaces asking the locations (`ManageCluster.status`)."""
    if not password:
        raise ValueError("the dashboard needs a password")
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=key or secret_key(config),
        SESSION_COOKIE_NAME="cluster_dashboard",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        PERMANENT_SESSION_LIFETIME=dt.timedelta(hours=defaults.DASHBOARD_SESSION_HOURS),
        MAX_CONTENT_LENGTH=defaults.DASHBOARD_MAX_UPLOAD_BYTES,
        WTF_CSRF_TIME_LIMIT=defaults.DASHBOARD_SESSION_HOURS * 3600,
        WTF_CSRF_SSL_STRICT=False,  # served over plain HTTP on loopback; SameSite=Strict guards the cookie
    )
    # the session remembers a digest of the password, so changing the password logs everyone out
    app.extensions["cluster"] = DashboardState(
        config=config, scheduler=Scheduler(config),
        password_digest=hmac.new(app.config["SECRET_KEY"], password.encode(), hashlib.sha256).hexdigest(),
        password=password, cluster_status=cluster_status)
    CSRFProtect(app)
    for blueprint in (auth.bp, cluster_view.bp, jobs_view.bp, schedule_form.bp, results.bp):
        app.register_blueprint(blueprint)
    app.before_request(auth.require_login)
    app.after_request(_security_headers)
    app.jinja_env.filters.update(size=human_size, ago=ago, utc=utc, duration=duration)
    app.jinja_env.globals.update(refresh_seconds=defaults.DASHBOARD_REFRESH_SECONDS,
                                 config_name=config.cluster_name, publish_where=config.publish_url)

    @app.errorhandler(CSRFError)
    def csrf_refused(exc: CSRFError):
        log.warning("refused a form without a valid CSRF token from %s: %s", request.remote_addr, exc.description)
        return render_template("error.html", title="Form refused",
                               message="This form had no valid security token (it expired, or came from "
                                       "another site). Nothing was changed. Go back, reload the page and "
                                       "send it again."), 400

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
