"""The browsers on the fleet page, over Socket.IO: who is signed in, and the one log each follows.

Kept apart from the page's server because this is the only state a page holds open: a followed log
is a channel on a host, which must end when the page picks another log or goes away.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Mapping, Optional

from flask import request
from flask_socketio import SocketIO

from remote.host.common import names

if TYPE_CHECKING:
    from .links import Link


class Pages:
    """The pages connected (signed-in Socket.IO sids) and each one's log pane, as Socket.IO handlers."""

    def __init__(self, socketio: SocketIO, authorized: Callable[[], bool],
                 links: Callable[[], Mapping[str, Link]]) -> None:
        self.socketio, self.authorized, self.links = socketio, authorized, links
        self._lock = threading.Lock()  # the pages connected and their followed logs: never held long
        self._follows: Dict[str, threading.Event] = {}  # Socket.IO sid -> its log pane's stop
        self._connected: set = set()  # Socket.IO sids signed in and not gone
        socketio.on_event("connect", self.connect)
        socketio.on_event("follow", self.follow)
        socketio.on_event("disconnect", self.disconnect)

    def connect(self, auth: Optional[dict] = None) -> bool:
        """Only a browser with the fleet's session: the others get a connect_error."""
        if not self.authorized():
            return False
        with self._lock:
            self._connected.add(request.sid)
        return True

    def follow(self, doc: Any) -> None:
        """The log pane: one followed log per page; picking another stops the last. Events may
        be handled in threads of their own: the swap is under the lock, and a page already gone
        gets none."""
        name = doc.get("host") if isinstance(doc, dict) else None
        service = doc.get("service") if isinstance(doc, dict) else None
        pick = doc.get("n") if isinstance(doc, dict) and isinstance(doc.get("n"), int) else None
        sid, stop = request.sid, threading.Event()
        with self._lock:
            old = self._follows.pop(sid, None)
            wanted = (sid in self._connected and isinstance(name, str) and name in self.links()
                      and service in names.LOGS)
            if wanted:
                self._follows[sid] = stop
        if old is not None:
            old.set()
        if wanted:
            threading.Thread(target=self._follow, args=(sid, name, service, pick, stop), daemon=True).start()

    def disconnect(self, *args: Any) -> None:
        """A page gone: its log's channel on the host ends with it."""
        with self._lock:
            self._connected.discard(request.sid)
            stop = self._follows.pop(request.sid, None)
        if stop is not None:
            stop.set()

    def _follow(self, sid: str, name: str, service: str, pick: Optional[int], stop: threading.Event) -> None:
        """A log followed on the host's link, its batches of lines to that page only, each with the
        number of the page's pick it answers."""
        def emit(lines: List[str]) -> None:
            self.socketio.emit("log", {"host": name, "service": service, "n": pick, "lines": lines}, to=sid)

        try:
            self.links()[name].follow(service, 50, emit, stop)
        except Exception as exc:  # an unreachable host: the pane says so
            emit(["(%s)" % str(exc)[:500]])
