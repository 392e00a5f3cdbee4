"""What another web page, another name or a guesser can do to a dashboard: nothing, each tried for real.

A browser sends Origin and Host headers and cookies as set here; these requests send the same.
"""

import json
import os
import re

import pytest
import requests
from dashproc import free_port

TOKEN = "a-token-of-twenty-chars"


def csrf_of(html):
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


def login(session, board, token=TOKEN):
    form = session.get(board.url("/"), timeout=10)
    return session.post(board.url("/login"), data={"token": token, "csrf": csrf_of(form.text)}, timeout=10)


@pytest.fixture
def guarded(dashboards):
    board = dashboards(free_port("0.0.0.0"), env={"DASHBOARD_HOST": "0.0.0.0", "DASHBOARD_TOKEN": TOKEN})
    board.wait_healthy()
    return board


def polling(board, **headers):
    return requests.get(board.url("/socket.io/?EIO=4&transport=polling"), headers=headers, timeout=10)


def test_another_sites_page_cannot_open_socketio(dashboards, port):
    board = dashboards(port)  # loopback, no token: only the same origin may read the log
    board.wait_healthy()
    assert polling(board, Origin="http://evil.example").status_code == 400
    assert polling(board, Origin="http://127.0.0.1:%d" % (port + 1)).status_code == 400  # another port, too
    same = polling(board, Origin="http://127.0.0.1:%d" % port)
    assert same.status_code == 200 and '"sid"' in same.text


def test_only_known_host_names_are_answered(dashboards, port):
    board = dashboards(port, env={"DASHBOARD_ALLOWED_HOSTS": "pi.lan"})
    board.wait_healthy()

    def status(host):
        return requests.get(board.url("/healthz"), headers={"Host": host}, timeout=10).status_code

    assert status("rebind.evil.example") == 400  # DNS rebinding: a hostile name resolving to 127.0.0.1
    assert status("rebind.evil.example:%d" % port) == 400
    assert status("localhost:40123") == 200  # an SSH tunnel's local port, whatever it is
    assert status("127.0.0.1:%d" % port) == 200
    assert status("127.0.0.7:40123") == 200  # the fleet page's tunnels: a loopback address per host
    assert status("10.0.0.7:%d" % port) == 400  # a literal address, but not this dashboard's
    assert status("pi.lan:8080") == 200
    assert polling(board, Host="rebind.evil.example").status_code == 400  # Socket.IO too


def test_state_changing_requests_need_the_csrf_token(guarded):
    session = requests.Session()
    form = session.get(guarded.url("/"), timeout=10)
    refused = session.post(guarded.url("/login"), data={"token": TOKEN}, timeout=10)  # no csrf field
    assert refused.status_code == 403 and "#host-card" not in refused.text
    right = session.post(guarded.url("/login"), data={"token": TOKEN, "csrf": csrf_of(form.text)}, timeout=10)
    assert right.status_code == 200 and 'id="host-card"' in right.text
    page_csrf = re.search(r'name="csrf-token" content="([^"]+)"', right.text).group(1)
    # a page elsewhere posts with the operator's cookie, but cannot know the token
    forged = session.post(guarded.url("/api/restart/dashboard"), timeout=10)
    assert forged.status_code == 403 and "CSRF" in forged.json()["error"]
    # a form of a page that learnt the token (a signed cookie is readable) is no way in: the API
    # takes it in its header only, which no other origin can send
    posted = session.post(guarded.url("/api/restart/dashboard"), data={"csrf": page_csrf}, timeout=10)
    assert posted.status_code == 403 and "CSRF" in posted.json()["error"]
    ours = session.post(guarded.url("/api/restart/dashboard"), headers={"X-CSRF-Token": page_csrf}, timeout=30)
    assert ours.status_code == 409 and ours.json()["error"] == "the supervisor is not running"  # past the check
    bearer = requests.post(guarded.url("/api/restart/dashboard"), headers={"Authorization": "Bearer " + TOKEN},
                           timeout=30)
    assert bearer.status_code == 409  # a Bearer header is a custom header: no other page can send it


def test_cookies_are_per_instance_strict_and_http_only(dashboards, tmp_path):
    boards = [dashboards(free_port("0.0.0.0"), env={"DASHBOARD_HOST": "0.0.0.0", "DASHBOARD_TOKEN": TOKEN + str(n),
                                                     "DASHBOARD_APP_DIR": str(tmp_path / ("app%d" % n))})
              for n in (1, 2)]
    for board in boards:
        board.wait_healthy()
    session = requests.Session()  # one browser: cookies do not tell ports apart
    for n, board in enumerate(boards, 1):
        answer = login(session, board, TOKEN + str(n))
        assert answer.status_code == 200
        cookie = answer.history[0].headers["Set-Cookie"]
        assert re.match(r"sulfur_dashboard_%d_[0-9a-f]{8}=" % board.port, cookie)
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    for board in boards:  # signing in to the second did not sign the first out
        assert session.get(board.url("/api/status"), timeout=10).status_code == 200


def test_the_session_secret_is_random_private_and_logout_revokes_cookies(guarded):
    path = guarded.app_dir / "run" / "dashboard-session.json"
    doc = json.loads(path.read_text())
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert TOKEN not in path.read_text() and len(bytes.fromhex(doc["secret"])) == 32
    session = requests.Session()
    assert login(session, guarded).status_code == 200
    captured = dict(session.cookies)  # what an attacker copied from this browser
    page = session.get(guarded.url("/"), timeout=10).text
    session.post(guarded.url("/logout"), data={"csrf": csrf_of(page)}, timeout=10)
    thief = requests.Session()
    thief.cookies.update(captured)
    assert thief.get(guarded.url("/api/status"), timeout=10).status_code == 401


def test_a_new_token_signs_everyone_out(dashboards, tmp_path):
    env = {"DASHBOARD_HOST": "0.0.0.0", "DASHBOARD_TOKEN": TOKEN}
    port = free_port("0.0.0.0")
    board = dashboards(port, env=env)
    board.wait_healthy()
    session = requests.Session()
    assert login(session, board).status_code == 200
    board.stop()
    board = dashboards(port, env=dict(env, DASHBOARD_TOKEN=TOKEN + "-rotated"))
    board.wait_healthy()
    assert session.get(board.url("/api/status"), timeout=10).status_code == 401


def test_logins_are_rate_limited_per_client(guarded):
    session = requests.Session()
    for _ in range(9):  # the tenth of the minute is kept for a browser that has signed in before
        assert login(session, guarded, "wrong-guess").status_code == 401
    limited = login(session, guarded, "wrong-guess")
    assert limited.status_code == 429 and 1 <= int(limited.headers["Retry-After"]) <= 60
    assert login(session, guarded).status_code == 429  # even the right token waits: no oracle


def test_a_short_token_is_refused_off_loopback(dashboards):
    board = dashboards(free_port("0.0.0.0"), env={"DASHBOARD_HOST": "0.0.0.0", "DASHBOARD_TOKEN": "x"})
    assert board.wait_exit() == 2
    out = board.output.strip()
    assert len(out.splitlines()) == 1 and "DASHBOARD_TOKEN of 1 characters: use at least 16" in out


def test_signing_out_cuts_the_log_readers_that_connected_before(guarded):
    import socketio

    session = requests.Session()
    assert login(session, guarded).status_code == 200
    cookie = "; ".join("%s=%s" % kv for kv in session.cookies.items())
    client = socketio.Client(reconnection=False)
    got = []
    client.on("log_init", lambda msg: got.append(msg))
    client.connect(guarded.url(""), transports=["websocket"], headers={"Cookie": cookie}, wait_timeout=10)
    try:
        client.sleep(0.5)
        assert client.connected and got
        page = session.get(guarded.url("/"), timeout=10).text
        session.post(guarded.url("/logout"), data={"csrf": csrf_of(page)}, timeout=10)
        for _ in range(100):
            if not client.connected:
                break
            client.sleep(0.1)
        assert not client.connected, "a revoked session kept reading the log"
    finally:
        client.disconnect()


def test_bearer_guesses_count_against_the_same_limit(guarded):
    for n in range(10):
        wrong = {"Authorization": "Bearer guess-%d" % n}
        assert requests.get(guarded.url("/api/status"), headers=wrong, timeout=10).status_code == 401
    right = {"Authorization": "Bearer " + TOKEN}
    assert requests.get(guarded.url("/api/status"), headers=right, timeout=10).status_code == 401  # locked out
    assert login(requests.Session(), guarded).status_code == 429


def test_a_cookie_for_the_old_token_is_refused_by_the_dashboard_of_the_new_one(dashboards, tmp_path):
    """A handover to a new token: for a moment both dashboards run, sharing the cookie secret."""
    old = dashboards(free_port("0.0.0.0"), env={"DASHBOARD_HOST": "0.0.0.0", "DASHBOARD_TOKEN": TOKEN})
    old.wait_healthy()
    new = dashboards(free_port("0.0.0.0"), env={"DASHBOARD_HOST": "0.0.0.0", "DASHBOARD_TOKEN": TOKEN + "-new"})
    new.wait_healthy()
    session = requests.Session()
    assert login(session, old).status_code == 200  # the old one still takes the old token...
    (name, value), = session.cookies.items()
    assert name.startswith("sulfur_dashboard_%d_" % old.port)  # one app_dir: the same secret, the same tag
    thief = requests.Session()
    thief.cookies.set(name.replace("_%d_" % old.port, "_%d_" % new.port), value)
    assert thief.get(new.url("/api/status"), timeout=10).status_code == 401  # ...the new one never


def test_without_a_token_the_page_says_so_before_asking_for_its_csrf_token(dashboards):
    board = dashboards()
    board.wait_healthy()
    for headers in ({}, {"X-CSRF-Token": "anything"}):
        answer = requests.post(board.url("/api/restart/dashboard"), headers=headers, timeout=10)
        assert answer.status_code == 403 and "DASHBOARD_TOKEN" in answer.json()["error"]


def test_pages_may_not_be_framed_by_another_site(guarded):
    headers = requests.get(guarded.url("/"), timeout=10).headers
    assert headers["X-Frame-Options"] == "DENY" and "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff"


def test_the_login_limit_counts_an_ipv4_client_of_a_dual_stack_bind_as_itself():
    from dashboard.security import client_key

    assert client_key("::ffff:192.0.2.7") == "192.0.2.7" != client_key("::ffff:192.0.2.8")
    assert client_key("::1") != client_key("::ffff:127.0.0.1")
    assert client_key("2001:db8::1") == client_key("2001:db8::2") == "2001:db8::/64"  # one host, one /64


BROWSER_UA = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120.0 Safari/537.36"}


def test_another_ports_page_changes_nothing_even_knowing_the_csrf_token(guarded):
    """Another port of this machine is the same site to a browser, which sends it our cookies: its
    page's POST is refused by its Origin (or a browser's missing one), login and logout included."""
    session = requests.Session()
    assert login(session, guarded).status_code == 200
    csrf = csrf_of(session.get(guarded.url("/"), timeout=10).text)  # the worst case: that page knows it
    own = "http://127.0.0.1:%d" % guarded.port
    for foreign in ({"Origin": "http://127.0.0.1:%d" % (guarded.port + 1)}, {"Origin": "null"},
                    {"Origin": "http://localhost:%d" % guarded.port}, BROWSER_UA,
                    {"Sec-Fetch-Site": "same-site"}, {"Origin": own, "Sec-Fetch-Site": "cross-site"}):
        out = session.post(guarded.url("/logout"), data={"csrf": csrf}, headers=foreign, timeout=10)
        assert out.status_code == 403 and out.json()["error"].startswith("refused: "), foreign
        restart = session.post(guarded.url("/api/restart/dashboard"), headers=dict(foreign, **{"X-CSRF-Token": csrf}),
                               timeout=10)
        assert restart.status_code == 403, foreign  # not 409: it never reached the supervisor's inbox
        fresh = requests.Session()
        form = fresh.get(guarded.url("/"), timeout=10).text
        signed = fresh.post(guarded.url("/login"), data={"token": TOKEN, "csrf": csrf_of(form)}, headers=foreign,
                            timeout=10)
        assert signed.status_code == 403 and fresh.get(guarded.url("/api/status"), timeout=10).status_code == 401
    assert session.get(guarded.url("/api/status"), timeout=10).status_code == 200  # still signed in
    ours = dict(BROWSER_UA, Origin=own, **{"Sec-Fetch-Site": "same-origin"})
    session.post(guarded.url("/logout"), data={"csrf": csrf}, headers=ours, timeout=10)
    assert session.get(guarded.url("/api/status"), timeout=10).status_code == 401  # our own page's POST works


def cookie_payload(value):
    """What anyone who gets a signed Flask cookie reads in it, without its key."""
    import base64
    import zlib

    data = value.split(".")[1] if value.startswith(".") else value.split(".")[0]
    raw = base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))
    return (zlib.decompress(raw) if value.startswith(".") else raw).decode()


def test_the_cookie_holds_no_csrf_token(guarded):
    """A signed cookie is readable by anyone it is sent to (every port of this address): the CSRF token,
    an HMAC of the session's id with the server's secret, is not in it."""
    session = requests.Session()
    form = session.get(guarded.url("/"), timeout=10).text
    (before,) = session.cookies.values()
    assert csrf_of(form) not in cookie_payload(before)
    assert login(session, guarded).status_code == 200
    (after,) = session.cookies.values()
    page = session.get(guarded.url("/"), timeout=10).text
    meta = re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)
    assert meta == csrf_of(page) != csrf_of(form)  # a new session at sign-in, a new token
    assert meta not in cookie_payload(after) and '"sid"' in cookie_payload(after)


def test_a_flood_of_wrong_tokens_from_the_owners_address_never_locks_the_owner_out(tmp_path):
    """Behind an SSH tunnel everyone is 127.0.0.1. Five minutes of guesses from that address, fresh
    sessions and kept ones, a few pages opened first to hoard tries: no minute lets more than 10
    wrong tokens be compared, and the owner's browsers (signed in, signed out by a sign-out elsewhere,
    or on the sign-in page since before the flood) each get in at their first try. Real requests
    through the app (werkzeug's client), on the limiter's injected clock."""
    from dashproc import Clock

    from dashboard.app import Dashboard
    from dashboard.security import LoginLimiter
    from dashboard.settings import Settings

    board = Dashboard(Settings(token=TOKEN, app_dir=tmp_path / "app"), {"port": 5000})
    clock = board.limiter.clock = Clock()
    assert isinstance(board.limiter, LoginLimiter)

    def attempt(client, token):
        return client.post("/login", data={"token": token, "csrf": csrf_of(client.get("/").text)}).status_code

    owner, revoked, waiting = (board.app.test_client() for _ in range(3))
    assert attempt(owner, TOKEN) == 302 and attempt(revoked, TOKEN) == 302
    csrf_of(waiting.get("/").text)  # on the sign-in page, typing
    hoard = [board.app.test_client() for _ in range(8)]
    for client in hoard:  # opened before the flood, used in the middle of it
        client.get("/")
    compared, kept, began = [], [], clock()
    while clock() < began + 300:
        fresh = board.app.test_client()
        for client in [fresh] + kept[-2:] + (hoard if clock() == began + 90 else []):
            code = attempt(client, "guess-%d" % len(compared))
            assert code in (401, 429)
            if code == 401:
                compared.append(clock())
        kept.append(fresh)
        if clock() == began + 150:
            board.keys.revoke()  # "sign out everywhere" from elsewhere: `revoked` must sign in again
            assert revoked.get("/api/status").status_code == 401
            for client in (owner, revoked, waiting):
                assert attempt(client, TOKEN) == 302  # the first try, in the middle of the flood
                assert client.get("/api/status").status_code == 200
        clock.advance(1.0)
    worst = max(sum(1 for t in compared if start <= t < start + 60) for start in compared)
    print("flood: %d compared in 300 s, %d in the worst minute" % (len(compared), worst))
    assert 10 <= len(compared) and worst <= 10, (worst, len(compared))


def test_no_minute_holds_more_than_ten_wrong_tokens_however_tries_are_hoarded():
    """The limiter's bound at its worst: sessions opened ahead to hoard reserved tries, then the budget
    spent, then the hoard, then sessions that have signed in before: 10 in the minute, never 11; the
    next minute, 9 again for anyone else."""
    from dashproc import Clock

    from dashboard.security import LoginLimiter

    clock = Clock()
    limiter = LoginLimiter(clock=clock)
    address = "127.0.0.1"
    hoard = [limiter.issue(address) for _ in range(8)]  # 5 get a reserved try (5 an address at most)
    clock.advance(59)
    wrong = [t for t in (limiter.attempt(address) for _ in range(20)) if t is not None]
    assert len(wrong) == 4  # the budget left beside the 5 reserved and the unit kept for returning browsers
    wrong += [t for t in (limiter.attempt(address, sid) for sid in hoard) if t is not None]
    assert len(wrong) == 9 and limiter.retry_after(address) == 60
    returning = [limiter.attempt(address, "signed-in-%d" % n, returning=True) for n in range(3)]
    assert sum(t is not None for t in returning) == 1  # the last unit, once
    assert limiter.retry_after(address, "signed-in-9", returning=True) == 60
    clock.advance(60)
    assert sum(limiter.attempt(address) is not None for _ in range(20)) == 9
    assert limiter.attempt(address, "signed-in-0", returning=True) is None  # it failed: a guesser now


def test_with_no_unit_free_a_browser_that_signed_in_takes_the_oldest_reservation():
    """The last unit already spent (another browser that had signed in typed a wrong token): the next
    one takes the reserved try held the longest, whose session then waits like any other; the minute
    still holds 10 tokens compared at most."""
    from dashproc import Clock

    from dashboard.security import LoginLimiter

    clock = Clock()
    limiter = LoginLimiter(clock=clock)
    address = "127.0.0.1"
    hoard = []
    for _ in range(5):
        hoard.append(limiter.issue(address))
        clock.advance(1)
    assert sum(limiter.attempt(address) is not None for _ in range(10)) == 4
    assert limiter.attempt(address, "typed-wrong", returning=True) is not None  # the last unit: 10 used
    assert limiter.retry_after(address, "owner", returning=True) is None  # a reservation can be dropped
    stamp = limiter.attempt(address, "owner", returning=True)
    assert stamp is not None and limiter.succeeded(address, stamp, session=True)
    assert limiter.attempt(address, hoard[0]) is None  # its reservation was the one dropped
    assert limiter.attempt(address, hoard[1]) is not None  # the others still hold theirs
    assert limiter.attempt(address, "typed-wrong", returning=True) is None  # it failed here: no longer first


def counted(board):
    """Every try the board's limiter lets through (a token compared), at its clock's time."""
    from dashproc import Clock

    clock = board.limiter.clock = Clock()
    compared = []
    real = board.limiter.attempt

    def attempt(*args, **kwargs):
        stamp = real(*args, **kwargs)
        if stamp is not None:
            compared.append(stamp)
        return stamp

    board.limiter.attempt = attempt
    return clock, compared


def worst_minute(compared):
    return max((sum(1 for t in compared if start <= t < start + 60) for start in compared), default=0)


def try_token(client, token):
    return client.post("/login", data={"token": token, "csrf": csrf_of(client.get("/").text)}).status_code


def bearer_guess(board, n):
    return board.app.test_client().get("/api/status", headers={"Authorization": "Bearer guess-%d" % n}).status_code


def test_tries_hoarded_by_pages_opened_long_ago_expire(tmp_path):
    """Five sign-in pages opened and kept, and 5 wrong Bearer tokens a minute: for 10 minutes the hoard
    holds its 5 reserved tries and a browser opened meanwhile finds no room; then the hoard expires,
    and a browser opened then gets in at its first try. Real requests through the app."""
    from dashboard.app import Dashboard
    from dashboard.settings import Settings

    board = Dashboard(Settings(token=TOKEN, app_dir=tmp_path / "app"), {"port": 5000})
    clock, compared = counted(board)
    hoard = [board.app.test_client() for _ in range(5)]
    for client in hoard:
        client.get("/")
    began = clock()
    while clock() < began + 900:
        if (clock() - began) % 12 == 0:
            assert bearer_guess(board, len(compared)) == 401
        if clock() == began + 300:
            assert try_token(board.app.test_client(), TOKEN) == 429  # the hoard holds its tries
        if clock() == began + 660:
            late = board.app.test_client()
            assert try_token(late, TOKEN) == 302  # it expired after 10 minutes unused
            assert late.get("/api/status").status_code == 200
        clock.advance(1.0)
    assert worst_minute(compared) <= 10


def test_a_hoard_kept_full_and_bearer_guesses_never_keep_out_a_browser_that_signed_in(tmp_path):
    """The hoard refilled whenever a try expires (a page opened every second), 5 wrong Bearer tokens a
    minute, for 30 minutes; the owner signed in when the address held 5 tries already, so its session
    holds none. Signed out everywhere at minute 25, it gets in at its first try; no minute holds more
    than 10 tokens compared, its own included."""
    from dashboard.app import Dashboard
    from dashboard.settings import Settings

    board = Dashboard(Settings(token=TOKEN, app_dir=tmp_path / "app"), {"port": 5000})
    clock, compared = counted(board)
    hoard = [board.app.test_client() for _ in range(5)]
    for client in hoard:
        client.get("/")
    owner = board.app.test_client()
    assert try_token(owner, TOKEN) == 302
    began = clock()
    while clock() < began + 1800:
        if (clock() - began) % 12 == 0:
            assert bearer_guess(board, len(compared)) == 401
        kept = board.app.test_client()
        kept.get("/")
        hoard.append(kept)
        if clock() == began + 1500:
            board.keys.revoke()  # "sign out everywhere", from another browser
            assert owner.get("/api/status").status_code == 401
            assert try_token(owner, TOKEN) == 302
            assert owner.get("/api/status").status_code == 200
        clock.advance(1.0)
    assert worst_minute(compared) <= 10, worst_minute(compared)


def moved(client, board, name):
    """A browser's cookie for ``name``, in a client of ``board``: the same browser, after a restart."""
    cookie = client.get_cookie(name)
    fresh = board.app.test_client()
    if cookie is not None:
        fresh.set_cookie(name, cookie.value)
    return fresh


def test_after_a_restart_the_owners_browsers_get_in_at_their_first_try_during_a_flood(tmp_path):
    """A deploy with a new token: a new dashboard (a new limiter) on the same app_dir, so the same
    cookie secret. The owner's browser that had signed in (its cookie now refused: the token changed),
    and one that was on the sign-in page before the deploy and reloads it after, each get in at their
    first try in the middle of a flood of wrong tokens from their address: fresh sessions, kept ones,
    Bearer headers, and pages opened to hoard tries."""
    from dashboard.app import Dashboard
    from dashboard.settings import Settings

    before = Dashboard(Settings(token=TOKEN, app_dir=tmp_path / "app"), {"port": 5000})
    owner, waiting = before.app.test_client(), before.app.test_client()
    assert try_token(owner, TOKEN) == 302
    csrf_of(waiting.get("/").text)  # on the sign-in page, typing
    name = before.keys.cookie_name(5000)
    token = TOKEN + "-new"
    board = Dashboard(Settings(token=token, app_dir=tmp_path / "app"), {"port": 5000})
    assert board.keys.cookie_name(5000) == name
    clock, compared = counted(board)
    owner, waiting = moved(owner, board, name), moved(waiting, board, name)
    assert owner.get("/api/status").status_code == 401  # signed out by the new token
    waiting.get("/")  # the page reloaded (its Socket.IO lost the old dashboard)
    kept, began = [], clock()
    while clock() < began + 300:
        fresh = board.app.test_client()
        for client in [fresh] + kept[-2:]:
            assert try_token(client, "guess-%d" % len(compared)) in (401, 429)
        kept.append(fresh)
        if (clock() - began) % 12 == 0:
            assert bearer_guess(board, len(compared)) == 401
        if clock() == began + 150:
            for who, client in (("signed in before", owner), ("on the sign-in page", waiting)):
                assert try_token(client, token) == 302, who
                assert client.get("/api/status").status_code == 200, who
        clock.advance(1.0)
    assert worst_minute(compared) <= 10 and len(compared) >= 20, (worst_minute(compared), len(compared))
