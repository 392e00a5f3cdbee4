"""The Flask-SocketIO app: health, status JSON, the page, and the bot log live over Socket.IO.

Threading mode everywhere (gevent does not build on Termux); websockets come from simple-websocket.
The app only shows things: it never decides what to kill. Restart actions arrive with the supervisor.
"""

import functools
import hmac
import json
import os
import threading
import time
from datetime import datetime, timezone
from typing import Any, Dict, Optional, Tuple, cast

from flask import Flask, jsonify, redirect, render_template, request, session, url_for
from flask_socketio import SocketIO, emit, join_room

from remote.host.common import backupstate, epochs, history, leases, names
from remote.host.common.files import FreshRedactor, Layout, read_json
from remote.host.common.logtail import LogFollower, last_lines
from remote.host.supervision.bot import recorded_role

from . import hostinfo
from .security import (
    CSRF_FIELD,
    CSRF_HEADER,
    ApiGuard,
    HostGuard,
    LoginLimiter,
    SessionKeys,
    View,
    client_key,
    csrf_for,
    csrf_ok,
    protect,
    same_origin_only,
)
from .settings import Settings

LOG_ROOM = "log"
LOG_POLL_SECONDS = 0.25
LOG_BACKLOG = 200


def read_services(app_dir: str) -> Dict[str, Any]:
    """run/state.json as the supervisor wrote it, or a plain statement that there is none yet."""
    path = Layout(str(app_dir)).state
    try:
        with open(path) as handle:
            state = json.load(handle)
    except FileNotFoundError:
        return {"available": False, "message": "no supervisor state yet (%s does not exist)" % path}
    except (OSError, ValueError) as exc:
        return {"available": False, "message": "cannot read %s: %s" % (path, exc)}
    state["available"] = True
    return state


def bot_epoch(app_dir: str) -> str:
    """This host's role and epoch, as status and the fleet page word them (fencing)."""
    paths = Layout(app_dir)
    me = read_json(paths.config).get("name")  # the supervisor's settings: its inventory name
    return epochs.text(epochs.read(paths.bot_epoch), recorded_role(paths), me)


def backup_text(app_dir: str, now: Optional[float] = None) -> Optional[str]:
    """The bot's data as status words it: "last backup 12 min ago, replica of pi 4 min old", a
    warning, or None on a host without shared_paths."""
    info = backupstate.summary(Layout(app_dir))
    if not info["data"]:
        return None
    now = time.time() if now is None else now
    good = info.get("last_ok") or {}
    parts = ["WARNING: %s" % info["warning"] if info.get("warning") else
             "last backup %s ago" % human_duration(now - good["at"]) if isinstance(good.get("at"), (int, float))
             else "no backup yet"]
    for host, replica in sorted((info.get("replicas") or {}).items()):
        if isinstance(replica.get("taken_at"), (int, float)):
            parts.append("replica of %s %s old" % (host, human_duration(now - replica["taken_at"])))
    return ", ".join(parts)


def human_duration(seconds: Optional[float]) -> str:
    """'3 d 4 h', '12 min', '40 s': uptimes as a person reads them."""
    if seconds is None:
        return "unknown"
    seconds = int(seconds)
    for size, unit, smaller, small_unit in ((86400, "d", 3600, "h"), (3600, "h", 60, "min")):
        if seconds >= size:
            return "%d %s %d %s" % (seconds // size, unit, seconds % size // smaller, small_unit)
    return "%d min" % (seconds // 60) if seconds >= 60 else "%d s" % seconds


class Dashboard:
    """The app, its Socket.IO server and the one log follower that feeds every client."""

    def __init__(self, settings: Settings, listener: Dict[str, Any]) -> None:
        self.settings = settings
        self.listener = listener
        self.started = time.time()
        self.app = Flask(__name__)
        self.app.jinja_env.globals["sampled"] = names.SAMPLED  # the charts' services (base.html's meta)
        self.keys = SessionKeys(Layout(str(settings.app_dir)), settings.token)
        self.app.secret_key = self.keys.secret
        # named per instance: dashboards, tunnels and the fleet page on one machine share its cookie jar
        self.app.config.update(SESSION_COOKIE_NAME=self.keys.cookie_name(settings.port),
                               SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Strict")
        self.app.add_template_filter(human_duration, "duration")
        self.app.context_processor(lambda: {"csrf_token": self.csrf_token()})
        # the same-origin default: another site's page may not open our Socket.IO (None, not [])
        self.socketio = SocketIO(self.app, async_mode="threading", cors_allowed_origins=settings.allowed_origins)
        self.app.wsgi_app = HostGuard(self.app.wsgi_app, settings.host, settings.allowed_hosts)
        # another page's POST (another site, or another port here: the same site to a browser) is refused
        # before any route, login and logout included; Socket.IO checks its Origin itself
        self.app.before_request(same_origin_only(settings.allowed_origins or ()))
        self.limiter = LoginLimiter()
        self._clients: Dict[str, int] = {}  # Socket.IO sid -> the session version it connected under
        self._follower_started = False
        self._redact = FreshRedactor(Layout(str(settings.app_dir)))  # the log, to browsers: .env's secrets hidden
        self.draining = False
        self._lock = threading.Lock()
        self.api = ApiGuard(self.authorized, self.csrf_checked, "token required")
        self._routes()

    # ------------------------------------------------------------------------------- auth
    def _token_ok(self, given: object, sid: Optional[str] = None, returning: bool = False) -> Optional[str]:
        """The token, from any of its three ways in (form, Bearer, Socket.IO auth), all under one
        per-client limit of failures: no way in guesses faster than the login form. Only the form
        comes with a login session (``sid``, ``returning`` when it has signed in before), which may
        hold a reserved try or take the last unit (LoginLimiter). Right: a truthy string, the id of
        the new signed-in session for the form, else "bearer"."""
        token = self.settings.token
        if not token or not isinstance(given, str) or not given:
            return None
        client = client_key(request.remote_addr)
        stamp = self.limiter.attempt(client, sid, returning)  # counted as a failure until found right
        if stamp is None:
            return None
        if hmac.compare_digest(given.encode(), token.encode()):
            return self.limiter.succeeded(client, stamp, session=sid is not None) or "bearer"
        return None

    def bearer(self) -> bool:
        header = request.headers.get("Authorization", "")
        return bool(self.settings.token and header.startswith("Bearer ") and self._token_ok(header[7:].strip()))

    def authorized(self) -> bool:
        if not self.settings.token:
            return True
        # the version: not signed out since; the digest: signed in with this token, not an older one
        # that the previous dashboard of a handover still accepted
        if session.get("auth") is True and session.get("v") == self.keys.version and session.get(
                "t") == self.keys.digest:
            return True
        return self.bearer()

    def csrf_token(self) -> str:
        """This session's CSRF token (derived from its id: the cookie never holds it). A browser's
        first page gives it a login session, and one this process has not seen (from before a
        restart or a handover) is adopted: either may get a reserved try (LoginLimiter.adopt)."""
        sid = self.limiter.adopt(client_key(request.remote_addr), session.get("sid") or None)
        if session.get("sid") != sid:
            session["sid"] = sid
        return str(csrf_for(self.keys.secret, sid))

    @staticmethod
    def returning() -> bool:
        """This browser's signed cookie says it signed in here once, whether or not it still is (a
        sign-out elsewhere, a new token or a restart leave the mark; its own sign-out clears it): only
        the right token makes one, so a guesser has none (LoginLimiter's last unit is for it)."""
        return session.get("auth") is True

    def csrf_checked(self, form: bool = False) -> bool:
        """A state-changing request from our own page (its token) or with a Bearer header. The API
        takes the token in its header only: a form field can be posted by any page that learnt the
        token, a custom header only from our own origin."""
        if self.bearer():
            return True
        given = [request.headers.get(CSRF_HEADER)] + ([request.form.get(CSRF_FIELD)] if form else [])
        return csrf_ok(csrf_for(self.keys.secret, session.get("sid")), given)

    def _controls(self, view: View) -> View:
        """Without DASHBOARD_TOKEN the page controls nothing: said before the API's checks, so the
        answer names the missing setting, not a sign-in or a CSRF token that would not help."""
        @functools.wraps(view)
        def checked(*args: Any, **kwargs: Any) -> Any:
            if not self.settings.token:
                return jsonify({"error": "restarts from the page need DASHBOARD_TOKEN (shared/.env)"}), 403
            return view(*args, **kwargs)

        return cast(View, checked)

    # ------------------------------------------------------------------------------- data
    def health(self) -> Dict[str, Any]:
        return {
            "status": "ok",
            "pid": os.getpid(),
            "started_at": datetime.fromtimestamp(self.started, timezone.utc).isoformat(),
            "port": self.listener["port"],
            "release": self.settings.release,
        }

    def status(self) -> Dict[str, Any]:
        services = read_services(str(self.settings.app_dir))
        return {
            "control": bool(self.settings.token),
            "dashboard": self.health(),
            "host": hostinfo.collect(self.settings.app_dir),
            "services": services,
            "epoch": bot_epoch(str(self.settings.app_dir)),
            "backups": backup_text(str(self.settings.app_dir)),
            "lease": leases.text((services.get("services", {}).get("bot") or {}).get("lease")),
            "port": self.listener,
            "log": {"path": str(self.settings.log_path)},
        }

    # ------------------------------------------------------------------------------- routes
    def _routes(self) -> None:
        app, sio = self.app, self.socketio

        @app.get("/healthz")
        def healthz() -> Tuple[Any, int]:
            return jsonify(self.health()), 200

        @app.get("/api/status")
        @self.api.signed_in
        def api_status() -> Tuple[Any, int]:
            return jsonify(self.status()), 200

        @app.get("/api/history")
        @self.api.signed_in
        def api_history() -> Tuple[Any, int]:
            """This host's 24 h from the supervisor's ring (run/history.bin), as the fleet page has them."""
            records = history.read(history.path(Layout(str(self.settings.app_dir))))
            return jsonify({"interval": history.INTERVAL, "samples": history.thin(history.columns(records))}), 200

        @app.get("/")
        def index() -> Any:
            if not self.authorized():
                return render_template("login.html", error=None), 401
            return render_template("index.html", status=self.status())

        @app.post("/api/restart/<service>")
        @self._controls
        @self.api.action
        def api_restart(service: str) -> Tuple[Any, int]:
            return self.restart(service)

        app.after_request(protect)

        @app.post("/login")
        def login() -> Any:
            sid, returning = session.get("sid"), self.returning()
            wait = self.limiter.retry_after(client_key(request.remote_addr), sid, returning)
            if wait is not None:
                return render_template("login.html", error="too many wrong tokens: wait %d s" % wait), 429, {
                    "Retry-After": str(wait)}
            if not self.csrf_checked(form=True):
                return render_template("login.html", error="the form expired: try again"), 403
            signed = self._token_ok(request.form.get("token", ""), sid, returning) if self.settings.token else None
            if signed:
                session.clear()  # a new session (its own id): nothing chosen before login survives it
                session.update(auth=True, v=self.keys.version, t=self.keys.digest, sid=signed)
                return redirect(url_for("index"))
            return render_template("login.html", error="wrong token"), 401

        @app.post("/logout")
        def logout() -> Any:
            if not self.csrf_checked(form=True):
                return redirect(url_for("index"))
            if self.settings.token and self.authorized():
                self.keys.revoke()  # every browser signed in is signed out, captured cookies included
            self.limiter.release(session.get("sid"))
            session.clear()
            return redirect(url_for("index"))

        @sio.on("connect")
        def on_connect(auth: Optional[dict] = None) -> bool:
            if self.draining:
                return False  # stopping: the client reconnects to the next dashboard
            given = (auth or {}).get("token") if isinstance(auth, dict) else None
            if not (self.authorized() or (self.settings.token and self._token_ok(given))):
                return False  # refused: the client gets a connect_error
            with self._lock:
                self._clients[request.sid] = self.keys.version  # cut when a sign-out revokes it
            join_room(LOG_ROOM)
            emit("log_init", {"lines": self._redact(last_lines(str(self.settings.log_path), LOG_BACKLOG))})
            self._start_follower()
            return True

        @sio.on("disconnect")
        def on_disconnect(*args: Any) -> None:
            with self._lock:
                self._clients.pop(request.sid, None)

    def restart(self, service: str) -> Tuple[Any, int]:
        """Ask the host's supervisor, through the same control files the operator's tasks use."""
        from remote.host.common.errors import Failure  # the host side's inbox: the supervisor decides
        from remote.host.supervision.inbox import ask

        if service not in names.TARGETS:
            return jsonify({"error": "unknown service %r" % service}), 404
        try:
            answer = ask(Layout(str(self.settings.app_dir)), "restart", service, timeout=30)
        except Failure as exc:
            return jsonify({"error": str(exc)}), 409
        return jsonify(answer), 200 if answer.get("ok") else 500

    def _start_follower(self) -> None:
        with self._lock:
            if self._follower_started:
                return
            self._follower_started = True
        self.socketio.start_background_task(self._follow)

    def _follow(self) -> None:
        follower = LogFollower(str(self.settings.log_path))
        while True:
            self._cut_revoked()
            lines = self._redact(follower.poll())
            if lines:
                self.socketio.emit("log_lines", {"lines": lines}, to=LOG_ROOM)
            self.socketio.sleep(LOG_POLL_SECONDS)

    def _cut_revoked(self) -> None:
        """A sign-out (here or in the other dashboard of a handover) disconnects the log's readers that
        connected before it: a revoked cookie must not go on reading through a socket it opened."""
        if not self.settings.token:
            return
        version = self.keys.version
        with self._lock:
            revoked = [sid for sid, seen in self._clients.items() if seen != version]
        for sid in revoked:
            self.socketio.server.disconnect(sid, namespace="/")

    def close_clients(self) -> None:
        """Disconnect every Socket.IO client cleanly: they reconnect to the next instance."""
        self.draining = True
        eio = self.socketio.server.eio
        for client in list(eio.sockets.values()):
            # wait=False: the CLOSE packet is still sent, but engineio's default (wait=True) joins the
            # writer's queue, which never returns for a client caught mid-upgrade: the drain would hang
            client.close(wait=False)
