"""A real etcd cluster for the tests: 3 members (Debian's etcd-server), client TLS from a CA made
here with openssl, auth on with a `sulfur` user allowed only the /sulfur/ prefix.

Its ports are free ones picked at start, on 127.0.0.1 by default, so it never collides with an etcd
the package may have started on 2379; nothing here depends on that one. Members can be killed and
started again (a member's restart loses the auth tokens it issued, which clients must survive).
"""

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterator, List, Optional

import pytest
from dashproc import free_port

USER, PASSWORD = "sulfur", "the-etcd-password-for-tests"
ROOT_PASSWORD = "root-password-for-tests"


def available() -> Optional[str]:
    """None when a cluster can run here, else why not (a test skips with it)."""
    for tool in ("etcd", "etcdctl", "openssl"):
        if not shutil.which(tool):
            return "needs %s (make test installs etcd-server and etcd-client)" % tool
    return None


class Cluster:
    def __init__(self, size: int = 3, address: str = "127.0.0.1", token_ttl: int = 300) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="sulfur-etcd-"))
        self.address, self.size, self.token_ttl = address, size, token_ttl
        self.client_ports = [free_port() for _ in range(size)]
        self.peer_ports = [free_port() for _ in range(size)]
        self.procs: List[Optional[subprocess.Popen]] = [None] * size
        self.auth = False
        self.ca = self.dir / "ca.pem"
        self._certificates()

    @property
    def endpoints(self) -> List[str]:
        return ["https://%s:%d" % (self.address, port) for port in self.client_ports]

    def _certificates(self) -> None:
        d = self.dir
        run = lambda *argv: subprocess.run(argv, check=True, capture_output=True)  # noqa: E731
        run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=sulfur-test-ca",
            "-keyout", str(d / "ca-key.pem"), "-out", str(self.ca))
        run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=etcd", "-keyout", str(d / "key.pem"),
            "-out", str(d / "server.csr"))
        (d / "san.ext").write_text("subjectAltName=IP:%s,IP:127.0.0.1,DNS:localhost\n" % self.address)
        run("openssl", "x509", "-req", "-in", str(d / "server.csr"), "-CA", str(self.ca), "-CAkey",
            str(d / "ca-key.pem"), "-CAcreateserial", "-days", "2", "-extfile", str(d / "san.ext"),
            "-out", str(d / "cert.pem"))
        for name in ("ca.pem", "cert.pem", "key.pem"):
            (d / name).chmod(0o644)  # the lab hosts' users read the CA; the key stays in this temp dir
        d.chmod(0o755)

    def _argv(self, i: int, state: str) -> List[str]:
        cluster = ",".join("m%d=http://%s:%d" % (n, self.address, self.peer_ports[n]) for n in range(self.size))
        return ["etcd", "--name", "m%d" % i, "--data-dir", str(self.dir / ("m%d" % i)),
                "--listen-client-urls", "https://%s:%d" % (self.address, self.client_ports[i]),
                "--advertise-client-urls", "https://%s:%d" % (self.address, self.client_ports[i]),
                "--listen-peer-urls", "http://%s:%d" % (self.address, self.peer_ports[i]),
                "--initial-advertise-peer-urls", "http://%s:%d" % (self.address, self.peer_ports[i]),
                "--initial-cluster", cluster, "--initial-cluster-state", state,
                "--initial-cluster-token", "sulfur-tests-%d" % os.getpid(),
                "--cert-file", str(self.dir / "cert.pem"), "--key-file", str(self.dir / "key.pem"),
                "--auth-token", "simple", "--auth-token-ttl", str(self.token_ttl),
                "--heartbeat-interval", "100", "--election-timeout", "1000", "--log-level", "error"]

    def start(self, i: Optional[int] = None, state: str = "new") -> None:
        for n in range(self.size) if i is None else [i]:
            log = open(self.dir / ("m%d.log" % n), "ab")
            self.procs[n] = subprocess.Popen(self._argv(n, state), stdin=subprocess.DEVNULL, stdout=log,
                                             stderr=subprocess.STDOUT)
        self.wait_healthy()

    def ctl(self, *args: str, user: Optional[str] = "root", password: str = ROOT_PASSWORD,
            check: bool = True) -> subprocess.CompletedProcess:
        argv = ["etcdctl", "--endpoints", ",".join(self.endpoints), "--cacert", str(self.ca),
                "--dial-timeout", "3s", "--command-timeout", "5s"]
        if user:
            argv += ["--user", "%s:%s" % (user, password)]
        return subprocess.run(argv + list(args), capture_output=True, text=True, check=check,
                              env=dict(os.environ, ETCDCTL_API="3"))

    def wait_healthy(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            alive = [n for n, p in enumerate(self.procs) if p is not None and p.poll() is None]
            user = ["--user", "root:%s" % ROOT_PASSWORD] if self.auth else []  # health reads a key
            out = subprocess.run(["etcdctl", "--endpoints", ",".join(self.endpoints[n] for n in alive),
                                  "--cacert", str(self.ca)] + user + ["endpoint", "health"], capture_output=True,
                                 text=True, env=dict(os.environ, ETCDCTL_API="3"))
            if alive and out.returncode == 0:
                return
            time.sleep(0.2)
        raise RuntimeError("etcd not healthy within %.0f s: %s" % (timeout, self.logs()))

    def logs(self) -> str:
        return "\n".join((self.dir / ("m%d.log" % n)).read_text()[-2000:] for n in range(self.size)
                         if (self.dir / ("m%d.log" % n)).exists())

    def enable_auth(self) -> None:
        self.ctl("user", "add", "root:%s" % ROOT_PASSWORD, user=None)
        self.ctl("user", "add", "%s:%s" % (USER, PASSWORD), user=None)
        self.ctl("role", "add", "sulfur", user=None)
        self.ctl("role", "grant-permission", "sulfur", "--prefix=true", "readwrite", "/sulfur/", user=None)
        self.ctl("user", "grant-role", USER, "sulfur", user=None)
        self.ctl("auth", "enable", user=None)
        self.auth = True

    def kill(self, i: int) -> None:
        proc = self.procs[i]
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        self.procs[i] = None

    def restart(self, i: int) -> None:
        self.kill(i)
        self.start(i, state="existing")

    def close(self) -> None:
        for n in range(self.size):
            self.kill(n)
        shutil.rmtree(self.dir, ignore_errors=True)


class Proxy:
    """A TCP forwarder between one host and one etcd member, whose link can be cut: while cut, bytes
    are swallowed both ways and nothing answers (a link down, not a refused connection: the client
    finds out by its timeouts, as it would on a real network)."""

    def __init__(self, target_port: int, address: str = "127.0.0.1") -> None:
        self.target = (address, target_port)
        self.server = socket.create_server((address, 0))
        self.port = self.server.getsockname()[1]
        self.endpoint = "https://%s:%d" % (address, self.port)
        self.cut = threading.Event()
        self.closed = False
        self.connections = self.bytes = 0  # counted, for the bench: a request of urllib is a connection
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            self.connections += 1
            try:
                upstream = socket.create_connection(self.target, timeout=2)
            except OSError:
                client.close()
                continue
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        source.settimeout(0.2)
        try:
            while not self.closed:
                try:
                    data = source.recv(65536)
                except socket.timeout:
                    continue
                if not data:
                    break
                if not self.cut.is_set():
                    sink.sendall(data)
                    self.bytes += len(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

    def close(self) -> None:
        self.closed = True
        self.server.close()


@contextlib.contextmanager
def running(token_ttl: int = 300) -> Iterator[Cluster]:
    """A cluster started with auth on, for a module's tests; gone afterwards."""
    cluster = Cluster(token_ttl=token_ttl)
    try:
        cluster.start()
        cluster.enable_auth()
        yield cluster
    finally:
        cluster.close()


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """A module's cluster (import it into a test module to use it); skipped where etcd cannot run."""
    if available():
        pytest.skip(available())
    with running() as made:
        yield made
