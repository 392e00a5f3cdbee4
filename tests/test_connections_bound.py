"""The dashboard's connection bounds, on a real dashboard process and real sockets: idle connections
close, at most max_connections are held (one thread each), and a flood of idle sockets never keeps
/healthz from answering."""

import json
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path


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


def test_an_idle_connection_is_closed_after_the_idle_timeout_and_a_busy_server_answers_503(dashboards, port):
    board = dashboards(port, env={"DASHBOARD_IDLE_TIMEOUT": "2", "DASHBOARD_MAX_CONNECTIONS": "4"})
    board.wait_healthy()
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        started = time.monotonic()
        assert closed_by_peer(sock, 10.0)
        assert 1.5 < time.monotonic() - started < 6.0
    finally:
        sock.close()
    # four half-sent requests are busy, not idle: the fifth connection gets a 503, no thread
    busy = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(4)]
    try:
        for each in busy:
            each.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # the blank line never comes
        time.sleep(0.5)
        extra = socket.create_connection(("127.0.0.1", port), timeout=5)
        extra.settimeout(5)
        assert extra.recv(64).startswith(b"HTTP/1.1 503")
        extra.close()
    finally:
        for each in busy:
            each.close()
    deadline = time.monotonic() + 10  # once they are gone, it serves again
    while True:
        try:
            healthz(board)
            break
        except urllib.error.HTTPError as exc:
            assert exc.code == 503 and time.monotonic() < deadline
