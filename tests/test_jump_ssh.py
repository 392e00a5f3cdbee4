"""Hosts behind another host: a test host whose namespace hangs off another test host's, with no
route from the operator (the lab's blackhole route makes sure of it). Strict host keys on every hop,
the jump connected once per task, ProxyJump from an ssh_config file, ProxyCommand refused, an
encrypted key without an agent, and port-status, restart and deploy through the jump."""

import json
import socket
import subprocess
from pathlib import Path

import pytest
import sshlab
from dashproc import invoke

pytestmark = pytest.mark.skipif(sshlab.available() is not None, reason=str(sshlab.available()))


@pytest.fixture(scope="module")
def lab():
    lab = sshlab.Lab()
    try:
        vps = lab.add("linux", "vps")
        lab.add("linux", "phone", behind=vps)
        lab.add("linux", "pi", behind=vps)
        lab.inventory_path = lab.inventory(list(lab.hosts.values()))
        yield lab
    finally:
        lab.close()


def accepted(host):
    return host.sshd_log.read_text().count("Accepted publickey")


def test_no_route_from_the_operator_to_a_host_behind_another(lab):
    with pytest.raises(OSError):
        socket.create_connection((lab.hosts["phone"].address, 22), timeout=2).close()


def test_port_status_through_the_jump_connects_it_once_for_two_hosts(lab):
    vps = lab.hosts["vps"]
    before = accepted(vps)
    out = invoke(lab.inventory_path, "port-status", "--host", "phone,pi", "--json")
    docs = json.loads(out.stdout)
    assert out.returncode == 0 and [d["host"] for d in docs] == ["phone", "pi"] and all(d["ok"] for d in docs)
    assert accepted(vps) - before == 1  # one connection to the jump, two hosts behind it
    doctor = invoke(lab.inventory_path, "doctor", "--host", "phone")
    assert doctor.returncode == 0 and "phone: via vps" in doctor.stdout


def test_restart_and_deploy_through_the_jump(lab):
    phone = lab.hosts["phone"]
    inventory = lab.inventory([lab.hosts["vps"], phone], lab.dir / "two.yml")
    out = invoke(inventory, "deploy", "--host", "phone", "--wheels", timeout=600)  # SFTP through the jump
    assert out.returncode == 0, out.stdout + out.stderr
    assert Path(phone.app_dir, "current").is_symlink()
    out = invoke(inventory, "restart", "--host", "phone")
    assert out.returncode == 0 and out.stdout.startswith("phone: dashboard up at"), out.stdout + out.stderr
    assert invoke(inventory, "stop", "--host", "phone").returncode == 0


def test_a_wrong_key_on_the_jump_is_refused_naming_the_jump(lab):
    vps, phone = lab.hosts["vps"], lab.hosts["phone"]
    known = lab.dir / "wrong_known_hosts"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(lab.dir / "other")], check=True)
    other = (lab.dir / "other.pub").read_text().split()[:2]
    known.write_text("%s %s %s\n%s" % (vps.address, other[0], other[1], phone.known_hosts_line()))
    inventory = lab.inventory([vps, phone], lab.dir / "wrong.yml", known_hosts=known)
    out = invoke(inventory, "port-status", "--host", "phone")
    assert out.returncode == 1
    assert "jump host vps (for phone): HOST KEY CHANGED" in out.stdout
    known.write_text("%s%s %s %s\n" % (vps.known_hosts_line(), phone.address, other[0], other[1]))
    out = invoke(inventory, "port-status", "--host", "phone")  # the jump is fine, the host behind it is not
    assert out.returncode == 1 and "phone" in out.stdout and "HOST KEY CHANGED for %s@%s" % (
        phone.user.pw_name, phone.address) in out.stdout and "jump host" not in out.stdout
    known.write_text(phone.known_hosts_line())  # the jump's key unknown: strict refuses it too
    out = invoke(inventory, "port-status", "--host", "phone")
    assert out.returncode == 1 and "jump host vps (for phone): unknown host key for %s" % vps.address in out.stdout


def test_proxyjump_from_an_ssh_config_file_and_proxycommand_refused(lab):
    vps, phone = lab.hosts["vps"], lab.hosts["phone"]
    config = lab.dir / "ssh_config"
    config.write_text("Host %s\n  ProxyJump %s@%s\n" % (phone.address, vps.user.pw_name, vps.address))
    entry = {k: v for k, v in phone.inventory_entry().items() if k != "jump"}
    text = lab.inventory([vps], lab.dir / "cfg.yml").read_text()
    text = text.replace("defaults:\n", "defaults:\n  ssh_config: %s\n" % config)
    text += "  phone: {%s}\n" % ", ".join("%s: %s" % item for item in entry.items())
    (lab.dir / "cfg.yml").write_text(text)
    out = invoke(lab.dir / "cfg.yml", "port-status", "--host", "phone", "--json")
    assert out.returncode == 0 and json.loads(out.stdout)[0]["ok"], out.stdout + out.stderr
    config.write_text("Host %s\n  ProxyCommand ssh -W %%h:%%p %s\n" % (phone.address, vps.address))
    out = invoke(lab.dir / "cfg.yml", "port-status", "--host", "phone")
    assert out.returncode == 1 and "phone: ProxyCommand in ssh_config is not supported" in out.stdout


def test_an_encrypted_key_without_an_agent_is_one_line_never_a_prompt(lab, monkeypatch):
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    key = lab.dir / "encrypted_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "a passphrase", "-f", str(key)], check=True)
    text = lab.inventory_path.read_text().replace("identity_file: %s" % lab.client_key, "identity_file: %s" % key)
    path = lab.dir / "encrypted.yml"
    path.write_text(text)
    out = invoke(path, "port-status", "--host", "vps")
    assert out.returncode == 1
    assert "key %s is encrypted: add it to ssh-agent with ssh-add" % key in out.stdout
    assert "Traceback" not in out.stdout + out.stderr


def test_a_key_from_a_running_ssh_agent_works_through_the_jump(lab, monkeypatch):
    sock = lab.dir / "agent.sock"
    agent = subprocess.run(["ssh-agent", "-a", str(sock)], capture_output=True, text=True, check=True)
    pid = int(agent.stdout.split("SSH_AGENT_PID=")[1].split(";")[0])
    try:
        monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
        subprocess.run(["ssh-add", "-q", str(lab.client_key)], check=True, capture_output=True)
        text = lab.inventory_path.read_text().replace("identity_file: %s" % lab.client_key, "identity_file: null")
        path = lab.dir / "agent.yml"
        path.write_text(text)
        out = invoke(path, "port-status", "--host", "phone", "--json")
        assert out.returncode == 0 and json.loads(out.stdout)[0]["ok"], out.stdout + out.stderr
    finally:
        subprocess.run(["kill", str(pid)], check=False)
