"""The login: one password (dashboard_password or $CLUSTER_DASHBOARD_PASSWORD), a session cookie."""
from __future__ import annotations

import hmac
import logging
import time
from urllib.parse import urlsplit

from flask import Blueprint, abort, redirect, render_template, request, session, url_for
from flask_wtf import FlaskForm
from wtforms import PasswordField
from wtforms.validators import InputRequired

from cluster.dashboard.state import state

log = logging.getLogger(__name__)
bp = Blueprint("auth", __name__)
FAILED_LOGIN_DELAY_SECONDS = 1.0  # slows password guessing; a person does not notice
_OPEN_ENDPOINTS = {"auth.login", "static"}


class LoginForm(FlaskForm):
    password = PasswordField("Password", validators=[InputRequired("Enter the dashboard's password.")])


def logged_in() -> bool:
    return hmac.compare_digest(str(session.get("auth", "")), state().password_digest)


def require_login():
    """Every page but the login page needs a login; nothing of the queue is shown before."""
    if request.endpoint in _OPEN_ENDPOINTS or logged_in():
        return None
    if request.headers.get("X-Requested-With") == "dashboard":  # a page refreshing itself: reload to log in
        abort(401)
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
    if form.validate_on_submit():
        if hmac.compare_digest(form.password.data.encode(), state().password.encode()):
            session.clear()
            session["auth"] = state().password_digest
            session.permanent = True
            log.info("login from %s", request.remote_addr)
            return redirect(_safe_next(request.args.get("next")))
        log.warning("wrong dashboard password from %s", request.remote_addr)
        time.sleep(FAILED_LOGIN_DELAY_SECONDS)
        form.password.errors.append("Wrong password.")
        return render_template("login.html", form=form), 401
    return render_template("login.html", form=form), 400 if form.errors else 200


@bp.route("/logout", methods=["POST"])
def logout():
    session.clear()
    return redirect(url_for("auth.login"))
