"""A host that takes the SSH login and then never answers (a compromised phone's own sshd can): every
task that reaches it ends with one line, and the others' answers are not held up by it.

The host is a real SSH server on loopback (paramiko's server side) that accepts the key, opens the
session channel and then never answers the exec request, the one wait paramiko has no bound for."""

import socket
import sys
import threading
import time

import paramiko
import pytest
from dashproc import invoke


class Stall(paramiko.ServerInterface):
    def get_allowed_auths(self, username):
        return "publickey"

    def check_auth_publickey(self, username, key):
        return paramiko.AUTH_SUCCESSFUL

    def check_channel_request(self, kind, chanid):
        return paramiko.OPEN_SUCCEEDED

    def check_channel_exec_request(self, channel, command):
        time.sleep(3600)  # never answers: the client's exec request waits on its event
        return False


@pytest.fixture
def stalling_host(tmp_path):
    host_key = paramiko.RSAKey.generate(2048)
    client_key = paramiko.RSAKey.generate(2048)
    client_key.write_private_key_file(str(tmp_path / "id_rsa"))
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    (tmp_path / "known_hosts").write_text("[127.0.0.1]:%d ssh-rsa %s\n" % (port, host_key.get_base64()))
    transports = []

    def serve():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            transport = paramiko.Transport(conn)
            transport.add_server_key(host_key)
            transport.start_server(server=Stall())
            transports.append(transport)

    threading.Thread(target=serve, daemon=True).start()
    yield port
    listener.close()
    for transport in transports:
        transport.close()


def test_a_host_that_never_answers_its_exec_request_ends_the_task_with_one_line(tmp_path, stalling_host):
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(
        "defaults: {user: bot, connect_timeout: 3, known_hosts: %s, identity_file: %s}\n"
        "hosts:\n  stall: {hostname: 127.0.0.1, port: %d, python: %s}\n"
        % (tmp_path / "known_hosts", tmp_path / "id_rsa", stalling_host, sys.executable))
    started = time.monotonic()
    out = invoke(inventory, "status", "--host", "stall")
    elapsed = time.monotonic() - started
    assert out.returncode == 1 and "Traceback" not in out.stdout + out.stderr, out.stdout + out.stderr
    [row] = [line for line in out.stdout.splitlines() if line.startswith("stall")]
    assert "error" in row, row
    assert elapsed < 60, elapsed  # connect_timeout 3 s + 10 s to start a command, with room to spare
