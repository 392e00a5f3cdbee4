"""`invoke port-status` / `free-port` / `doctor` over real SSH, on the linux, termux and bare test hosts.

Each case runs the real CLI (`python -m invoke ...`) against an inventory naming real sshd's in
network namespaces; listeners are real processes of the host's user inside that namespace.
"""

import json
import os
import socket
import subprocess
import sys
import time

import pytest
import sshlab
from dashproc import ROOT, invoke

pytestmark = pytest.mark.skipif(sshlab.available() is not None, reason=str(sshlab.available()))
PROFILES = ["linux", "termux", "bare"]
PY = "/usr/bin/python3"




def status(inventory, name):
    out = invoke(inventory, "port-status", "--host", name, "--json")
    docs = json.loads(out.stdout)
    assert len(docs) == 1 and docs[0]["host"] == name, out.stdout + out.stderr
    return docs[0], out.returncode


@pytest.fixture(scope="module")
def lab():
    with sshlab.lab_with(*PROFILES) as lab:
        yield lab


@pytest.fixture(params=PROFILES)
def host(request, lab):
    host = lab.hosts[request.param]
    yield host
    host.kill_children()


def listen(host, address="0.0.0.0", port=5000, family="inet", v6only=False, env=None):
    """A listener process of the host's user; returns once it listens."""
    code = (
        "import socket, time\n"
        "s = socket.socket(socket.AF_%s)\n"
        "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
        "%s"
        "s.bind((%r, %d)); s.listen(16); print('ok', flush=True); time.sleep(600)\n"
    ) % ("INET6" if family == "inet6" else "INET",
         "s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)\n" if v6only else "", address, port)
    proc = host.spawn_as_user([PY, "-c", code], stdout=subprocess.PIPE, text=True,
                              env=dict({"PATH": "/usr/bin:/bin"}, **(env or {})))
    assert proc.stdout.readline().strip() == "ok"
    return proc


def test_free_port(lab, host):
    doc, code = status(lab.inventory_path, host.name)
    assert code == 0 and doc["ok"]
    assert doc["state"] == "free" and doc["listeners"] == []
    assert doc["method"] == {"linux": "ss", "termux": "socket", "bare": "proc"}[host.profile]
    if host.profile == "termux":  # Android's failures are recorded, never read as "free"
        failed = {t["method"]: t["detail"] for t in doc["tried"] if not t["ok"]}
        assert "Permission denied" in failed["ss"] and "Permission denied" in failed["netstat"]
        assert "proc" in failed


def test_foreign_listener_is_named(lab, host):
    proc = listen(host)
    doc, code = status(lab.inventory_path, host.name)
    assert code == 0 and doc["state"] == "listening"
    assert doc["listeners"]
    item = doc["listeners"][0]
    assert item["managed"] is False
    if host.profile == "termux":  # Android: no tool may name the owner; the socket probe still sees it
        assert item["pid"] is None
    else:
        assert item["pid"] == _child_pid(proc)
        assert item["user"] == host.user.pw_name
        assert "time.sleep(600)" in item["cmdline"]


def test_table_output_is_one_row_per_listener(lab, host):
    listen(host)
    out = invoke(lab.inventory_path, "port-status", "--host", host.name)
    assert out.returncode == 0
    header, row = out.stdout.splitlines()
    assert header.split() == ["HOST", "PORT", "STATE", "PID", "USER", "COMMAND", "VIA", "TIME_WAIT"]
    assert row.split()[:3] == [host.name, "5000", "listening"]


def test_time_wait_only(lab, host):
    code = (
        "import socket\n"
        "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
        "s.bind(('0.0.0.0', 5000)); s.listen(4); print('ok', flush=True)\n"
        "for _ in range(3):\n"
        "    c, _ = s.accept(); c.sendall(b'bye'); c.close()\n"  # the server closes first
    )
    proc = host.spawn_as_user([PY, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ok"
    for _ in range(3):
        with socket.create_connection((host.address, 5000), timeout=5) as conn:
            while conn.recv(16):
                pass
    proc.wait(10)
    doc, code = status(lab.inventory_path, host.name)
    assert code == 0 and doc["listeners"] == []
    if host.profile == "termux":  # TIME_WAIT cannot be seen on Android, and it does not block our bind
        assert doc["state"] == "free" and doc["time_wait"] is None
    else:
        assert doc["state"] == "time_wait" and doc["time_wait"] == 3


def test_ipv6_only_listener(lab, host):
    listen(host, "::", family="inet6", v6only=True)
    doc, _ = status(lab.inventory_path, host.name)
    assert doc["state"] == "listening"
    assert [item["address"] for item in doc["listeners"]] == (
        ["[::1]:5000"] if host.profile == "termux" else ["[::]:5000"])


def test_listener_on_the_hosts_own_address(lab, host):
    listen(host, host.address)
    doc, _ = status(lab.inventory_path, host.name)
    assert doc["state"] == "listening"
    if host.profile == "termux":  # loopback connects are refused; the bind probe finds it
        assert doc["listeners"][0]["address"] == "?:5000"
    else:
        assert doc["listeners"][0]["address"] == "%s:5000" % host.address


def test_a_client_connected_to_5000_is_not_a_listener_and_is_never_touched(lab, host):
    outside = socket.socket()  # a server on this side of the veth, port 5000
    outside.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    outside.bind((host.address.rsplit(".", 1)[0] + ".1", 5000))
    outside.listen(1)
    try:
        code = "import socket, time\nc = socket.create_connection((%r, 5000))\nprint('ok', flush=True)\n" \
               "time.sleep(600)\n" % outside.getsockname()[0]
        client = host.spawn_as_user([PY, "-c", code], stdout=subprocess.PIPE, text=True)
        assert client.stdout.readline().strip() == "ok"
        doc, _ = status(lab.inventory_path, host.name)
        assert doc["listeners"] == []  # (TIME_WAIT left by an earlier case may still sit there)
        assert doc["state"] in ("free", "time_wait")
        out = invoke(lab.inventory_path, "free-port", "--host", host.name, "--force", "--json")
        assert out.returncode == 0, out.stdout + out.stderr
        assert json.loads(out.stdout)[0]["stopped"] == []
        assert client.poll() is None
    finally:
        outside.close()


def test_free_port_refuses_a_foreign_holder_then_frees_it_with_force(lab, host):
    proc = listen(host)
    out = invoke(lab.inventory_path, "free-port", "--host", host.name, "--json")
    doc = json.loads(out.stdout)[0]
    assert out.returncode == 1 and not doc["ok"]
    assert proc.poll() is None
    if host.profile == "termux":
        assert "cannot see" in doc["error"]
        return  # with no owner in sight even --force must not guess
    assert "foreign holder pid %d" % _child_pid(proc) in doc["error"] and "--force" in doc["error"]
    out = invoke(lab.inventory_path, "free-port", "--host", host.name, "--force", "--grace", "2")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "freed" in out.stdout and "SIGTERM" in out.stdout
    proc.wait(10)
    assert status(lab.inventory_path, host.name)[0]["state"] in ("free", "time_wait")


def test_free_port_stops_our_managed_dashboard(lab, host):
    """A stand-in dashboard recorded in app_dir/run/dashboard.pid (as the supervisor records it)."""
    proc = listen(host, env={"DASHBOARD_PORT": "5000"})
    pid = _child_pid(proc)
    stat = open("/proc/%d/stat" % pid).read()
    start = stat[stat.rindex(")") + 2:].split()[19]
    run = os.path.join(host.app_dir, "run")
    host.netns("setpriv", "--reuid", str(host.user.pw_uid), "--regid", str(host.user.pw_gid), "--init-groups",
               "mkdir", "-p", run)
    with open(os.path.join(run, "dashboard.pid"), "w") as handle:
        handle.write("%d %s\n" % (pid, start))
    try:
        doc, _ = status(lab.inventory_path, host.name)
        assert doc["listeners"][0]["managed"] is True
        out = invoke(lab.inventory_path, "free-port", "--host", host.name, "--json")
        result = json.loads(out.stdout)[0]
        assert out.returncode == 0, out.stdout
        assert [s["pid"] for s in result["stopped"]] == [pid]
        proc.wait(10)
    finally:
        os.unlink(os.path.join(run, "dashboard.pid"))


def test_doctor_reports_what_really_works(lab, host):
    out = invoke(lab.inventory_path, "doctor", "--host", host.name, "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)[0]
    working = {m["method"] for m in doc["methods"] if m["ok"]}
    assert working == {"linux": {"ss", "lsof", "netstat", "fuser", "proc", "socket"},
                       "termux": {"socket"}, "bare": {"proc", "socket"}}[host.profile]
    assert doc["platform"] == ("termux" if host.profile == "termux" else "linux")
    assert doc["user"] == host.user.pw_name and doc["app_dir_writable"] is True
    text = invoke(lab.inventory_path, "doctor", "--host", host.name).stdout
    assert "auth ok" in text and "port tools" in text


def test_all_hosts_at_once_with_one_down_and_one_silent(lab):
    """--all: the dead host is one error row; the others are reported; exit 1; nobody waits long."""
    silent = socket.socket()  # accepts TCP, never says a word of SSH
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    dead_port = _unused_port()
    extra = ("down: {hostname: 127.0.0.1, port: %d, user: nobody}\n"
             "mute: {hostname: 127.0.0.1, port: %d, user: nobody, connect_timeout: 2}\n"
             % (dead_port, silent.getsockname()[1]))
    inventory = lab.inventory(list(lab.hosts.values()), lab.dir / "inv-all.yml", extra_hosts=extra)
    try:
        started = time.monotonic()
        out = invoke(inventory, "port-status", "--all", "--json")
        elapsed = time.monotonic() - started
        silent_port = silent.getsockname()[1]
    finally:
        silent.close()
    docs = json.loads(out.stdout)
    assert out.returncode == 1
    assert [d["host"] for d in docs] == PROFILES + ["down", "mute"]  # inventory order
    assert all(d["ok"] and d["state"] in ("free", "time_wait") for d in docs[:3]), docs[:3]
    assert "connection refused" in docs[3]["error"]
    assert "no SSH answer from nobody@127.0.0.1:%d within 2 s" % silent_port in docs[4]["error"]
    assert elapsed < 20, "a dead host held up the others"


def _unused_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _child_pid(proc):
    """The listener's pid: setpriv and ip netns exec exec() into it, so it is the Popen's pid."""
    return proc.pid


def test_host_keys_strict_accept_new_and_changed(lab):
    linux = lab.hosts["linux"]
    known = lab.dir / "hk-known_hosts"
    known.write_text("")
    strict = lab.inventory([linux], lab.dir / "hk-strict.yml", known_hosts=known)
    out = invoke(strict, "port-status", "--host", "linux", "--json")
    doc = json.loads(out.stdout)[0]
    assert out.returncode == 1
    assert "unknown host key for %s" % linux.address in doc["error"]
    assert "ssh-keyscan -p 22 %s >> %s" % (linux.address, known) in doc["error"]
    assert known.read_text() == ""  # strict never writes

    accept = lab.inventory([linux], lab.dir / "hk-accept.yml", known_hosts=known, policy="accept-new")
    out = invoke(accept, "port-status", "--host", "linux", "--json")
    assert out.returncode == 0, out.stdout
    assert known.read_text() == linux.known_hosts_line()  # saved as OpenSSH would
    assert invoke(strict, "port-status", "--host", "linux").returncode == 0  # and trusted from now on

    other = lab.dir / "other_key"
    sshlab.sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other))
    changed = "%s %s\n" % (linux.address, " ".join((lab.dir / "other_key.pub").read_text().split()[:2]))
    for inventory in (strict, accept):  # a changed key is refused whatever the policy
        known.write_text(changed)
        out = invoke(inventory, "port-status", "--host", "linux", "--json")
        doc = json.loads(out.stdout)[0]
        assert out.returncode == 1 and "HOST KEY CHANGED" in doc["error"]
        assert "ssh-keygen -R" in doc["error"]
        assert known.read_text() == changed


def test_another_users_holder_is_refused_with_what_to_do(lab):
    linux = lab.hosts["linux"]
    code = "import socket, time\ns = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n" \
           "s.bind(('0.0.0.0', 5000)); s.listen(4)\n" \
           "print('ok', flush=True); time.sleep(600)\n"
    proc = linux.spawn_as_root([PY, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ok"
        out = invoke(lab.inventory_path, "free-port", "--host", "linux", "--force", "--json")
        doc = json.loads(out.stdout)[0]
        assert out.returncode == 1
        # a non-root agent cannot even see root's process: it says so, and never kills blindly
        assert "held by a process this user cannot see" in doc["error"]
        assert "free it with sudo or as its owner" in doc["error"]
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait()


def test_users_ssh_config_fills_what_the_inventory_leaves_out(lab, tmp_path):
    linux = lab.hosts["linux"]
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "config").write_text(
        "Host the-pi\n  HostName %s\n  User %s\n  Port 22\n" % (linux.address, linux.user.pw_name))
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(
        "defaults: {identity_file: %s, known_hosts: %s}\n"
        "hosts:\n  pi: {hostname: the-pi, python: /usr/bin/python3, app_dir: %s}\n"
        % (lab.client_key, lab.known_hosts, linux.app_dir))
    env = dict(os.environ, SULFUR_INVENTORY=str(inventory), HOME=str(home))
    out = subprocess.run([sys.executable, "-m", "invoke", "port-status", "--host", "pi", "--json"], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert json.loads(out.stdout)[0]["ok"]
