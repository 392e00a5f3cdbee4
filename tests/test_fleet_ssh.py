"""`invoke fleet` against the SSH test hosts (linux and termux), in real Chromium: every card with its
host's states, a killed dashboard shown, a host whose network link goes down greyed while the other
keeps updating (and back), actions only with the session's CSRF token, hostile text shown as text."""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import requests
import sshlab
from dashproc import ROOT, free_port, wait_for

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [pytest.mark.skipif(sshlab.available() is not None, reason=str(sshlab.available())),
              pytest.mark.skipif(not CHROMIUM, reason="needs chromium")]


@pytest.fixture(scope="module")
def lab():
    with sshlab.lab_with("linux", "termux") as lab:
        lab.install_release(stop=False)
        yield lab


@pytest.fixture(scope="module")
def fleet(lab):
    port = free_port()
    env = dict(os.environ, SULFUR_INVENTORY=str(lab.inventory_path), XDG_CACHE_HOME=str(lab.dir / "cache"))
    proc = subprocess.Popen([sys.executable, "-m", "invoke", "fleet", "--port", str(port), "--no-browser"], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    match = re.search(r"page at (http://127\.0\.0\.1:\d+/\?token=\S+)", line)
    assert match, line + proc.stderr.read()
    assert line.startswith("fleet: 2 hosts, page at ")
    yield {"proc": proc, "url": match.group(1), "port": port, "base": "http://127.0.0.1:%d" % port}
    proc.send_signal(2)
    proc.wait(timeout=20)


@pytest.fixture(scope="module")
def page(fleet):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        context = browser.new_context(viewport={"width": 1280, "height": 900})  # one cookie jar, several tabs
        tab = context.new_page()
        tab.goto(fleet["url"])
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
    page.wait_for_selector('section.card[data-host="linux"] .chart canvas', timeout=60000)  # its CPU chart
    # the token was for one use: a second browser with the same link is refused
    assert requests.get(fleet["url"], timeout=5).status_code == 403
    assert requests.get(fleet["base"] + "/api/hosts", timeout=5).status_code == 401


def test_a_killed_dashboard_shows_on_its_card(lab, page):
    linux = lab.hosts["linux"]
    state = json.loads(open(os.path.join(linux.app_dir, "run", "state.json")).read())
    old = state["services"]["dashboard"]["pid"]
    os.kill(old, 9)
    page.wait_for_function(
        "p => { const t = document.querySelector('section.card[data-host=\"linux\"] tr[data-service=\"dashboard\"]');"
        " return t && !t.innerText.includes(String(p)) && t.innerText.includes('running'); }", arg=old, timeout=30000)
    row = page.locator('section.card[data-host="linux"] tr[data-service="dashboard"]').inner_text()
    assert "running" in row and str(old) not in row


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


def test_actions_need_the_csrf_token_and_answer_with_the_clis_line(lab, page, fleet):
    cookies = {c["name"]: c["value"] for c in page.context.cookies()}
    assert list(cookies) == ["sulfur_fleet_%d" % fleet["port"]]  # its own name: a dashboard's cookie stays
    url = fleet["base"] + "/api/hosts/linux/restart/dashboard"
    refused = requests.post(url, cookies=cookies, timeout=30)
    assert refused.status_code == 403 and "CSRF" in refused.json()["error"]
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator('section.card[data-host="linux"] tr[data-service="dashboard"] button', has_text="restart").click()
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
    inventory = lab.dir / "inv-hostile.yml"
    inventory.write_text(lab.inventory_path.read_text().replace(
        "  linux: {", "  linux: {bot_command: '/usr/bin/python3 %s', " % script))
    try:
        out = invoke(inventory, "restart", "--host", "linux")
        assert out.returncode == 0, out.stdout + out.stderr
        wait_for(lambda: "<img src=x" in card_text(page, "linux"), 40, "the bot's STATUS line on the page")
        assert page.title() != "pwned" and page.locator("section.card img").count() == 0
        assert "\x1b" not in card_text(page, "linux")  # the supervisor keeps printable characters only
    finally:
        invoke(lab.inventory_path, "restart", "--host", "linux")  # back to no bot


def _ctl_logs(uid):
    found = []
    for entry in os.listdir("/proc"):
        try:
            if entry.isdigit() and os.stat("/proc/" + entry).st_uid == uid:
                cmd = open("/proc/%s/cmdline" % entry, "rb").read().split(b"\0")
                if b"remote.host.ctl" in cmd and b"logs" in cmd:
                    found.append(int(entry))
        except OSError:
            continue
    return found


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


def test_open_dashboard_tunnels_only_to_a_dashboard_with_a_token_and_the_cookies_stay_apart(lab, page, fleet):
    from dashproc import invoke

    linux = lab.hosts["linux"]
    page.locator('section.card[data-host="termux"] button.tunnel').click()
    wait_for(lambda: "has no DASHBOARD_TOKEN" in page.locator("#result").inner_text(), 30, "the refusal")
    token = "fleet-test-token-%d" % os.getpid()
    env = os.path.join(linux.app_dir, "shared", ".env")
    with open(env, "w") as handle:
        handle.write("DASHBOARD_TOKEN=%s\n" % token)
    os.chown(env, linux.user.pw_uid, linux.user.pw_gid)
    os.chmod(env, 0o600)
    try:
        assert invoke(lab.inventory_path, "restart", "--host", "linux").returncode == 0
        cookies = {c["name"]: c["value"] for c in page.context.cookies()}
        csrf = page.locator('meta[name="csrf-token"]').get_attribute("content")
        url = fleet["base"] + "/api/hosts/linux/tunnel"
        answer = wait_for(lambda: requests.post(url, cookies=cookies, headers={"X-CSRF-Token": csrf},
                                                timeout=30).json().get("url"), 30, "a tunnel once the token shows")
        health = requests.get(answer + "healthz", timeout=10).json()
        assert health["release"] == os.path.basename(os.path.realpath(os.path.join(linux.app_dir, "current")))
        assert requests.get(answer, timeout=10).status_code == 401  # the host's own login, not an open page
        tab = page.context.new_page()
        tab.goto(answer)
        tab.fill("input[name=token]", token)
        tab.click("button[type=submit]")
        tab.wait_for_selector("#services-card", timeout=20000)
        names = sorted(c["name"] for c in page.context.cookies())
        assert "sulfur_fleet_%d" % fleet["port"] in names and any(n.startswith("sulfur_dashboard_") for n in names)
        fresh = {c["name"]: c["value"] for c in page.context.cookies()}
        assert requests.get(fleet["base"] + "/api/hosts", cookies=fresh, timeout=10).status_code == 200
        tab.close()
    finally:
        os.unlink(env)
        invoke(lab.inventory_path, "restart", "--host", "linux")
