"""The listening socket: TIME_WAIT, a held port, bad addresses, inherited sockets, SO_REUSEPORT.

Every test runs `python -m dashboard` as a real process against real sockets on loopback.
"""

import errno
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from remote.host.probes.ports import parse_proc_net_tcp
from remote.host.supervision.listener import bind_once


def time_wait_count(port):
    total = 0
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        if Path(name).exists():
            total += parse_proc_net_tcp(Path(name).read_text(), port)[1]
    return total


def hold_port(port, seconds):
    """A separate process that listens on ``port`` for ``seconds`` (forever when None)."""
    code = (
        "import socket, sys, time\n"
        "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
        "s.bind(('127.0.0.1', %d)); s.listen(8); print('held', flush=True)\n"
        "time.sleep(%r); s.close(); print('released', flush=True); time.sleep(120)\n"
    ) % (port, 3600 if seconds is None else seconds)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def server_closes_first(port):
    """One request with Connection: close, read to EOF before closing: the server's close comes
    first, so the TIME_WAIT lands on the server's side of the connection (local port = ``port``)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return data
            data += chunk


def first_line(text):
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines, "no output"
    return lines[-1]


def test_rebinds_over_server_side_time_wait_on_first_attempt(dashboards, port):
    old = dashboards(port)
    old.wait_healthy()
    for _ in range(20):
        assert server_closes_first(port).startswith(b"HTTP/1.1 200")
    old.proc.terminate()
    assert old.wait_exit() == 0
    waits = time_wait_count(port)
    assert waits > 0, "the test did not create TIME_WAIT on the server port"
    # without SO_REUSEADDR the very same bind fails: proof that TIME_WAIT is what sits on the port
    plain = socket.socket()
    with pytest.raises(OSError) as caught:
        plain.bind(("127.0.0.1", port))
    plain.close()
    assert caught.value.errno == errno.EADDRINUSE

    new = dashboards(port)
    new.wait_healthy()
    status = _json(new.url("/api/status"))
    assert status["port"]["bind_attempts"] == 1
    assert "failed" not in new.output
    assert time_wait_count(port) > 0  # still there: we did not merely wait it out


def test_port_released_later_is_bound_on_a_later_attempt(dashboards, port):
    holder = hold_port(port, 2.0)
    try:
        board = dashboards(port, env={"DASHBOARD_BIND_BACKOFF": "0.5", "DASHBOARD_BIND_RETRIES": "6"})
        board.wait_healthy(timeout=40)
        out = board.output
        assert "attempt 1/7 failed: address in use by pid %d" % holder.pid in out
        assert "retrying in 0.5 s" in out and "retrying in 1.0 s" in out
        attempts = _json(board.url("/api/status"))["port"]["bind_attempts"]
        assert attempts >= 3
        assert ("attempt %d/7 succeeded" % attempts) in out
    finally:
        holder.kill()
        holder.wait()


def test_port_never_released_exits_3_naming_the_holder(dashboards, port):
    holder = hold_port(port, None)
    try:
        board = dashboards(port, env={"DASHBOARD_BIND_RETRIES": "2"})
        assert board.wait_exit() == 3
        line = first_line(board.output)
        assert "still in use after 3 attempts" in line
        assert "pid %d" % holder.pid in line
        assert "Traceback" not in board.output
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize(
    "env, expected",
    [
        ({"DASHBOARD_HOST": "192.0.2.1", "DASHBOARD_TOKEN": "t" * 16}, "not an address of this machine"),
        ({"DASHBOARD_PORT": "70000"}, "invalid port 70000"),
        ({"DASHBOARD_PORT": "http"}, "invalid port 'http'"),
        ({"DASHBOARD_BIND_RETRIES": "many"}, "DASHBOARD_BIND_RETRIES='many' is not a number"),
        ({"DASHBOARD_REUSE_PORT": "maybe"}, "DASHBOARD_REUSE_PORT='maybe': use on or off"),
    ],
)
def test_errors_that_waiting_cannot_cure_fail_at_once_with_exit_2(dashboards, port, env, expected):
    started = time.monotonic()
    board = dashboards(port, env=dict(env, DASHBOARD_BIND_BACKOFF="5"))
    assert board.wait_exit() == 2
    assert time.monotonic() - started < 5, "it retried an error that cannot be cured by waiting"
    out = board.output.strip()
    assert expected in out
    assert len(out.splitlines()) == 1 and "Traceback" not in out


def test_serves_on_an_inherited_socket(dashboards, port):
    held = bind_once("127.0.0.1", port)
    try:
        board = dashboards(port, sock=held, env={"DASHBOARD_PORT": "1"})  # the port setting is ignored
        body = board.wait_healthy()
        assert body["port"] == port
        status = _json(board.url("/api/status"))
        assert status["port"]["how"] == "inherited"
        assert status["port"]["bind_attempts"] == 0
    finally:
        held.close()


def test_reuse_port_lets_two_instances_share_the_port_and_only_when_asked(dashboards, port):
    reuse = {"DASHBOARD_REUSE_PORT": "on", "DASHBOARD_BIND_RETRIES": "0"}
    first = dashboards(port, env=reuse)
    first.wait_healthy()
    second = dashboards(port, env=reuse)
    second.wait_healthy()  # each answers on the same port
    assert _json(second.url("/api/status"))["port"]["reuse_port"] is True  # whichever answers

    for board in (first, second):
        board.proc.terminate()
        assert board.wait_exit() == 0

    plain = {"DASHBOARD_BIND_RETRIES": "1"}
    first = dashboards(port, env=plain)
    first.wait_healthy()
    second = dashboards(port, env=plain)
    assert second.wait_exit() == 3
    assert "pid %d" % first.proc.pid in second.output


def _json(url, headers=None):
    import json

    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=10) as resp:
        return json.loads(resp.read())
