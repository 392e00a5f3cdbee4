"""Serve the app with werkzeug's threaded server on *our* socket, and stop without dropping requests.

werkzeug runs each connection in a daemon thread that dies with the process, and keeps idle
keep-alive connections open forever; both would cut requests short on exit. Here every connection
thread is tracked, an idle connection is closed once draining starts, and the process waits for the
busy ones (up to a drain timeout) before it exits.

Bounds, as gunicorn and nginx keep them: a connection idle for ``idle_timeout`` (60 s) is closed, and
at most ``max_connections`` (100) are held at once, one thread each. A connection is idle, and so
evictable, until its whole request (head and body, at most ``MAX_BODY``) has arrived: a client that
sends a byte now and then never makes it busy. A new connection at the cap closes the connection idle
the longest (or, with none idle, is answered 503 and closed without a thread), so 400 idle or dripping
sockets cost 100 threads at most and /healthz still answers at once. Socket.IO requests (a websocket,
a long poll) keep their thread for long: at most half the connections serve them, the next gets a
503, so the page, the API and /healthz always have room.
"""

import io
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
MAX_BODY = 64 * 1024  # the dashboard's forms and Socket.IO's messages are far smaller
SOCKETIO_PATH = "/socket.io/"  # Flask-SocketIO's (engineio's) path


def busy_answer(text: bytes) -> bytes:
    """A 503 that closes the connection, sent as is (no thread of the app is spent on it)."""
    return (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nConnection: close\r\n"
            b"Retry-After: 1\r\nContent-Length: %d\r\n\r\n%s" % (len(text), text))


BUSY_ANSWER = busy_answer(b"too many connections")
SOCKETIO_BUSY = busy_answer(b"too many Socket.IO connections")


class Bounds:
    """What the connection threads share: which connections are idle (evictable) and since when, the
    drain flag, and how many serve Socket.IO. One lock guards them and the server's set of threads."""

    def __init__(self, idle_timeout: float, max_connections: int) -> None:
        self.lock = threading.Lock()
        self.draining = threading.Event()
        self.idle: Dict[socket.socket, float] = {}  # connection -> idle since (monotonic), until its request is whole
        self.idle_timeout = idle_timeout
        self.socketio, self.socketio_most = 0, max(1, max_connections // 2)

    def wait_for_request(self, conn: socket.socket) -> bool:
        """Idle until bytes come (True), or False: draining, evicted, or idle for longer than allowed."""
        with self.lock:
            self.idle[conn] = time.monotonic()
        while not select.select([conn], [], [], IDLE_POLL_SECONDS)[0]:
            with self.lock:
                since = self.idle.get(conn)
            if self.draining.is_set() or since is None or time.monotonic() - since > self.idle_timeout:
                return False
        with self.lock:
            return conn in self.idle  # evicted as it woke: the socket is shut down

    def busy(self, conn: socket.socket) -> bool:
        """Its request is whole: no longer evictable. False when it was evicted meanwhile."""
        with self.lock:
            return self.idle.pop(conn, None) is not None

    def evict_idlest(self) -> bool:
        """Close the connection idle the longest (its thread sees it and ends); False when none is idle.
        The caller holds the lock."""
        if not self.idle:
            return False
        oldest = min(self.idle, key=self.idle.__getitem__)
        del self.idle[oldest]
        try:
            oldest.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        return True

    def enter_socketio(self) -> bool:
        with self.lock:
            if self.socketio >= self.socketio_most:
                return False
            self.socketio += 1
            return True

    def leave_socketio(self) -> None:
        with self.lock:
            self.socketio -= 1


class DrainingHandler(WSGIRequestHandler):
    """Waits for a request while watching the server's drain flag, its idle deadline and an eviction,
    instead of blocking in readline; reads the whole request while the connection is still evictable;
    and keeps Socket.IO to its share of the connections."""

    def setup(self) -> None:
        self.bounds: Bounds = self.server.bounds  # type: ignore[attr-defined]
        self.timeout = self.bounds.idle_timeout  # set on the socket: a request that stops coming ends too
        super().setup()
        self.socket_file = self.rfile

    def handle_one_request(self) -> None:
        if not self.bounds.wait_for_request(self.connection):
            self.close_connection = True  # idle when draining began, evicted, or for too long
            return
        super().handle_one_request()  # parse_request reads the request; busy only once it is whole
        if self.bounds.draining.is_set():
            self.close_connection = True

    def parse_request(self) -> bool:
        """The head (werkzeug's parsing), then the body, both read while the connection is idle: a
        client that drips them is evicted by the next connection at the cap. The app then reads the
        body from memory, and werkzeug's drain of stray bytes after the answer has none to wait for
        (it would read the socket until 10 MB or a 60 s silence)."""
        if not super().parse_request():
            return False
        body = self._body()
        if body is None or not self.bounds.busy(self.connection):
            self.close_connection = True  # refused (answered), gone, or evicted while it came
            return False
        self.rfile = io.BytesIO(body)
        return True

    def _body(self) -> Optional[bytes]:
        """The request's body, at most MAX_BODY; None when it was refused (and answered) or cut short."""
        if self.headers.get("Transfer-Encoding") is not None:
            self.send_error(411, "a request body needs a Content-Length")  # no browser chunks a form
            return None
        lengths = self.headers.get_all("Content-Length") or []
        if not lengths:
            return b""
        raw = lengths[0].strip()
        if len(lengths) > 1 or not (raw.isascii() and raw.isdigit()) or len(raw) > 12:
            self.send_error(400, "bad Content-Length")
            return None
        if int(raw) > MAX_BODY:
            self.send_error(413, "a request body over %d bytes" % MAX_BODY)
            return None
        body = self.rfile.read(int(raw))
        return body if len(body) == int(raw) else None

    def run_wsgi(self) -> None:
        """Socket.IO (a websocket, a long poll) within its share of the connections, else a 503."""
        if not self.make_environ()["PATH_INFO"].startswith(SOCKETIO_PATH):  # what engineio routes by
            super().run_wsgi()
            return
        if not self.bounds.enter_socketio():
            self.close_connection = True
            self.wfile.write(SOCKETIO_BUSY)
            return
        try:
            super().run_wsgi()
        finally:
            self.bounds.leave_socketio()

    def finish(self) -> None:
        super().finish()
        self.socket_file.close()  # the socket's own reader, which parse_request replaced


class Server:
    """A werkzeug server on a given listening socket, with drain-on-signal."""

    def __init__(self, app: object, sock_fd: int, host: str, drain_timeout: float = 10.0,
                 idle_timeout: float = IDLE_TIMEOUT, max_connections: int = MAX_CONNECTIONS,
                 app_dir: Optional[str] = None) -> None:
        self.bounds = Bounds(idle_timeout, max_connections)
        self.draining = self.bounds.draining
        self.app_dir = app_dir  # where run/notify.name says which supervisor to hand the socket to
        self.drain_timeout, self.max_connections = drain_timeout, max_connections
        self._threads: Set[threading.Thread] = set()
        self.httpd: ThreadedWSGIServer = make_server(
            host, 0, app, threaded=True, request_handler=DrainingHandler, fd=sock_fd
        )
        self.httpd.bounds = self.bounds  # type: ignore[attr-defined]
        self.httpd.process_request = self._process_request  # type: ignore[method-assign]

    def _process_request(self, request: socket.socket, client_address: object) -> None:
        with self.bounds.lock:
            if len(self._threads) >= self.max_connections and not self.bounds.evict_idlest():
                self._refuse(request)
                return
            thread = threading.Thread(target=self._run_request, args=(request, client_address), daemon=True)
            self._threads.add(thread)
            self.bounds.idle[request] = time.monotonic()  # idle until its request is whole
        thread.start()

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
            with self.bounds.lock:
                self._threads.discard(threading.current_thread())
                self.bounds.idle.pop(request, None)

    def busy(self) -> int:
        with self.bounds.lock:
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
