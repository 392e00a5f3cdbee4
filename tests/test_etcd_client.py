"""The host side's etcd client (remote/host/common/etcd.py) against a real 3-member etcd cluster with
TLS and auth (tests/etcdlab.py): what the bot's lease needs of it, and the etcd facts it must survive
(an auth token that expires or is lost with a member's restart, a member killed, a wrong password)."""

import threading
import time

import etcdlab
import pytest

from remote.host.common import etcd

pytestmark = pytest.mark.skipif(etcdlab.available() is not None, reason=str(etcdlab.available()))


@pytest.fixture(scope="module")
def cluster():
    with etcdlab.running(token_ttl=3) as cluster:  # tokens expire after 3 s idle: the client must log in again
        yield cluster


def client(cluster, password=etcdlab.PASSWORD, **kwargs):
    return etcd.Etcd(cluster.endpoints, etcdlab.USER, password, ca=str(cluster.ca), **kwargs)


def test_it_reads_and_writes_its_prefix_only_over_tls(cluster):
    c = client(cluster)
    c.put("/sulfur/test/a", "one")
    assert c.get("/sulfur/test/a")[0] == b"one" and c.get("/sulfur/test/none") is None
    with pytest.raises(etcd.EtcdError) as denied:
        c.put("/elsewhere", "x")
    assert "permission denied" in str(denied.value)
    out = cluster.ctl("get", "/sulfur/test/a", "--print-value-only")
    assert out.stdout.strip() == "one"  # etcdctl sees what the client wrote


def test_a_wrong_password_is_one_clear_error_and_never_retried(cluster):
    with pytest.raises(etcd.AuthFailed) as refused:
        client(cluster, password="wrong").get("/sulfur/x")
    assert "wrong name or password" in str(refused.value) and "ETCD_PASSWORD" in str(refused.value)


def test_of_racers_creating_one_key_exactly_one_wins(cluster):
    for round_ in range(5):
        key, wins = "/sulfur/race/%d" % round_, []
        start = threading.Barrier(8)

        def racer(n, key=key, start=start, wins=wins):
            c = client(cluster)
            c.login()
            start.wait()
            if c.create(key, "racer-%d" % n):
                wins.append(n)

        threads = [threading.Thread(target=racer, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert len(wins) == 1, wins
        assert client(cluster).get(key)[0] == b"racer-%d" % wins[0]


def test_a_lease_keeps_its_key_while_renewed_and_a_watch_sees_it_go(cluster):
    c = client(cluster)
    lease = c.grant(5)
    assert c.create("/sulfur/holder", "pi", lease)
    assert not c.create("/sulfur/holder", "phone", c.grant(5))  # held: another cannot take it
    for _ in range(3):  # 6 s of renewals: longer than its TTL
        time.sleep(2)
        assert c.keepalive(lease) > 0
    assert c.get("/sulfur/holder")[0] == b"pi"
    seen = []
    watcher = threading.Thread(target=lambda: seen.extend(client(cluster).watch("/sulfur/holder", timeout=15)))
    watcher.start()
    time.sleep(0.5)
    c.revoke(lease)  # as a holder that stops renewing: etcd removes the key
    watcher.join(20)
    assert [e["type"] for e in seen][:1] == ["DELETE"]
    assert c.get("/sulfur/holder") is None and c.keepalive(lease) == 0
    expiring = c.grant(5)
    c.put("/sulfur/short", "x", expiring)
    deadline = time.monotonic() + 15
    while c.get("/sulfur/short") is not None:  # not renewed: gone within its TTL (etcd's bound plus a little)
        assert time.monotonic() < deadline, "a lease not renewed kept its key"
        time.sleep(0.2)


def test_an_expired_token_and_a_killed_member_are_survived(cluster):
    c = client(cluster)
    c.put("/sulfur/t", "1")
    time.sleep(4.5)  # the token's TTL is 3 s idle
    c.put("/sulfur/t", "2")  # logs in again by itself
    assert c.get("/sulfur/t")[0] == b"2"
    cluster.kill(c.current)  # the member it talks to
    try:
        c.put("/sulfur/t", "3")  # the next endpoint answers
        assert c.get("/sulfur/t")[0] == b"3"
        health = [etcd.health(c, e) for e in cluster.endpoints]
        assert sum(h["ok"] for h in health) == 2
    finally:
        dead = [n for n, p in enumerate(cluster.procs) if p is None]
        for n in dead:
            cluster.start(n, state="existing")


def test_every_member_down_is_unreachable_within_the_timeout(cluster):
    c = client(cluster, timeout=1.0)
    c.login()
    for n in range(cluster.size):
        cluster.kill(n)
    try:
        started = time.monotonic()
        with pytest.raises(etcd.Unreachable):
            c.get("/sulfur/t")
        assert time.monotonic() - started < 3 * 1.0 + 2  # one timeout per endpoint at most
    finally:
        cluster.start(state="existing")
    assert client(cluster).get("/sulfur/t")[0] == b"3"


def test_an_endpoint_that_drips_or_redirects_is_given_up(tmp_path):
    """A hostile or broken endpoint: one that sends its answer a byte at a time is given up at the
    request's timeout (not per byte), one that redirects is refused (the token would follow it)."""
    import http.server
    import socketserver

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.server.mode == "redirect":
                self.send_response(307)
                self.send_header("Location", "http://127.0.0.1:1/elsewhere")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            for _ in range(100000):
                self.wfile.write(b" ")
                self.wfile.flush()
                time.sleep(0.2)

        def log_message(self, *args):
            pass

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.mode = "drip"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = "http://127.0.0.1:%d" % server.server_address[1]
        started = time.monotonic()
        with pytest.raises(etcd.Unreachable):
            etcd.Etcd([url], timeout=1.0).get("/sulfur/x")
        assert time.monotonic() - started < 4
        server.mode = "redirect"
        with pytest.raises(etcd.EtcdError) as refused:
            etcd.Etcd([url], timeout=1.0).get("/sulfur/x")
        assert "does not redirect" in str(refused.value)
    finally:
        server.shutdown()
        server.server_close()
