"""What keeps other web pages and other machines out: Host allowlist, CSRF, session keys, login limit.

The dashboard speaks plain HTTP and is meant for loopback or an SSH tunnel; these guard it against
what a browser on the operator's machine can be made to do by another page:
- DNS rebinding (a hostile name that resolves to 127.0.0.1): only known Host names are answered;
- cross-site requests (ports do not separate sites for cookies): every state-changing request must come
  from our own origin (Origin, Sec-Fetch-Site: `same_origin_only`) and carry a CSRF token from our own
  page, or an `Authorization: Bearer` header, which no other page can send. The CSRF token is an HMAC of
  the session's random id with the server's secret (`csrf_for`): the cookie, which the browser also
  sends to every other port of this address and which is signed, not encrypted, does not hold it;
- a captured cookie: it is signed with a random secret kept in app_dir/run (mode 600), not derived from
  the token, and logout or a new token bumps the session version, which revokes every cookie;
- guessing the token: at most 10 wrong tokens a minute per client address (`LoginLimiter`), the last
  of them kept for a browser that has signed in before and has not failed since: behind an SSH tunnel
  everyone is 127.0.0.1, so a flood from that address must not lock the owner out.
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

from flask import jsonify, request

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


def host_port(header: str) -> int:
    """The port in a Host header, 80 when it names none: 'localhost:8022' -> 8022, '[::1]' -> 80."""
    tail = header.strip().rsplit("]", 1)[-1] if header.strip().startswith("[") else header.strip()
    if tail.count(":") != 1:
        return 80
    digits = tail.rsplit(":", 1)[1]
    return int(digits) if digits.isascii() and digits.isdigit() and len(digits) <= 5 else -1


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

    def __init__(self, app: Callable, bound: str, extra: Iterable[str], port: Optional[int] = None) -> None:
        self.app = app
        self.wildcard = bound in ("0.0.0.0", "::", "")
        self.allowed = {"localhost", "127.0.0.1", "::1", bound.lower()}
        self.allowed.update(n.strip().lower() for n in extra if n.strip())
        # given (the fleet page, reached only at its own address and port, never through a tunnel): that
        # port, and the allowed names only, not any loopback literal
        self.port = port

    def allows(self, header: str) -> bool:
        if not header:
            return True  # HTTP/1.0 without Host: not a browser, so not a rebinding page
        name = host_name(header)
        if self.port is not None:
            return name in self.allowed and host_port(header) == self.port
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
    """At most ``limit`` wrong tokens per client address in any ``window`` seconds, however they come,
    while a browser that has signed in before, and has not failed since, gets in at its first try.

    Behind an SSH tunnel every browser and every guesser is 127.0.0.1, so an address alone cannot tell
    the owner from a guesser, and a limit per address alone lets a flood lock the owner out. The
    address's budget is its failures in the window plus the *reserved tries* its sessions hold, never
    over ``limit``, and it is shared out so:

    - A login session (the random id in its cookie) may hold a reserved try, one unit set aside for it:
      it may always try with it, and a wrong token turns the unit into one of the address's failures.
      A session gets one when this process first sees it (a new one, or one from before a restart or a
      handover: ``adopt``), and so does the signed-in session a right token makes, while the address
      has room and holds fewer than ``keep``. Unused for ``ttl`` (10 min), it expires: tries hoarded
      long ago do not hold the budget for good.
    - Any other try (a Bearer header, a Socket.IO token, a session without a reservation) needs room
      below ``limit - 1``, and so does a new reservation: the last unit is never theirs.
    - A *returning* session, whose signed cookie shows it has signed in before (a guesser cannot make
      one) and which has not tried and failed in this process, takes a free unit (the last one is
      kept for it), else the oldest unused reservation of its address, which is dropped. A restart, a
      handover, "sign out everywhere" or a new token leave its cookie returning: the owner gets in
      during a flood from the owner's own address. What can stop it is another returning session's
      failure in the window (the owner's own typo elsewhere, or a captured cookie's one guess).

    Failures plus reservations never exceed ``limit``, and every failure took a unit, so no
    ``window`` holds more than ``limit`` wrong guesses from one address, however many sessions it makes.
    """

    def __init__(self, limit: int = 10, window: float = 60.0, clock: Callable[[], float] = time.monotonic,
                 keep: int = 5, most: int = 10000, ttl: float = 600.0) -> None:
        self.limit, self.window, self.clock, self.ttl = limit, window, clock, ttl
        self.keep, self.most = min(keep, limit - 1), most
        self._failures: Dict[str, Deque[float]] = defaultdict(deque)  # client -> times of its wrong tries
        self._held: Dict[str, Dict[str, float]] = {}  # client -> {session: reserved at}, oldest first
        self._reserved: Dict[str, str] = {}  # session id -> its client
        self._seen: Dict[str, None] = {}  # the sessions this process knows, oldest first
        self._failed: Dict[str, None] = {}  # returning sessions that tried here: kept apart, as a guesser can
        #                                     fill _seen with new sessions but cannot make returning ones
        self._lock = threading.Lock()

    # ----------------------------------------------------------------- the budget, under the lock
    def _recent(self, client: str) -> Deque[float]:
        failures, now = self._failures[client], self.clock()
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        for old in [c for c, f in self._failures.items() if not f and c != client]:
            del self._failures[old]  # forget addresses whose failures have all expired
        return failures

    def _holding(self, client: str) -> Dict[str, float]:
        """The reservations of ``client`` still in force, oldest first (expired ones dropped)."""
        held = self._held.get(client, {})
        for sid, since in list(held.items()):
            if self.clock() - since < self.ttl:
                break
            self._unreserve(sid)
        return self._held.get(client, {})

    def _used(self, client: str) -> int:
        return len(self._recent(client)) + len(self._holding(client))

    def _holds(self, client: str, sid: Optional[str]) -> bool:
        return sid is not None and self._reserved.get(sid) == client and sid in self._holding(client)

    def _returning(self, sid: Optional[str], returning: bool) -> bool:
        return returning and sid is not None and sid not in self._failed

    def _know(self, sid: str, into: Optional[Dict[str, None]] = None) -> None:
        """Remember ``sid`` (in ``into``, by default the sessions seen), forgetting the oldest beyond ``most``."""
        into = self._seen if into is None else into
        into.pop(sid, None)
        into[sid] = None
        while len(into) > self.most:
            del into[next(iter(into))]

    def _reserve(self, client: str, sid: str) -> None:
        if len(self._reserved) >= self.most:
            for other in list(self._held):
                self._holding(other)  # make room by what has expired anywhere
        if (self._used(client) < self.limit - 1 and len(self._holding(client)) < self.keep
                and len(self._reserved) < self.most):
            self._held.setdefault(client, {})[sid] = self.clock()
            self._reserved[sid] = client

    def _unreserve(self, sid: str) -> None:
        client = self._reserved.pop(sid)
        del self._held[client][sid]
        if not self._held[client]:
            del self._held[client]

    # ----------------------------------------------------------------- what the app asks
    def adopt(self, client: str, sid: Optional[str] = None) -> str:
        """The id of a login session: ``sid``, or a new one for a browser without. A session this
        process has not seen (new, or from before a restart or a handover) gets a reserved try when its
        address has room for one."""
        with self._lock:
            if sid is None or sid not in self._seen:
                sid = sid or secrets.token_urlsafe(18)
                self._know(sid)
                self._reserve(client, sid)
            return sid

    def issue(self, client: str) -> str:
        """A new login session's id (``adopt`` without one)."""
        return self.adopt(client)

    def retry_after(self, client: str, sid: Optional[str] = None, returning: bool = False) -> Optional[int]:
        """Seconds until ``client`` (in session ``sid``, ``returning`` when its cookie has signed in
        before) may try again, or None when it may now."""
        with self._lock:
            if self._holds(client, sid) or self._used(client) < self.limit - 1:
                return None
            if self._returning(sid, returning) and (self._used(client) < self.limit or self._holding(client)):
                return None
            # until the oldest failure leaves the window, or the oldest reservation expires
            failures, held = self._recent(client), self._holding(client)
            ends = ([failures[0] + self.window] if failures else []) + [since + self.ttl for since in held.values()]
            return max(1, math.ceil(min(ends) - self.clock())) if ends else int(self.window)

    def attempt(self, client: str, sid: Optional[str] = None, returning: bool = False) -> Optional[float]:
        """A try, counted as a failure before the token is compared (two at once cannot both slip past
        the limit); None when it must wait. ``succeeded`` takes it back when the token was right."""
        with self._lock:
            if self._holds(client, sid):
                self._unreserve(cast(str, sid))  # its reserved unit becomes this failure
            elif self._returning(sid, returning):
                if self._used(client) >= self.limit:
                    held = self._holding(client)
                    if not held:
                        return None
                    self._unreserve(next(iter(held)))  # the oldest unused reservation makes room
            elif self._used(client) >= self.limit - 1:
                return None
            if sid is not None:
                self._know(sid)
                if returning:
                    self._know(sid, self._failed)  # until it succeeds, which replaces the session
            stamp = self.clock()
            self._recent(client).append(stamp)
            return stamp

    def succeeded(self, client: str, stamp: float, session: bool = False) -> Optional[str]:
        """The try at ``stamp`` had the right token: not a failure. With ``session``, the id of the
        signed-in session that replaces the one that tried, holding a reserved try when there is room."""
        with self._lock:
            failures = self._recent(client)
            if stamp in failures:
                failures.remove(stamp)
            if not session:
                return None
            sid = secrets.token_urlsafe(18)
            self._know(sid)
            self._reserve(client, sid)
            return sid

    def release(self, sid: Optional[str]) -> None:
        """A session that signs out gives its reserved try back to its address."""
        with self._lock:
            if sid in self._reserved:
                self._unreserve(sid)


def protect(response: Any) -> Any:
    """Headers every page of ours sends: another local port is the same site to a browser, so it
    must not frame us to steal a click; and no content sniffing."""
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Content-Security-Policy", "frame-ancestors 'none'")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    return response


def csrf_for(secret: bytes, sid: Optional[str]) -> Optional[str]:
    """The CSRF token of session ``sid``: an HMAC with the server's secret, never stored in the cookie.
    The browser sends our cookie to every port of this address, and a signed cookie is readable: a
    server on another port learns the session's id from it, never this token."""
    if not sid:
        return None
    return hmac.new(secret, b"sulfur-csrf\0" + sid.encode(), hashlib.sha256).hexdigest()


def csrf_ok(expected: Optional[str], given: List[Optional[str]]) -> bool:
    """One of ``given`` (form field, header) equals the session's token."""
    return bool(expected) and any(g and hmac.compare_digest(g.encode(), expected.encode()) for g in given)


UNSAFE = ("POST", "PUT", "PATCH", "DELETE")


def cross_origin(allowed: Iterable[str] = ()) -> Optional[str]:
    """Why this state-changing request is another page's (another site, or another port of this
    machine: the same site to a browser, which sends it our cookies), or None when it is our own
    page's or no browser's. A browser's POST carries Origin; one without it (User-Agent Mozilla/...,
    or any Sec-Fetch-* header) is refused, as is Origin: null (a file:// page, a sandboxed frame).
    Clients that are no browser (the CLI, curl) send neither and still need the token or the CSRF one."""
    if request.method not in UNSAFE:
        return None
    origin = request.headers.get("Origin")
    fetched = request.headers.get("Sec-Fetch-Site")
    host = request.host.lower()
    if origin is not None:
        if origin.lower() not in {"http://" + host, "https://" + host} | {a.lower() for a in allowed}:
            return "a request from another page (Origin: %s)" % origin[:100]
    elif fetched is not None or "mozilla/" in request.headers.get("User-Agent", "").lower():
        return "a browser's request without an Origin"
    if fetched is not None and fetched != "same-origin":
        return "a request from another page (Sec-Fetch-Site: %s)" % fetched[:40]
    return None


def same_origin_only(allowed: Iterable[str] = ()) -> Callable[[], Any]:
    """A before_request hook: another page's state-changing request gets 403 before any route runs,
    login and logout included."""
    allowed = tuple(allowed)

    def check() -> Any:
        why = cross_origin(allowed)
        if why is not None:
            return jsonify({"error": "refused: %s; use this page's own buttons" % why}), 403
        return None

    return check


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
