"""Readiness and graceful stop: READY=1 on NOTIFY_SOCKET, SIGTERM finishes requests in flight."""

import socket
import time

import pytest
import socketio


@pytest.fixture
def notify_socket(tmp_path):
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(20)
    yield path, sock
    sock.close()


def test_ready_is_sent_to_notify_socket_once_serving(dashboards, port, notify_socket):
    path, sock = notify_socket
    board = dashboards(port, env={"NOTIFY_SOCKET": path})
    message = sock.recv(4096).decode()
    assert "READY=1" in message.splitlines()
    assert "MAINPID=%d" % board.proc.pid in message
    # READY=1 means serving: the very first request after it succeeds
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
        assert conn.recv(64).startswith(b"HTTP/1.1 200")


def test_sigterm_during_a_request_lets_it_finish_then_exits_0(dashboards, port, notify_socket):
    path, sock = notify_socket
    # with a token set, /login reads the form: the handler blocks on the body we hold back
    board = dashboards(port, env={"NOTIFY_SOCKET": path, "DASHBOARD_TOKEN": "t0ken-of-16-chars"})
    sock.recv(4096)
    body = b"token=not-the-token&x=1"
    conn = socket.create_connection(("127.0.0.1", port), timeout=10)
    conn.sendall(
        b"POST /login HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body) + body[:6]
    )
    time.sleep(0.5)  # the server is now reading the body: a request in flight
    board.proc.terminate()
    time.sleep(1.0)
    assert board.proc.poll() is None, "exited with a request in flight"
    # no new connections once draining: the listening socket is closed
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    conn.sendall(body[6:])
    response = b""
    while True:
        chunk = conn.recv(65536)
        if not chunk:
            break
        response += chunk
    conn.close()
    assert response.startswith(b"HTTP/1.1 403"), response[:100]  # answered in full (no CSRF token: refused)
    assert b"the form expired" in response
    finished = time.monotonic()
    assert board.wait_exit(timeout=10) == 0
    assert time.monotonic() - finished < 3


def test_sigterm_with_idle_keepalive_and_socketio_clients_exits_promptly(dashboards, port):
    board = dashboards(port, env={"DASHBOARD_DRAIN_TIMEOUT": "30"})
    board.wait_healthy()
    idle = socket.create_connection(("127.0.0.1", port), timeout=10)
    idle.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
    response = b""
    while not response.endswith(b"}\n"):  # the whole JSON answer; the connection stays open
        response += idle.recv(65536)
    assert response.startswith(b"HTTP/1.1 200")
    disconnected = []
    client = socketio.Client(reconnection=False)
    client.on("disconnect", lambda *args: disconnected.append(time.monotonic()))
    client.connect(board.url(""), transports=["websocket"], wait_timeout=10)
    started = time.monotonic()
    board.proc.terminate()
    assert board.wait_exit(timeout=20) == 0
    assert time.monotonic() - started < 5, "waited on idle or websocket connections"
    assert idle.recv(1) == b""  # closed by the server, cleanly
    idle.close()
    deadline = time.monotonic() + 5
    while not disconnected and time.monotonic() < deadline:
        time.sleep(0.05)
    assert disconnected, "the Socket.IO client was not told"
    client.disconnect()
