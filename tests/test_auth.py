"""The token: required off loopback, checked on the page, the API and Socket.IO."""

import pytest
import requests
import socketio
from dashproc import free_port

TOKEN = "s3cret-token-for-tests"


def test_non_loopback_without_token_is_refused(dashboards):
    board = dashboards(free_port("0.0.0.0"), env={"DASHBOARD_HOST": "0.0.0.0"})
    assert board.wait_exit() == 2
    out = board.output.strip()
    assert len(out.splitlines()) == 1
    assert "refusing to serve on 0.0.0.0 without DASHBOARD_TOKEN" in out


@pytest.fixture
def guarded(dashboards):
    board = dashboards(free_port("0.0.0.0"), env={"DASHBOARD_HOST": "0.0.0.0", "DASHBOARD_TOKEN": TOKEN})
    board.wait_healthy()
    return board


def test_page_and_api_need_the_token(guarded):
    assert requests.get(guarded.url("/"), timeout=10).status_code == 401
    assert requests.get(guarded.url("/api/status"), timeout=10).status_code == 401
    bad = {"Authorization": "Bearer nope"}
    assert requests.get(guarded.url("/api/status"), headers=bad, timeout=10).status_code == 401
    good = {"Authorization": "Bearer " + TOKEN}
    assert requests.get(guarded.url("/api/status"), headers=good, timeout=10).status_code == 200
    page = requests.get(guarded.url("/"), headers=good, timeout=10)
    assert page.status_code == 200 and 'id="host-card"' in page.text
    assert requests.get(guarded.url("/healthz"), timeout=10).status_code == 200  # health stays open
    assert TOKEN not in guarded.output  # never logged


def test_login_form_sets_a_session_cookie(guarded):
    from test_web_security import csrf_of

    session = requests.Session()
    form = session.get(guarded.url("/"), timeout=10).text
    wrong = session.post(guarded.url("/login"), data={"token": "guess", "csrf": csrf_of(form)}, timeout=10)
    assert wrong.status_code == 401 and "wrong token" in wrong.text
    right = session.post(guarded.url("/login"), data={"token": TOKEN, "csrf": csrf_of(wrong.text)}, timeout=10)
    assert right.status_code == 200 and 'id="host-card"' in right.text
    assert session.get(guarded.url("/api/status"), timeout=10).status_code == 200
    session.post(guarded.url("/logout"), data={"csrf": csrf_of(right.text)}, timeout=10)
    assert session.get(guarded.url("/api/status"), timeout=10).status_code == 401


def test_socketio_is_refused_without_the_token(guarded):
    client = socketio.Client(reconnection=False)
    with pytest.raises(socketio.exceptions.ConnectionError):
        client.connect(guarded.url(""), transports=["websocket"], wait_timeout=10)
    lines = []
    client = socketio.Client(reconnection=False)
    client.on("log_init", lambda msg: lines.append(msg))
    client.connect(guarded.url(""), transports=["websocket"], auth={"token": TOKEN}, wait_timeout=10)
    client.sleep(1)
    assert client.connected and lines
    client.disconnect()
