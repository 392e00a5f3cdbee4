"""`invoke fleet` against the SSH test hosts (linux and termux), in real Chromium: every card with its
host's states and 24 h charts, a killed dashboard shown, a host whose network link goes down or whose
sshd is killed greyed while the other keeps updating (and back), actions and failover only with the
session's CSRF token, hostile text shown as text, tunnelled dashboards and their cookies.

Both hosts run the example bot (demo mode, one token): linux active, termux `standby: true`."""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import requests
import sshlab
from dashproc import ROOT, free_port, processes, wait_for

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [pytest.mark.skipif(sshlab.available() is not None, reason=str(sshlab.available())),
              pytest.mark.skipif(not CHROMIUM, reason="needs chromium")]


BOT_TOKEN = "the-fleet-tests-bot-token"


def write_env(host, **extra):
    """The host's shared/.env: the bot's token (demo mode), plus ``extra`` keys."""
    path = os.path.join(host.app_dir, "shared", ".env")
    keys = dict({"BOT_TOKEN": BOT_TOKEN, "EXAMPLE_BOT_DEMO": "1"}, **extra)
    with open(path, "w") as handle:
        handle.write("".join("%s=%s\n" % item for item in keys.items()))
    os.chown(path, host.user.pw_uid, host.user.pw_gid)
    os.chmod(path, 0o600)


def bot_inventory(lab, path, linux_bot=None):
    """The lab's inventory with a bot on both hosts, termux on standby."""
    text = lab.inventory(list(lab.hosts.values()), path=path).read_text()
    text = text.replace("  linux: {", "  linux: {bot_command: '%s', " % (linux_bot or "python %s/bot.py" % lab.dir))
    text = text.replace("  termux: {", "  termux: {bot_command: 'python %s/bot.py', standby: true, " % lab.dir)
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def lab():
    from dashproc import invoke

    with sshlab.lab_with("linux", "termux") as lab:
        shutil.copy(ROOT / "examples" / "bot" / "bot.py", lab.dir / "bot.py")
        (lab.dir / "bot.py").chmod(0o644)
        lab.install_release()
        for host in lab.hosts.values():
            write_env(host)
        lab.fleet_inventory = bot_inventory(lab, lab.dir / "fleet-inventory.yml")
        out = invoke(lab.fleet_inventory, "start", "--all")
        assert out.returncode == 0, out.stdout + out.stderr
        yield lab


@pytest.fixture(scope="module")
def fleet(lab):
    port = free_port()
    env = dict(os.environ, SULFUR_INVENTORY=str(lab.fleet_inventory), XDG_CACHE_HOME=str(lab.dir / "cache"))
    proc = subprocess.Popen([sys.executable, "-m", "invoke", "fleet", "--port", str(port), "--no-browser"], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    match = re.search(r"sign in by opening (file://\S+) \(private, mode 600", line)  # the token is not printed
    assert match, line + proc.stderr.read()
    assert line.startswith("fleet: 2 hosts, page at http://127.0.0.1:%d/ " % port)
    opener = match.group(1)
    with open(opener[len("file://"):]) as handle:
        url = re.search(r'url=(http://[^"]+)"', handle.read()).group(1)  # the one-time link, in the file only
    assert url.startswith("http://127.0.0.1:%d/login?token=" % port) and url not in line
    yield {"proc": proc, "url": url, "opener": opener, "port": port, "base": "http://127.0.0.1:%d" % port}
    proc.send_signal(2)
    proc.wait(timeout=20)


@pytest.fixture(scope="module")
def page(fleet):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        context = browser.new_context(viewport={"width": 1280, "height": 900})  # one cookie jar, several tabs
        tab = context.new_page()
        tab.goto(fleet["opener"])  # as invoke fleet opens the browser: the private sign-in file
        tab.wait_for_url(fleet["base"] + "/", timeout=30000)
        yield tab
        browser.close()


def card_text(page, host):
    return page.locator('section.card[data-host="%s"]' % host).inner_text()


def test_every_card_fills_with_its_hosts_states(lab, page, fleet):
    assert page.url == fleet["base"] + "/"  # the token left the address bar
    for name in ("linux", "termux"):
        page.wait_for_function("n => document.querySelector(`section.card[data-host=\"${n}\"] td.state-running`)",
                               arg=name, timeout=30000)
        text = card_text(page, name)
        assert "reachable" in text and "dashboard" in text and "supervisor" not in text.split("dashboard")[0][-5:]
    assert "termux" in card_text(page, "termux")  # its platform
    assert "standby" in page.locator('section.card[data-host="termux"] tr[data-service="bot"]').inner_text()
    # its 24 h: CPU and RSS sparklines; a click shows them full size, with load and memory
    page.wait_for_selector('section.card[data-host="linux"] .sparks .chart canvas', timeout=60000)
    sparks = 'section.card[data-host="linux"] .sparks .chart'
    assert page.eval_on_selector_all(sparks, "cs => cs.map(c => c.dataset.kind)") == ["cpu", "rss"]
    page.click('section.card[data-host="linux"] .sparks')
    page.wait_for_selector("dialog#detail[open] .chart canvas", timeout=10000)
    assert page.locator("#detail-title").inner_text() == "linux: the last 24 h"
    assert page.eval_on_selector_all("#detail-charts .chart", "cs => cs.map(c => c.dataset.kind)") == [
        "cpu", "rss", "load", "memory"]
    page.click("#detail-close")
    assert page.locator("dialog#detail[open]").count() == 0
    # the token was for one use: a second browser with the same link is refused
    assert requests.get(fleet["url"], timeout=5).status_code == 403
    assert requests.get(fleet["base"] + "/api/hosts", timeout=5).status_code == 401


def test_a_killed_dashboard_and_a_killed_bot_show_on_their_card(lab, page):
    linux = lab.hosts["linux"]
    state = json.loads(open(os.path.join(linux.app_dir, "run", "state.json")).read())
    old = state["services"]["dashboard"]["pid"]
    os.kill(old, 9)
    page.wait_for_function(
        "p => { const t = document.querySelector('section.card[data-host=\"linux\"] tr[data-service=\"dashboard\"]');"
        " return t && !t.innerText.includes(String(p)) && t.innerText.includes('running'); }", arg=old, timeout=30000)
    row = page.locator('section.card[data-host="linux"] tr[data-service="dashboard"]').inner_text()
    assert "running" in row and str(old) not in row
    # and the bot: its card shows it gone, then running again under a new pid
    bot = state["services"]["bot"]["pid"]
    os.kill(bot, 9)
    page.wait_for_function(
        "p => { const t = document.querySelector('section.card[data-host=\"linux\"] tr[data-service=\"bot\"]');"
        " return t && !t.innerText.includes(String(p)) && t.innerText.includes('running'); }", arg=bot, timeout=30000)
    # the restart is a mark on the charts' time axis once the next 10 s sample has it
    page.wait_for_function("() => /restarts in 24 h: .*dashboard/.test(document.querySelector("
                           "'section.card[data-host=\"linux\"] .sparks').innerText)", timeout=40000)
    assert int(page.get_attribute('section.card[data-host="linux"] .sparks .chart', "data-restarts")) >= 1


def test_a_host_whose_link_goes_down_is_greyed_and_the_other_keeps_updating(lab, page):
    termux = lab.hosts["termux"]
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    host_side = re.search(r"\d+: (sl%dh\d+)@" % termux.index, links).group(1)
    subprocess.run(["ip", "link", "set", host_side, "down"], check=True)
    try:
        page.wait_for_selector('section.card.down[data-host="termux"]', timeout=45000)
        assert "unreachable since" in card_text(page, "termux")
        assert "down" not in page.locator('section.card[data-host="linux"]').get_attribute("class")
    finally:
        subprocess.run(["ip", "link", "set", host_side, "up"], check=True)
    page.wait_for_selector('section.card[data-host="termux"]:not(.down)', timeout=90000)


def updated(page, host):
    return int(page.get_attribute('section.card[data-host="%s"]' % host, "data-updated"))


def test_a_host_whose_sshd_is_killed_is_greyed_and_comes_back_when_it_is_started(lab, page):
    linux = lab.hosts["linux"]
    linux.kill_sshd()
    try:
        page.wait_for_selector('section.card.down[data-host="linux"]', timeout=45000)
        assert "unreachable since" in card_text(page, "linux")
        before = updated(page, "termux")
        wait_for(lambda: updated(page, "termux") > before, 30, "the termux card updated while linux is down")
        assert "down" not in page.locator('section.card[data-host="termux"]').get_attribute("class")
    finally:
        linux.start_sshd()
    page.wait_for_selector('section.card[data-host="linux"]:not(.down) td.state-running', timeout=90000)


def test_actions_need_the_csrf_token_and_answer_with_the_clis_line(lab, page, fleet):
    cookies = {c["name"]: c["value"] for c in page.context.cookies()}
    assert list(cookies) == ["sulfur_fleet_%d" % fleet["port"]]  # its own name: a dashboard's cookie stays
    url = fleet["base"] + "/api/hosts/linux/restart/dashboard"
    refused = requests.post(url, cookies=cookies, timeout=30)
    assert refused.status_code == 403 and "CSRF" in refused.json()["error"]
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator('section.card[data-host="linux"] tr[data-actions="dashboard"] button', has_text="restart").click()
    page.wait_for_selector("#result:not([hidden])", timeout=60000)
    assert re.match(r"linux: dashboard up at http://127\.0\.0\.1:5000 \(pid \d+, [\d.]+ s\)",
                    page.locator("#result").inner_text())


HOSTILE_BOT = """import os, socket, time
address = os.environ["NOTIFY_SOCKET"]
address = "\\0" + address[1:] if address.startswith("@") else address
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
sock.sendto(b"READY=1\\nSTATUS=<img src=x onerror=document.title='pwned'> \\x1b[31mred", address)
time.sleep(3600)
"""


def test_hostile_text_from_a_host_is_shown_as_text(lab, page):
    """A bot's STATUS= line is the bot's to write: markup in it must reach the page as text."""
    from dashproc import invoke

    script = lab.dir / "hostile_bot.py"
    script.write_text(HOSTILE_BOT)
    script.chmod(0o644)
    inventory = bot_inventory(lab, lab.dir / "inv-hostile.yml", linux_bot="/usr/bin/python3 %s" % script)
    try:
        out = invoke(inventory, "restart", "--host", "linux")
        assert out.returncode == 0, out.stdout + out.stderr
        wait_for(lambda: "<img src=x" in card_text(page, "linux"), 40, "the bot's STATUS line on the page")
        assert page.title() != "pwned" and page.locator("section.card img").count() == 0
        assert "\x1b" not in card_text(page, "linux")  # the supervisor keeps printable characters only
    finally:
        invoke(lab.fleet_inventory, "restart", "--host", "linux")  # back to the example bot


def _ctl_logs(uid):
    return processes(lambda argv: b"remote.host.ctl" in argv and b"logs" in argv, uid)


def test_the_log_pane_follows_new_lines_and_picking_another_ends_the_first_on_the_host(lab, page):
    linux = lab.hosts["linux"]
    page.select_option("#log-host", "linux")
    page.select_option("#log-service", "supervisor")
    page.click("#log-follow")
    wait_for(lambda: "supervisor[" in page.locator("#log").inner_text(), 30, "the supervisor log's backlog")
    line = "a line from the test <b>%d</b>" % os.getpid()
    with open(os.path.join(linux.app_dir, "logs", "supervisor.log"), "a") as handle:
        handle.write(line + "\n")
    wait_for(lambda: line in page.locator("#log").inner_text(), 30, "the new line in the pane")
    assert page.locator("#log b").count() == 0  # text, not markup
    first = wait_for(lambda: _ctl_logs(linux.user.pw_uid), 20, "ctl logs running on the host")
    page.select_option("#log-service", "dashboard")
    page.click("#log-follow")
    wait_for(lambda: set(_ctl_logs(linux.user.pw_uid)).isdisjoint(first) and _ctl_logs(linux.user.pw_uid), 20,
             "the first follow ended on the host, the second runs")


def sign_in(context, url, token):
    tab = context.new_page()
    tab.goto(url)
    tab.fill("input[name=token]", token)
    tab.click("button[type=submit]")
    tab.wait_for_selector("#services-card", timeout=20000)
    return tab


def test_open_dashboard_tunnels_only_to_a_dashboard_with_a_token_and_the_cookies_stay_apart(lab, page, fleet):
    """Two hosts' dashboards, both on their port 5000, tunnelled to this machine: cookies do not tell
    ports apart, so each tunnel has a loopback address of its own (a hostile host's page cannot read
    or forge the others' cookies), and each cookie a name of its own."""
    from dashproc import invoke

    linux, termux = lab.hosts["linux"], lab.hosts["termux"]
    page.locator('section.card[data-host="termux"] button.tunnel').click()
    wait_for(lambda: "has no DASHBOARD_TOKEN" in page.locator("#result").inner_text(), 30, "the refusal")
    tokens = {name: "fleet-test-token-%s-%d" % (name, os.getpid()) for name in ("linux", "termux")}
    for host in (linux, termux):
        write_env(host, DASHBOARD_TOKEN=tokens[host.name])
    try:
        assert invoke(lab.fleet_inventory, "restart", "--all").returncode == 0
        cookies = {c["name"]: c["value"] for c in page.context.cookies()}
        csrf = page.locator('meta[name="csrf-token"]').get_attribute("content")
        urls = {}
        for name in tokens:
            url = fleet["base"] + "/api/hosts/%s/tunnel" % name
            urls[name] = wait_for(lambda url=url: requests.post(
                url, cookies=cookies, headers={"X-CSRF-Token": csrf}, timeout=30).json().get("url"), 30, "a tunnel")
        addresses = {name: re.match(r"http://(127\.[\d.]+):\d+/$", url).group(1) for name, url in urls.items()}
        assert len(set(addresses.values()) | {"127.0.0.1"}) == 3  # an address each, not the fleet's
        health = requests.get(urls["linux"] + "healthz", timeout=10).json()
        assert health["release"] == os.path.basename(os.path.realpath(os.path.join(linux.app_dir, "current")))
        assert requests.get(urls["linux"], timeout=10).status_code == 401  # the host's own login, not an open page
        tabs = [sign_in(page.context, urls[name], tokens[name]) for name in ("linux", "termux")]
        names = sorted(c["name"] for c in page.context.cookies())
        boards = [n for n in names if n.startswith("sulfur_dashboard_5000_")]
        assert "sulfur_fleet_%d" % fleet["port"] in names and len(boards) == 2  # three cookies, none replaced
        for name, url in urls.items():  # a tunnelled page gets its own cookie only: none to read or forge
            seen = [c["name"] for c in page.context.cookies(url)]
            assert len(seen) == 1 and seen[0].startswith("sulfur_dashboard_5000_"), (name, seen)
        for name, url in urls.items():  # signing in to termux's did not sign linux's out
            assert page.context.request.get(url + "api/status").status == 200, name
        fresh = {c["name"]: c["value"] for c in page.context.cookies()}
        assert requests.get(fleet["base"] + "/api/hosts", cookies=fresh, timeout=10).status_code == 200
        for tab in tabs:
            tab.close()
    finally:
        for host in (linux, termux):
            write_env(host)
        invoke(lab.fleet_inventory, "restart", "--all")


def test_the_failover_button_moves_the_bot_and_needs_the_csrf_token(lab, page, fleet):
    linux, termux = lab.hosts["linux"], lab.hosts["termux"]
    wait_for(lambda: len(linux.bots()) == 1 and not termux.bots(), 30, "the bot on linux only")
    page.wait_for_selector('section.card[data-host="linux"] tr[data-service="bot"] td.state-running', timeout=30000)
    cookies = {c["name"]: c["value"] for c in page.context.cookies()}
    csrf = page.locator('meta[name="csrf-token"]').get_attribute("content")
    url = fleet["base"] + "/api/failover"
    refused = requests.post(url, json={"to": "termux"}, cookies=cookies, timeout=30)
    assert refused.status_code == 403 and "CSRF" in refused.json()["error"]
    wrong = requests.post(url, json={"to": "nowhere"}, cookies=cookies, headers={"X-CSRF-Token": csrf}, timeout=30)
    assert wrong.status_code == 400
    assert len(linux.bots()) == 1 and not termux.bots()  # neither moved it
    assert page.locator('section.card[data-host="linux"] button.failover').count() == 0  # it runs there
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator('section.card[data-host="termux"] button.failover').click()
    wait_for(lambda: "termux: now:" in page.locator("#result").inner_text(), 90, "the failover's answer")
    lines = page.locator("#result").inner_text().splitlines()
    assert re.match(r"linux: epoch \d+ belongs to termux; bot stopped \(pid \d+\); role standby$", lines[0]), lines
    assert re.match(r"termux: bot running \(pid \d+\), up 5 s; role active; epoch \d+$", lines[1]), lines
    assert not linux.bots() and len(termux.bots()) == 1
    page.wait_for_selector('section.card[data-host="linux"] button.failover', timeout=30000)  # it can go back
    row = 'section.card[data-host="linux"] tr[data-service="bot"]'
    assert "running" not in page.inner_text(row) and "state-running" not in page.inner_html(row)
    page.wait_for_selector('section.card[data-host="termux"] tr[data-service="bot"] td.state-running', timeout=30000)
    assert page.locator("#banner").is_hidden()  # one bot, one host


def test_with_the_page_open_a_stale_bot_is_stopped_soon_after_its_hosts_link_comes_back(lab, page, fleet):
    """The bot runs on termux (the failover button's test moved it there); termux drops off the
    network, its bot going on; the bot is taken over on linux; termux comes back. The page's link
    fences it by itself, and the banner names what it did."""
    from dashproc import invoke

    linux, termux = lab.hosts["linux"], lab.hosts["termux"]
    wait_for(lambda: len(termux.bots()) == 1 and not linux.bots(), 30, "the bot on termux only")
    stale = termux.bots()[0]
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    host_side = re.search(r"\d+: (sl%dh\d+)@" % termux.index, links).group(1)
    subprocess.run(["ip", "link", "set", host_side, "down"], check=True)  # a partition: the bot goes on
    try:
        page.wait_for_selector('section.card.down[data-host="termux"]', timeout=45000)
        out = invoke(lab.fleet_inventory, "failover", "--to", "linux", "--takeover", "--settle", "2")
        assert out.returncode == 0, out.stdout + out.stderr
        legit = wait_for(lambda: linux.bots(), 30, "the bot on linux")
        assert termux.bots() == [stale]  # two bots: what the page's fencing ends
    finally:
        subprocess.run(["ip", "link", "set", host_side, "up"], check=True)
    wait_for(lambda: not termux.bots(), 90, "the stale bot stopped by the page")
    assert linux.bots() == legit  # the legitimate one never stopped
    wait_for(lambda: "by this page: termux: fenced: epoch" in page.locator("#banner").inner_text(), 30,
             "the banner naming what the page did")
    wait_for(lambda: "role standby, fenced: epoch" in card_text(page, "termux"), 30, "the card saying it is fenced")
    log = open(os.path.join(termux.app_dir, "logs", "supervisor.log")).read()
    assert "fenced: epoch" in log and "belongs to linux since" in log
