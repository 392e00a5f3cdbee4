"""`invoke deploy` of a one-line change, `invoke rollback` and `invoke deploy --plan` on 2 SSH test hosts.

The hosts are tests/sshlab.py's linux and termux test hosts; the requirements stay those of the running
release (the venv is reused, as on any deploy that changes code only). Each figure is the wall time
of the whole command as a user types it, median of the runs; the deploy's own timings (--json) show
where its time goes, per step, median over runs and hosts. The dashboard-only rows are the target;
the bot rows deploy the same with a bot on each host (a shard each): one that says READY=1, whose
start is confirmed at READY (plus 0.5 s), and one that never does, which must stay up BOT_GRACE s.
Bot runs are spaced by the 5 s between a bot's logins, so that they do not wait their turn.

    sudo .venv/bin/python bench/deploy.py [--runs 5]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))
import sshlab  # noqa: E402

from remote.host.releases.release import BOT_GRACE  # noqa: E402

STEPS = ("pack", "space", "upload", "unpack", "prepare", "venv", "switch", "restart", "health", "bot")
HOST_STEPS = ("unpack", "prepare", "venv", "before_switch", "switch", "restart", "health", "bot", "after_switch")


def timed(inventory, *args):
    env = dict(os.environ, SULFUR_INVENTORY=str(inventory), XDG_CACHE_HOME=str(Path(inventory).parent / "cache"))
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "invoke", *args], env=env, capture_output=True, text=True, cwd=ROOT)
    elapsed = time.perf_counter() - started
    if out.returncode != 0:
        raise SystemExit("invoke %s failed:\n%s%s" % (" ".join(args), out.stdout, out.stderr))
    return elapsed, out.stdout


#: the bot: READY=1 once "logged in" when SAY_READY is set in its environment (the .env)
BOT = """import os, socket, time
print('bot up', flush=True)
path = os.environ.get('NOTIFY_SOCKET', '')
if path and os.environ.get('SAY_READY'):
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(b'READY=1', '\\0' + path[1:] if path.startswith('@') else path)
while True:
    time.sleep(1)
"""


def one_line_change(source, run):
    (source / "sulfur_bot" / "version.py").write_text("VERSION = %d\n" % run)


def measure(inventory, source, runs, bot):
    """Figures for `runs` deploys (each with a one-line change), rollbacks and plans, taken in turns."""
    walls = {"deploy": [], "rollback": [], "plan": []}
    steps = {}
    for run in range(runs):
        time.sleep(5.5 if bot else 1.0)  # a stamp of its own; a bot's next login allowed (5 s spacing)
        one_line_change(source, run + (1000 if bot else 0))
        elapsed, out = timed(inventory, "deploy", "--wheels", "--json")
        walls["deploy"].append(elapsed)
        for doc in json.loads(out):
            timings = doc["timings"]
            inside = sum(timings.get(name, 0.0) for name in HOST_STEPS)
            timings["exec, lock, guard"] = timings["host"] - inside
            measured = timings["pack"] + timings["space"] + timings["upload"] + timings["host"]
            timings["invoke start, ssh, bot check"] = elapsed - measured
            for name, value in timings.items():
                steps.setdefault(name, []).append(value)
        walls["plan"].append(timed(inventory, "deploy", "--plan")[0])
        time.sleep(5.5 if bot else 0.0)
        walls["rollback"].append(timed(inventory, "rollback")[0])
        time.sleep(5.5 if bot else 1.0)
        timed(inventory, "deploy", "--wheels")  # back on a new release: the next run rolls back from it
    return walls, steps


def report(title, walls, steps, runs):
    print("%s, median of %d runs (2 hosts in parallel):" % (title, runs))
    for name, values in walls.items():
        print("  %-34s %.2f s" % ({"deploy": "deploy of a one-line change", "plan": "deploy --plan",
                                   "rollback": "rollback"}[name], statistics.median(values)))
    print("  where a deploy's time goes (median per host):")
    order = [n for n in STEPS if n in steps] + ["exec, lock, guard", "invoke start, ssh, bot check"]
    for name in order:
        print("    %-32s %.3f s" % (name, statistics.median(steps[name])))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    if sshlab.available():
        raise SystemExit("bench/deploy.py: %s" % sshlab.available())
    with sshlab.lab_with("linux", "termux") as lab:
        source = lab.dir / "bot"
        (source / "sulfur_bot").mkdir(parents=True)
        (source / "requirements.txt").write_text("")
        (source / "sulfur_bot" / "__main__.py").write_text(BOT)
        one_line_change(source, 0)
        base = lab.inventory_path.read_text().replace(
            "  connect_timeout: 5", "  connect_timeout: 5\n  source: %s\n  keep_releases: 20" % source)
        dashboard = lab.dir / "dashboard.yml"
        dashboard.write_text(base)
        with_bot = lab.dir / "bot.yml"
        with_bot.write_text(base.replace("  keep_releases: 20", "  keep_releases: 20\n  bot_command: python -m "
                                         "sulfur_bot\n  shard_count: 2").replace(
            "  linux: {", "  linux: {shards: '0', ").replace("  termux: {", "  termux: {shards: '1', "))
        timed(dashboard, "deploy", "--wheels")  # warm-up: wheels built, venv made on each host
        time.sleep(1.0)
        timed(dashboard, "deploy", "--wheels")
        walls, steps = measure(dashboard, source, args.runs, bot=False)
        report("dashboard only", walls, steps, args.runs)
        for notify in (True, False):
            for host in lab.hosts.values():
                env = Path(host.app_dir, "shared", ".env")
                env.parent.mkdir(parents=True, exist_ok=True)
                env.write_text("SAY_READY=1\n" if notify else "")
                os.chown(env, host.user.pw_uid, host.user.pw_gid)
                os.chown(env.parent, host.user.pw_uid, host.user.pw_gid)
                Path(host.app_dir, "run", "bot-notify").unlink(missing_ok=True)  # learned again, or never
            time.sleep(5.5)
            timed(with_bot, "deploy", "--wheels")
            walls, steps = measure(with_bot, source, args.runs if notify else max(1, args.runs // 2), bot=True)
            report("with a bot that says READY=1 (confirmed at READY + 0.5 s)" if notify else
                   "with a bot that never says READY=1 (it must stay up %.0f s)" % BOT_GRACE, walls, steps,
                   args.runs if notify else max(1, args.runs // 2))


if __name__ == "__main__":
    main()
