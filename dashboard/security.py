"""What keeps other web pages and other machines out: Host allowlist, CSRF, session keys, login limit.

The dashboard speaks plain HTTP and is meant for loopback or an SSH tunnel; these guard it against
what a browser on the operator's machine can be made to do by another page:
- DNS rebinding (a hostile name that resolves to 127.0.0.1): only known Host names are answered;
- cross-site requests (ports do not separate sites for cookies): every state-changing request needs a
  CSRF token from our own page, or an `Authorization: Bearer` header, which no other page can send;
- a captured cookie: it is signed with a random secret kept in app_dir/run (mode 600), not derived from
  the token, and logout or a new token bumps the session version, which revokes every cookie;
- guessing the token: 10 failed logins a minute per client address, then 429 with Retry-After.
Written here rather than taken from Flask-WTF or Flask-Limiter: each piece is a few lines, and the
host's venv stays small (it must install on Termux and from a wheelhouse).
"""

import functools
import hashlib
import hmac
import ipaddress
import math
import os
import secrets
import threading
import time
from collections import defaultdict, deque
from typing import Any, Callable, Deque, Dict, Iterable, List, Optional, Tuple, TypeVar, cast

from flask import jsonify

from remote.host.common.files import Layout, read_json, write_json

CSRF_FIELD, CSRF_HEADER = "csrf", "X-CSRF-Token"
CSRF_REFUSAL = "missing or wrong CSRF token: reload the page"
View = TypeVar("View", bound=Callable[..., Any])


def host_name(header: str) -> str:
    """The name in a Host header, without its port: 'localhost:8022' -> 'localhost', '[::1]:5000' -> '::1'."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def _is_ip(name: str, loopback: bool = False) -> bool:
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    return address.is_loopback or not loopback


class HostGuard:
    """WSGI middleware around the whole app (Socket.IO included): unknown Host names get 400.

    Allowed: localhost, the bound address, any loopback address (the fleet page tunnels each host's
    dashboard to one of its own, such as 127.83.7.201), names listed in DASHBOARD_ALLOWED_HOSTS, and when
    bound to every address (0.0.0.0, ::) any IP address: a literal address cannot be rebound to
    another site.
    """

    def __init__(self, app: Callable, bound: str, extra: Iterable[str]) -> None:
        self.app = app
        self.wildcard = bound in ("0.0.0.0", "::", "")
        self.allowed = {"localhost", "127.0.0.1", "::1", bound.lower()}
        self.allowed.update(n.strip().lower() for n in extra if n.strip())

    def allows(self, header: str) -> bool:
        if not header:
            return True  # HTTP/1.0 without Host: not a browser, so not a rebinding page
        name = host_name(header)
        return name in self.allowed or _is_ip(name, loopback=not self.wildcard)

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        if self.allows(environ.get("HTTP_HOST", "")):
            return self.app(environ, start_response)
        body = b"unknown Host: add its name to DASHBOARD_ALLOWED_HOSTS to reach this dashboard by it\n"
        start_response("400 Bad Request", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]


class SessionKeys:
    """The session cookies' secret and version, shared by every dashboard process of one app_dir.

    run/dashboard-session.json (mode 600): {"secret", "version", "token"}, the last a digest of the
    token in use, so a new token bumps the version. Read again whenever the file changes: the old and
    the new dashboard of a handover agree on it.
    """

    def __init__(self, paths: Layout, token: Optional[str]) -> None:
        self.path = paths.session
        self._lock = threading.Lock()
        self._seen: Optional[Tuple[int, int]] = None
        self._doc: Dict[str, object] = {}
        os.makedirs(paths.run, mode=0o700, exist_ok=True)
        digest = hashlib.sha256(b"sulfur-token\0" + (token or "").encode()).hexdigest()
        self.digest = digest  # of the token this process accepts: sessions carry it
        with self._lock:
            doc = self._read()
            if not doc.get("secret"):
                doc = {"secret": secrets.token_hex(32), "version": 1, "token": digest}
                self._write(doc)
            elif doc.get("token") != digest:
                doc = dict(doc, version=int(doc.get("version", 0)) + 1, token=digest)
                self._write(doc)

    def _read(self) -> Dict[str, object]:
        try:
            st = os.stat(self.path)
            if self._seen == (st.st_mtime_ns, st.st_ino):
                return self._doc
        except OSError:
            return {}
        self._seen, self._doc = (st.st_mtime_ns, st.st_ino), read_json(self.path)
        return self._doc

    def _write(self, doc: Dict[str, object]) -> None:
        write_json(self.path, doc)
        self._seen, self._doc = None, doc

    @property
    def secret(self) -> bytes:
        return bytes.fromhex(str(self._read().get("secret") or self._doc["secret"]))

    def cookie_name(self, port: int) -> str:
        """The session cookie's name: the port and a digest of this app_dir's secret. Cookies do not
        tell ports apart, and two hosts' dashboards tunnelled to one machine both serve port 5000:
        the digest keeps them apart, while the two dashboards of a handover (one app_dir) agree."""
        tag = hashlib.sha256(b"sulfur-cookie-name\0" + self.secret).hexdigest()[:8]
        return "sulfur_dashboard_%d_%s" % (port, tag)

    @property
    def version(self) -> int:
        return int(self._read().get("version", 0))

    def revoke(self) -> None:
        """Every cookie issued so far stops working (logout)."""
        with self._lock:
            doc = dict(self._read())
            doc["version"] = int(doc.get("version", 0)) + 1
            self._write(doc)


def client_key(address: Optional[str]) -> str:
    """Whom the login limit counts: an IPv4 address, or an IPv6 /64 (one host has a whole /64)."""
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return address or "?"
    ip = getattr(ip, "ipv4_mapped", None) or ip  # a dual-stack bind sees IPv4 clients as ::ffff:a.b.c.d
    return str(ipaddress.ip_network("%s/64" % ip, strict=False)) if ip.version == 6 else str(ip)


class LoginLimiter:
    """At most ``limit`` failed logins per client address in ``window`` seconds (monotonic clock)."""

    def __init__(self, limit: int = 10, window: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit, self.window, self.clock = limit, window, clock
        self._failures: Dict[str, Deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def _recent(self, client: str) -> Deque[float]:
        failures, now = self._failures[client], self.clock()
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        for old in [c for c, f in self._failures.items() if not f and c != client]:
            del self._failures[old]  # forget addresses whose failures have all expired
        return failures

    def retry_after(self, client: str) -> Optional[int]:
        """Seconds until ``client`` may try again, or None when it may now."""
        with self._lock:
            failures = self._recent(client)
            if len(failures) < self.limit:
                return None
            return max(1, math.ceil(failures[0] + self.window - self.clock()))

    def failed(self, client: str) -> None:
        with self._lock:
            self._recent(client).append(self.clock())


def protect(response: Any) -> Any:
    """Headers every page of ours sends: another local port is the same site to a browser, so it
    must not frame us to steal a click; and no content sniffing."""
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Content-Security-Policy", "frame-ancestors 'none'")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    return response


def new_csrf() -> str:
    return secrets.token_urlsafe(32)


def csrf_ok(expected: Optional[str], given: List[Optional[str]]) -> bool:
    """One of ``given`` (form field, header) equals the session's token."""
    return bool(expected) and any(g and hmac.compare_digest(g.encode(), expected.encode()) for g in given)


class ApiGuard:
    """The JSON API's checks, as decorators, for the dashboard and the fleet page alike: signed in,
    else 401 with the app's own hint; for a state-changing request also the CSRF token, else 403.

    Each app says what signed in means and where its CSRF token may come from (the dashboard also
    takes a Bearer header, the fleet its session only); the order of the checks and the answers are
    written here once, so no route can forget one or answer differently.
    """

    def __init__(self, authorized: Callable[[], bool], csrf_checked: Callable[[], bool], refusal: str) -> None:
        self.authorized, self.csrf_checked, self.refusal = authorized, csrf_checked, refusal

    def signed_in(self, view: View) -> View:
        """A route that only reads: the session (or the app's other way in) is enough."""
        @functools.wraps(view)
        def checked(*args: Any, **kwargs: Any) -> Any:
            if not self.authorized():
                return jsonify({"error": self.refusal}), 401
            return view(*args, **kwargs)

        return cast(View, checked)

    def action(self, view: View) -> View:
        """A route that changes something: signed in first (401: a stranger is told to sign in), then
        the CSRF token (403: our own page, reloaded, has one; another site's page never will)."""
        @functools.wraps(view)
        def checked(*args: Any, **kwargs: Any) -> Any:
            if not self.csrf_checked():
                return jsonify({"error": CSRF_REFUSAL}), 403
            return view(*args, **kwargs)

        return self.signed_in(cast(View, checked))
