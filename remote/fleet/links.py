"""One kept-open SSH connection per host for the fleet page, carrying the host's `ctl watch`.

The host pushes (a line per state change, a sample every 10 s), so an idle fleet costs next to
nothing however many hosts it shows. A keepalive goes every 5 s; three unanswered (15 s) and the host
is marked unreachable, with the time since when, and the connection is dropped and made again with
backoff (1 s doubling to 30 s). Each link has its own thread: a dead host never slows the others.
Closing a link closes its channel, and the host's watch ends with it.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from typing import Any, Callable, Dict, Iterator, List, Optional

from remote import ctlcalls
from remote.host.common import epochs, history, leases
from remote.inventory import Host

from . import intake
from .forward import Forward

log = logging.getLogger("sulfur.fleet")  # no handler set: Python's last resort writes warnings to stderr
KEEPALIVE = 5.0
MISSED = 3
BACKOFF, BACKOFF_CAP = 1.0, 30.0
BACKOFF_CAP_BOT = 5.0  # a host with a bot may come back running a stale one: fenced within seconds
KEPT = intake.KEPT
CHANNEL_TIMEOUT = 30.0  # s: opening a channel and sending its request, at most
MAX_LINE = 4 << 20  # a day's backlog unthinned (an older host release sends that) is about 1 MB
LOG_WIDTH, LOG_BATCH, LOG_EVERY = 2000, 200, 0.1  # a log line's characters; lines per event; s between


class Link:
    """A host's latest state as the page shows it (``snapshot()``), kept fresh from its watch."""

    def __init__(self, host: Host, changed: Callable[[str, str], None]) -> None:
        self.host, self.changed = host, changed
        self.state: Dict[str, Any] = {"host": host.name, "platform": host.platform, "address": host.address,
                                      "reachable": False, "since": time.time(), "error": "connecting",
                                      "rtt": None, "status": None, "status_error": None, "sample": None}
        self.history: Dict[str, list] = {}
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.conn: Any = None
        self._told = -60.0  # when a failure to tell the page was last logged (once a minute at most)
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
            self._update(reachable=False, error=reason)  # never raises: telling the page is not this link's end
            if time.monotonic() - began > 60:
                delay = BACKOFF  # it had been up a while: a fresh start
            self.stopping.wait(delay)
            delay = min(delay * 2, BACKOFF_CAP_BOT if self.host.bot_command else BACKOFF_CAP)

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
        channel = conn.client.get_transport().open_session(timeout=CHANNEL_TIMEOUT)
        channel.settimeout(CHANNEL_TIMEOUT)  # a host that takes the channel and then reads nothing
        channel.exec_command(ctlcalls.ctl_command(self.host, command))
        request = ctlcalls.ctl_request(self.host, command, options)
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
        """A local port forward to this host's dashboard, on a free port of the loopback ``address``,
        open until ``stop`` is set or the link drops; returns the port, which listens already. Each
        connection through it is carried on its own (forward.py): one that cannot be is closed, and
        the port goes on accepting."""
        conn = self.conn
        transport = conn.client.get_transport() if conn is not None else None
        if conn is None or transport is None:
            raise ConnectionError("%s is not reachable" % self.host.name)
        listener = socket.socket()
        try:
            listener.bind((address, 0))
            listener.listen(16)
        except OSError:
            listener.close()
            raise
        remote = self.host.dashboard_host if self.host.dashboard_host not in ("0.0.0.0", "::") else "127.0.0.1"
        carried = Forward(transport, listener, (remote, self.host.dashboard_port), self.host.connect_timeout)

        def hold() -> None:
            try:
                carried.serve(lambda: not stop.is_set() and not self.stopping.is_set() and self.conn is conn)
            finally:
                stop.set()  # closed (a reconnect, too): the fleet opens a new one, never hands out this port

        threading.Thread(target=hold, name="tunnel-%s" % self.host.name, daemon=True).start()
        return listener.getsockname()[1]

    def follow(self, service: str, lines: int, emit: Callable[[List[str]], None], stop: threading.Event) -> None:
        """`ctl logs --follow` of ``service`` on this link's connection, its lines to ``emit`` in
        batches, until ``stop`` is set (the page picked another log or went away) or the link drops.
        Closing the channel ends the host's side (its stdin ends)."""
        conn = self.conn
        if conn is None:
            raise ConnectionError("%s is not reachable" % self.host.name)
        channel = self._ctl(conn, "logs", {"service": service, "lines": lines, "follow": True})
        if stop.is_set():  # another log was picked while this one opened
            channel.close()
            return
        try:
            for batch in log_batches(channel, lambda: stop.is_set() or self.stopping.is_set()):
                emit(batch)
        finally:
            channel.close()

    # ------------------------------------------------------------------------------- what it says
    def _line(self, line: bytes) -> None:
        """One line of the host's watch, untrusted (intake): finite JSON only, the ring's own columns
        aligned on their times, a status only of a shape and size a page can show."""
        doc = intake.parse(line)
        if doc is None:
            return
        kind = doc.get("kind")
        if kind is None and doc.get("ok") is False:  # the shell guard's or ctl's one-line refusal
            raise ConnectionError(str(doc.get("error"))[:500])
        if kind == "history":
            samples = intake.aligned(doc.get("samples"))
            self._keep(samples)
            last = {name: values[-1] for name, values in samples.items() if values}
            known = {"sample": last} if last and self.state["sample"] is None else {}  # load, memory at once
            self._update(reachable=True, error=None, since=None, kind="history", **known)
        elif kind == "status":
            status, wrong = intake.status(doc.get("status"))  # why it was refused stays until the next one
            shown = epochs.answer_text(status, self.host.name) if status else None
            lease = leases.text(((status.get("services") or {}).get("bot") or {}).get("lease")) if status else None
            shown = "; ".join(filter(None, [shown, lease])) or None
            self._update(reachable=True, error=None, since=None, kind="status", status=status, status_error=wrong,
                         epoch_text=shown if self.host.bot_command else None)
        elif kind == "sample":
            sample = {name: intake.number(doc.get(name)) for name in history.FIELDS}
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
        try:
            self.changed(self.host.name, kind)
        except Exception as exc:  # the page's trouble is never this link's end: the next change tries again
            if time.monotonic() - self._told > 60:
                self._told = time.monotonic()
                log.warning("fleet: %s: the page was not told of a change: %s", self.host.name, exc)


class _Splitter:
    """Bytes in, whole lines out. Each chunk is searched for its own newlines only: a long line costs
    its length once, not once per chunk; one longer than MAX_LINE ends the channel."""

    def __init__(self) -> None:
        self.pending = bytearray()

    def feed(self, data: bytes) -> List[bytes]:
        if b"\n" not in data:
            self.pending += data
            if len(self.pending) > MAX_LINE:
                raise ConnectionError("the host sent a line of over %d MB" % (MAX_LINE >> 20))
            return []
        lines = data.split(b"\n")
        lines[0] = bytes(self.pending) + lines[0]
        self.pending = bytearray(lines.pop())
        return lines


def _lines(channel: Any, poll: float, done: Callable[[], bool]) -> Iterator[bytes]:
    """The channel's output line by line until it ends or ``done()``; ``done`` is asked every
    ``poll`` seconds, whether or not anything came."""
    channel.settimeout(poll)
    split = _Splitter()
    while not done():
        try:
            data = channel.recv(65536)
        except socket.timeout:  # nothing new (any other error ends the channel)
            continue
        if not data:
            return
        yield from split.feed(data)


def _log_text(line: bytes) -> str:
    """A log line for the page: at most LOG_WIDTH characters (UTF-8 has at most 4 bytes each)."""
    return line[:LOG_WIDTH * 4].decode("utf-8", "replace")[:LOG_WIDTH]


def log_batches(channel: Any, done: Callable[[], bool]) -> Iterator[List[str]]:
    """A log's lines in batches, until the channel ends or ``done()``: at most LOG_WIDTH characters
    a line, LOG_BATCH lines a batch (the newest), one batch every LOG_EVERY seconds at most, so a
    host that floods its log costs the page a few events a second."""
    channel.settimeout(LOG_EVERY)
    split, pending, last = _Splitter(), [], 0.0
    while not done():
        try:
            data: Optional[bytes] = channel.recv(65536)
        except socket.timeout:  # nothing new, but what waits may be due
            data = None
        if data == b"":
            break
        pending.extend(_log_text(line) for line in (split.feed(data) if data else ()))
        del pending[:-LOG_BATCH]
        if pending and time.monotonic() - last >= LOG_EVERY:
            last = time.monotonic()
            yield pending
            pending = []
    else:
        return
    if split.pending:  # the channel ended within a line: its last one, unended
        pending.append(_log_text(bytes(split.pending)))
    if pending:
        yield pending[-LOG_BATCH:]


def start_links(hosts: list, changed: Callable[[str, str], None]) -> Dict[str, Link]:
    links = {host.name: Link(host, changed) for host in hosts}
    for link in links.values():
        link.start()
    return links


def stop_links(links: Optional[Dict[str, Link]]) -> None:
    for link in (links or {}).values():
        link.stop()
