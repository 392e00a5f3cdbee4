"""`invoke fleet`: every inventory host on one live page, served on this machine's loopback.

The same Flask-SocketIO stack as the dashboard, with its API checks (security.ApiGuard) and its base
page (dashboard/templates/base.html). The hosts' data comes over their kept-open links (links.py);
actions go through the CLI's own code (actions.service_action, with the exactly-once check) and
answer with the line the CLI prints. The page is reached with a one-time token, which becomes a
cookie of this fleet's own name (a dashboard reached through a tunnel keeps its own), and every
action needs that session and its CSRF token (an HMAC of the session's id: the cookie, which the
browser sends to every port of 127.0.0.1, does not hold it), from this page's own origin.

The token never goes on a command line, where `ps` shows it: the browser is opened on a private file
that takes it to `/login?token=...` (signin.py, which also says why /login answers with a page).
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from flask import Flask, jsonify, render_template, request, send_from_directory, session
from flask_socketio import SocketIO
from jinja2 import ChoiceLoader, FileSystemLoader, PrefixLoader

from dashboard.security import CSRF_HEADER, ApiGuard, HostGuard, csrf_for, csrf_ok, protect, same_origin_only
from remote import actions
from remote.botguard import running_units
from remote.errors import SulfurError
from remote.host.common import names
from remote.host.supervision import bot
from remote.inventory import Inventory

from . import acts, signin
from .fencer import Fencer, reachable_statuses
from .links import Link
from .links import log as links_log
from .pages import Pages
from .replicas import Replicator
from .tunnels import Tunnels

HERE = Path(__file__).resolve().parent
DASHBOARD = HERE.parent.parent / "dashboard"
DASHBOARD_STATIC = DASHBOARD / "static"
VENDOR = DASHBOARD_STATIC / "vendor"
COALESCE = 0.25  # s: a host's changes closer together than this go to the page as one event


def conflicts(snapshots: List[Dict[str, Any]]) -> List[str]:
    """The same bot (overlapping shards) running on two hosts: the page's warning banner."""
    units = [(s["host"], u) for s in snapshots if s.get("status") for u in running_units(s["status"])]
    found = []
    for i, (one, unit) in enumerate(units):
        for other, other_unit in units[i + 1:]:
            if one != other and bot.overlaps(unit, other_unit):
                found.append("bot %s runs on %s and on %s" % (unit["bot_id"], one, other))
    return found


def _listen(port: int) -> Any:
    """The page's socket on 127.0.0.1:port; a taken port is one line (SulfurError)."""
    import socket

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
        sock.listen(64)
    except OSError as exc:
        sock.close()
        raise SulfurError("port %d on 127.0.0.1: %s: pick another with --port" % (port, exc.strerror)) from None
    return sock


def _quiet_handler() -> Any:
    from werkzeug.serving import WSGIRequestHandler

    class Quiet(WSGIRequestHandler):
        """No line per request on the operator's terminal: the page is the fleet's output."""

        def log_request(self, *args: Any, **kwargs: Any) -> None:
            pass

    return Quiet


class Fleet:
    """The page's server: its routes, and each link's changes as Socket.IO events to every page.

    The parts with state of their own are objects of their own: the pages' Socket.IO handlers and
    log panes (pages.Pages), and the tunnels to the hosts' dashboards (tunnels.Tunnels)."""

    def __init__(self, inventory: Inventory, port: int) -> None:
        self.inventory, self.port = inventory, port
        self.hosts = [h for h in inventory.hosts.values() if not h.is_local]
        self.token: Optional[str] = secrets.token_urlsafe(24)  # one use: then a cookie
        self.app = Flask(__name__, static_folder=str(HERE / "static"))
        self.app.jinja_env.globals["sampled"] = names.SAMPLED  # the charts' services (base.html's meta)
        # its own templates, and the dashboard's as "dashboard/...": one base page (head, CSRF meta) for both
        self.app.jinja_loader = ChoiceLoader([FileSystemLoader(str(HERE / "templates")), PrefixLoader(
            {"dashboard": FileSystemLoader(str(DASHBOARD / "templates"))})])
        self.app.secret_key = secrets.token_bytes(32)
        self.app.config.update(SESSION_COOKIE_NAME="sulfur_fleet_%d" % port, SESSION_COOKIE_HTTPONLY=True,
                               SESSION_COOKIE_SAMESITE="Strict")
        self.socketio = SocketIO(self.app, async_mode="threading", cors_allowed_origins=None)
        # as the dashboard: DNS rebinding gets 400 (here only 127.0.0.1 or localhost, at this port), and
        # another page's POST (another port of this machine is the same site to a browser) gets 403
        self.app.wsgi_app = HostGuard(self.app.wsgi_app, "127.0.0.1", (), port=port or None)
        self.app.before_request(same_origin_only())
        self.opener: Optional[Path] = None  # the private sign-in file, once written
        self._lock = threading.Lock()  # the token
        self.links: Dict[str, Link] = {}  # made by start(): every other part reads them through self.links
        self.tunnels = Tunnels([h.name for h in self.hosts], lambda name: self.links[name])
        self._moving = threading.Lock()  # one failover at a time: two at once would race for the bot
        self.fencer = Fencer(inventory, lambda: reachable_statuses(self.hosts, self.links),
                             lambda: [self._changed(h.name, "banner") for h in self.hosts], self._moving)
        self.replicator = Replicator(inventory, lambda: reachable_statuses(self.hosts, self.links))
        self.pages = Pages(self.socketio, self.authorized, lambda: self.links)
        self._sends = threading.Lock()
        self._sent: Dict[str, float] = {}  # host -> when its last event went (monotonic)
        self._pending: Dict[str, set] = {}  # host -> the kinds of change waiting for its next event
        self._emitting = {h.name: threading.Lock() for h in self.hosts}  # a host's events in the order made
        self.api = ApiGuard(self.authorized, self.csrf_checked, "open the link invoke fleet printed")
        self._routes()

    def url(self) -> str:
        """The page's address (no token: it signs no one in)."""
        return "http://127.0.0.1:%d/" % self.port

    def sign_in_file(self) -> Path:
        """The private file that signs a browser in, once (signin.py): `wait()` removes it."""
        if self.opener is None:
            self.opener = signin.write("%slogin?token=%s" % (self.url(), self.token))
        return self.opener

    def forget_sign_in_file(self) -> None:
        """The sign-in file gone with its directory: its token is worth nothing once the fleet stops."""
        signin.remove(self.opener)
        self.opener = None

    def _changed(self, host: str, kind: str) -> None:
        """A host's change to the page: at once, or with the next ones within COALESCE, so a host that
        floods its watch costs the page a few events a second, never one per line."""
        if host not in self.links:  # a link that speaks before start() has them all
            return
        if kind in ("status", "state"):
            self.fencer.poke(host)
            self.replicator.poke(host)
        with self._sends:
            if host in self._pending:
                self._pending[host].add(kind)
                return
            wait = self._sent.get(host, -COALESCE) + COALESCE - time.monotonic()
            if wait > 0:
                self._pending[host] = {kind}
                timer = threading.Timer(wait, self._flush, args=(host,))
                timer.daemon = True
                timer.start()
                return
            self._sent[host] = time.monotonic()
        self._emit(host, kind)

    def _flush(self, host: str) -> None:
        """The changes of ``host`` that waited, as one event of the kind the page needs most."""
        with self._sends:
            kinds = self._pending.pop(host, set())
            self._sent[host] = time.monotonic()
        # the page needs to know of a backlog (it brings the history) and of a sample (a point to add)
        try:
            self._emit(host, next((k for k in ("history", "sample", "status") if k in kinds), "state"))
        except Exception as exc:  # a timer's thread: no one above it to tell
            links_log.warning("fleet: %s: the page was not told of a change: %s", host, exc)

    def _emit(self, host: str, kind: str) -> None:
        """One `host` event, its snapshot taken under the host's own lock: an event made later never
        goes out before one made earlier, so the page always ends with the newest state."""
        with self._emitting[host]:
            doc = self.links[host].snapshot(with_history=kind == "history")  # a backlog goes with its event
            self.socketio.emit("host", {"host": doc, "kind": kind, "conflicts": self.banner()})

    def banner(self) -> List[str]:
        """The page's warning banner: a bot on two hosts, and what the page's fencing did about it."""
        return conflicts(self._statuses()) + self.fencer.recent()

    def _statuses(self) -> List[Dict[str, Any]]:
        """Each host's status as the banner reads it, not copied (a status is replaced, never changed)."""
        return [{"host": h.name, "status": self.links[h.name].state.get("status")} for h in self.hosts]

    def snapshots(self, with_history: bool = False) -> List[Dict[str, Any]]:
        """Every host's state (and history), copies the caller may keep."""
        return [self.links[h.name].snapshot(with_history) for h in self.hosts]

    # ------------------------------------------------------------------------------- auth
    def authorized(self) -> bool:
        """Signed in: this browser brought the one-time token of this fleet run."""
        return session.get("fleet") is True and bool(session.get("sid"))

    def _take_token(self, given: Optional[str]) -> bool:
        """The printed token, once: a link copied from the terminal later is worth nothing."""
        with self._lock:
            if self.token and given and hmac.compare_digest(given.encode(), self.token.encode()):
                self.token = None
                return True
        return False

    def csrf_token(self) -> Optional[str]:
        """The session's CSRF token, derived from its id with this run's secret, never in the cookie."""
        return csrf_for(self.app.secret_key, session.get("sid"))

    def csrf_checked(self) -> bool:
        """The session's CSRF token in its header: only our own page's script can send one."""
        return csrf_ok(self.csrf_token(), [request.headers.get(CSRF_HEADER)])

    # ------------------------------------------------------------------------------- routes
    def _routes(self) -> None:
        app = self.app

        @app.after_request
        def headers(response: Any) -> Any:
            response.headers.setdefault("Cache-Control", "no-store")
            return protect(response)

        @app.errorhandler(404)
        @app.errorhandler(405)
        def not_found(error: Any) -> Any:
            """An API path that is no route (as a name with an encoded `/`): answered in JSON, for the card."""
            if not request.path.startswith("/api/"):
                return error
            return jsonify({"error": "no such host, action or service"}), error.code

        @app.get("/login")
        def login() -> Any:
            """The sign-in file's one-time token for a session; then on to / from a page of ours."""
            if not self._take_token(request.args.get("token")):
                return "this link was used already: run invoke fleet again for a new one\n", 403
            session.clear()
            session.update(fleet=True, sid=secrets.token_urlsafe(18))
            return signin.LANDING, 200, signin.LANDING_HEADERS

        @app.get("/")
        def index() -> Any:
            if not self.authorized():
                return "open the link invoke fleet printed\n", 401
            return render_template("fleet.html", csrf_token=self.csrf_token(), names=[h.name for h in self.hosts],
                                   logs=names.LOGS)

        @app.get("/vendor/<path:name>")
        def vendor(name: str) -> Any:
            return send_from_directory(str(VENDOR), name)

        @app.get("/shared/charts.js")
        def shared_charts() -> Any:  # the host dashboard's charts, the same file
            return send_from_directory(str(DASHBOARD_STATIC), "charts.js")

        @app.get("/api/hosts")
        @self.api.signed_in
        def api_hosts() -> Tuple[Any, int]:
            docs = self.snapshots(with_history=request.args.get("history") == "1")
            banner = conflicts(docs) + self.fencer.recent()
            return jsonify({"hosts": docs, "conflicts": banner, "now": time.time()}), 200

        @app.post("/api/hosts/<name>/<action>/<service>")
        @self.api.action
        def api_action(name: str, action: str, service: str) -> Tuple[Any, int]:
            target = self.inventory.hosts.get(name)
            if target is None or target.is_local or action not in actions.ACTIONS or service not in names.TARGETS:
                return jsonify({"error": "no such host, action or service"}), 404
            doc, code = acts.act(self.inventory, target, action, service)
            return jsonify(doc), code

        @app.post("/api/hosts/<name>/backup")
        @self.api.action
        def api_backup(name: str) -> Tuple[Any, int]:
            known = name in self.links and self.inventory.hosts[name].shared_paths
            doc, code = acts.backup(self.inventory, name) if known else ({"error": "no such host with data"}, 404)
            return jsonify(doc), code

        @app.post("/api/hosts/<name>/tunnel")
        @self.api.action
        def api_tunnel(name: str) -> Tuple[Any, int]:
            if name not in self.links:
                return jsonify({"error": "no such host"}), 404
            doc, code = self.tunnels.open(name)
            return jsonify(doc), code

        @app.post("/api/failover")
        @self.api.action
        def api_failover() -> Tuple[Any, int]:
            doc = request.get_json(silent=True)
            doc = doc if isinstance(doc, dict) else {}
            to, from_, data = doc.get("to"), doc.get("from"), doc.get("data", True)
            if not isinstance(to, str) or not isinstance(from_, (str, type(None))) or to not in self.links or (
                    from_ is not None and from_ not in self.links) or to == from_ or not isinstance(data, bool):
                return jsonify({"error": "failover needs {\"to\": a host of this page} (and \"from\", \"data\")"}), 400
            doc, code = acts.failover(self.inventory, self._moving, to, from_, data)
            return jsonify(doc), code

    def start(self) -> None:
        """Bind 127.0.0.1:port (a taken port is one line, before any host is reached), connect the
        hosts, and serve in a thread of its own: werkzeug's threaded server on our socket, as the
        dashboard does, without its banner on our stdout."""
        from werkzeug.serving import make_server

        from .links import start_links

        sock = _listen(self.port)
        server = make_server("127.0.0.1", self.port, self.app, threaded=True, fd=sock.fileno(),
                             request_handler=_quiet_handler())
        self.links = start_links(self.hosts, self._changed)
        self.fencer.start()
        self.replicator.start()
        self.thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
        self.thread.start()

    def wait(self) -> None:
        """Until Ctrl+C; then the links close, and the hosts' watches end with them."""
        from .links import stop_links

        try:
            while self.thread.is_alive():
                self.thread.join(0.5)
        finally:
            self.forget_sign_in_file()
            self.tunnels.close()
            self.fencer.stop()
            self.replicator.stop()
            stop_links(self.links)
