"""The hosts' own dashboards on this machine: one tunnel per host through its link, each on a loopback
address of its own.

Kept apart from the page's server because its state (the open tunnels, the addresses handed out,
a lock per host) is its own and outlives any request: a tunnel stays open until the fleet stops.
"""

from __future__ import annotations

import secrets
import socket
import threading
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, Tuple

if TYPE_CHECKING:
    from .links import Link


def _bindable(address: str) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind((address, 0))
            return True
        except OSError:
            return False


class Tunnels:
    """Each host's tunnel to its dashboard, opened on the page's demand and closed when the fleet stops."""

    def __init__(self, names: Iterable[str], link: Callable[[str], Link]) -> None:
        self.link = link  # the host's link now: links are made when the fleet starts
        self._locks = {name: threading.Lock() for name in names}  # held while one opens
        self._lock = threading.Lock()  # the addresses handed out
        self._open: Dict[str, Tuple[threading.Event, str]] = {}  # host -> (its stop, local address:port)
        self._addresses: Dict[str, str] = {}  # host -> its tunnel's loopback address, for this run

    def open(self, name: str) -> Tuple[Dict[str, Any], int]:
        """The host's own dashboard through the link, as the page's answer (a document and its HTTP
        status): only one with a token, since any process on this machine can reach a tunnel's port.
        One per host; one that closed (a reconnect) is made again, never its port handed out."""
        status = self.link(name).snapshot().get("status") or {}
        if not status.get("dashboard_token"):
            return {"ok": False, "line": "%s: its dashboard has no DASHBOARD_TOKEN, and a tunnel is open to "
                    "every process here: add DASHBOARD_TOKEN=<16 characters or more> to its shared/.env "
                    "(invoke deploy --host %s --env-file FILE), then invoke restart --host %s"
                    % (name, name, name)}, 409
        with self._locks[name]:  # one tunnel per host, however many clicks come at once
            known = self._open.get(name)
            if known is None or known[0].is_set():
                stop = threading.Event()
                with self._lock:
                    address = self.loopback(name)
                try:
                    known = self._open[name] = (stop, "%s:%d" % (address, self.link(name).tunnel(stop, address)))
                except Exception as exc:
                    return {"ok": False, "line": "%s: %s" % (name, exc)}, 409
        url = "http://%s/" % known[1]
        line = "%s: its dashboard at %s (a tunnel, until the fleet stops)" % (name, url)
        if known[1].startswith("127.0.0.1:"):  # no loopback address of its own could be bound
            line += "; this machine has only 127.0.0.1 for loopback, so the pages of every tunnel share its cookies"
        return {"ok": True, "url": url, "line": line}, 200

    def loopback(self, name: str) -> str:
        """A loopback address for the host's tunnel, its own for this fleet run: a random one of
        127.0.0.0/8 (a browser keeps cookies and same-site per address, not per port, so a hostile
        host's dashboard can neither read nor forge the others' cookies nor the fleet's, and never
        gets an address another host's cookies were left on by an earlier run). Where only some
        loopback addresses exist (macOS: 127.0.0.1 and any aliases, such as 127.0.0.2), a free alias
        of 127.0.0.2–32; with none, 127.0.0.1, which the fleet page shares."""
        known = self._addresses.get(name)
        if known:
            return known
        taken = set(self._addresses.values()) | {"127.0.0.1"}
        guesses = ["127.%d.%d.%d" % (secrets.randbelow(256), secrets.randbelow(256), 1 + secrets.randbelow(254))
                   for _ in range(3)]
        aliases = ["127.0.0.%d" % n for n in range(2, 33)]
        secrets.SystemRandom().shuffle(aliases)
        for address in guesses + aliases:
            if address not in taken and _bindable(address):
                self._addresses[name] = address
                return address
        return "127.0.0.1"

    def close(self) -> None:
        """Every tunnel ends (its thread sees its stop): the fleet is stopping."""
        for stop, _ in list(self._open.values()):
            stop.set()
