"""The supervised stack over real SSH: `invoke restart/status/stop` on linux, termux and bare test hosts.

Each host gets a real release (this checkout's host side, its venv built from wheels made here) by
the same code `invoke deploy` uses; then the tasks run as a user runs them.
"""

import http.server
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import sshlab
from dashproc import ROOT, invoke
from dashproc import processes as running

pytestmark = pytest.mark.skipif(sshlab.available() is not None, reason=str(sshlab.available()))
PROFILES = ["linux", "termux", "bare"]
LOADGEN = Path(__file__).with_name("loadgen.py")




@pytest.fixture(scope="module")
def lab():
    with sshlab.lab_with(*PROFILES) as lab:
        lab.install_release()
        yield lab


@pytest.fixture(params=PROFILES)
def host(request, lab):
    host = lab.hosts[request.param]
    yield host
    invoke(lab.inventory_path, "stop", "--host", host.name)
    host.kill_children()


def as_user(host, *argv, **kwargs):
    return host.netns("setpriv", "--reuid", str(host.user.pw_uid), "--regid", str(host.user.pw_gid),
                      "--init-groups", *argv, **kwargs)


def healthz(host):
    code = "import urllib.request;print(urllib.request.urlopen('http://127.0.0.1:5000/healthz',timeout=5).read().decode())"
    return json.loads(as_user(host, "/usr/bin/python3", "-c", code).stdout)


def state(host):
    return json.loads(Path(host.app_dir, "run", "state.json").read_text())


def processes(*words, uid=None):
    """pids of the processes whose command line has every one of ``words`` (and, given, that owner)."""
    return running(lambda argv: all(w.encode() in argv for w in words), uid)


def supervisors(host):
    """pids of supervisor processes of this host's app_dir."""
    return processes("remote.host.supervisor", str(Path(host.app_dir, "run", "supervisor.json")))


def test_restart_from_nothing(lab, host):
    out = invoke(lab.inventory_path, "restart", "--host", host.name)
    assert out.returncode == 0, out.stdout + out.stderr
    line = out.stdout.strip()
    assert line.startswith("%s: dashboard up at http://127.0.0.1:5000 (pid " % host.name), line
    pid = int(line.split("(pid ")[1].split(",")[0])
    assert healthz(host)["pid"] == pid
    assert state(host)["services"]["dashboard"]["state"] == "running"
    time.sleep(1.0)  # the SSH connection is closed: the stack keeps running on its own
    assert healthz(host)["pid"] == pid and len(supervisors(host)) == 1


def test_restart_replaces_a_stale_dashboard_started_by_hand(lab, host):
    release = os.path.join(host.app_dir, "current")
    env = ["env", "DASHBOARD_APP_DIR=%s" % host.app_dir, "DASHBOARD_PORT=5000", "PATH=/usr/bin:/bin"]
    stale = host.spawn_as_user(env + [os.path.join(release, ".venv/bin/python"), "-m", "dashboard"],
                               cwd=release, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_health(host, stale.pid)
    out = invoke(lab.inventory_path, "restart", "--host", host.name, "--json")
    doc = json.loads(out.stdout)[0]
    assert out.returncode == 0, out.stdout
    assert doc["port_before"] == "freed pid %d" % stale.pid
    assert stale.wait(10) == 0  # it was asked nicely, and drained
    assert healthz(host)["pid"] == doc["pid"] != stale.pid


def test_restart_over_time_wait(lab, host):
    code = ("import socket\ns = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
            "s.bind(('127.0.0.1', 5000)); s.listen(8)\n"
            "import threading, urllib.request\n"
            "def client():\n"
            "    for _ in range(5):\n"
            "        c = socket.create_connection(('127.0.0.1', 5000)); c.recv(8); c.close()\n"
            "t = threading.Thread(target=client); t.start()\n"
            "for _ in range(5):\n"
            "    c, _ = s.accept(); c.sendall(b'x'); c.close()\n"  # server side closes first
            "t.join(); s.close()\n")
    as_user(host, "/usr/bin/python3", "-c", code)
    out = invoke(lab.inventory_path, "restart", "--host", host.name, "--json")
    doc = json.loads(out.stdout)[0]
    assert out.returncode == 0, out.stdout
    assert doc["action"] == "started"
    if host.profile != "termux":  # Android cannot see TIME_WAIT; elsewhere it must have been there
        assert doc["port_before"] == "time_wait"


def test_foreign_holder_is_refused_and_replaced_with_force(lab, host):
    code = "import socket,time\ns=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n" \
           "s.bind(('127.0.0.1',5000));s.listen(4);print('ok',flush=True);time.sleep(600)\n"
    foreign = host.spawn_as_user(["/usr/bin/python3", "-c", code], stdout=subprocess.PIPE, text=True)
    assert foreign.stdout.readline().strip() == "ok"
    out = invoke(lab.inventory_path, "restart", "--host", host.name)
    assert out.returncode == 1
    line = out.stdout.strip().splitlines()[0]
    assert line.startswith("%s: FAILED: port 5000 is held by" % host.name)
    if host.profile == "termux":
        assert "a process this user cannot see" in line
        assert foreign.poll() is None
        return
    assert "pid %d" % foreign.pid in line and "user %s" % host.user.pw_name in line and "--force" in line
    assert foreign.poll() is None
    out = invoke(lab.inventory_path, "restart", "--host", host.name, "--force")
    assert out.returncode == 0, out.stdout
    assert foreign.wait(10) is not None


def _wait_health(host, pid, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if healthz(host)["pid"] == pid:
                return
        except (ValueError, KeyError, subprocess.CalledProcessError):
            pass  # not listening yet
        time.sleep(0.1)
    raise AssertionError("pid %d not healthy" % pid)


@pytest.mark.parametrize("host", ["linux"], indirect=True)
def test_zero_failed_requests_across_five_restarts(lab, host):
    assert invoke(lab.inventory_path, "restart", "--host", host.name).returncode == 0
    stop_file = os.path.join(host.app_dir, "stop-load")
    load = host.spawn_as_user(["/usr/bin/python3", str(LOADGEN), "5000", stop_file, "4"], stdout=subprocess.PIPE,
                              text=True)
    assert load.stdout.readline().strip() == "started"
    for _ in range(5):
        time.sleep(0.5)
        out = invoke(lab.inventory_path, "restart", "--host", host.name, "--service", "dashboard")
        assert out.returncode == 0, out.stdout
    time.sleep(0.5)
    Path(stop_file).touch()
    result = json.loads(load.stdout.readline())
    os.unlink(stop_file)
    assert result["errors"] == {}, result
    assert result["rate"] >= 100, result
    assert len(result["pids"]) == 6  # the pid changed 5 times


@pytest.mark.parametrize("host", ["linux", "termux"], indirect=True)
def test_kill_9_of_the_dashboard_comes_back(lab, host):
    assert invoke(lab.inventory_path, "restart", "--host", host.name).returncode == 0
    old = state(host)["services"]["dashboard"]["pid"]
    os.kill(old, 9)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        dash = state(host)["services"]["dashboard"]
        if dash["state"] == "running" and dash["pid"] != old:
            break
        time.sleep(0.1)
    assert dash["pid"] != old and dash["last_exit"] == -9 and dash["restarts"] == 1
    _wait_health(host, dash["pid"])
    if host.profile == "termux":  # no warm spare within Android's process budget
        time.sleep(2)
        assert state(host)["spare_pid"] is None


class Webhook(http.server.BaseHTTPRequestHandler):
    received = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Webhook.received.append((self.headers["Content-Type"], json.loads(body)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("host", ["linux"], indirect=True)
def test_a_bot_that_exits_at_once_is_marked_failed_with_its_last_lines_and_an_alert(lab, host):
    server = http.server.HTTPServer((host.address.rsplit(".", 1)[0] + ".1", 0), Webhook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    Webhook.received.clear()
    url = "http://%s:%d/api/webhooks/1/x" % server.server_address
    bot = "python -c \"import sys; print('starting @everyone'); print('LoginFailure: improper token'); sys.exit(3)\""
    inventory = Path(lab.inventory_path).read_text().replace(
        "  %s: {" % host.name, "  %s: {bot_command: '%s', alert_webhook: '%s', " % (
            host.name, bot.replace("'", "''"), url))
    path = lab.dir / "inv-bot.yml"
    path.write_text(inventory)
    seen, done = set(), threading.Event()

    def watch_argv():  # the webhook URL is a secret: no process of the host may carry it in argv
        while not done.is_set():
            seen.update(processes(url))
            time.sleep(0.002)

    watcher = threading.Thread(target=watch_argv)
    watcher.start()
    try:
        try:
            assert invoke(path, "restart", "--host", host.name).returncode == 0
        finally:
            done.set()
            watcher.join()
        assert seen == set()
        run = Path(host.app_dir, "run")
        assert url in (run / "supervisor.json").read_text()  # it is there, for the supervisor alone:
        for private in (run / "supervisor.json", run / "state.json", Path(host.app_dir, "logs", "bot.log")):
            assert private.stat().st_mode & 0o077 == 0, private
        for folder in (run, run / "commands", Path(host.app_dir, "logs")):
            assert folder.stat().st_mode & 0o777 == 0o700, folder
        deadline = time.monotonic() + 40  # backoff 1 + 2 + 4 + 8 s before the fifth failure
        while time.monotonic() < deadline and state(host)["services"]["bot"]["state"] != "failed":
            time.sleep(0.2)
        bot_state = state(host)["services"]["bot"]
        assert bot_state["state"] == "failed" and bot_state["failures"] == 5 and bot_state["last_exit"] == 3
        out = invoke(path, "status", "--host", host.name)
        assert out.returncode == 0
        row = [line.split() for line in out.stdout.splitlines() if line.split()[1:2] == ["bot"]][0]
        assert row[2] == "failed" and row[6] == "3" and row[5] == "4"  # STATE, RESTARTS, LAST-EXIT
        assert "LoginFailure: improper token" in out.stdout
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not Webhook.received:
            time.sleep(0.1)
        kind, body = Webhook.received[0]
        assert kind == "application/json" and "bot failed" in body["content"]
        assert body["allowed_mentions"] == {"parse": []}  # "@everyone" in a log line pings nobody
        assert "LoginFailure" in body["content"]
        assert state(host)["services"]["dashboard"]["state"] == "running"  # the rest keeps going
    finally:
        invoke(path, "stop", "--host", host.name)
        server.shutdown()


@pytest.mark.parametrize("host", ["linux"], indirect=True)
def test_two_restarts_at_the_same_moment(lab, host):
    env = dict(os.environ, SULFUR_INVENTORY=str(lab.inventory_path))
    procs = [subprocess.Popen([sys.executable, "-m", "invoke", "restart", "--host", host.name], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert all("dashboard up at" in out for out, _ in outs)
    assert len(supervisors(host)) == 1
    _wait_health(host, state(host)["services"]["dashboard"]["pid"])


def test_a_host_without_a_release_is_told_to_deploy(lab):
    linux = lab.hosts["linux"]
    path = lab.dir / "inv-norelease.yml"
    path.write_text(Path(lab.inventory_path).read_text().replace(linux.app_dir, linux.app_dir + "-empty"))
    out = invoke(path, "restart", "--host", "linux")
    assert out.returncode == 1
    assert out.stdout.strip() == ("linux: FAILED: no release on this host (%s-empty/current is missing): "
                                  "run invoke deploy first" % linux.app_dir)


def test_a_host_without_a_release_still_shows_its_logs_with_the_envs_secrets_redacted(lab):
    """After a first deploy that failed there is no release to run ctl from: the agent shows the logs."""
    linux = lab.hosts["linux"]
    empty = Path(linux.app_dir + "-norelease-logs")
    for sub in ("logs", "shared"):
        (empty / sub).mkdir(parents=True, exist_ok=True)
    (empty / "shared" / ".env").write_text("BOT_TOKEN=fake.token-for-the-test\nSHORT=1\n")
    (empty / "logs" / "bot.log").write_text("starting with fake.token-for-the-test\n"
                                            "error: login failed: 401 Unauthorized (1 try)\n")
    for folder, _dirs, files in os.walk(empty):
        for name in [folder] + [os.path.join(folder, f) for f in files]:
            os.chown(name, linux.user.pw_uid, linux.user.pw_gid)
    path = lab.dir / "inv-norelease-logs.yml"
    path.write_text(Path(lab.inventory_path).read_text().replace(linux.app_dir, str(empty)))
    try:
        out = invoke(path, "logs", "--host", "linux", "--service", "bot")
        assert out.returncode == 0, out.stdout + out.stderr
        assert out.stdout.splitlines() == ["starting with [BOT_TOKEN]", "error: login failed: 401 Unauthorized (1 try)"]
    finally:
        shutil.rmtree(empty, ignore_errors=True)


def _ctl_logs_processes(host):
    return processes("remote.host.ctl", "logs", uid=host.user.pw_uid)


def test_logs_follow_ends_on_the_host_when_the_operator_goes_away(lab, host):
    """The laptop's lid closes (the invoke process dies, its SSH connection with it): nothing stays behind."""
    assert invoke(lab.inventory_path, "restart", "--host", host.name).returncode == 0
    env = dict(os.environ, SULFUR_INVENTORY=str(lab.inventory_path))
    follow = subprocess.Popen([sys.executable, "-m", "invoke", "logs", "--host", host.name, "--service", "supervisor",
                               "--follow"], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert "supervisor[" in follow.stdout.readline()  # the backlog arrived: the host side runs
        deadline = time.monotonic() + 20
        while not _ctl_logs_processes(host) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _ctl_logs_processes(host)
    finally:
        follow.kill()  # SIGKILL: no goodbye, the TCP connection just closes
        follow.wait()
    deadline = time.monotonic() + 20
    while _ctl_logs_processes(host) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _ctl_logs_processes(host) == []


def test_one_ctrl_c_stops_logs_follow_with_exit_0_and_the_host_side_with_it(lab, host):
    """Fabric re-raises Ctrl+C without a pty and then waits for the host's output to end: it never did,
    and only a second Ctrl+C got out, with status 1. One is enough now."""
    assert invoke(lab.inventory_path, "restart", "--host", host.name).returncode == 0
    env = dict(os.environ, SULFUR_INVENTORY=str(lab.inventory_path))
    follow = subprocess.Popen([sys.executable, "-m", "invoke", "logs", "--host", host.name, "--service", "supervisor",
                               "--follow"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    try:
        assert "supervisor[" in follow.stdout.readline()
        deadline = time.monotonic() + 20
        while not _ctl_logs_processes(host) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _ctl_logs_processes(host)
        follow.send_signal(signal.SIGINT)  # one Ctrl+C
        assert follow.wait(timeout=5) == 0, follow.stderr.read()
    finally:
        if follow.poll() is None:
            follow.kill()
            follow.wait()
    assert "Traceback" not in follow.stderr.read()
    deadline = time.monotonic() + 5
    while _ctl_logs_processes(host) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _ctl_logs_processes(host) == []


def test_port_status_labels_our_processes_by_role_one_row_each(lab):
    """The supervisor, the dashboard and the warm spare all hold the port: three roles, not three
    long command lines; --json keeps every detail."""
    linux = lab.hosts["linux"]
    assert invoke(lab.inventory_path, "restart", "--host", "linux").returncode == 0
    try:
        deadline = time.monotonic() + 30
        while not state(linux).get("spare_pid") and time.monotonic() < deadline:
            time.sleep(0.2)
        pids = {"supervisor": int(Path(linux.app_dir, "run", "supervisor.pid").read_text().split()[0]),
                "dashboard": state(linux)["services"]["dashboard"]["pid"], "spare": state(linux)["spare_pid"]}
        out = invoke(lab.inventory_path, "port-status", "--host", "linux")
        assert out.returncode == 0, out.stdout + out.stderr
        rows = [line.split() for line in out.stdout.splitlines()[1:]]
        assert sorted((int(r[3]), " ".join(r[5:7])) for r in rows) == sorted(
            (pid, "ours: %s" % role) for role, pid in pids.items())
        listeners = json.loads(invoke(lab.inventory_path, "port-status", "--host", "linux", "--json").stdout)[0][
            "listeners"]
        assert {item["role"] for item in listeners} == set(pids) and all(item["cmdline"] for item in listeners)
    finally:
        invoke(lab.inventory_path, "stop", "--host", "linux")


def test_the_supervisor_keeps_history_on_each_platform(lab, host):
    """Sampled on the host itself (Termux hides /proc/loadavg and /proc/meminfo: those read 0 there,
    its own processes' CPU and RSS do not)."""
    from remote.host.common import history

    assert invoke(lab.inventory_path, "restart", "--host", host.name).returncode == 0
    ring = str(Path(host.app_dir, "run", "history.bin"))
    deadline = time.monotonic() + 40
    while len(history.read(ring)) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    records = history.read(ring)
    assert len(records) >= 2, records
    assert records[-1]["serving"] == 1 and records[-1]["dashboard_rss"] > 1000 and records[-1]["supervisor_rss"] > 1000
    assert os.stat(ring).st_uid == host.user.pw_uid and os.stat(ring).st_mode & 0o777 == 0o600
