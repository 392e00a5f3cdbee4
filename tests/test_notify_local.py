"""The supervisor's notify socket cannot be taken first or stolen by another user of the host.

A path inside the private run/ where it fits in sun_path; an app_dir too deep for that gets a random
abstract name, recorded in run/notify.name, which an orphaned dashboard reads before it hands its
listening socket over. The "other user" is a real process as nobody (uid 65534) when the tests run as
root, else a process of ours: the abstract namespace has no permissions, so it is the same attack.
"""

import hashlib
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

from dashproc import Load, invoke, local_inventory, wait_for

from remote.host.supervision.listener import store_socket
from remote.host.supervision.notify import SUN_PATH, NotifySocket, handover_address

NOBODY = 65534

#: binds an abstract name (argv[1], without its "@"), says "bound", then on its stdin's end prints
#: how many datagrams and descriptors it got: what a thief of the name would have received
SQUATTER = """
import os, socket, sys
if os.getuid() == 0:
    os.setgid(%d); os.setuid(%d)
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind("\\0" + sys.argv[1])
print("bound", flush=True)
sys.stdin.read()
got, fds = 0, 0
while True:
    try:
        data, anc, _, _ = s.recvmsg(4096, socket.CMSG_SPACE(64), socket.MSG_DONTWAIT)
    except BlockingIOError:
        break
    got += 1
    fds += sum(len(p) // 4 for level, kind, p in anc if kind == socket.SCM_RIGHTS)
print(got, fds, flush=True)
""" % (NOBODY, NOBODY)


def squat(name):
    """A process of another user holding the abstract ``name`` ("@..."), until it is asked what it got."""
    proc = subprocess.Popen([sys.executable, "-c", SQUATTER, name.lstrip("@")], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "bound\n"
    return proc


def received(proc):
    out, _ = proc.communicate(timeout=10)
    return tuple(int(n) for n in out.split())


def deep(tmp_path):
    """An app_dir whose run/notify.sock would not fit in sun_path."""
    app = tmp_path / ("deep-" + "d" * 90) / "app"
    assert len(os.fsencode(str(app / "run" / "notify.sock"))) >= SUN_PATH
    return app


def record(app):
    path = app / "run" / "notify.name"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    return json.loads(path.read_text())


def environ(pid):
    raw = Path("/proc/%d/environ" % pid).read_bytes()
    return dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)


def test_a_deep_app_dir_gets_a_random_recorded_name_and_a_short_one_a_private_path(tmp_path):
    app = deep(tmp_path)
    run = app / "run"
    run.mkdir(parents=True, mode=0o700)
    names = []
    for _ in range(2):
        notify = NotifySocket(str(run))
        assert notify.name.startswith("@sulfur-%d-" % os.getuid()) and len(notify.name.rsplit("-", 1)[1]) == 32
        assert record(app) == {"name": notify.name, "pid": os.getpid(), "start": record(app)["start"]}
        assert ("@" + notify.name[1:]) in Path("/proc/net/unix").read_text()  # really bound
        names.append(notify.name)
        notify.sock.close()
    assert names[0] != names[1]  # nobody can work out the next one
    short = tmp_path / "app" / "run"
    short.mkdir(parents=True, mode=0o700)
    notify = NotifySocket(str(short))
    try:
        assert notify.name == str(short / "notify.sock") and stat.S_ISSOCK(os.stat(notify.name).st_mode)
        assert record(tmp_path / "app")["name"] == notify.name
    finally:
        notify.sock.close()


def test_the_old_predictable_name_taken_by_another_user_does_not_block_the_supervisor(tmp_path, port):
    app = deep(tmp_path)
    old = "@sulfur-%d-%s" % (os.getuid(), hashlib.sha256(str(app).encode()).hexdigest()[:12])
    thief = squat(old)
    inventory = local_inventory(tmp_path / "inventory.yml", app, port)
    try:
        out = invoke(inventory, "restart")
        assert out.returncode == 0, out.stdout + out.stderr
        dashboard = json.loads((app / "run" / "state.json").read_text())["services"]["dashboard"]["pid"]
        assert environ(dashboard)["NOTIFY_SOCKET"] == record(app)["name"] != old
        out = invoke(inventory, "restart", "--service", "dashboard")  # READY=1 reaches the supervisor
        assert out.returncode == 0 and "dashboard up at" in out.stdout, out.stdout + out.stderr
    finally:
        invoke(inventory, "stop")
    assert received(thief) == (0, 0)


def test_handover_address_follows_the_live_record_and_never_a_dead_ones_name(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    assert handover_address(str(tmp_path), "@from-env") == "@from-env"  # a supervisor from before the record
    (run / "notify.name").write_text(json.dumps({"name": "@live", "pid": os.getpid(),
                                                 "start": int(Path("/proc/self/stat").read_text()
                                                              .rsplit(")", 1)[1].split()[19])}))
    assert handover_address(str(tmp_path), "@dead") == "@live"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (run / "notify.name").write_text(json.dumps({"name": "@dead", "pid": int(dead.stdout), "start": 1}))
    assert handover_address(str(tmp_path), "@dead") is None  # its name is anyone's to bind now
    assert handover_address(str(tmp_path), "/app/run/notify.sock") == "/app/run/notify.sock"


def test_an_orphan_never_sends_its_socket_to_the_name_a_dead_supervisor_recorded(tmp_path, monkeypatch):
    """The dashboard's own end (listener.store_socket): its NOTIFY_SOCKET names a dead supervisor's
    random name, which a thief holds now, and no live supervisor is recorded: nothing is sent."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    name = "@sulfur-%d-%s" % (os.getuid(), os.urandom(16).hex())
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notify.name").write_text(json.dumps({"name": name, "pid": int(dead.stdout), "start": 1}))
    monkeypatch.setenv("NOTIFY_SOCKET", name)
    thief = squat(name)
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen(1)
        assert store_socket(listening, str(tmp_path)) is False
        monkeypatch.setenv("NOTIFY_SOCKET", "@sulfur-from-an-older-supervisor")  # no record names it: used
        elder = squat("@sulfur-from-an-older-supervisor")
        assert store_socket(listening, str(tmp_path)) is True
    assert received(thief) == (0, 0) and received(elder) == (1, 1)


def test_kill_9_of_a_deep_supervisor_the_orphan_hands_its_socket_to_the_next_not_to_a_thief(tmp_path, port):
    """The supervisor dies; another user binds its random name, now free and listed in /proc/net/unix.
    The orphaned dashboard, asked by the next supervisor, sends its socket to that one's recorded
    name: the port never closes, and the thief gets nothing."""
    app = deep(tmp_path)
    inventory = local_inventory(tmp_path / "inventory.yml", app, port)
    thief = load = None
    try:
        assert invoke(inventory, "restart").returncode == 0
        state = json.loads((app / "run" / "state.json").read_text())
        first, dashboard = record(app)["name"], state["services"]["dashboard"]["pid"]
        assert environ(dashboard)["NOTIFY_SOCKET"] == first
        time.sleep(1.0)  # its spare is up too
        os.kill(state["supervisor"]["pid"], signal.SIGKILL)
        wait_for(lambda: ("@" + first[1:]) not in Path("/proc/net/unix").read_text(), 10, "the name freed")
        thief = squat(first)
        stop_file = tmp_path / "stop"
        load = Load(port, stop_file)
        time.sleep(0.3)
        out = invoke(inventory, "restart")
        assert out.returncode == 0, out.stdout + out.stderr
        assert "the last one had died" in out.stdout
        second = record(app)["name"]
        assert second != first and second.startswith("@sulfur-")
        time.sleep(0.5)
        result = load.finish()
        assert result["errors"] == {} and result["requests"] > 0, result  # the port never closed
        log = (app / "logs" / "supervisor.log").read_text()
        assert "orphan dashboard pid %d handed its socket over" % dashboard in log
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
    finally:
        if load is not None and load.proc.poll() is None:
            load.proc.kill()
        invoke(inventory, "stop")
    assert received(thief) == (0, 0)
