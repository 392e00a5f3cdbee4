"""`invoke fleet` on 10 SSH test hosts, measured in headless Chromium.

Each host (tests/sshlab.py, linux profile) runs a real release with a bot (a sleep will do) and 24 h of
history in its ring (written before the fleet starts, as a day of sampling would have). Prints:
start -> every card filled; kill -9 of a bot -> the page shows it, and it running again; the
operator's and the hosts' `ctl watch` CPU while idle over 60 s; the ring's bytes per host per day;
how long /api/hosts?history=1 (24 h x 10 hosts) takes and weighs.

    sudo .venv/bin/python bench/fleet.py [--hosts 10] [--idle 60] [--runs 5]
"""

import argparse
import json
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

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids):
    total = 0
    for pid in pids:
        try:
            fields = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return total / TICK


def tree(pid):
    """``pid`` and its descendants."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        try:
            children = open("/proc/%d/task/%d/children" % (current, current)).read().split()
        except OSError:
            children = []
        todo += [int(c) for c in children]
    return found


def watches():
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmd = open("/proc/%s/cmdline" % entry, "rb").read().split(b"\0")
            except OSError:
                continue
            if b"remote.host.ctl" in cmd and b"watch" in cmd:
                out.append(int(entry))
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=10)
    parser.add_argument("--idle", type=float, default=60.0)
    parser.add_argument("--runs", type=int, default=5, help="fleet starts measured (default 5)")
    args = parser.parse_args()
    if sshlab.available():
        raise SystemExit("bench/fleet.py: %s" % sshlab.available())
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    from playwright.sync_api import sync_playwright

    lab = sshlab.Lab()
    fleet = None
    try:
        hosts = [lab.add("linux", "h%d" % i) for i in range(1, args.hosts + 1)]
        lab.inventory_path = lab.inventory(hosts)
        lab.install_release(stop=True)
        # every host its own shard of one bot: each runs its bot, none refused as a second copy
        text = lab.inventory_path.read_text().replace("  connect_timeout: 5", "  connect_timeout: 5\n"
                                                      "  bot_command: sleep 86400\n  shard_count: %d" % args.hosts)
        for i, host in enumerate(hosts):
            text = text.replace("  %s: {" % host.name, "  %s: {shards: '%d', " % (host.name, i))
        lab.inventory_path.write_text(text)
        out = invoke(lab.inventory_path, "start", "--all")
        if out.returncode != 0:
            raise SystemExit("start failed:\n" + out.stdout + out.stderr)
        for host in hosts:
            host.a_day_of_history()
        port = free_port()
        env = dict(os.environ, SULFUR_INVENTORY=str(lab.inventory_path), XDG_CACHE_HOME=str(lab.dir / "cache"))
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
            starts, tab = [], None
            for _ in range(args.runs):  # the fleet started afresh each time; the last one stays for the rest
                if fleet is not None:
                    tab.close()
                    interrupt(fleet)
                tab = browser.new_page(viewport={"width": 1280, "height": 900})
                started = time.monotonic()
                fleet = subprocess.Popen([sys.executable, "-m", "invoke", "fleet", "--port", str(port),
                                          "--no-browser"], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
                url = re.search(r"(file://\S+)", fleet.stdout.readline()).group(1)  # the private sign-in file
                tab.goto(url)
                tab.wait_for_url("http://127.0.0.1:%d/" % port, timeout=30000)  # on from the file, signed in
                tab.wait_for_function("n => document.querySelectorAll('section.card td.state-running').length >= 2 * n"
                                      " && document.querySelectorAll('section.card .chart').length >= n",
                                      arg=args.hosts, timeout=120000)
                starts.append(time.monotonic() - started)
            state = json.loads(Path(hosts[0].app_dir, "run", "state.json").read_text())
            bot_pid = state["services"]["bot"]["pid"]
            killed = time.monotonic()
            os.kill(bot_pid, 9)
            row = 'section.card[data-host="h1"] tr[data-service="bot"]'
            tab.wait_for_function("([s, p]) => { const r = document.querySelector(s); return r &&"
                                  " !r.innerText.includes('running\\t' + p); }", arg=[row, bot_pid], timeout=60000)
            shown = time.monotonic() - killed
            tab.wait_for_function("([s, p]) => { const r = document.querySelector(s); return r && "
                                  "r.innerText.includes('running') && !r.innerText.includes(String(p)); }",
                                  arg=[row, bot_pid], timeout=60000)
            back = time.monotonic() - killed
            time.sleep(5)
            operator, hosts_side = tree(fleet.pid), watches()
            before = (cpu_seconds(operator), {p: cpu_seconds([p]) for p in hosts_side})
            time.sleep(args.idle)
            after = (cpu_seconds(operator), {p: cpu_seconds([p]) for p in hosts_side})
            cookies = {c["name"]: c["value"] for c in tab.context.cookies()}
            import requests

            loaded = time.monotonic()
            data = requests.get("http://127.0.0.1:%d/api/hosts?history=1" % port, cookies=cookies, timeout=30)
            load_time = time.monotonic() - loaded
            samples = sum(len(h["history"].get("t", [])) for h in data.json()["hosts"])
            browser.close()
        host_cpu = [100 * (after[1][p] - before[1].get(p, 0)) / args.idle for p in after[1]]
        print("invoke fleet on %d SSH test hosts (linux), Chromium 1280x900:" % args.hosts)
        starts.sort()
        print("  start -> every card filled (states and charts) median %.2f s, %.2f-%.2f s over %d starts"
              "   (target <= 2 s)" % (starts[len(starts) // 2], starts[0], starts[-1], len(starts)))
        print("  kill -9 of a bot -> shown on its card          %.2f s   (target <= 2 s)" % shown)
        print("  ... and running again (restarted after 1 s)    %.2f s" % back)
        print("  operator CPU while idle over %.0f s             %.2f %% of one core   (target <= 3 %%)"
              % (args.idle, 100 * (after[0] - before[0]) / args.idle))
        print("  each host's ctl watch CPU, the same %.0f s      max %.2f %%, median %.2f %%   (target <= 1 %%)"
              % (args.idle, max(host_cpu), sorted(host_cpu)[len(host_cpu) // 2]))
        print("  history ring: %d bytes per host per day (a fixed file)"
              % os.path.getsize(Path(hosts[0].app_dir, "run", "history.bin")))
        print("  /api/hosts?history=1, 24 h x %d hosts: %.2f s, %.0f KB, %d samples   (target <= 1 s)"
              % (args.hosts, load_time, len(data.content) / 1024, samples))
    finally:
        if fleet is not None:
            interrupt(fleet)
        lab.close()


if __name__ == "__main__":
    main()
