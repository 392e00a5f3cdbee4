"""The bot log, live over Socket.IO: backlog on connect, new lines within a second, rotation."""

import os
import queue
import time

import socketio

from remote.host.common.logtail import LogFollower, last_lines


def test_follower_reads_appends_partial_lines_rotation_and_truncation(tmp_path):
    log = tmp_path / "bot.log"
    log.write_text("old 1\nold 2\n")
    follower = LogFollower(str(log))
    assert follower.poll() == []  # starts at the end
    with open(log, "a") as handle:
        handle.write("new 1\nhalf")
    assert follower.poll() == ["new 1"]
    with open(log, "a") as handle:
        handle.write(" done\n")
    assert follower.poll() == ["half done"]
    os.rename(log, tmp_path / "bot.log.1")
    assert follower.poll() == []
    log.write_text("after rotation\n")
    assert follower.poll() == ["after rotation"]
    log.write_text("cut\n")  # truncated in place, shorter than before
    assert follower.poll() == ["cut"]
    log.write_text("new\n")  # truncated and rewritten to the very same length
    assert follower.poll() == ["new"]
    log.write_text("a longer rewrite\n")  # truncated and rewritten longer than before
    assert follower.poll() == ["a longer rewrite"]


def test_last_lines(tmp_path):
    log = tmp_path / "bot.log"
    log.write_text("".join("line %d\n" % i for i in range(500)))
    assert last_lines(str(log), 200) == ["line %d" % i for i in range(300, 500)]
    assert last_lines(str(tmp_path / "missing.log")) == []


def _collect(client):
    got = queue.Queue()
    client.on("log_init", lambda msg: got.put(("init", msg["lines"])))
    client.on("log_lines", lambda msg: [got.put(("line", line)) for line in msg["lines"]])
    return got


def _wait_line(got, wanted, within):
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            kind, value = got.get(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            break
        if kind == "line" and value == wanted:
            return time.monotonic()
    raise AssertionError("%r did not arrive within %.1f s" % (wanted, within))


def test_socketio_client_gets_backlog_then_new_lines_within_a_second(dashboards, port, tmp_path):
    board = dashboards(port)
    log = board.app_dir / "logs" / "bot.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("".join("boot %d\n" % i for i in range(250)))
    board.wait_healthy()
    client = socketio.Client(reconnection=False)
    got = _collect(client)
    client.connect(board.url(""), transports=["websocket"], wait_timeout=10)
    kind, backlog = got.get(timeout=10)
    assert kind == "init" and backlog == ["boot %d" % i for i in range(50, 250)]
    time.sleep(0.5)  # let the follower start at the current end

    for n in range(3):
        with open(log, "a") as handle:
            handle.write("live %d\n" % n)
            written = time.monotonic()
        assert _wait_line(got, "live %d" % n, within=5) - written < 1.0

    os.rename(log, log.with_suffix(".log.1"))  # logrotate's default: move, then a new file
    with open(log, "w") as handle:
        handle.write("rotated 1\n")
        written = time.monotonic()
    assert _wait_line(got, "rotated 1", within=5) - written < 1.0

    with open(log, "w") as handle:  # truncated (copytruncate)
        handle.write("truncated\n")
        written = time.monotonic()
    assert _wait_line(got, "truncated", within=5) - written < 1.0
    client.disconnect()
