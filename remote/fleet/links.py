"""One kept-open SSH connection per host for the fleet page, carrying the host's `ctl watch`.

The host pushes (a line per state change, a sample every 10 s), so an idle fleet costs next to
nothing however many hosts it shows. A keepalive goes every 5 s; three unanswered (15 s) and the host
is marked unreachable, with the time since when, and the connection is dropped and made again with
backoff (1 s doubling to 30 s). Each link has its own thread: a dead host never slows the others.
Closing a link closes its channel, and the host's watch ends with it.
"""

from __future__ import annotations

import json
import math
import threading
import time
from typing import Any, Callable, Dict, Iterator, Optional

from remote import ctlcalls
from remote.host import history
from remote.host.wire import PROTOCOL
from remote.inventory import Host

KEEPALIVE = 5.0
MISSED = 3
BACKOFF, BACKOFF_CAP = 1.0, 30.0
KEPT = 8640  # samples: 24 h at one per 10 s
MAX_LINE = 8 << 20  # a day's backlog unthinned (an older host release sends that) is about 1 MB


class Link:
    """A host's latest state as the page shows it (``snapshot()``), kept fresh from its watch."""

    def __init__(self, host: Host, changed: Callable[[str, str], None]) -> None:
        self.host, self.changed = host, changed
        self.state: Dict[str, Any] = {"host": host.name, "platform": host.platform, "address": host.address,
                                      "reachable": False, "since": time.time(), "error": "connecting",
                                      "rtt": None, "status": None, "sample": None}
        self.history: Dict[str, list] = {}
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.conn: Any = None
        self.thread = threading.Thread(target=self._run, name="link-%s" % host.name, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self._close()

    def snapshot(self, with_history: bool = False, points: int = 1440) -> Dict[str, Any]:
        """The state; with its history, thinned to about ``points`` samples."""
        with self.lock:
            doc = json.loads(json.dumps(self.state))
            if with_history:
                doc["history"] = history.thin(self.history, points)
            return doc

    # ------------------------------------------------------------------------------- the connection
    def _run(self) -> None:
        delay = BACKOFF
        while not self.stopping.is_set():
            began = time.monotonic()
            try:
                self._session()
                reason = "the host's watch ended"
            except Exception as exc:  # any failure is this host's row, never the fleet's end
                reason = str(exc) or type(exc).__name__
            self._close()
            if self.stopping.is_set():
                return
            self._update(reachable=False, error=reason)
            if time.monotonic() - began > 60:
                delay = BACKOFF  # it had been up a while: a fresh start
            self.stopping.wait(delay)
            delay = min(delay * 2, BACKOFF_CAP)

    def _close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass

    def _session(self) -> None:
        from remote.ssh import connect

        self.conn = connect(self.host)
        transport = self.conn.client.get_transport()
        since = self.history["t"][-1] if self.history.get("t") else None
        channel = self._ctl(self.conn, "watch", {"since": since, "token_env": self.host.bot_token_env})
        pong = {"at": time.monotonic()}
        threading.Thread(target=self._keepalive, args=(transport, pong), daemon=True).start()

        def quiet() -> bool:
            if time.monotonic() - pong["at"] > KEEPALIVE * MISSED:
                raise ConnectionError("no answer to %d keepalives (%.0f s)" % (MISSED, KEEPALIVE * MISSED))
            return self.stopping.is_set()

        for line in _lines(channel, 1.0, quiet):
            self._line(line)

    def _ctl(self, conn: Any, command: str, options: Dict[str, Any]) -> Any:
        """A channel of ``conn`` running the host's ctl ``command``, its request sent."""
        channel = conn.client.get_transport().open_session()
        channel.exec_command(ctlcalls.ctl_command(self.host, command))
        request = dict(ctlcalls.ctl_request(self.host, command, options), protocol=PROTOCOL)
        channel.sendall((json.dumps(request) + "\n").encode())
        return channel

    def _keepalive(self, transport: Any, pong: Dict[str, float]) -> None:
        """keepalive@openssh.com every 5 s; OpenSSH answers (with a failure: any answer will do)."""
        while transport.is_active() and not self.stopping.is_set():
            sent = time.monotonic()
            transport.global_request("keepalive@openssh.com", wait=True)  # returns once answered or closed
            if not transport.is_active():
                return
            pong["at"] = time.monotonic()
            self._update(rtt=round(pong["at"] - sent, 4))
            self.stopping.wait(KEEPALIVE)

    def tunnel(self, stop: threading.Event, address: str = "127.0.0.1") -> int:
        """A local port forward (Fabric's) to this host's dashboard, on a free port of the loopback
        ``address``, open until ``stop`` is set or the link drops; returns the port once it listens."""
        import socket

        conn = self.conn
        if conn is None:
            raise ConnectionError("%s is not reachable" % self.host.name)
        probe = socket.socket()
        probe.bind((address, 0))
        port = probe.getsockname()[1]
        probe.close()
        remote = self.host.dashboard_host if self.host.dashboard_host not in ("0.0.0.0", "::") else "127.0.0.1"
        ready, failed = threading.Event(), []

        def hold() -> None:
            try:
                with conn.forward_local(port, remote_port=self.host.dashboard_port, remote_host=remote,
                                        local_host=address):
                    ready.set()
                    while not stop.is_set() and not self.stopping.is_set() and self.conn is conn:
                        stop.wait(0.5)
            except Exception as exc:  # the port taken meanwhile, the link gone: the caller's line
                failed.append(exc)
            finally:
                ready.set()

        threading.Thread(target=hold, name="tunnel-%s" % self.host.name, daemon=True).start()
        if not ready.wait(10) or failed:
            stop.set()
            raise ConnectionError("the tunnel did not open: %s" % (failed[0] if failed else "no answer in 10 s"))
        return port

    def follow(self, service: str, lines: int, emit: Callable[[str], None], stop: threading.Event) -> None:
        """`ctl logs --follow` of ``service`` on this link's connection, each line to ``emit``, until
        ``stop`` is set (the page picked another log or went away) or the link drops. Closing the
        channel ends the host's side (its stdin ends)."""
        conn = self.conn
        if conn is None:
            raise ConnectionError("%s is not reachable" % self.host.name)
        channel = self._ctl(conn, "logs", {"service": service, "lines": lines, "follow": True})
        try:
            for line in _lines(channel, 0.5, lambda: stop.is_set() or self.stopping.is_set()):
                emit(line.decode("utf-8", "replace"))
        finally:
            channel.close()

    # ------------------------------------------------------------------------------- what it says
    def _line(self, line: bytes) -> None:
        """One line of the host's watch. Every line is untrusted: only JSON with finite numbers is
        read (a bare NaN forwarded would break the page's JSON for every host), and only the ring's
        own columns, aligned on their times, are kept."""
        try:
            doc = json.loads(line, parse_float=_finite, parse_constant=_no_constant)
        except ValueError:
            return
        if not isinstance(doc, dict):
            return
        kind = doc.get("kind")
        if kind is None and doc.get("ok") is False:  # the shell guard's or ctl's one-line refusal
            raise ConnectionError(str(doc.get("error")))
        if kind == "history":
            samples = aligned(doc.get("samples"))
            self._keep(samples)
            last = {name: values[-1] for name, values in samples.items() if values}
            known = {"sample": last} if last and self.state["sample"] is None else {}  # load, memory at once
            self._update(reachable=True, error=None, since=None, kind="history", **known)
        elif kind == "status":
            status = doc.get("status")
            self._update(reachable=True, error=None, since=None, kind="status",
                         status=status if isinstance(status, dict) else None)
        elif kind == "sample":
            sample = {name: _number(doc.get(name)) for name in history.FIELDS}
            if sample["t"] is not None:
                self._keep({name: [value] for name, value in sample.items()})
            self._update(reachable=True, error=None, since=None, sample=sample, kind="sample")

    def _keep(self, columns: Dict[str, list]) -> None:
        """New values at the end of each history column (aligned ones), the last KEPT of each kept."""
        with self.lock:
            for name in history.FIELDS:
                kept = self.history.setdefault(name, [])
                kept.extend(columns.get(name, ()))
                del kept[:-KEPT]

    def _update(self, kind: str = "state", **changes: Any) -> None:
        with self.lock:
            if changes.get("reachable") is False and self.state["reachable"]:
                changes["since"] = time.time()
            elif changes.get("reachable") is False:
                changes.pop("since", None)  # unreachable since the first time, not since the last try
            self.state.update(changes)
        self.changed(self.host.name, kind)


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999
        raise ValueError("not a finite number")
    return value


def _no_constant(name: str) -> None:
    raise ValueError("%s is not JSON" % name)


def _number(value: Any) -> Optional[float]:
    """A figure the page can draw: a number a browser reads exactly (below 2**53), else None (a gap)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) < 2 ** 53:
        return value
    return None


def aligned(samples: Any) -> Dict[str, list]:
    """A backlog's columns as the charts need them: the ring's fields only, each as long as the
    times (the newest KEPT), numbers or None; rows without a time dropped."""
    if not isinstance(samples, dict) or not isinstance(samples.get("t"), list):
        return {}
    count = min(len(samples["t"]), KEPT)
    out = {}
    for name in history.FIELDS:
        values = samples.get(name)
        values = [_number(v) for v in values[-count:]] if isinstance(values, list) and count else []
        out[name] = [None] * (count - len(values)) + values
    rows = [i for i, t in enumerate(out["t"]) if t is not None]
    if len(rows) < count:
        out = {name: [values[i] for i in rows] for name, values in out.items()}
    return out


def _lines(channel: Any, poll: float, done: Callable[[], bool]) -> Iterator[bytes]:
    """The channel's output line by line until it ends or ``done()``; ``done`` is asked every
    ``poll`` seconds, whether or not anything came. A line longer than MAX_LINE ends it."""
    channel.settimeout(poll)
    pending = b""
    while not done():
        try:
            data = channel.recv(65536)
        except OSError:  # socket.timeout: nothing new
            continue
        if not data:
            return
        pending += data
        *lines, pending = pending.split(b"\n")
        if len(pending) > MAX_LINE:
            raise ConnectionError("the host sent a line of over %d MB" % (MAX_LINE >> 20))
        yield from lines


def start_links(hosts: list, changed: Callable[[str, str], None]) -> Dict[str, Link]:
    links = {host.name: Link(host, changed) for host in hosts}
    for link in links.values():
        link.start()
    return links


def stop_links(links: Optional[Dict[str, Link]]) -> None:
    for link in (links or {}).values():
        link.stop()
