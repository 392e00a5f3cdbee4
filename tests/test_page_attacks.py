"""Attacks on the pages, tried in a real headless Chromium (Debian's, through Playwright): a hostile host
steering a click on its own card to another host, a page on another port of this machine acting with
the cookies the browser has, and the fleet's sign-in, whose token must stay off every command line.

The fleet is served here without SSH: its links are never started, the tests speak for the hosts
(test_fleet_ssh.py drives real ones), and its action runs nothing but records what reached it.
"""

import functools
import json
import os
import re
import subprocess
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlparse

import pytest
import requests
from dashproc import ROOT, free_port, interrupt, wait_for
from test_page import CHROMIUM, browser  # noqa: F401 (the module's Chromium, a fixture)

pytestmark = pytest.mark.skipif(not CHROMIUM, reason="needs chromium (make test installs it as root)")
TOKEN = "a-token-of-twenty-chars"


@pytest.fixture
def fleet(tmp_path, monkeypatch):
    """A fleet of pi and vps on a loopback port of its own; ``fleet.done`` lists the actions that
    reached its action route (host, action, service), none of which runs."""
    from werkzeug.serving import make_server

    from remote import inventory
    from remote.fleet.links import Link
    from remote.fleet.server import Fleet

    path = tmp_path / "inventory.yml"
    path.write_text("defaults: {user: bot}\nhosts:\n  pi: {hostname: 192.0.2.1}\n  vps: {hostname: 192.0.2.2}\n")
    made = Fleet(inventory.load(path), free_port())
    made.links = {h.name: Link(h, made._changed) for h in made.hosts}
    made.done = []

    def act(inventory_, target, action, service):
        made.done.append((target.name, action, service))
        return {"ok": True, "line": "%s: %s %s (recorded)" % (target.name, action, service)}, 200

    from remote.fleet import acts

    monkeypatch.setattr(acts, "act", act)
    server = make_server("127.0.0.1", made.port, made.app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield made
    server.shutdown()
    made.forget_sign_in_file()


def open_fleet(page, fleet):
    """Signed in as invoke fleet does it: the browser opened on the private sign-in file."""
    page.goto(fleet.sign_in_file().as_uri())
    page.wait_for_url(fleet.url(), timeout=15000)
    page.wait_for_selector("#connection:text('live')", timeout=15000)


def status_line(services):
    return json.dumps({"kind": "status", "status": {"services": services}}).encode()


HOSTILE = "bot/../../../pi/stop/bot"


def test_a_click_on_a_hostile_hosts_card_reaches_that_host_only(browser, fleet):  # noqa: F811
    """vps reports a service named bot/../../../pi/stop/bot. Built into a URL as it is, a click on it
    would be /api/hosts/vps/restart/bot/../../../pi/stop/bot, which the browser resolves to
    /api/hosts/pi/stop/bot: pi's bot stopped from vps's card."""
    page = browser.new_page()
    page.on("dialog", lambda dialog: dialog.accept())
    posted = []
    page.on("request", lambda r: posted.append(urlparse(r.url).path) if r.method == "POST" else None)
    try:
        open_fleet(page, fleet)
        vps = fleet.links["vps"]
        vps._line(status_line({HOSTILE: {"state": "running"}, "bot": {"state": "running"}}))  # as off its channel
        card = 'section.card[data-host="vps"]'
        page.wait_for_selector(card + ' tr[data-service="bot"]', timeout=10000)
        assert "services not named in the contract: 'bot/../../../pi/stop/bot'" in page.inner_text(card)
        assert page.locator(card + " tr[data-service]").count() == 1  # the hostile one is not drawn
        for action in ("restart", "stop", "start"):
            page.click(card + ' tr[data-actions="bot"] button:text-is("%s")' % action)
            page.wait_for_selector("#result:text('vps: %s bot (recorded)')" % action, timeout=10000)
        assert fleet.done == [("vps", "restart", "bot"), ("vps", "stop", "bot"), ("vps", "start", "bot")]

        # had a status slipped past the link's check, the page's own URLs still name vps alone
        with vps.lock:
            vps.state["status"] = {"services": {HOSTILE: {"state": "running"}, "..": {"state": "running"}}}
        fleet._changed("vps", "status")
        row = card + ' tr[data-actions="%s"] button:text-is("stop")'
        page.wait_for_selector(row % HOSTILE, timeout=10000)
        posted.clear()
        page.click(row % HOSTILE)
        page.wait_for_selector("#result:text('no such host, action or service')", timeout=10000)
        assert posted == ["/api/hosts/vps/stop/bot%2F..%2F..%2F..%2Fpi%2Fstop%2Fbot"]  # one segment, encoded
        page.click(row % "..")
        page.wait_for_selector("#result:text('refused: not a name')", timeout=10000)
        assert len(posted) == 1  # a dot segment is never sent (the browser would resolve it away)
        assert fleet.done == [("vps", "restart", "bot"), ("vps", "stop", "bot"), ("vps", "start", "bot")]
    finally:
        page.close()


ATTACK = """<!doctype html><html><body>
<form method="post" action="{action}"><input name="csrf" value="{csrf}"><input name="token" value="{token}"></form>
<script>
fetch({action!r}, {{method: "POST", mode: "no-cors", credentials: "include",
  headers: {{"Content-Type": "text/plain"}}, body: "csrf={csrf}"}}).finally(function () {{
  document.forms[0].submit();
}});
</script></body></html>
"""


def test_a_page_on_another_port_changes_nothing_on_the_dashboard_or_the_fleet(browser, fleet, dashboards,  # noqa: F811
                                                                             tmp_path):
    """A plain http.server on another loopback port: the browser sends it, and its requests, the
    dashboard's and the fleet's cookies (ports do not separate sites). Its page posts forms and
    no-cors fetches to /logout, /login and the actions, even with the right CSRF tokens (the worst
    case: what an older cookie let it read): each is refused, the browser stays signed in to both, and
    nothing is restarted or stopped."""
    board = dashboards(env={"DASHBOARD_TOKEN": TOKEN})
    board.wait_healthy()
    context = browser.new_context()
    page = context.new_page()
    seen = []
    page.on("response", lambda r: seen.append((r.request.method, urlparse(r.url).path, r.status)))
    evil = tmp_path / "evil"
    evil.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(SimpleHTTPRequestHandler, directory=str(evil)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        page.goto(board.url("/"))
        page.fill("input[name=token]", TOKEN)
        page.click("button[type=submit]")
        page.wait_for_selector("#host-card", timeout=15000)
        board_csrf = page.get_attribute('meta[name="csrf-token"]', "content")
        open_fleet(page, fleet)
        fleet_csrf = page.get_attribute('meta[name="csrf-token"]', "content")
        fleet_base = fleet.url().rstrip("/")
        attacks = {"board-logout": (board.url("/logout"), board_csrf, ""),
                   "board-login": (board.url("/login"), board_csrf, TOKEN),
                   "board-restart": (board.url("/api/restart/dashboard"), board_csrf, ""),
                   "fleet-stop": (fleet_base + "/api/hosts/pi/stop/bot", fleet_csrf, ""),
                   "fleet-failover": (fleet_base + "/api/failover", fleet_csrf, "")}
        for name, (action, csrf, token) in attacks.items():
            (evil / (name + ".html")).write_text(ATTACK.format(action=action, csrf=csrf, token=token))
        for name, (action, _, _) in attacks.items():
            target = urlparse(action).path
            seen.clear()
            with page.expect_navigation(url=action, timeout=15000):
                page.goto("http://127.0.0.1:%d/%s.html" % (server.server_port, name))
            wait_for(lambda target=target: [s for m, p, s in seen if (m, p) == ("POST", target)] == [403, 403], 10,
                     "%s: both posts refused, got %s" % (name, seen))
        page.goto(board.url("/"))
        page.wait_for_selector("#host-card", timeout=15000)  # still signed in to the dashboard
        page.goto(fleet.url())
        assert page.title() == "sulfur-ops fleet"  # and to the fleet
        assert fleet.done == []
        commands = board.app_dir / "run" / "commands"
        assert not commands.exists() or os.listdir(commands) == []  # no restart asked of the supervisor
    finally:
        server.shutdown()
        context.close()


def test_invoke_fleet_opens_the_browser_on_a_private_file_and_the_page_arrives_signed_in(browser, tmp_path):  # noqa: F811
    """The one-time token never goes on a command line (ps shows every user's): the browser is opened
    on a mode-600 file, as Jupyter does, and the printed line names that file, not the token. The page
    it leads to arrives signed in, although its cookie is SameSite=Strict and a file:// page started
    the navigation."""
    inventory = tmp_path / "inventory.yml"
    inventory.write_text("hosts:\n  local: {connection: local, app_dir: %s}\n" % (tmp_path / "app"))
    argv_file = tmp_path / "browser-argv.txt"
    opener = tmp_path / "browser.sh"  # the browser webbrowser runs: it writes down the command line it got
    opener.write_text("#!/bin/sh\nprintf '%%s\\n' \"$@\" > %s\n" % argv_file)
    opener.chmod(0o700)
    port = free_port()
    env = dict(os.environ, SULFUR_INVENTORY=str(inventory), XDG_CACHE_HOME=str(tmp_path / "cache"),
               BROWSER=str(opener))
    proc = subprocess.Popen([sys.executable, "-m", "invoke", "fleet", "--port", str(port)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    page = browser.new_page()
    try:
        line = proc.stdout.readline()
        assert line.startswith("fleet: 0 hosts, page at http://127.0.0.1:%d/ " % port), line + proc.stderr.read()
        url = re.search(r"sign in by opening (file://\S+) \(private, mode 600", line).group(1)
        path = Path(urlparse(url).path)
        assert os.stat(path).st_mode & 0o777 == 0o600 and os.stat(path.parent).st_mode & 0o777 == 0o700
        token = re.search(r"login\?token=([\w-]+)", path.read_text()).group(1)
        assert len(token) >= 24 and token not in line
        wait_for(argv_file.exists, 20, "webbrowser running the BROWSER command")
        assert argv_file.read_text().splitlines() == [url]  # the file's address, never the token
        page.goto(url)
        page.wait_for_url("http://127.0.0.1:%d/" % port, timeout=15000)
        assert page.title() == "sulfur-ops fleet" and page.get_attribute('meta[name="csrf-token"]', "content")
        assert requests.get("http://127.0.0.1:%d/login?token=%s" % (port, token), timeout=10).status_code == 403
    finally:
        page.close()
        interrupt(proc)
    assert not path.parent.exists()  # the file goes when the fleet stops
