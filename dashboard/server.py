"""Serve the app with werkzeug's threaded server on *our* socket, and stop without dropping requests.

werkzeug runs each connection in a daemon thread that dies with the process, and keeps idle
keep-alive connections open forever; both would cut requests short on exit. Here every connection
thread is tracked, an idle connection is closed once draining starts, and the process waits for the
busy ones (up to a drain timeout) before it exits.
"""

import select
import signal
import threading
import time
from typing import Callable, Optional, Set

from werkzeug.serving import ThreadedWSGIServer, WSGIRequestHandler, make_server

from remote.host.supervision.listener import store_socket

IDLE_POLL_SECONDS = 0.2


class DrainingHandler(WSGIRequestHandler):
    """Waits for a request while watching the server's drain flag instead of blocking in readline."""

    def handle_one_request(self) -> None:
        draining = self.server.draining  # type: ignore[attr-defined]
        while not select.select([self.connection], [], [], IDLE_POLL_SECONDS)[0]:
            if draining.is_set():
                self.close_connection = True  # idle when draining began: the client reconnects
                return
        super().handle_one_request()
        if draining.is_set():
            self.close_connection = True


class Server:
    """A werkzeug server on a given listening socket, with drain-on-signal."""

    def __init__(self, app: object, sock_fd: int, host: str, drain_timeout: float = 10.0,
                 app_dir: Optional[str] = None) -> None:
        self.draining = threading.Event()
        self.app_dir = app_dir  # where run/notify.name says which supervisor to hand the socket to
        self.drain_timeout = drain_timeout
        self._threads: Set[threading.Thread] = set()
        self._threads_lock = threading.Lock()
        self.httpd: ThreadedWSGIServer = make_server(
            host, 0, app, threaded=True, request_handler=DrainingHandler, fd=sock_fd
        )
        self.httpd.draining = self.draining  # type: ignore[attr-defined]
        self.httpd.process_request = self._process_request  # type: ignore[method-assign]

    def _process_request(self, request: object, client_address: object) -> None:
        thread = threading.Thread(target=self._run_request, args=(request, client_address), daemon=True)
        with self._threads_lock:
            self._threads.add(thread)
        thread.start()

    def _run_request(self, request: object, client_address: object) -> None:
        try:
            self.httpd.process_request_thread(request, client_address)  # type: ignore[arg-type]
        finally:
            with self._threads_lock:
                self._threads.discard(threading.current_thread())

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
