"""What a hostile or broken host can send the fleet over its watch, without SSH: the lines go into the
real Link and the real fleet server (its Flask app and Socket.IO server, through their test clients),
exactly as they would come off the host's channel. A host spoils at most its own card: never the
page's JSON, never the other hosts' data, never the operator's memory or CPU."""

import json
import socket
import threading
import time

import pytest

from remote import inventory
from remote.fleet import links
from remote.fleet.links import KEPT, Link, aligned
from remote.fleet.server import COALESCE, Fleet
from remote.host import history


@pytest.fixture
def fleet(tmp_path):
    """A fleet of two hosts whose links are never started: the tests speak for the hosts."""
    path = tmp_path / "inventory.yml"
    path.write_text("defaults: {user: bot}\nhosts:\n  pi: {hostname: 192.0.2.1}\n  vps: {hostname: 192.0.2.2}\n")
    made = Fleet(inventory.load(path), 0)
    made.links = {h.name: Link(h, made._changed) for h in made.hosts}
    return made


def signed_in(made):
    client = made.app.test_client()
    assert client.get("/?token=" + made.token).status_code == 302
    return client


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


def test_a_line_without_an_end_ends_the_link_instead_of_filling_memory():
    ours, theirs = socket.socketpair()
    try:
        def flood():
            chunk = b"x" * 65536
            try:
                for _ in range((links.MAX_LINE >> 16) + 8):
                    theirs.sendall(chunk)
            except OSError:
                pass

        threading.Thread(target=flood, daemon=True).start()
        with pytest.raises(ConnectionError, match="a line of over 8 MB"):
            for _ in links._lines(ours, 1.0, lambda: False):
                pass
    finally:
        ours.close()
        theirs.close()


@pytest.mark.parametrize("body", [{"to": ["pi"]}, {"to": {"pi": 1}}, {"to": "pi", "from": ["vps"]}, {"to": 5},
                                  {"to": "pi", "from": "pi"}, {"to": "nowhere"}, [1, 2]])
def test_a_failover_request_of_the_wrong_shape_is_one_clear_refusal(fleet, body):
    client = signed_in(fleet)
    with client.session_transaction() as session:
        csrf = session["csrf"]
    answer = client.post("/api/failover", json=body, headers={"X-CSRF-Token": csrf})
    assert answer.status_code == 400 and "failover needs" in answer.get_json()["error"]
