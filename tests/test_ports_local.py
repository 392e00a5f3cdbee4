"""port-status and free-port on this machine (no --host): the same flow, through invoke's Context."""

import json
import os
import subprocess
import sys

from dashproc import invoke, local_inventory


def test_local_foreign_holder_named_refused_then_forced(tmp_path, port):
    inventory = local_inventory(tmp_path / "inventory.yml", tmp_path / "app")
    holder = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_listening(port)
        out = invoke(inventory, "port-status", "--port", str(port), "--json")
        doc = json.loads(out.stdout)[0]
        assert out.returncode == 0 and doc["host"] == "local" and doc["state"] == "listening"
        assert doc["listeners"][0]["pid"] == holder.pid and doc["listeners"][0]["managed"] is False
        out = invoke(inventory, "free-port", "--port", str(port))
        assert out.returncode == 1 and "foreign holder pid %d" % holder.pid in out.stdout
        assert holder.poll() is None
        out = invoke(inventory, "free-port", "--port", str(port), "--force")
        assert out.returncode == 0 and "freed" in out.stdout
        assert holder.wait(10) is not None
    finally:
        if holder.poll() is None:
            holder.kill()


def test_local_free_port_stops_our_stale_dashboard_gracefully(tmp_path, dashboards, port):
    board = dashboards(port)  # DASHBOARD_APP_DIR is tmp_path/app: the inventory's app_dir
    board.wait_healthy()
    inventory = local_inventory(tmp_path / "inventory.yml", board.app_dir)
    doc = json.loads(invoke(inventory, "port-status", "--port", str(port), "--json").stdout)[0]
    assert doc["listeners"][0]["pid"] == board.proc.pid and doc["listeners"][0]["managed"] is True
    out = invoke(inventory, "free-port", "--port", str(port), "--json")
    assert out.returncode == 0, out.stdout
    assert json.loads(out.stdout)[0]["stopped"][0]["signal"] == "SIGTERM"
    assert board.wait_exit(10) == 0  # it drained and exited cleanly


def _wait_listening(port):
    import socket
    import time

    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("nothing listens on %d" % port)


def test_never_signals_the_agent_or_its_parents(port):
    """The caller of the agent (here: this test process) holds the port: even --force leaves it."""
    import socket

    from remote.host.probes import holders as agent

    with socket.socket() as own:
        own.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        own.bind(("127.0.0.1", port))
        own.listen(1)
        result = agent.free(port, force=True, grace=0.5)
        assert not result["ok"] and result["stopped"] == []
        assert "pid %d is this agent or its parent" % os.getpid() in result["error"]
        assert 1 in agent.protected_pids() and os.getppid() in agent.protected_pids()


def test_invoke_hosts_lists_the_inventory(tmp_path):
    path = tmp_path / "inventory.yml"
    path.write_text("defaults: {user: bot}\nhosts:\n  pi: {hostname: pi.local}\n"
                    "  phone: {hostname: 10.0.0.5, port: 8022, platform: termux}\n  local: {connection: local}\n"
                    "groups:\n  home: [pi, phone]\n")
    out = invoke(path, "hosts")
    assert out.returncode == 0
    assert [line.split() for line in out.stdout.splitlines()] == [
        ["NAME", "ADDRESS", "USER", "PLATFORM", "GROUPS"],
        ["pi", "pi.local", "bot", "linux", "home"],
        ["phone", "10.0.0.5:8022", "bot", "termux", "home"],
        ["local", "local", "-", "linux", "-"],
    ]


def test_a_missing_interpreter_is_named_with_what_to_do(tmp_path):
    path = tmp_path / "inventory.yml"
    path.write_text("hosts:\n  local: {connection: local, python: python-that-is-not-here}\n")
    out = invoke(path, "port-status", "--json")
    doc = json.loads(out.stdout)[0]
    assert out.returncode == 1
    assert doc["error"] == "python-that-is-not-here not found on the host: set `python:` for it in the inventory"


def test_a_holders_escape_sequences_never_reach_the_terminal(tmp_path, port):
    """A process whose command line rewrites the terminal's title (OSC 0) is shown, harmlessly."""
    code = "import socket,time,sys\ns=socket.socket();s.bind(('127.0.0.1',%d));s.listen(1);print('ok',flush=True)\n" \
           "time.sleep(60)" % port
    holder = subprocess.Popen(["\x1b]0;pwned\x07\x1b[2J", "-c", code], executable=sys.executable,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "ok\n"
        out = invoke(local_inventory(tmp_path / "inventory.yml", tmp_path / "app", port), "port-status")
        assert "\x1b" not in out.stdout and "\x07" not in out.stdout
        assert "\\x1b]0;pwned\\x07\\x1b[2J" in out.stdout  # still there to read, as escapes
    finally:
        holder.kill()
        holder.wait()
