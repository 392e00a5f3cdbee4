"""`make screenshots`: the README's pictures of the fleet page, made from a real `invoke fleet`.

Three SSH test hosts (tests/sshlab.py, as root): pi and vps (linux) and phone (termux), each with a
real release, the example bot (demo mode, one token: pi active, the others on standby) and a day of
history in its ring, the pi's dashboard restarted twice. Writes docs/fleet.png (the page) and
docs/fleet-charts.png (a host's full-size charts). Never run by the tests, which write no tracked file.

    sudo .venv/bin/python tools/screenshots.py
"""

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))
import sshlab  # noqa: E402
from dashproc import free_port, interrupt, invoke  # noqa: E402

DOCS = ROOT / "docs"
ENV = "BOT_TOKEN=screenshot-token-of-the-example-bot\nEXAMPLE_BOT_DEMO=1\n"


def fail(message):
    raise SystemExit("tools/screenshots.py: %s" % message)


def main():
    if sshlab.available():
        fail(str(sshlab.available()))
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        fail("needs chromium (make test installs it)")
    from playwright.sync_api import sync_playwright

    lab = sshlab.Lab()
    fleet = None
    try:
        hosts = [lab.add("linux", "pi"), lab.add("linux", "vps"), lab.add("termux", "phone")]
        lab.inventory_path = lab.inventory(hosts)
        lab.install_release(stop=True)
        shutil.copy(ROOT / "examples" / "bot" / "bot.py", lab.dir / "bot.py")
        (lab.dir / "bot.py").chmod(0o644)
        text = lab.inventory_path.read_text()
        for host in hosts:
            standby = "" if host.name == "pi" else "standby: true, "
            text = text.replace("  %s: {" % host.name, "  %s: {bot_command: 'python %s/bot.py', %s"
                                % (host.name, lab.dir, standby))
            env = Path(host.app_dir, "shared", ".env")
            env.write_text(ENV)
            os.chown(env, host.user.pw_uid, host.user.pw_gid)
            env.chmod(0o600)
            host.a_day_of_history(restarts=(7, 2.5) if host.name == "pi" else ())
        lab.inventory_path.write_text(text)
        out = invoke(lab.inventory_path, "start", "--all")
        if out.returncode != 0:
            fail("start failed:\n" + out.stdout + out.stderr)
        port = free_port()
        env = dict(os.environ, SULFUR_INVENTORY=str(lab.inventory_path), XDG_CACHE_HOME=str(lab.dir / "cache"))
        fleet = subprocess.Popen([sys.executable, "-m", "invoke", "fleet", "--port", str(port), "--no-browser"],
                                 cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
        url = re.search(r"(file://\S+)", fleet.stdout.readline()).group(1)  # the private sign-in file
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 860})
            page.goto(url)
            page.wait_for_url("http://127.0.0.1:%d/" % port, timeout=30000)  # on from the file, signed in
            page.wait_for_function("document.querySelectorAll('section.card .sparks').length === 3", timeout=60000)
            page.wait_for_selector('section.card[data-host="pi"] tr[data-service="bot"] td.state-running',
                                   timeout=30000)
            page.select_option("#log-host", "pi")
            page.select_option("#log-service", "bot")
            page.click("#log-follow")
            time.sleep(6)  # a few of the bot's lines in the pane, and its STATUS on the card
            page.screenshot(path=str(DOCS / "fleet.png"))
            page.click('section.card[data-host="pi"] .sparks')
            page.wait_for_selector("dialog#detail[open] canvas", timeout=10000)
            page.locator("dialog#detail").screenshot(path=str(DOCS / "fleet-charts.png"))
            browser.close()
        for name in ("fleet.png", "fleet-charts.png"):
            print("wrote docs/%s (%d KB)" % (name, (DOCS / name).stat().st_size // 1024))
    finally:
        if fleet is not None:
            interrupt(fleet)
        lab.close()


if __name__ == "__main__":
    main()
