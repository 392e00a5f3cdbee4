"""The dashboard's connection bounds, on a real dashboard process and real sockets: idle connections
close, at most max_connections are held (one thread each), and a flood of idle sockets never keeps
/healthz from answering."""

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest


def threads(pid):
    for line in Path("/proc/%d/status" % pid).read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no Threads line")


def healthz(board, timeout=5.0):
    started = time.monotonic()
    with urllib.request.urlopen(board.url("/healthz"), timeout=timeout) as resp:
        assert json.loads(resp.read())["status"] == "ok"
    return time.monotonic() - started


def closed_by_peer(sock, within):
    sock.settimeout(within)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def test_four_hundred_idle_sockets_cost_a_hundred_threads_and_healthz_still_answers(dashboards, port):
    board = dashboards(port)
    board.wait_healthy()
    idle = []
    try:
        for _ in range(400):
            idle.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        time.sleep(1.0)  # let the dashboard accept them all
        assert healthz(board) < 1.0
        assert threads(board.proc.pid) < 120
        # the oldest were closed to make room; the newest are still held
        assert closed_by_peer(idle[0], 2.0)
        assert not closed_by_peer(idle[-1], 0.2)
    finally:
        for sock in idle:
            sock.close()


def test_an_idle_connection_is_closed_after_the_idle_timeout(dashboards, port):
    board = dashboards(port, env={"DASHBOARD_IDLE_TIMEOUT": "2", "DASHBOARD_MAX_CONNECTIONS": "4"})
    board.wait_healthy()
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        started = time.monotonic()
        assert closed_by_peer(sock, 10.0)
        assert 1.5 < time.monotonic() - started < 6.0
    finally:
        sock.close()
    # four half-sent requests are still idle: the fifth connection closes the oldest and is served
    half = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(4)]
    try:
        for each in half:
            each.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # the blank line never comes
        time.sleep(0.5)
        assert healthz(board) < 5.0
        assert closed_by_peer(half[0], 2.0)
    finally:
        for each in half:
            each.close()


def test_a_server_whose_connections_are_all_busy_answers_503_without_a_thread():
    """Every connection in the middle of a request (a slow answer, not a slow client): the next one
    gets a 503 from the accepting thread, and is served again once one of them is done. In-process,
    on a real socket, so that the app can be made slow."""
    from dashboard.server import Server

    release = threading.Event()

    def app(environ, start_response):
        if environ["PATH_INFO"] == "/slow":
            release.wait(30)
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [b"ok"]

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    server = Server(app, listener.fileno(), "127.0.0.1", max_connections=4)
    runner = threading.Thread(target=server.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    runner.start()
    slow = []
    try:
        for _ in range(4):
            each = socket.create_connection(("127.0.0.1", port), timeout=10)
            each.sendall(b"GET /slow HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            slow.append(each)
        deadline = time.monotonic() + 10
        while (server.busy() < 4 or server.bounds.idle) and time.monotonic() < deadline:  # all four busy
            time.sleep(0.05)
        extra = socket.create_connection(("127.0.0.1", port), timeout=5)
        assert extra.recv(200).startswith(b"HTTP/1.1 503") and server.busy() == 4
        extra.close()
        release.set()
        for each in slow:
            assert each.recv(200).startswith(b"HTTP/1.1 200")
        while server.busy() == 4 and time.monotonic() < deadline + 10:  # their threads end
            time.sleep(0.05)
        with urllib.request.urlopen("http://127.0.0.1:%d/" % port, timeout=10) as resp:
            assert resp.read() == b"ok"
    finally:
        release.set()
        for each in slow:
            each.close()
        server.httpd.shutdown()
        listener.close()


def healthz_soon(board, within=10.0):
    """/healthz answers 200 within ``within`` s, retried: the answer a restart's health check waits for."""
    deadline = time.monotonic() + within
    while True:
        try:
            return healthz(board, timeout=within)
        except (urllib.error.URLError, OSError) as exc:
            if time.monotonic() > deadline:
                raise AssertionError("/healthz did not answer: %s" % exc) from None
            time.sleep(0.2)


def start_dripping(sock, port, kind):
    """Send the start of what a dripping client sends (it would go on with a byte every 50 s)."""
    if kind == "request-line":
        sock.sendall(b"G")
    elif kind == "body":  # a whole head, then a body that drips
        sock.sendall(("POST /login HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/x-www-form-urlencoded"
                      "\r\nContent-Length: 60000\r\n\r\ntoken=" % port).encode())
    else:  # a whole request, then stray bytes, some arriving while it is answered: never waited for
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        try:
            for _ in range(30):
                sock.sendall(b"X")
                time.sleep(0.001)
        except OSError:
            pass  # answered and closed before the bytes came: the server is not waiting for them


@pytest.mark.parametrize("kind", ["request-line", "body", "after-request"])
def test_connections_that_drip_their_request_stay_evictable_and_healthz_answers(dashboards, port, kind):
    """Ways to keep a thread without being idle by the old rule (the first byte made a connection busy):
    each is evictable until its request is whole, and stray bytes after it are never waited for, so
    more of them than the cap still leave /healthz answering at once."""
    board = dashboards(port, env={"DASHBOARD_MAX_CONNECTIONS": "20"})
    board.wait_healthy()
    held = []
    try:
        for _ in range(25):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            start_dripping(sock, port, kind)
            held.append(sock)
        time.sleep(0.5)
        started = time.monotonic()
        healthz_soon(board)
        assert time.monotonic() - started < 5.0
        assert threads(board.proc.pid) < 40
        if kind != "after-request":  # those were answered and closed
            assert closed_by_peer(held[0], 2.0)  # the oldest made room
    finally:
        for sock in held:
            sock.close()


def socketio_held(port, transport):
    """A Socket.IO request that keeps its connection's thread: a websocket (no sign-in is needed for an
    Engine.IO session) or a long poll on a fresh session. Returns the socket and the status line."""
    sid = None
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    if transport == "polling":
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/socket.io/?EIO=4&transport=polling" % port,
                                        timeout=10) as resp:
                sid = json.loads(resp.read().decode()[1:])["sid"]
        except urllib.error.HTTPError as exc:  # refused at the handshake already
            return sock, "HTTP/1.1 %d %s" % (exc.code, exc.reason)
    if sid is None:
        sock.sendall(b"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     b"Sec-WebSocket-Version: 13\r\n\r\n")
    else:
        sock.sendall(b"GET /socket.io/?EIO=4&transport=polling&sid=%s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
                     % sid.encode())
    sock.settimeout(0.5)
    try:
        first = sock.recv(200).split(b"\r\n", 1)[0].decode()
    except socket.timeout:
        first = "held"  # a long poll answers only at the next ping (25 s)
    return sock, first


def test_socketio_takes_at_most_half_the_connections_and_healthz_answers(dashboards, port):
    board = dashboards(port, env={"DASHBOARD_MAX_CONNECTIONS": "20"})
    board.wait_healthy()
    held, answers = [], []
    try:
        for n in range(20):  # 10 (half of 20) are served; the rest are refused at once
            sock, first = socketio_held(port, "polling" if n % 4 == 3 else "websocket")
            held.append(sock)
            answers.append(first)
        served = [a for a in answers if a.startswith("HTTP/1.1 101") or a == "held"]
        assert len(served) == 10 and answers.count("HTTP/1.1 503 Service Unavailable") == 10, answers
        assert answers.index("HTTP/1.1 503 Service Unavailable") == 10, answers
        for _ in range(3):
            assert healthz(board) < 5.0
        page = urllib.request.urlopen(board.url("/"), timeout=5)
        assert page.status == 200
    finally:
        for sock in held:
            sock.close()
    # once those are gone, Socket.IO is served again
    deadline = time.monotonic() + 10
    while True:
        sock, first = socketio_held(port, "websocket")
        sock.close()
        if first.startswith("HTTP/1.1 101"):
            break
        assert time.monotonic() < deadline, first
        time.sleep(0.2)
