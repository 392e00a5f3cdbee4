"""`invoke failover --to` with a bot that says READY=1 against one that never does, on 2 SSH test hosts.

The hosts are two linux test hosts of tests/sshlab.py (needs root). The bot writes a line with the time
every 20 ms; the downtime is the last line written on the host it leaves to the first one written on
the host it moves to (one clock: both hosts are this machine). `--no-data`, so that the figure is the
move of the process alone (bench/data.py measures carrying the data). The failover's wall time is the
whole command as typed, confirmation included: READY=1 plus 0.5 s for the bot that says it, `--settle`
(5 s, the default) for the one that does not. Runs are spaced by the 5 s between a bot's logins.

    sudo .venv/bin/python bench/failover.py [--runs 5]
"""

import argparse
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

#: a line with the time every 20 ms; READY=1 at once when SAY_READY is set (the .env)
BOT = """import os, socket, time
path = os.environ.get('NOTIFY_SOCKET', '')
if path and os.environ.get('SAY_READY'):
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(b'READY=1', '\\0' + path[1:] if path.startswith('@') else path)
while True:
    print('tick %.3f' % time.time(), flush=True)
    time.sleep(0.02)
"""


def invoke(inventory, *args):
    env = dict(os.environ, SULFUR_INVENTORY=str(inventory), XDG_CACHE_HOME=str(Path(inventory).parent / "cache"))
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "invoke", *args], env=env, capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        raise SystemExit("invoke %s failed:\n%s%s" % (" ".join(args), out.stdout, out.stderr))
    return time.perf_counter() - started


def ticks(host):
    """The times the bot wrote on ``host``, from its log (and the copy a cold start rotated away)."""
    found = []
    for name in ("bot.log.1", "bot.log"):
        try:
            text = Path(host.app_dir, "logs", name).read_text(errors="replace")
        except FileNotFoundError:
            continue
        found += [float(line.split()[-1]) for line in text.splitlines() if "tick " in line]
    return sorted(found)


def set_env(hosts, notify):
    for host in hosts:
        env = Path(host.app_dir, "shared", ".env")
        env.write_text("BOT_TOKEN=bench-failover-token\n" + ("SAY_READY=1\n" if notify else ""))
        os.chown(env, host.user.pw_uid, host.user.pw_gid)
        env.chmod(0o600)
        Path(host.app_dir, "run", "bot-notify").unlink(missing_ok=True)


def measure(inventory, hosts, runs):
    """(wall times, downtimes) of ``runs`` failovers, to and fro."""
    walls, downs = [], []
    for run in range(runs + 1):
        source, target = hosts[run % 2], hosts[(run + 1) % 2]
        time.sleep(5.5)
        started = time.time()
        wall = invoke(inventory, "failover", "--to", target.name, "--no-data")
        time.sleep(0.5)
        last_old = max([t for t in ticks(source) if t < started + wall] or [float("nan")])
        first_new = min([t for t in ticks(target) if t > started] or [float("nan")])
        if run:  # the first one teaches the host that the bot says READY=1 (run/bot-notify)
            walls.append(wall)
            downs.append(first_new - last_old)
    return walls, downs


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    if sshlab.available():
        raise SystemExit("bench/failover.py: %s" % sshlab.available())
    lab = sshlab.Lab()
    try:
        hosts = [lab.add("linux", "a"), lab.add("linux", "b")]
        (lab.dir / "tick_bot.py").write_text(BOT)
        (lab.dir / "tick_bot.py").chmod(0o644)
        lab.inventory_path = lab.inventory(hosts)
        lab.inventory_path.write_text(lab.inventory_path.read_text().replace(
            "  connect_timeout: 5", "  connect_timeout: 5\n  bot_command: python %s/tick_bot.py" % lab.dir))
        lab.install_release(stop=True)
        for notify in (True, False):
            set_env(hosts, notify)
            time.sleep(5.5)
            invoke(lab.inventory_path, "start", "--host", hosts[0].name)
            walls, downs = measure(lab.inventory_path, hosts, args.runs)
            print("failover --to --no-data, a bot that %s, median of %d (min-max):" % (
                "says READY=1" if notify else "never says READY=1 (--settle 5)", args.runs))
            print("  failover, start confirmed: %.2f s (%.2f-%.2f)   downtime, last line to first: %.2f s (%.2f-%.2f)"
                  % (statistics.median(walls), min(walls), max(walls), statistics.median(downs), min(downs),
                     max(downs)))
            invoke(lab.inventory_path, "stop", "--all")
    finally:
        lab.close()


if __name__ == "__main__":
    main()
