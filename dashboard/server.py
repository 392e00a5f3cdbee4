"""Serve the app with werkzeug's threaded server on *our* socket, and stop without dropping requests.

werkzeug runs each connection in a daemon thread that dies with the process, and keeps idle
keep-alive connections open forever; both would cut requests short on exit. Here every connection
thread is tracked, an idle connection is closed once draining starts, and the process waits for the
busy ones (up to a drain timeout) before it exits.

Bounds, as gunicorn and nginx keep them: a connection idle for ``idle_timeout`` (60 s) is closed, and
at most ``max_connections`` (100) are held at once, one thread each. A new connection at the cap
closes the connection idle the longest (or, with none idle, is answered 503 and closed without a
thread), so 400 idle sockets cost 100 threads at most and /healthz still answers at once.
"""

import select
import signal
import socket
import threading
import time
from typing import Callable, Dict, Optional, Set

from werkzeug.serving import ThreadedWSGIServer, WSGIRequestHandler, make_server

from remote.host.supervision.listener import store_socket

IDLE_POLL_SECONDS = 0.2
IDLE_TIMEOUT = 60.0
MAX_CONNECTIONS = 100
BUSY_ANSWER = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nConnection: close\r\n"
               b"Retry-After: 1\r\nContent-Length: 20\r\n\r\ntoo many connections")


class DrainingHandler(WSGIRequestHandler):
    """Waits for a request while watching the server's drain flag, its idle deadline and an eviction,
    instead of blocking in readline; a request line that never completes times out too."""

    def setup(self) -> None:
        self.timeout = self.server.idle_timeout  # type: ignore[attr-defined]  # set on the socket: a half-sent
        super().setup()                                                        # request ends too

    def handle_one_request(self) -> None:
        server = self.server
        draining, idle = server.draining, server.idle  # type: ignore[attr-defined]
        with server.conns_lock:  # type: ignore[attr-defined]
            idle[self.connection] = time.monotonic()
        while not select.select([self.connection], [], [], IDLE_POLL_SECONDS)[0]:
            with server.conns_lock:  # type: ignore[attr-defined]
                since = idle.get(self.connection)
            if draining.is_set() or since is None or time.monotonic() - since > server.idle_timeout:  # type: ignore
                self.close_connection = True  # idle when draining began, evicted, or for too long
                return
        with server.conns_lock:  # type: ignore[attr-defined]
            if idle.pop(self.connection, None) is None:  # evicted as it woke: the socket is shut down
                self.close_connection = True
                return
        super().handle_one_request()
        if draining.is_set():
            self.close_connection = True


class Server:
    """A werkzeug server on a given listening socket, with drain-on-signal."""

    def __init__(self, app: object, sock_fd: int, host: str, drain_timeout: float = 10.0,
                 idle_timeout: float = IDLE_TIMEOUT, max_connections: int = MAX_CONNECTIONS,
                 app_dir: Optional[str] = None) -> None:
        self.draining = threading.Event()
        self.app_dir = app_dir  # where run/notify.name says which supervisor to hand the socket to
        self.drain_timeout, self.max_connections = drain_timeout, max_connections
        self._threads: Set[threading.Thread] = set()
        self._threads_lock = threading.Lock()
        self.httpd: ThreadedWSGIServer = make_server(
            host, 0, app, threaded=True, request_handler=DrainingHandler, fd=sock_fd
        )
        self.idle: Dict[socket.socket, float] = {}  # connection -> idle since (monotonic), while it waits
        self.httpd.draining = self.draining  # type: ignore[attr-defined]
        self.httpd.idle, self.httpd.conns_lock = self.idle, self._threads_lock  # type: ignore[attr-defined]
        self.httpd.idle_timeout = idle_timeout  # type: ignore[attr-defined]
        self.httpd.process_request = self._process_request  # type: ignore[method-assign]

    def _process_request(self, request: socket.socket, client_address: object) -> None:
        with self._threads_lock:
            if len(self._threads) >= self.max_connections and not self._evict_idlest():
                self._refuse(request)
                return
            thread = threading.Thread(target=self._run_request, args=(request, client_address), daemon=True)
            self._threads.add(thread)
            self.idle[request] = time.monotonic()  # idle until its first request line
        thread.start()

    def _evict_idlest(self) -> bool:
        """Close the connection idle the longest (its thread sees it and ends); False when none is idle."""
        if not self.idle:
            return False
        oldest = min(self.idle, key=self.idle.__getitem__)
        del self.idle[oldest]
        try:
            oldest.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        return True

    @staticmethod
    def _refuse(request: socket.socket) -> None:
        """Every connection is busy: 503 and close, from the accepting thread, never blocking on it."""
        try:
            request.setblocking(False)
            request.send(BUSY_ANSWER)
        except OSError:
            pass
        finally:
            request.close()

    def _run_request(self, request: socket.socket, client_address: object) -> None:
        try:
            self.httpd.process_request_thread(request, client_address)  # type: ignore[arg-type]
        finally:
            with self._threads_lock:
                self._threads.discard(threading.current_thread())
                self.idle.pop(request, None)

    def busy(self) -> int:
        with self._threads_lock:
            return len(self._threads)

    def serve(self, on_ready: Callable[[], None], on_drain: Optional[Callable[[], None]] = None) -> bool:
        """Serve until SIGTERM/SIGINT, then drain. True when every request finished in time."""

        def stop(signum: int, frame: object) -> None:
            if not self.draining.is_set():
                self.draining.set()
                # shutdown() waits for serve_forever to return: it must not run in this thread
                threading.Thread(target=self.httpd.shutdown, daemon=True).start()

        def hand_over(signum: int, frame: object) -> None:
            # our supervisor died and a new one asks for the socket we serve on (remote/host/supervision/orphans.py)
            if not self.draining.is_set():
                store_socket(self.httpd.socket, self.app_dir)

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGUSR1, hand_over)
        on_ready()
        self.httpd.serve_forever(poll_interval=0.1)  # closes our copy of the listening socket
        if on_drain is not None:
            on_drain()
        deadline = time.monotonic() + self.drain_timeout
        next_drain = time.monotonic() + 0.5
        while self.busy() and time.monotonic() < deadline:
            time.sleep(0.05)
            if on_drain is not None and time.monotonic() >= next_drain:
                on_drain()  # again: a Socket.IO client that was mid-handshake the first time is closed now
                next_drain = time.monotonic() + 0.5
        return self.busy() == 0
