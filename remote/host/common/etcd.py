"""A small etcd v3 client over its JSON gateway (HTTP/HTTPS, http.client only): the host side's way to a
consensus store for the bot's lease, on Python 3.8 and Termux, with no gRPC and no third-party module.

What it covers is what a lease election needs: log in (``user`` and a password; the token is
renewed when etcd says it expired or was lost with a member restart), read, write, compare-and-swap
transactions, leases (grant, keep alive, revoke, time left), a watch (one HTTP response that streams
events), and the cluster's health. Keys and values are bytes in etcd and base64 in JSON; 64-bit
integers come back as strings. Every call has a bound: ``timeout`` per HTTP request (the watch's
``timeout`` is its whole length), and a failed endpoint hands the call to the next one.
"""

import base64
import contextlib
import http.client
import json
import socket
import ssl
import time
import urllib.parse


class EtcdError(Exception):
    """etcd answered with an error, or no endpoint answered: ``code`` is etcd's gRPC code or None."""

    def __init__(self, message, code=None):
        super().__init__(message)
        self.code = code


class AuthFailed(EtcdError):
    """The user or the password is wrong (one clear line, never retried: a wrong password stays wrong)."""


class Unreachable(EtcdError):
    """No endpoint answered within the timeout."""


UNAUTHENTICATED, PERMISSION_DENIED, INVALID_ARGUMENT, NOT_FOUND, UNAVAILABLE = 16, 7, 3, 5, 14
_TOKEN_LOST = ("invalid auth token", "auth token", "user name is empty")
#: a cluster between two leaders answers these for a moment: the request goes to the next member
_TRANSIENT = ("leader changed", "no leader", "request timed out", "too many requests")


def b64(data):
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode("ascii")


def unb64(text):
    return base64.b64decode(text or "")


def prefix_end(prefix):
    """The range_end that selects every key starting with ``prefix`` (etcd's own rule: last byte + 1)."""
    raw = bytearray(prefix.encode() if isinstance(prefix, str) else prefix)
    while raw and raw[-1] == 0xFF:
        raw.pop()
    if not raw:
        return b"\0"
    raw[-1] += 1
    return bytes(raw)


class Etcd:
    def __init__(self, endpoints, user=None, password=None, ca=None, timeout=5.0, ca_pem=None):
        self.endpoints = [e.rstrip("/") for e in endpoints]
        if not self.endpoints:
            raise ValueError("no etcd endpoint")
        self.user, self.password, self.timeout = user, password, timeout
        self.context = ssl.create_default_context(cafile=ca, cadata=ca_pem) if ca or ca_pem else None
        self.token = None
        self.current = 0  # the endpoint that answered last: tried first
        self._kept = {}   # endpoint -> an open connection, used again by the next request there
        self.requests = 0  # made so far (status shows a host's rate; the bench counts them)

    # ------------------------------------------------------------------ HTTP
    def _connection(self, endpoint, timeout, fresh=False):
        """A kept connection to ``endpoint`` (one TLS handshake, not one per request: a phone pays for
        every byte), or a new one. No proxy, no redirect: the password goes to the endpoint named only."""
        conn = None if fresh else self._kept.pop(endpoint, None)
        if conn is not None:
            if conn.sock is not None:
                conn.sock.settimeout(timeout)
            return conn
        parts = urllib.parse.urlsplit(endpoint)
        if parts.scheme == "https":
            return http.client.HTTPSConnection(parts.hostname, parts.port or 443, timeout=timeout,
                                               context=self.context or ssl.create_default_context())
        return http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)

    def _open(self, endpoint, path, body, timeout, token=True, stream=False):
        """(connection, response) of one POST; a kept connection the server has closed meanwhile is
        replaced once (never for a stream, which always has a connection of its own). A stream asks
        for a member with a leader: one cut off from the others ends it instead of staying silent."""
        headers = {"Content-Type": "application/json"}
        if stream:
            headers["Grpc-Metadata-hasleader"] = "true"
        if token and self.token:
            headers["Authorization"] = self.token
        data = json.dumps(body).encode()
        self.requests += 1
        for attempt in (0, 1):
            reused = not stream and attempt == 0 and endpoint in self._kept
            conn = self._connection(endpoint, timeout, fresh=stream or attempt == 1)
            try:
                conn.request("POST", path, body=data, headers=headers)
                return conn, conn.getresponse()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                conn.close()
                if not reused:
                    raise
            except BaseException:
                conn.close()
                raise
        raise OSError("unreachable")  # pragma: no cover (the loop returns or raises)

    def _answer(self, endpoint, path, body, timeout, token=True):
        """One request to one endpoint: its JSON answer, EtcdError for etcd's refusal, OSError when down.
        The whole answer within ``timeout`` (an endpoint that drips bytes is given up too)."""
        deadline = time.monotonic() + timeout
        conn, response = self._open(endpoint, path, body, timeout, token)
        try:
            raw = _read(response, deadline, 1 << 24)
        except BaseException:
            conn.close()
            raise
        if response.status != 200:
            conn.close()
            if 300 <= response.status < 400:
                raise EtcdError("etcd does not redirect: refused (HTTP %d)" % response.status)
            try:
                doc = json.loads(raw[:1 << 16].decode("utf-8"))
            except ValueError:
                doc = {}
            doc = doc if isinstance(doc, dict) else {}
            raise EtcdError(str(doc.get("error") or doc.get("message") or "HTTP %d" % response.status),
                            doc.get("code"))
        response.close()  # read to its end: the connection may carry the next request
        if response.will_close:
            conn.close()
        else:
            self._kept[endpoint] = conn
        return json.loads(raw.decode("utf-8"), parse_int=_number)

    def close(self):
        for conn in self._kept.values():
            conn.close()
        self._kept.clear()

    def call(self, path, body, timeout=None, login=True):
        """``path`` with ``body`` on the first endpoint that answers; logs in (again) when it must."""
        timeout = self.timeout if timeout is None else timeout
        if login and self.user and self.token is None:
            self.login()
        errors, transient = [], False
        for step in range(2 * len(self.endpoints)):  # twice round between two leaders: one takes about a second
            if step >= len(self.endpoints) and not transient:
                break
            index = (self.current + step) % len(self.endpoints)
            endpoint = self.endpoints[index]
            try:
                try:
                    doc = self._answer(endpoint, path, body, timeout)
                except EtcdError as exc:
                    if not (login and self.user and (exc.code == UNAUTHENTICATED or
                                                     any(words in str(exc) for words in _TOKEN_LOST))):
                        raise
                    self.token = None  # expired after idling, or lost with a member's restart: log in again
                    self.login()
                    doc = self._answer(endpoint, path, body, timeout)
            except EtcdError as exc:
                if exc.code == UNAVAILABLE or any(words in str(exc) for words in _TRANSIENT):
                    errors.append("%s: %s" % (endpoint, exc))
                    transient = True
                    time.sleep(min(0.2, timeout / 4))
                    continue
                else:
                    raise
            except (OSError, socket.timeout, ssl.SSLError, ValueError, http.client.HTTPException) as exc:
                errors.append("%s: %s" % (endpoint, getattr(exc, "reason", None) or exc))
                continue
            self.current = index
            return doc
        raise Unreachable("no etcd endpoint answered: %s" % "; ".join(errors))

    def login(self):
        """A fresh auth token for ``user``; AuthFailed for a wrong name or password."""
        try:
            doc = self.call("/v3/auth/authenticate", {"name": self.user, "password": self.password or ""},
                            login=False)
        except EtcdError as exc:
            if exc.code in (INVALID_ARGUMENT, UNAUTHENTICATED) or "authentication failed" in str(exc):
                raise AuthFailed("etcd refused user %r: wrong name or password (ETCD_PASSWORD in shared/.env)"
                                 % self.user, exc.code) from None
            raise
        self.token = doc.get("token")
        return self.token

    # ------------------------------------------------------------------ keys
    def get(self, key):
        """(value bytes, mod_revision, lease id) of ``key``, or None when it is absent."""
        doc = self.call("/v3/kv/range", {"key": b64(key)})
        kvs = doc.get("kvs") or []
        if not kvs:
            return None
        kv = kvs[0]
        return unb64(kv.get("value")), _int(kv.get("mod_revision") or 0), _int(kv.get("lease") or 0)

    def scan(self, prefix):
        """Every key under ``prefix``: ({key: (value, mod_revision, lease)}, the store's revision), so a
        watch can start just after what was read and miss nothing."""
        doc = self.call("/v3/kv/range", {"key": b64(prefix), "range_end": b64(prefix_end(prefix))})
        found = {}
        for kv in doc.get("kvs") or []:
            found[unb64(kv.get("key")).decode("utf-8", "replace")] = (
                unb64(kv.get("value")), _int(kv.get("mod_revision") or 0), _int(kv.get("lease") or 0))
        return found, _int((doc.get("header") or {}).get("revision") or 0)

    def put(self, key, value, lease=None):
        body = {"key": b64(key), "value": b64(value)}
        if lease:
            body["lease"] = str(lease)
        return self.call("/v3/kv/put", body)

    def delete(self, key):
        return _int(self.call("/v3/kv/deleterange", {"key": b64(key)}).get("deleted") or 0)

    def txn(self, compare, success, failure=()):
        """One transaction: (succeeded, its responses). Build the parts with the helpers below."""
        doc = self.call("/v3/kv/txn", {"compare": list(compare), "success": list(success), "failure": list(failure)})
        return bool(doc.get("succeeded")), doc.get("responses") or []

    def create(self, key, value, lease=None):
        """``key`` set only if it does not exist (a holder key under a lease): True when this call made it."""
        done, _ = self.txn([absent(key)], [put_op(key, value, lease)])
        return done

    # ------------------------------------------------------------------ leases
    def grant(self, ttl):
        """A new lease of ``ttl`` whole seconds; its id."""
        doc = self.call("/v3/lease/grant", {"TTL": str(int(ttl))})
        if doc.get("error"):
            raise EtcdError(str(doc["error"]))
        return _int(doc["ID"])

    def keepalive(self, lease):
        """Renew ``lease``: the seconds it has now; 0 when it is gone (expired or revoked)."""
        doc = self.call("/v3/lease/keepalive", {"ID": str(lease)})
        result = doc.get("result") or {}
        return _int(result.get("TTL") or 0)

    def revoke(self, lease):
        try:
            self.call("/v3/lease/revoke", {"ID": str(lease)})
        except EtcdError as exc:
            if exc.code != NOT_FOUND and "not found" not in str(exc):
                raise

    # ------------------------------------------------------------------ watch
    def watch(self, key, since=None, timeout=30.0, prefix=False):
        """Events on ``key`` (every key under it with ``prefix``; each {"type": "PUT"|"DELETE", "key",
        "value", "mod_revision"}) as they come, for at most ``timeout`` seconds in all, from revision
        ``since`` when given. Ends quietly at the timeout (the caller watches again); OSError/EtcdError
        when the endpoint goes away. An expired auth token is renewed once, as call() does."""
        create = {"key": b64(key)}
        if prefix:
            create["range_end"] = b64(prefix_end(key))
        if since:
            create["start_revision"] = str(since)
        deadline = time.monotonic() + timeout
        for attempt in (0, 1):
            if self.user and self.token is None:
                self.login()
            try:
                yield from self._watch(create, deadline)
                return
            except EtcdError as exc:
                if attempt or not (self.user and (exc.code == UNAUTHENTICATED or
                                                  any(words in str(exc) for words in _TOKEN_LOST))):
                    raise
                self.token = None

    def _watch(self, create, deadline):
        endpoint = self.endpoints[self.current]
        conn, response = self._open(endpoint, "/v3/watch", {"create_request": create},
                                    max(0.1, deadline - time.monotonic()), stream=True)
        if response.status != 200:
            conn.close()
            raise EtcdError("watch refused: HTTP %d" % response.status,
                            UNAUTHENTICATED if response.status == 401 else None)
        with contextlib.closing(conn):
            for line in _lines(response, deadline):
                try:
                    doc = json.loads(line.decode("utf-8"), parse_int=_number)
                except ValueError:
                    raise EtcdError("the watch sent a line that is not JSON") from None
                error = doc.get("error")
                if error:
                    code = error.get("grpc_code") or error.get("code") if isinstance(error, dict) else None
                    raise EtcdError(str(error.get("message") if isinstance(error, dict) else error), code)
                result = doc.get("result") or {}
                if result.get("canceled"):
                    raise EtcdError("the watch was cancelled: %s" % (result.get("cancel_reason") or "?"))
                for event in result.get("events") or []:
                    kv = event.get("kv") or {}
                    yield {"type": event.get("type") or "PUT", "value": unb64(kv.get("value")),
                           "key": unb64(kv.get("key")).decode("utf-8", "replace"),
                           "mod_revision": _int(kv.get("mod_revision") or 0)}



def health(client, endpoint):
    """One member's own view: {"ok", "leader", "error"} (an unreachable member is not ok)."""
    try:
        doc = client._answer(endpoint.rstrip("/"), "/v3/maintenance/status", {}, client.timeout)
    except (EtcdError, OSError, socket.timeout, ssl.SSLError, ValueError, http.client.HTTPException) as exc:
        return {"ok": False, "error": str(getattr(exc, "reason", None) or exc)}
    return {"ok": True, "leader": doc.get("leader"), "version": doc.get("version")}


def _int(value):
    """A 64-bit number as etcd sends it (a string): a longer text is not etcd's (and converting a huge
    one would hold the interpreter for minutes on Pythons without a digit limit)."""
    if isinstance(value, bool) or (isinstance(value, str) and len(value) > 20):
        raise ValueError("a number of over 20 digits: not etcd's")
    return int(value)


def _number(text):
    """json.loads's parse_int: bounded as _int is."""
    return _int(text)


def _read(response, deadline, most):
    """The body, read in pieces until its end, ``most`` bytes or the deadline (then socket.timeout)."""
    read = getattr(response, "read1", None) or response.read
    parts, size = [], 0
    while True:
        if time.monotonic() >= deadline:
            raise socket.timeout("the answer did not end within its time")
        block = read(65536)
        if not block:
            return b"".join(parts)
        parts.append(block)
        size += len(block)
        if size > most:
            raise EtcdError("an answer of over %d bytes: not etcd's" % most)


def _lines(response, deadline, longest=1 << 20):
    """A streamed answer's lines until its end or the deadline; a line over ``longest`` is an error."""
    read = getattr(response, "read1", None) or response.read
    pending = b""
    while time.monotonic() < deadline:
        try:
            block = read(65536)
        except (socket.timeout, TimeoutError):
            return
        if not block:
            return
        pending += block
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            if line.strip():
                yield line
        if len(pending) > longest:
            raise EtcdError("the watch sent a line of over %d bytes" % longest)


# ---------------------------------------------------------------------- transaction parts
def absent(key):
    return {"key": b64(key), "target": "CREATE", "result": "EQUAL", "create_revision": "0"}


def value_is(key, value):
    return {"key": b64(key), "target": "VALUE", "result": "EQUAL", "value": b64(value)}


def put_op(key, value, lease=None):
    request = {"key": b64(key), "value": b64(value)}
    if lease:
        request["lease"] = str(lease)
    return {"request_put": request}


def delete_op(key):
    return {"request_delete_range": {"key": b64(key)}}


def range_op(key):
    return {"request_range": {"key": b64(key)}}


def check(settings, dotenv, timeout=3.0):
    """What a host sees of the cluster (doctor): each endpoint's health, the login with this host's
    ETCD_PASSWORD, a read of the lease's prefix; ``problems`` (one line each) and ``warnings``."""
    endpoints = list(settings.get("endpoints") or [])
    report = {"endpoints": [], "problems": [], "warnings": [], "auth": None}
    if len(endpoints) == 1:
        report["warnings"].append("a single etcd endpoint: losing it stops the bot everywhere (run three "
                                  "members on three always-on machines)")
    try:
        client = Etcd(endpoints, settings.get("user"), dotenv.get("ETCD_PASSWORD"), timeout=timeout,
                      ca_pem=settings.get("ca_pem"))
    except (ValueError, ssl.SSLError) as exc:
        report["problems"].append("etcd settings: %s" % exc)
        return report
    for endpoint in endpoints:
        seen = health(client, endpoint)
        report["endpoints"].append(dict(seen, endpoint=endpoint))
        if not seen["ok"]:
            report["problems"].append("etcd %s unreachable from here: %s" % (endpoint, seen["error"]))
    if not any(e["ok"] for e in report["endpoints"]):
        return report
    if settings.get("user") and not dotenv.get("ETCD_PASSWORD"):
        report["problems"].append("no ETCD_PASSWORD in shared/.env: this host cannot log in to etcd as %s "
                                  "(invoke deploy --env-file)" % settings.get("user"))
        return report
    try:
        client.get("/sulfur/doctor")
        report["auth"] = "ok" if settings.get("user") else "none"
    except AuthFailed as exc:
        report["problems"].append(str(exc))
    except EtcdError as exc:
        report["problems"].append("etcd refused a read of /sulfur/: %s" % exc)
    except Exception as exc:  # whatever the network does: one line for doctor, never a traceback
        report["problems"].append("etcd read of /sulfur/ failed: %s: %s" % (type(exc).__name__, exc))
    return report
