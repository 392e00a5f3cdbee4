"""The page in a real headless Chromium (Debian's), driven by Playwright: cards and the live log."""

import json
import shutil
import time

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(not CHROMIUM, reason="needs chromium (make test installs it as root)")

# the closed network here refuses Chromium's own background connections: turn them off
CHROMIUM_ARGS = ["--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def test_page_shows_host_card_and_a_log_line_appended_after_load(browser, dashboards, port, tmp_path):
    board = dashboards(port)
    log = board.app_dir / "logs" / "bot.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("bot started\n")
    board.wait_healthy()
    page = browser.new_page()
    try:
        page.goto(board.url("/"), wait_until="load")
        assert page.locator("#host-platform").inner_text() == "linux"
        assert page.locator("#hostname").inner_text().strip()
        assert "127.0.0.1:%d" % port in page.locator("#port-card").inner_text()
        assert "no supervisor state yet" in page.locator("#services-card").inner_text()
        page.wait_for_function("document.getElementById('log-state').textContent === 'live'", timeout=15000)
        assert "bot started" in page.locator("#log").inner_text()
        line = "appended after load %d" % time.time_ns()
        with open(log, "a") as handle:
            handle.write(line + "\n")
        page.locator("#log").get_by_text(line).wait_for(timeout=10000)
        page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
    finally:
        page.close()


def test_login_page_in_the_browser(browser, dashboards):
    from dashproc import free_port

    token = "tok-of-16-chars-or-more"
    board = dashboards(free_port("0.0.0.0"), env={"DASHBOARD_HOST": "0.0.0.0", "DASHBOARD_TOKEN": token})
    board.wait_healthy()
    run = board.app_dir / "run"  # a state as a supervisor writes it, so the page shows its buttons
    (run / "state.json").write_text('{"services": {"dashboard": {"state": "running", "pid": 1}}}')
    page = browser.new_page()
    try:
        page.goto(board.url("/"))
        assert page.locator("#host-card").count() == 0
        page.fill("input[name=token]", token)
        page.click("button[type=submit]")
        page.locator("#host-card").wait_for(timeout=10000)
        page.wait_for_function("document.getElementById('log-state').textContent === 'live'", timeout=15000)
        # the restart button posts with the page's CSRF token: the request gets past the check to the
        # supervisor, which is not running here
        page.click("button.restart[data-service=dashboard]")
        page.get_by_text("failed: the supervisor is not running").wait_for(timeout=20000)
    finally:
        page.close()


def test_the_bot_card_shows_its_id_role_status_line_and_budget_and_escapes_what_the_bot_said(browser, dashboards):
    board = dashboards()
    board.wait_healthy()
    hostile = '<img src=x onerror="document.title=1">12 guilds, 45 ms'
    state = {"services": {"bot": {"state": "running", "pid": 4242, "bot_id": "0123456789ab", "role": "active",
                                  "status": hostile, "shards": [1, 2], "shard_count": 4, "watchdog_sec": 30,
                                  "budget": {"used": 3, "limit": 50}}}}
    (board.app_dir / "run").mkdir(parents=True, exist_ok=True)
    (board.app_dir / "run" / "state.json").write_text(json.dumps(state))
    page = browser.new_page()
    try:
        page.goto(board.url("/"), wait_until="load")
        assert page.locator("#bot-id").inner_text() == "0123456789ab"
        assert page.locator("#bot-role").inner_text() == "active"
        assert page.locator("#bot-status").inner_text() == hostile  # shown as text, not markup
        assert page.locator("#bot-card img").count() == 0 and page.title() != "1"
        assert page.locator("#bot-shards").inner_text() == "1,2 of 4"
        assert page.locator("#bot-budget").inner_text() == "3 of 50 in 24 h"
        assert page.locator("#bot-watchdog").inner_text() == "30 s"
    finally:
        page.close()


def write_history(app_dir, hours=2.0, restart_at=None):
    """A ring as the supervisor writes it (history.write): a sample per 10 s up to now, the
    dashboard's restart counter going up once at ``restart_at`` seconds ago."""
    from remote.host.common import history

    (app_dir / "run").mkdir(parents=True, exist_ok=True)
    ring = str(app_dir / "run" / "history.bin")
    now = int(time.time())
    for t in range(now - int(hours * 3600), now, history.INTERVAL):
        values = {name: 0 for name in history.FIELDS}
        values.update(t=t, serving=1, dashboard_cpu=15 + t % 7, dashboard_rss=40000, bot_cpu=5, bot_rss=60000,
                      supervisor_cpu=2, supervisor_rss=12000, load=50, mem_used=400000, mem_total=1000000,
                      battery=-1, dashboard_restarts=1 if restart_at and t >= now - restart_at else 0)
        history.write(ring, values)
    return ring


def test_the_history_card_draws_24_h_from_the_ring_with_restarts_marked(browser, dashboards):
    import requests

    token = "tok-of-16-chars-or-more"
    board = dashboards(env={"DASHBOARD_TOKEN": token})
    write_history(board.app_dir, restart_at=1800)
    board.wait_healthy()
    assert requests.get(board.url("/api/history"), timeout=10).status_code == 401  # the host's data: signed in
    answer = requests.get(board.url("/api/history"), headers={"Authorization": "Bearer " + token}, timeout=10)
    samples = answer.json()["samples"]
    assert 700 <= len(samples["t"]) <= 721 and samples["dashboard_restarts"][-1] == 1
    page = browser.new_page()
    try:
        page.goto(board.url("/"))
        page.fill("input[name=token]", token)
        page.click("button[type=submit]")
        page.wait_for_selector("#history-charts .chart canvas", timeout=15000)
        kinds = page.eval_on_selector_all("#history-charts .chart", "cs => cs.map(c => c.dataset.kind)")
        assert kinds == ["cpu", "rss", "load", "memory"]
        assert page.locator("#history-charts canvas").count() == 4
        marks = page.locator("#history-charts .restart-marks").inner_text()
        assert marks.startswith("restarts in 24 h: dashboard ")  # the one restart, with its time
        assert "bot" not in marks and "supervisor" not in marks
    finally:
        page.close()


@pytest.mark.parametrize("width", [1280, 390])
def test_no_card_overflows_at_desktop_and_phone_widths(browser, dashboards, width):
    """The services table with real-world values (long pids, a failed service's exit) used to run out
    of its card at both widths."""
    board = dashboards()
    board.wait_healthy()
    services = {name: {"state": state, "pid": 4194301, "restarts": 12345, "last_exit": -15}
                for name, state in (("dashboard", "running"), ("bot", "backoff"), ("supervisor", "orphaned"))}
    (board.app_dir / "run").mkdir(parents=True, exist_ok=True)
    (board.app_dir / "run" / "state.json").write_text(json.dumps({"services": services}))
    write_history(board.app_dir, hours=0.5, restart_at=600)  # with its charts and their legends
    page = browser.new_page(viewport={"width": width, "height": 900})
    try:
        page.goto(board.url("/"), wait_until="load")
        page.wait_for_selector("#history-charts canvas", timeout=15000)
        wide = page.evaluate("[...document.querySelectorAll('.card')].filter(c => c.scrollWidth > c.clientWidth + 1)"
                             ".map(c => c.id + ' ' + c.scrollWidth + '>' + c.clientWidth)")
        assert wide == []
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    finally:
        page.close()


def test_the_fleet_page_is_built_on_the_dashboards_base_page(browser, tmp_path):
    """The fleet page extends dashboard/templates/base.html: its own title and stylesheets, the
    session's CSRF token in the meta its script reads, every log of remote.host.common.names to pick. Its
    hosts' links are never started: no SSH here (test_fleet_ssh.py drives a real one)."""
    import threading

    from dashproc import free_port
    from werkzeug.serving import make_server

    from remote import inventory
    from remote.fleet.links import Link
    from remote.fleet.server import Fleet
    from remote.host.common import names

    path = tmp_path / "inventory.yml"
    path.write_text("defaults: {user: bot}\nhosts:\n  pi: {hostname: 192.0.2.1}\n")
    fleet = Fleet(inventory.load(path), free_port())
    fleet.links = {h.name: Link(h, fleet._changed) for h in fleet.hosts}
    server = make_server("127.0.0.1", fleet.port, fleet.app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    page = browser.new_page()
    try:
        page.goto(fleet.sign_in_file().as_uri())  # as invoke fleet opens the browser
        page.wait_for_url(fleet.url(), timeout=15000)
        answer = page.reload(wait_until="load")
        assert answer.status == 200 and answer.headers["x-frame-options"] == "DENY"
        assert page.title() == "sulfur-ops fleet"
        csrf = page.get_attribute('meta[name="csrf-token"]', "content")
        post = "t => fetch('/api/hosts/pi/tunnel', {method: 'POST', headers: {'X-CSRF-Token': t}}).then(r => r.status)"
        refused, taken = page.evaluate(post, "not-it"), page.evaluate(post, csrf)  # as the page's own script posts
        assert refused == 403 and taken == 409  # the meta's is the session's: past the check
        sheets = page.evaluate("[...document.styleSheets].map(s => s.href.split('/').pop())")
        assert sheets == ["uPlot.min.css", "fleet.css"]
        assert page.evaluate("getComputedStyle(document.querySelector('header')).backgroundColor") == "rgb(29, 35, 48)"
        assert page.eval_on_selector_all("#log-service option", "os => os.map(o => o.value)") == list(names.LOGS)
        page.wait_for_selector('section.card[data-host="pi"]')
    finally:
        page.close()
        server.shutdown()
        fleet.forget_sign_in_file()
