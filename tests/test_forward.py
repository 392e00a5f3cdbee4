"""The fleet's tunnel (remote/fleet/forward.py) against a real SSH server on loopback (paramiko's
server side, which opens direct-tcpip channels to loopback ports as sshd does): a connection the
host cannot carry is closed at once and the tunnel keeps carrying the next ones, where Fabric's
forward stopped accepting and left every later connection waiting in its backlog."""

import socket
import threading
import time

import paramiko
import pytest

from remote.fleet.forward import Forward, pump


class Forwarding(paramiko.ServerInterface):
    """sshd's direct-tcpip, in a few lines: connect to the destination, or refuse the channel."""

    def __init__(self):
        self.sockets = {}

    def get_allowed_auths(self, username):
        return "password"

    def check_auth_password(self, username, password):
        return paramiko.AUTH_SUCCESSFUL

    def check_channel_request(self, kind, chanid):
        return paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_direct_tcpip_request(self, chanid, origin, destination):
        try:
            self.sockets[chanid] = socket.create_connection(destination, timeout=5)
        except OSError:
            return paramiko.OPEN_FAILED_CONNECT_FAILED
        return paramiko.OPEN_SUCCEEDED


@pytest.fixture
def transport():
    """A client transport to a paramiko SSH server on loopback that forwards as sshd does."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    server_side = {}

    def serve():
        conn, _ = listener.accept()
        server = Forwarding()
        made = server_side["transport"] = paramiko.Transport(conn)
        made.add_server_key(paramiko.RSAKey.generate(2048))
        made.start_server(server=server)
        while made.is_active():
            channel = made.accept(0.5)
            if channel is not None:
                sock = server.sockets.pop(channel.get_id())
                sock.settimeout(None)
                threading.Thread(target=pump, args=(sock, channel, made.is_active), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    client = paramiko.Transport(listener.getsockname())
    client.connect(username="bot", password="x")
    yield client
    client.close()
    listener.close()


def echo_server(port=0):
    """A loopback server that answers each connection with what it read, upper-cased, then closes."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(8)

    def serve():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                data = b""
                while not data.endswith(b"\n"):
                    chunk = conn.recv(1024)
                    if not chunk:
                        break
                    data += chunk
                conn.sendall(data.upper())

    threading.Thread(target=serve, daemon=True).start()
    return listener


def ask(port, text):
    with socket.create_connection(("127.0.0.1", port), timeout=15) as conn:
        conn.sendall(text)
        answer = b""
        while True:
            try:
                chunk = conn.recv(1024)
            except ConnectionResetError:  # closed with our request unread
                return answer
            if not chunk:
                return answer
            answer += chunk


def forwarding(transport, remote_port, **kwargs):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    stop = threading.Event()
    forward = Forward(transport, listener, ("127.0.0.1", remote_port), 5.0, **kwargs)
    thread = threading.Thread(target=forward.serve, args=(lambda: not stop.is_set(),), daemon=True)
    thread.start()
    return listener.getsockname()[1], stop, thread, forward


def test_a_connection_the_host_refuses_is_closed_at_once_and_the_next_is_carried(transport):
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        remote_port = free.getsockname()[1]  # nothing listens there yet: the host refuses the channel
    port, stop, thread, _ = forwarding(transport, remote_port)
    started = time.monotonic()
    assert ask(port, b"hello\n") == b""  # closed, not left waiting
    assert time.monotonic() - started < 10
    echo = echo_server(remote_port)  # the dashboard is back
    try:
        assert ask(port, b"hello\n") == b"HELLO\n"
        answers = []
        askers = [threading.Thread(target=lambda n=n: answers.append(ask(port, b"n%d\n" % n))) for n in range(10)]
        for asker in askers:
            asker.start()
        for asker in askers:
            asker.join(30)
        assert sorted(answers) == sorted(b"N%d\n" % n for n in range(10))
    finally:
        echo.close()
        stop.set()
    thread.join(10)
    assert not thread.is_alive()
    with pytest.raises(OSError):  # the port is closed once the tunnel ends
        socket.create_connection(("127.0.0.1", port), timeout=5).close()



def test_at_most_so_many_connections_are_carried_and_the_rest_closed(transport):
    echo = echo_server()
    port, stop, thread, forward = forwarding(transport, echo.getsockname()[1], most=2)
    held = [socket.create_connection(("127.0.0.1", port), timeout=15) for _ in range(2)]
    try:
        deadline = time.monotonic() + 10
        while forward.carried < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert forward.carried == 2
        assert ask(port, b"third\n") == b""  # over the cap: closed, no thread spent on it
        held[0].sendall(b"first\n")
        assert held[0].recv(1024) == b"FIRST\n"
    finally:
        for conn in held:
            conn.close()
        stop.set()
        echo.close()
    thread.join(10)
