"""A local port forward over an SSH transport that survives a connection it cannot carry.

Fabric's ``forward_local`` opens each connection's channel on its one accepting thread, with no
bound of ours, and that thread ends at the first channel that fails to open (the host's dashboard
between two processes, a slow link): its port keeps listening and every later connection waits in
its backlog forever, so a browser tab through the tunnel hangs until the fleet stops. Here each
connection opens its channel on its own thread, within the link's connect timeout; one that cannot
be carried is closed at once (the browser shows an error and can retry), and the port keeps
accepting. At most ``MAX_CONNECTIONS`` are carried at once: one thread each.
"""

from __future__ import annotations

import select
import socket
import threading
from typing import Any, Callable, Tuple

MAX_CONNECTIONS = 64
CHUNK = 32 * 1024
POLL = 0.5  # s between looks at whether the forward should end


def pump(sock: socket.socket, channel: Any, keep: Callable[[], bool]) -> None:
    """Bytes both ways between a local socket and an SSH channel until both ends have finished
    (an end's EOF passes on as a half-close, as an HTTP client may send one), either fails, or
    ``keep()`` turns false. Both are closed on the way out."""
    ended = {sock: False, channel: False}
    try:
        while keep() and not all(ended.values()):
            readable, _, _ = select.select([end for end, done in ended.items() if not done], [], [], POLL)
            for end in readable:
                other = channel if end is sock else sock
                data = end.recv(CHUNK)
                if data:
                    other.sendall(data)
                    continue
                ended[end] = True
                if other is channel:
                    channel.shutdown_write()
                else:
                    sock.shutdown(socket.SHUT_WR)
    except (OSError, EOFError):  # a reset on either side, the transport gone
        pass
    finally:
        channel.close()
        sock.close()


class Forward:
    """Connections to ``listener`` carried to ``remote`` through ``transport``'s direct-tcpip channels."""

    def __init__(self, transport: Any, listener: socket.socket, remote: Tuple[str, int], open_timeout: float,
                 most: int = MAX_CONNECTIONS) -> None:
        self.transport, self.listener, self.remote = transport, listener, remote
        self.open_timeout, self.most = open_timeout, most
        self._lock = threading.Lock()
        self.carried = 0  # connections being carried now

    def serve(self, keep: Callable[[], bool]) -> None:
        """Accept until ``keep()`` turns false or the transport ends; the listener is closed after."""
        try:
            while keep() and self.transport.is_active():
                if not select.select([self.listener], [], [], POLL)[0]:
                    continue
                try:
                    conn, peer = self.listener.accept()
                except OSError:
                    continue
                with self._lock:
                    full = self.carried >= self.most
                    self.carried += 0 if full else 1
                if full:
                    conn.close()
                    continue
                threading.Thread(target=self._carry, args=(conn, peer, keep), name="forward", daemon=True).start()
        finally:
            self.listener.close()

    def _carry(self, conn: socket.socket, peer: Tuple[str, int], keep: Callable[[], bool]) -> None:
        try:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                channel = self.transport.open_channel("direct-tcpip", self.remote, peer, timeout=self.open_timeout)
            except Exception:  # refused there, the link too slow or gone: this connection only
                conn.close()
                return
            pump(conn, channel, keep)
        finally:
            with self._lock:
                self.carried -= 1
