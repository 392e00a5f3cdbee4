"""A one-host port-status through the system's ssh client (remote/openssh.py, remote/early.py), on real
test hosts: it is taken when it can be, its answers are the SSH library's, and a failure reads the
same whichever client met it first. An `ssh` wrapper first on PATH records each time ssh is run."""

import json
import socket
import subprocess
import threading

import dashproc
import pytest
import sshlab

from remote import early, openssh
from remote.fanout import on_host
from remote.inventory import load

pytestmark = pytest.mark.skipif(sshlab.available() is not None, reason=str(sshlab.available()))
PY = "/usr/bin/python3"


@pytest.fixture(scope="module")
def lab():
    with sshlab.lab_with("linux", "termux") as lab:
        yield lab


@pytest.fixture
def wrapped(tmp_path):
    """A directory whose `ssh` logs its arguments, one run a line, then runs the real one."""
    log = tmp_path / "ssh.log"
    wrapper = tmp_path / "bin" / "ssh"
    wrapper.parent.mkdir()
    record = 'printf "LANG=%%s %%s" "$LANG" "$*" | tr "\\n" " " | head -c 1500 >> %s; echo >> %s' % (log, log)
    wrapper.write_text('#!/bin/sh\n%s\nexec /usr/bin/ssh "$@"\n' % record)
    wrapper.chmod(0o755)
    return "%s:/usr/bin:/bin" % wrapper.parent, log


def invoke(inventory, path, *args):
    """The CLI with PATH ``path``, in a German locale (which the host must not get)."""
    return dashproc.invoke(inventory, *args, timeout=120, env={"PATH": path, "LANG": "de_DE.UTF-8"})


def runs(log):
    """The ssh runs the wrapper saw that reached a host (not `ssh -G`, which only reads ssh_config)."""
    return [line for line in log.read_text().splitlines() if " -G " not in line] if log.exists() else []


def listen(host, port):
    code = ("import socket, time\ns = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
            "s.bind(('0.0.0.0', %d)); s.listen(4); print('ok', flush=True); time.sleep(600)\n" % port)
    proc = host.spawn_as_user([PY, "-c", code], stdout=subprocess.PIPE, text=True, env={"PATH": "/usr/bin:/bin"})
    assert proc.stdout.readline().strip() == "ok"
    return proc


def test_one_host_goes_through_ssh_once_and_answers_as_the_library_does(lab, wrapped):
    path, log = wrapped
    linux = lab.hosts["linux"]
    listen(linux, 5077)
    try:
        out = invoke(lab.inventory_path, path, "port-status", "--host", "linux", "--port", "5077", "--json")
        assert out.returncode == 0, out.stderr
        [doc] = json.loads(out.stdout)
        assert len(runs(log)) == 1  # started ahead of the task, and taken by it: one connection, not two
        assert "KexAlgorithms=^curve25519" in runs(log)[0] and "StrictHostKeyChecking=yes" in runs(log)[0]
        assert runs(log)[0].startswith("LANG= ")  # the user's locale stays here: the host's tools answer in English
        host = load(lab.inventory_path).hosts["linux"]
        from remote import agentcalls

        theirs = on_host(host, lambda runner, h: agentcalls.port_status(runner, h, port=5077))  # paramiko
        assert doc["state"] == theirs["state"] == "listening"
        assert doc["listeners"] == theirs["listeners"] and doc["method"] == theirs["method"] == "ss"
        assert "time.sleep(600)" in doc["listeners"][0]["cmdline"]
    finally:
        linux.kill_children()
    # two hosts: the library's connections, in threads; ssh is never run
    out = invoke(lab.inventory_path, path, "port-status", "--all", "--json")
    assert out.returncode == 0 and len(json.loads(out.stdout)) == 2 and len(runs(log)) == 1
    # no ssh client on this machine: the library's way, the same answer
    out = invoke(lab.inventory_path, str(log.parent), "port-status", "--host", "termux", "--json")
    assert out.returncode == 0 and json.loads(out.stdout)[0]["method"] == "socket", out.stderr
    assert len(runs(log)) == 1


def test_an_unknown_host_key_reads_as_the_library_says_it(lab, wrapped, tmp_path):
    path, log = wrapped
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    inventory = lab.inventory(list(lab.hosts.values()), tmp_path / "inventory.yml", known_hosts=empty)
    one = invoke(inventory, path, "port-status", "--host", "linux", "--json")
    assert one.returncode == 1 and len(runs(log)) == 1  # ssh refused it; then the library said why
    both = invoke(inventory, path, "port-status", "--all", "--json")
    assert both.returncode == 1 and len(runs(log)) == 1
    error = {doc["host"]: doc["error"] for doc in json.loads(both.stdout)}["linux"]
    assert error.startswith("unknown host key for %s (ssh-ed25519 SHA256:" % lab.hosts["linux"].address)
    assert json.loads(one.stdout)[0]["error"] == error
    assert empty.read_text() == ""  # strict: nothing was added by either client


def test_a_port_that_never_speaks_ssh_is_given_up_in_the_same_words(lab, wrapped, tmp_path):
    path, log = wrapped
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held = []
    threading.Thread(target=lambda: held.extend(server.accept() for _ in range(2)), daemon=True).start()
    inventory = lab.inventory([], tmp_path / "inventory.yml", extra_hosts=(
        "mute: {hostname: 127.0.0.1, port: %d, user: sulfur-linux, connect_timeout: 1}" % server.getsockname()[1]))
    try:
        one = invoke(inventory, path, "port-status", "--host", "mute", "--json")
        assert one.returncode == 1 and len(runs(log)) == 1
        host = load(inventory).hosts["mute"]
        from remote import agentcalls

        theirs = on_host(host, agentcalls.port_status)  # paramiko's own words for the same silence
        assert theirs["error"].startswith("no SSH answer from sulfur-linux@127.0.0.1:")
        assert json.loads(one.stdout)[0]["error"] == theirs["error"]
    finally:
        server.close()
        for conn, _ in held:
            conn.close()


def test_only_a_plain_one_host_port_status_is_started_ahead():
    assert early.hosts_named(["invoke", "port-status", "--host", "pi", "--json"]) == ("pi", False)
    assert early.hosts_named(["invoke", "port-status", "-h", "pi", "-p", "5000"]) == ("pi", False)
    assert early.hosts_named(["invoke", "port-status", "--host=pi"]) == ("pi", False)
    assert early.hosts_named(["invoke", "port-status", "--all", "-r", "4"]) == (None, True)
    for argv in (["invoke", "free-port", "--host", "pi"], ["invoke", "port-status", "--host"],
                 ["invoke", "port-status", "--host", "pi", "doctor"], ["invoke", "-e", "port-status"],
                 ["invoke", "port-status", "--json=yes"], ["invoke"],
                 ["invoke", "port-status", "-h", "a", "--host", "b"],
                 ["invoke", "port-status", "--host", "pi", "--parallel=abc"]):
        assert early.hosts_named(argv) is None, argv


def test_ssh_config_that_routes_a_host_is_read_with_ssh_itself(tmp_path):
    user = tmp_path / "config"
    user.write_text("Host *\n  ServerAliveInterval 30\n  Include conf.d/*\n")
    (tmp_path / "conf.d").mkdir()
    assert not openssh._routing_in(str(user), str(tmp_path))
    (tmp_path / "conf.d" / "pi").write_text("Host pi\n  ProxyJump=vps\n")
    assert openssh._routing_in(str(user), str(tmp_path))
    (tmp_path / "conf.d" / "pi").write_text("Host pi\n  # User nobody\n  IdentityFile ~/.ssh/pi\n")
    assert not openssh._routing_in(str(user), str(tmp_path))
    (tmp_path / "conf.d" / "pi").write_text("Match host pi\n")
    assert openssh._routing_in(str(user), str(tmp_path))
    assert not openssh._routing_in(str(tmp_path / "absent"), str(tmp_path))


@pytest.mark.parametrize("config, extra", [
    ("Match user bot\n  ProxyJump vps\n", ""),  # a Match on the user the command line gives
    ("Host pi.lan\n  HostKeyAlias pi\n", ""),  # the key looked up under another name
    ("", ", known_hosts: '/tmp/my keys/known_hosts'"),  # ssh splits its config words on spaces
    ("", ", identity_file: '~/.ssh/id_%h'"),  # and expands %h in them
    ("Include ${HOME}/.ssh/more\n", ""),  # a token only ssh expands: ssh -G reads it, and finds nothing
])
def test_what_ssh_would_read_otherwise_than_the_library_goes_the_library_way(tmp_path, config, extra):
    (tmp_path / "ssh_config").write_text(config)
    inventory = tmp_path / "inventory.yml"
    inventory.write_text("hosts:\n  pi: {hostname: pi.lan, user: bot, ssh_config: %s%s}\n"
                         % (tmp_path / "ssh_config", extra))
    host = load(inventory).hosts["pi"]
    if "Include" in config:
        argv, where = openssh.argv_for(host)
        assert where == "bot@pi.lan:22" and "ProxyCommand=none" in argv
        return
    with pytest.raises(openssh.Unsuitable):
        openssh.argv_for(host)
