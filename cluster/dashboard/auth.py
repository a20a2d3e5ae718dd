"""The login: one password (dashboard_password or $CLUSTER_DASHBOARD_PASSWORD), a session cookie
naming a session the dashboard keeps (logout and a restart end it), failed logins limited."""
from __future__ import annotations

import hashlib
import hmac
import logging
from urllib.parse import urlsplit

from flask import Blueprint, abort, redirect, render_template, request, session, url_for
from flask_wtf import FlaskForm
from wtforms import PasswordField
from wtforms.validators import InputRequired

from cluster.dashboard.state import FAILED_LOGINS_ALLOWED, state

log = logging.getLogger(__name__)
bp = Blueprint("auth", __name__)
_OPEN_ENDPOINTS = {"auth.login", "static"}


class LoginForm(FlaskForm):
    password = PasswordField("Password", validators=[InputRequired("Enter the dashboard's password.")])


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


def password_matches(given: str, password: str) -> bool:
    """Compare in constant time, whatever the lengths."""
    return hmac.compare_digest(_digest(given), _digest(password))


def logged_in() -> bool:
    return state().session_valid(session.get("sid"))


def require_login():
    """Every page but the login page needs a login; nothing of the queue is shown before."""
    if request.endpoint in _OPEN_ENDPOINTS or logged_in():
        return None
    if request.headers.get("X-Requested-With") == "dashboard":  # a page refreshing itself: reload to log in
        abort(401)
    if request.method != "GET":  # a form sent after the session ended: log in, then send it again
        return redirect(url_for("auth.login"))
    return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))


def _safe_next(target: str | None) -> str:
    """Only a path of this site (no open redirect to another)."""
    if not target:
        return url_for("cluster.page")
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return url_for("cluster.page")
    return target


@bp.route("/login", methods=["GET", "POST"])
def login():
    form = LoginForm()
    client = request.remote_addr or "unknown"
    if form.validate_on_submit():
        wait = state().login_blocked(client)
        if wait:
            form.password.errors.append(f"More than {FAILED_LOGINS_ALLOWED} wrong passwords: try again in "
                                        f"{wait / 60:.0f} min.")
            return render_template("login.html", form=form), 429
        if password_matches(form.password.data, state().password):
            session.clear()
            session["sid"] = state().open_session()
            log.info("login from %s", client)
            return redirect(_safe_next(request.args.get("next")))
        state().login_failed(client)
        log.warning("wrong dashboard password from %s", client)
        form.password.errors.append("Wrong password.")
        return render_template("login.html", form=form), 401
    return render_template("login.html", form=form), 400 if form.errors else 200


@bp.route("/logout", methods=["POST"])
def logout():
    state().close_session(session.get("sid"))
    session.clear()
    return redirect(url_for("auth.login"))
