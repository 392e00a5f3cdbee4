"""What a hostile or broken host can send the fleet over its watch, without SSH: the lines go into the
real Link and the real fleet server (its Flask app and Socket.IO server, through their test clients),
exactly as they would come off the host's channel. A host spoils at most its own card: never the
page's JSON, never the other hosts' data, never the operator's memory or CPU."""

import json
import re
import socket
import threading
import time

import pytest

from remote import inventory
from remote.fleet import intake, links
from remote.fleet.intake import KEPT, aligned
from remote.fleet.links import Link
from remote.fleet.server import COALESCE, Fleet
from remote.host.common import history


@pytest.fixture
def fleet(tmp_path):
    """A fleet of two hosts whose links are never started: the tests speak for the hosts."""
    path = tmp_path / "inventory.yml"
    path.write_text("defaults: {user: bot}\nhosts:\n  pi: {hostname: 192.0.2.1}\n  vps: {hostname: 192.0.2.2}\n")
    made = Fleet(inventory.load(path), 0)
    made.links = {h.name: Link(h, made._changed) for h in made.hosts}
    return made


def signed_in(made):
    """A browser that opened the sign-in file: /login takes the one-time token (then its page goes on to /)."""
    client = made.app.test_client()
    assert client.get("/login?token=" + made.token).status_code == 200
    return client


def page_csrf(client):
    """The CSRF token as our own page has it (its meta): the cookie does not hold it."""
    return re.search(r'name="csrf-token" content="([^"]+)"', client.get("/").text).group(1)


def strict(doc):
    return json.loads(json.dumps(doc, allow_nan=False))  # raises on NaN or Infinity


def sample_line(t, **values):
    doc = dict({name: 1 for name in history.FIELDS}, kind="sample", t=t, **values)
    return json.dumps(doc).encode()


def test_a_bare_nan_or_infinity_is_not_read_and_the_pages_json_stays_json(fleet):
    pi = fleet.links["pi"]
    pi._line(sample_line(1000))
    for bad in (b'{"kind": "sample", "t": 1010, "load": NaN}', b'{"kind": "sample", "t": 1010, "load": Infinity}',
                b'{"kind": "sample", "t": 1010, "load": 1e999}', b'{"kind": "status", "status": {"x": -Infinity}}',
                b'{"kind": "history", "samples": {"t": [1, 2], "load": [NaN, 1]}}'):
        pi._line(bad)
    doc = strict(pi.snapshot(with_history=True))
    assert doc["history"]["t"] == [1000] and doc["sample"]["load"] == 1
    answer = signed_in(fleet).get("/api/hosts?history=1")
    assert answer.status_code == 200 and "NaN" not in answer.text and "Infinity" not in answer.text


def test_only_the_rings_columns_are_kept_each_as_long_as_its_times(fleet):
    pi = fleet.links["pi"]
    samples = {name: [1, 2, 3] for name in history.FIELDS}
    samples.update(t=[10, 20, 30], load=list(range(100000)), mem_used=[7], junk=list(range(50000)), bot_cpu="x")
    pi._line(json.dumps({"kind": "history", "samples": samples}).encode())
    kept = pi.snapshot(with_history=True)["history"]
    assert sorted(kept) == sorted(history.FIELDS)
    assert {len(values) for values in kept.values()} == {3}
    assert kept["load"] == [99997, 99998, 99999] and kept["mem_used"] == [None, None, 7]
    assert kept["bot_cpu"] == [None, None, None]
    pi._line(sample_line(40, load=True, battery="full", mem_total=2 ** 60))  # not figures: gaps
    kept = pi.snapshot(with_history=True)["history"]
    assert kept["t"] == [10, 20, 30, 40] and [kept[k][-1] for k in ("load", "battery", "mem_total")] == [None] * 3


def test_a_backlog_longer_than_a_day_keeps_the_newest_day(fleet):
    columns = aligned({"t": list(range(KEPT + 500)), "load": list(range(KEPT + 500))})
    assert len(columns["t"]) == KEPT and columns["t"][0] == 500 and columns["load"][-1] == KEPT + 499
    assert aligned({"t": "no"}) == {} and aligned([1, 2]) == {}
    assert aligned({"t": [1, None, 3], "load": [4, 5, 6]})["load"] == [4, 6]  # a row without its time


def test_a_host_that_floods_its_watch_costs_the_page_a_few_events_a_second(fleet):
    """Each line changes the host's card; the page gets them at most every COALESCE seconds, and the
    last change always arrives."""
    client = fleet.socketio.test_client(fleet.app, flask_test_client=signed_in(fleet))
    assert client.is_connected()
    client.get_received()
    pi = fleet.links["pi"]
    began, sent = time.monotonic(), 0
    while time.monotonic() - began < 2.0:
        pi._line(sample_line(1000 + sent))
        sent += 1
    time.sleep(COALESCE * 4)
    events = [e["args"][0] for e in client.get_received() if e["name"] == "host"]
    assert sent > 200  # a flood, not a trickle
    assert 2 <= len(events) <= 2.0 / COALESCE + 3, len(events)
    assert events[-1]["host"]["sample"]["t"] == 1000 + sent - 1  # nothing after the flood was lost
    assert {e["kind"] for e in events} == {"sample"}
    fleet.links["vps"]._line(sample_line(5))  # another host is not held back by the first's flood
    assert [e["args"][0]["host"]["host"] for e in client.get_received()] == ["vps"]
    client.disconnect()


def sending(data, close=True):
    """A connected socket pair whose far end sends ``data`` (in a thread), then closes."""
    ours, theirs = socket.socketpair()

    def send():
        try:
            theirs.sendall(data)
        except OSError:
            pass
        if close:
            theirs.close()

    threading.Thread(target=send, daemon=True).start()
    return ours


def test_a_line_without_an_end_ends_the_link_instead_of_filling_memory():
    ours = sending(b"x" * (links.MAX_LINE + 2 ** 20), close=False)
    try:
        with pytest.raises(ConnectionError, match="a line of over 4 MB"):
            for _ in links._lines(ours, 1.0, lambda: False):
                pass
    finally:
        ours.close()


def test_lines_split_across_chunks_come_whole():
    long = b'{"b":' + b" " * 200000 + b"2}"
    ours = sending(b'{"a": 1}\n' + long + b"\n\npartial")
    try:
        assert list(links._lines(ours, 1.0, lambda: False)) == [b'{"a": 1}', long, b""]  # unended: no line
    finally:
        ours.close()


TOO_BIG, TOO_DEEP, SERVICES = "of over 256 KB", "nested over 16 deep", "whose services are not 16"
HOSTILE = [(json.dumps(status), why) for status, why in (  # what the host sends; why the card refuses it
    ({"bot": "x"}, None), ({"bot": {"running": 1}}, None), ({"bot": {"running": {"bot_id": 5}}}, None),
    ({"bot": {"running": {}}}, None),
    ({"bot": {"running": {"bot_id": "b", "shards": "0,1", "started_at": "a"}}, "now": 1}, None),
    ({"bot": {"running": {"bot_id": "b", "shards": [[1]]}}}, None),
    ({"bot": {"running": {"bot_id": "b", "started_at": 10 ** 400}}, "now": 1.5}, None),  # OverflowError
    ({"services": "x"}, SERVICES), ({"services": {"bot": 1}}, SERVICES),
    ({"services": {str(n): {} for n in range(17)}}, SERVICES),
    ({"services": {str(n): {} for n in range(60000)}}, TOO_BIG), ({"blob": "x" * (intake.STATUS_BYTES + 1)}, TOO_BIG),
    ([1], "that is not a JSON object"))]
HOSTILE += [('{"deep": %s1%s}' % ('{"a":' * 200, "}" * 200), TOO_DEEP),
            ('{"deep": %s}' % ("[" * 5000 + "]" * 5000), "unread")]  # beyond the parser: the line is dropped


@pytest.mark.parametrize("status,why", HOSTILE, ids=range(len(HOSTILE)))
def test_a_hostile_status_spoils_its_own_card_only(fleet, status, why):
    """The banner reads every host's status: one it chokes on must not stop the others' events, nor
    /api/hosts; one too big or too deep for a page is not kept, and the card says why."""
    web = signed_in(fleet)
    client = fleet.socketio.test_client(fleet.app, flask_test_client=web)
    pi, vps = fleet.links["pi"], fleet.links["vps"]
    pi._line(('{"kind": "status", "status": %s}' % status).encode())
    vps._line(json.dumps({"kind": "status", "status": {"services": {"bot": {"state": "running"}}}}).encode())
    time.sleep(COALESCE * 2)
    events = [e["args"][0] for e in client.get_received() if e["name"] == "host"]
    assert any(e["host"]["host"] == "vps" and e["host"]["status"] for e in events)  # the other host's event
    answer = web.get("/api/hosts")
    assert answer.status_code == 200 and answer.get_json()["conflicts"] == []
    kept = answer.get_json()["hosts"][0]
    if why is None:  # a mapping of a fine size: kept, and the banner reads past its bot
        assert kept["status"] == json.loads(status) and kept["status_error"] is None
    elif why == "unread":
        assert kept["status"] is None and kept["status_error"] is None and kept["error"] == "connecting"
    else:
        assert kept["status"] is None and kept["status_error"].startswith("the host sent a status")
        assert why in kept["status_error"]
        pi._line(sample_line(1000))  # the reason stays on the card past the next sample
        assert web.get("/api/hosts").get_json()["hosts"][0]["status_error"] == kept["status_error"]
    client.disconnect()


def test_the_banner_still_sees_a_bot_on_two_hosts(fleet):
    unit = {"bot_id": "b0t", "shard_count": 1, "shards": [0], "pid": 1, "started_at": 1}
    for name in ("pi", "vps"):
        fleet.links[name]._line(json.dumps({"kind": "status", "status": {"now": 5, "bot": {"running": unit}}}).encode())
    assert signed_in(fleet).get("/api/hosts").get_json()["conflicts"] == ["bot b0t runs on pi and on vps"]


def test_every_task_reads_past_a_malformed_bot_in_another_hosts_answer():
    """botguard.running_units is what the CLI's exactly-once check and the banner both read."""
    from remote.botguard import running_units

    for status in HOSTILE[:6]:
        assert running_units(json.loads(status[0])) == []  # the bot's shape is wrong: none
    unit = {"bot_id": "b0t", "shard_count": 2, "shards": [1], "pid": 7, "started_at": 10 ** 400}
    assert running_units({"now": 1.5, "bot": {"running": unit}}) == [dict(unit, uptime=None)]  # no OverflowError
    assert running_units({"now": 50, "bot": {"running": dict(unit, started_at=20)}})[0]["uptime"] == 30


def test_a_flooded_log_comes_in_few_batches_of_short_lines():
    ours = sending(b"\n" * 300000 + b"y" * 10000 + b"\nlast\nunended")
    try:
        batches = list(links.log_batches(ours, lambda: False))
    finally:
        ours.close()
    assert len(batches) <= 10 and all(len(b) <= links.LOG_BATCH for b in batches)
    assert batches[-1][-3:] == ["y" * links.LOG_WIDTH, "last", "unended"]  # the newest kept, cut to width


def test_a_log_that_trickles_fast_comes_a_batch_per_tenth_of_a_second():
    ours, theirs = socket.socketpair()

    def trickle():  # 200 lines over about a second, each its own write
        for n in range(200):
            theirs.sendall(b"line %d\n" % n)
            time.sleep(0.005)
        theirs.close()

    threading.Thread(target=trickle, daemon=True).start()
    try:
        batches = list(links.log_batches(ours, lambda: False))
    finally:
        ours.close()
    assert sum(batches, []) == ["line %d" % n for n in range(200)]  # every line, in order
    assert len(batches) <= 25, [len(b) for b in batches]  # not one event per line: about 10 in a second


@pytest.mark.parametrize("body", [{"to": ["pi"]}, {"to": {"pi": 1}}, {"to": "pi", "from": ["vps"]}, {"to": 5},
                                  {"to": "pi", "from": "pi"}, {"to": "nowhere"}, [1, 2]])
def test_a_failover_request_of_the_wrong_shape_is_one_clear_refusal(fleet, body):
    client = signed_in(fleet)
    answer = client.post("/api/failover", json=body, headers={"X-CSRF-Token": page_csrf(client)})
    assert answer.status_code == 400 and "failover needs" in answer.get_json()["error"]


def test_each_tunnel_gets_a_loopback_address_of_its_own_for_this_run(fleet, tmp_path):
    pi, vps = fleet.tunnels.loopback("pi"), fleet.tunnels.loopback("vps")
    assert pi == fleet.tunnels.loopback("pi") and pi != vps
    assert pi.startswith("127.") and "127.0.0.1" not in (pi, vps)  # not shared: Linux has all of 127/8
    runs = {Fleet(fleet.inventory, 0).tunnels.loopback("pi") for _ in range(5)}
    assert len(runs) == 5  # not by inventory order: a cookie left by an earlier run is not handed on


def test_every_state_changing_route_needs_the_session_then_its_csrf_token(fleet):
    """Read from the app's own URL map: a route added later without the guard fails here."""
    posts = [rule for rule in fleet.app.url_map.iter_rules() if "POST" in rule.methods]
    assert len(posts) >= 3
    client = signed_in(fleet)
    for rule in posts:
        url = rule.rule.replace("<name>", "pi").replace("<action>", "restart").replace("<service>", "bot")
        stranger = fleet.app.test_client().post(url, json={"to": "pi"})
        assert (stranger.status_code, stranger.get_json()) == (401, {"error": "open the link invoke fleet printed"})
        forged = client.post(url, json={"to": "pi"}, headers={"X-CSRF-Token": "not-the-token"})
        assert (forged.status_code, forged.get_json()) == (
            403, {"error": "missing or wrong CSRF token: reload the page"}), url
    assert fleet.app.test_client().get("/api/hosts").status_code == 401


def test_the_log_pane_needs_the_session_a_known_host_and_a_known_log(fleet):
    """pages.Pages: a page without the session is refused; a pick of an unknown host or log starts
    nothing; a host not reached says so in the pane, with the number of the pick it answers."""
    assert not fleet.socketio.test_client(fleet.app).is_connected()
    client = fleet.socketio.test_client(fleet.app, flask_test_client=signed_in(fleet))
    assert client.is_connected()
    for pick in ({"host": "nowhere", "service": "bot"}, {"host": "pi", "service": "../etc"}, ["pi", "bot"]):
        client.emit("follow", pick)
    client.emit("follow", {"host": "pi", "service": "supervisor", "n": 4})
    deadline, logs = time.monotonic() + 5, []
    while not logs and time.monotonic() < deadline:
        logs = [e["args"][0] for e in client.get_received() if e["name"] == "log"]
        time.sleep(0.05)
    assert logs == [{"host": "pi", "service": "supervisor", "n": 4, "lines": ["(pi is not reachable)"]}]
    client.disconnect()
    assert fleet.pages._follows == {} and fleet.pages._connected == set()


HOSTILE_NAMES = {"services": {"bot/../../../pi/stop/bot": {"state": "running"}, "bot\n": {"state": "running"},
                              "..": {"state": "running"},
                              "bot": {"state": "running", "log": "/home/bot/app/../../../etc/shadow"},
                              "dashboard": {"state": "running", "log": "/home/bot/app/logs/dashboard.log"}},
                 "bot": {"running": {"bot_id": "b0t", "release": "../../x"}}, "release": "20260101120000"}


def test_names_outside_the_contract_are_dropped_and_the_card_says_so(fleet):
    """A host speaks only for itself: a service name the contract does not know (one that would be a
    path in the page's URL), a log that is no absolute normal path, a release that is no stamp."""
    fleet.links["vps"]._line(json.dumps({"kind": "status", "status": HOSTILE_NAMES}).encode())
    web = signed_in(fleet)
    kept = web.get("/api/hosts").get_json()["hosts"][1]
    assert sorted(kept["status"]["services"]) == ["bot", "dashboard"]  # `bot\n` is not `bot`
    assert "log" not in kept["status"]["services"]["bot"]
    assert kept["status"]["services"]["dashboard"]["log"] == "/home/bot/app/logs/dashboard.log"
    assert kept["status"]["release"] == "20260101120000" and "release" not in kept["status"]["bot"]["running"]
    note = kept["status_error"]
    assert note.startswith("the host sent services not named in the contract: ") and note.endswith("(not shown)")
    for name in ("'bot/../../../pi/stop/bot'", "'bot\\n'", "'..'", "log paths", "'../../x'"):
        assert name in note, name
    fleet.links["vps"]._line(json.dumps({"kind": "status", "status": {"services": {"bot": {}}}}).encode())
    assert web.get("/api/hosts").get_json()["hosts"][1]["status_error"] is None  # a good one clears it


def test_an_action_reaches_only_the_host_in_its_path_and_a_known_service(fleet, monkeypatch):
    """The route's own checks, whatever the page sends: the service must be a name of the contract,
    and the host acted on is the one the path names (an encoded `/` is no separator)."""
    from remote.fleet import acts

    done = []
    monkeypatch.setattr(acts, "act", lambda inventory, target, action, service: (
        done.append((target.name, action, service)) or ({"ok": True}, 200)))
    client = signed_in(fleet)
    headers = {"X-CSRF-Token": page_csrf(client)}
    for path in ("/api/hosts/vps/restart/bot%2F..%2F..%2F..%2Fpi%2Fstop%2Fbot",
                 "/api/hosts/vps/restart/bot/../../../pi/stop/bot", "/api/hosts/vps/restart/supervisor",
                 "/api/hosts/vps/restart/bot%0A", "/api/hosts/nowhere/stop/bot", "/api/hosts/vps/kill/bot"):
        assert client.post(path, headers=headers).status_code in (404, 405), path
    assert done == []
    assert client.post("/api/hosts/vps/restart/bot", headers=headers).status_code == 200
    assert done == [("vps", "restart", "bot")]


def test_the_fleet_answers_its_own_address_and_port_only(tmp_path):
    """As the dashboard's HostGuard: a rebinding name gets 400, here also another port (the fleet is
    never reached through a tunnel), Socket.IO included."""
    path = tmp_path / "inventory.yml"
    path.write_text("defaults: {user: bot}\nhosts:\n  pi: {hostname: 192.0.2.1}\n")
    made = Fleet(inventory.load(path), 5059)
    client = made.app.test_client()
    for host, code in (("127.0.0.1:5059", 401), ("localhost:5059", 401), ("rebind.evil.example:5059", 400),
                       ("rebind.evil.example", 400), ("127.0.0.1:5000", 400), ("127.0.0.1", 400),
                       ("127.0.0.9:5059", 400)):
        assert client.get("/api/hosts", headers={"Host": host}).status_code == code, host
    polling = client.get("/socket.io/?EIO=4&transport=polling", headers={"Host": "rebind.evil.example:5059"})
    assert polling.status_code == 400


def test_another_pages_post_is_refused_even_with_the_csrf_token_and_the_cookie_does_not_hold_it(tmp_path):
    from test_web_security import cookie_payload

    path = tmp_path / "inventory.yml"
    path.write_text("defaults: {user: bot}\nhosts:\n  pi: {hostname: 192.0.2.1}\n")
    made = Fleet(inventory.load(path), 5059)
    made.links = {h.name: Link(h, made._changed) for h in made.hosts}
    client = made.app.test_client()
    own = {"Host": "127.0.0.1:5059"}
    assert client.get("/login?token=" + made.token, headers=own).status_code == 200
    csrf = re.search(r'name="csrf-token" content="([^"]+)"', client.get("/", headers=own).text).group(1)
    cookie = client.get_cookie("sulfur_fleet_5059", domain="127.0.0.1")
    assert csrf not in cookie_payload(cookie.value) and '"sid"' in cookie_payload(cookie.value)
    url = "/api/hosts/pi/tunnel"
    for other in ({"Origin": "http://127.0.0.1:8000"}, {"Origin": "null"}, {"Sec-Fetch-Site": "same-site"},
                  {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64)"}):
        answer = client.post(url, headers=dict(own, **other, **{"X-CSRF-Token": csrf}))
        assert answer.status_code == 403 and answer.get_json()["error"].startswith("refused: "), other
    ours = client.post(url, headers=dict(own, Origin="http://127.0.0.1:5059", **{"Sec-Fetch-Site": "same-origin",
                                                                                 "X-CSRF-Token": csrf}))
    assert ours.status_code == 409  # past both checks: pi is not reachable here


def test_a_hosts_lease_reaches_its_card_beside_its_epoch(fleet):
    """Coordination: the card says who holds the bot's lease, as status words it (leases.text); what the
    host sends is untrusted and shown as text (fleet.js sets textContent)."""
    fleet.hosts[0].bot_command = "python bot.py"
    lease = {"state": "standby", "holder": "vps<img src=x>", "epoch": 7, "paused": False,
             "last": "vps took over at 03:12: pi's lease expired"}
    status = {"services": {"bot": {"state": "standby", "lease": lease}}}
    fleet.links["pi"]._line(json.dumps({"kind": "status", "status": status}).encode())
    web = signed_in(fleet)
    shown = web.get("/api/hosts").get_json()["hosts"][0]["epoch_text"]
    assert "lease held by vps<img src=x>, epoch 7; last election: vps took over at 03:12: pi's lease expired" in shown
    lease.update(state="unreachable", error="no etcd endpoint answered")
    fleet.links["pi"]._line(json.dumps({"kind": "status", "status": status}).encode())
    shown = web.get("/api/hosts").get_json()["hosts"][0]["epoch_text"]
    assert "etcd unreachable (no etcd endpoint answered)" in shown and "safety over availability" in shown
