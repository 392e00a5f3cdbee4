"""`invoke dev` in a pseudo-terminal, `--reload`, and `invoke --list`, run as a user runs them."""

import json
import os
import pty
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

from dashproc import ROOT

INVOKE = [sys.executable, "-m", "invoke"]


def test_invoke_list_shows_every_task_with_help():
    out = subprocess.run(INVOKE + ["--list"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for name in ("add-host", "dev", "doctor", "free-port", "hosts", "logs", "port-status", "remove-host", "restart",
                 "start", "status", "stop"):
        assert "\n  %s " % name in out


def _health(port, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/healthz" % port, timeout=2) as resp:
                return json.loads(resp.read())
        except OSError:
            time.sleep(0.1)
    raise AssertionError("no dashboard on %d" % port)


def _read_until(fd, text, timeout=30.0):
    seen, deadline = b"", time.monotonic() + timeout
    while time.monotonic() < deadline and text.encode() not in seen:
        if select.select([fd], [], [], 0.2)[0]:
            try:
                seen += os.read(fd, 65536)
            except OSError:
                break
    return seen.decode(errors="replace")


def _alive(pid):
    try:
        os.kill(pid, 0)
        state = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except OSError:
        return False


def test_invoke_dev_in_a_terminal_serves_and_ctrl_c_leaves_nothing(tmp_path, port):
    inventory = tmp_path / "inventory.yml"
    inventory.write_text("hosts:\n  local: {connection: local, dashboard_port: %d}\n" % port)
    (tmp_path / "app" / "logs").mkdir(parents=True)
    (tmp_path / "app" / "logs" / "bot.log").write_text("")
    env = dict(os.environ, SULFUR_INVENTORY=str(inventory), DASHBOARD_APP_DIR=str(tmp_path / "app"))
    pid, fd = pty.fork()
    if pid == 0:  # the child: invoke dev as a user types it in a terminal
        os.chdir(ROOT)
        os.execve(sys.executable, INVOKE + ["dev"], env)
    try:
        health = _health(port)
        shown = _read_until(fd, "ready")
        assert "supervisor |" in shown and "dashboard: pid %d ready" % health["pid"] in shown
        state = json.loads((tmp_path / "app" / "run" / "state.json").read_text())
        assert state["supervisor"]["pid"] == pid  # exec'd all the way: the terminal's process supervises
        # its request (settings: a webhook URL) went in app_dir/run/, the one place the ctl removes it from
        assert not list((tmp_path / "app" / "run").glob("dev-request-*")), "the request file was left behind"
        os.write(fd, b"\x03")  # Ctrl+C, through the terminal: SIGINT to the whole foreground group
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    finally:
        if _alive(pid):  # a failed test must not leave the stack behind: kill its whole group
            os.killpg(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(fd)
    time.sleep(0.2)
    assert not _alive(health["pid"]), "the dashboard outlived Ctrl+C"
    with socket.socket() as sock:  # no listener left (TIME_WAIT from our checks is fine)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))


def test_reload_restarts_the_dashboard_on_the_held_socket(tmp_path, port):
    code = tmp_path / "code"
    for part in ("dashboard", "remote"):
        shutil.copytree(ROOT / part, code / part, ignore=shutil.ignore_patterns("__pycache__"))
    app = tmp_path / "app"
    request = tmp_path / "request.json"
    request.write_text(json.dumps({"protocol": 1, "command": "dev", "app_dir": str(app), "options": {},
                                   "settings": {"code_dir": str(code), "python": sys.executable, "port": port,
                                                "reload": True}}))
    proc = subprocess.Popen([sys.executable, "-m", "remote.host.ctl", "dev", "--request", str(request)], cwd=code,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        first = _health(port)["pid"]
        (code / "dashboard" / "hostinfo.py").touch()
        os.utime(code / "dashboard" / "hostinfo.py", (time.time() + 5, time.time() + 5))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and _health(port)["pid"] == first:
            time.sleep(0.1)
        assert _health(port)["pid"] != first
        supervisor = json.loads((app / "run" / "state.json").read_text())["supervisor"]
        assert supervisor["pid"] == proc.pid and supervisor["port"] == port  # same socket, same holder
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
    assert "code changed" in proc.stdout.read()


def test_tasks_without_host_act_on_the_running_dev_stack_and_say_so(tmp_path, port):
    """`make dev` in one terminal, `invoke restart` in another: the dev stack restarts (handed over,
    the foreground supervisor stays); --host local names the inventory's local host, whose port the
    dev stack holds: that is said exactly, with the app dir."""
    inventory = tmp_path / "inventory.yml"
    inventory.write_text("hosts:\n  local: {connection: local, app_dir: %s, dashboard_port: %d}\n"
                         % (tmp_path / "local", port))
    env = dict(os.environ, SULFUR_INVENTORY=str(inventory), DASHBOARD_APP_DIR=str(tmp_path / "app"),
               XDG_CACHE_HOME=str(tmp_path / "cache"))
    pid, fd = pty.fork()
    if pid == 0:
        os.chdir(ROOT)
        os.execve(sys.executable, INVOKE + ["dev"], env)
    try:
        before = _health(port)["pid"]
        _read_until(fd, "ready")
        out = subprocess.run(INVOKE + ["restart"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stdout + out.stderr
        assert "acting on the running dev stack of invoke dev (app dir %s)" % (tmp_path / "app") in out.stderr
        after = _health(port)["pid"]
        assert after != before and _alive(pid)  # a new dashboard, the same foreground supervisor
        status = subprocess.run(INVOKE + ["status", "--json"], cwd=ROOT, env=env, capture_output=True, text=True,
                                timeout=60)
        assert json.loads(status.stdout)[0]["services"]["dashboard"]["pid"] == after
        out = subprocess.run(INVOKE + ["restart", "--host", "local"], cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=120)
        assert out.returncode == 1
        assert ("port %d is held by the sulfur-ops stack of another app dir, %s (supervisor pid %d, dashboard pid %d"
                % (port, tmp_path / "app", pid, after) in out.stdout), out.stdout
        assert "not this host's %s" % (tmp_path / "local") in out.stdout and _health(port)["pid"] == after
        os.write(fd, b"\x03")
        _, code = os.waitpid(pid, 0)
        assert os.WIFEXITED(code) and os.WEXITSTATUS(code) == 0
    finally:
        if _alive(pid):
            os.killpg(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(fd)
