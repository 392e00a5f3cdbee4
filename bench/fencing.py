"""Fencing's figures on the SSH test hosts (tests/sshlab.py, linux profile), needs root:

- a partitioned host's link comes back while `invoke fleet` runs: time until its stale bot is gone;
- the same without the page: how long the one `invoke restart --all` that stands it down takes;
- the cost of reading epochs on `invoke status --all` at 10 hosts: this checkout against the commit
  before fencing (BEFORE, checked out with git worktree), interleaved, median of --runs.

    sudo .venv/bin/python bench/fencing.py [--runs 7] [--moves 3] [--before d1909e8]
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))
import sshlab  # noqa: E402
from dashproc import free_port, interrupt  # noqa: E402

TOKEN = "bench-fencing-token"


def run(inventory, cwd, *args):
    env = dict(os.environ, SULFUR_INVENTORY=str(inventory), XDG_CACHE_HOME=str(Path(inventory).parent / "cache"))
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "invoke", *args], cwd=cwd, env=env, capture_output=True, text=True)
    return time.perf_counter() - started, out


def bot_pid(host):
    """The host's bot, from its state (the lab's hosts of one profile share a user: no ps by user)."""
    return json.loads(Path(host.app_dir, "run", "state.json").read_text())["services"]["bot"].get("pid")


def alive(pid):
    if not pid:
        return False
    try:
        return Path("/proc/%d/stat" % pid).read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def link(host, up):
    subprocess.run(["ip", "link", "set", "sl%dh%d" % (host.index, os.getpid() % 1000), "up" if up else "down"],
                   check=True)


def wait(check, timeout):
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if check():
            return time.monotonic() - started
        time.sleep(0.05)
    raise SystemExit("not within %.0f s" % timeout)


def stale_after_partition(lab, inventory, one, two):
    """``one`` runs the bot; it is cut off, the bot taken over on ``two``; returns when ``one`` is back
    (its link up), its stale bot still running."""
    link(one, False)
    try:
        took, out = run(inventory, ROOT, "failover", "--to", two.name, "--takeover", "--settle", "1")
        if out.returncode != 0:
            raise SystemExit("failover failed:\n" + out.stdout + out.stderr)
    finally:
        link(one, True)
    if not alive(bot_pid(one)) or not alive(bot_pid(two)):
        raise SystemExit("expected a bot on both hosts after the partition")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--moves", type=int, default=3)
    parser.add_argument("--before", default="d1909e8", help="the commit before fencing (default d1909e8)")
    args = parser.parse_args()
    if sshlab.available():
        raise SystemExit("bench/fencing.py: %s" % sshlab.available())
    lab = sshlab.Lab()
    before = Path(tempfile.mkdtemp(prefix="sulfur-before-"))
    subprocess.run(["git", "worktree", "add", "--detach", str(before / "tree"), args.before], cwd=ROOT, check=True,
                   capture_output=True)
    os.symlink(ROOT / ".venv", before / "tree" / ".venv")
    fleet = None
    try:
        hosts = [lab.add("linux", "h%d" % i) for i in range(1, 11)]
        shutil.copy(ROOT / "examples" / "bot" / "bot.py", lab.dir / "bot.py")
        (lab.dir / "bot.py").chmod(0o644)
        lab.inventory_path = lab.inventory(hosts)
        lab.install_release(stop=True)
        for host in hosts:
            env = Path(host.app_dir, "shared", ".env")
            env.write_text("BOT_TOKEN=%s\nEXAMPLE_BOT_DEMO=1\n" % TOKEN)
            os.chown(env, host.user.pw_uid, host.user.pw_gid)
            env.chmod(0o600)
        text = lab.inventory_path.read_text().replace(
            "  connect_timeout: 5", "  connect_timeout: 5\n  bot_command: python %s/bot.py\n  standby: true" % lab.dir)
        inventory = lab.inventory_path
        inventory.write_text(text.replace("  h1: {", "  h1: {standby: false, "))
        took, out = run(inventory, ROOT, "start", "--all")
        if out.returncode != 0:
            raise SystemExit("start failed:\n" + out.stdout + out.stderr)
        # status --all at 10 hosts, before and after fencing, interleaved
        times = {"before": [], "after": []}
        for tree in (before / "tree", ROOT):
            run(inventory, tree, "status", "--all")  # warm-up
        for _ in range(args.runs):
            for name, tree in (("before", before / "tree"), ("after", ROOT)):
                times[name].append(run(inventory, tree, "status", "--all")[0])
        medians = {name: statistics.median(values) for name, values in times.items()}
        h1, h2 = hosts[0], hosts[1]
        # with the page open
        port = free_port()
        env = dict(os.environ, SULFUR_INVENTORY=str(inventory), XDG_CACHE_HOME=str(inventory.parent / "cache"))
        fleet = subprocess.Popen([sys.executable, "-m", "invoke", "fleet", "--port", str(port), "--no-browser"],
                                 cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(3)
        paged, pair = [], (h1, h2)
        for _ in range(args.moves):
            one, two = pair
            stale_after_partition(lab, inventory, one, two)
            stale = bot_pid(one)
            paged.append(wait(lambda stale=stale: not alive(stale), 60))
            pair = (two, one)
        interrupt(fleet)
        fleet = None
        tasked = []
        for _ in range(args.moves):
            one, two = pair
            stale_after_partition(lab, inventory, one, two)
            stale = bot_pid(one)
            took, out = run(inventory, ROOT, "restart", "--all")
            if alive(stale):
                raise SystemExit("restart --all left the stale bot:\n" + out.stdout + out.stderr)
            tasked.append(took)
            pair = (two, one)
        print("fencing on %d SSH test hosts (linux), the example bot, median of %d interleaved:" % (len(hosts),
                                                                                                  args.runs))
        print("  invoke status --all: %.3f s before fencing (%s), %.3f s with it: %+.3f s   (target <= +0.05 s)"
              % (medians["before"], args.before, medians["after"], medians["after"] - medians["before"]))
        print("  link back -> stale bot gone, fleet page open: median %.1f s, max %.1f s over %d   (target <= 10 s)"
              % (statistics.median(paged), max(paged), len(paged)))
        print("  link back, then invoke restart --all (which stands it down): median %.1f s, max %.1f s over %d"
              % (statistics.median(tasked), max(tasked), len(tasked)))
    finally:
        if fleet is not None:
            interrupt(fleet)
        lab.close()
        subprocess.run(["git", "worktree", "remove", "--force", str(before / "tree")], cwd=ROOT, capture_output=True)
        shutil.rmtree(before, ignore_errors=True)


if __name__ == "__main__":
    main()
