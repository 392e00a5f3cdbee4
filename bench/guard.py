"""The exactly-once guard's cost: `invoke restart --host h1` with 10 hosts in the inventory (the other
9 asked what they run, in parallel with the restart's own connection) against the same restart with
h1 alone in the inventory (nobody to ask), every host with a bot. Also with one of the 9 down (its
sshd stopped).

Needs root (it builds the SSH test hosts of tests/sshlab.py); h1 gets a real release, the others
answer "no release" (one connection and one exec each, as a host with a release does).

    sudo .venv/bin/python bench/guard.py [--runs 5]
"""

import argparse
import os
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


def with_bot(inventory):
    """Every host runs a bot (a sleep will do): without one there is nothing to check, nobody is asked."""
    inventory.write_text(inventory.read_text().replace("  connect_timeout: 5", "  connect_timeout: 5\n"
                                                       "  bot_command: sleep 86400"))
    return inventory


def restart_time(inventory, cache):
    env = dict(os.environ, SULFUR_INVENTORY=str(inventory), XDG_CACHE_HOME=str(cache))
    argv = [sys.executable, "-m", "invoke", "restart", "--host", "h1", "--service", "dashboard"]
    started = time.perf_counter()
    out = subprocess.run(argv, env=env, capture_output=True, text=True, cwd=ROOT)
    elapsed = time.perf_counter() - started
    if out.returncode != 0:
        raise SystemExit("restart failed:\n%s%s" % (out.stdout, out.stderr))
    return elapsed


def interleaved(runs, variants, cache):
    """Median per variant, the variants taking turns so that the machine's drift hits all alike."""
    times = {name: [] for name in variants}
    for path in variants.values():
        restart_time(path, cache)  # warm-up
    for _ in range(runs):
        for name, path in variants.items():
            times[name].append(restart_time(path, cache))
    return {name: statistics.median(values) for name, values in times.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    if sshlab.available():
        raise SystemExit("bench/guard.py: %s" % sshlab.available())
    lab = sshlab.Lab()
    try:
        hosts = [lab.add("linux", "h%d" % i) for i in range(1, 11)]
        alone = with_bot(lab.inventory(hosts[:1], lab.dir / "alone.yml"))
        lab.inventory_path = alone
        lab.install_release(stop=False)
        ten = with_bot(lab.inventory(hosts, lab.dir / "ten.yml"))
        cache = Path(tempfile.mkdtemp(dir=lab.dir))
        medians = interleaved(args.runs, {"h1 alone in the inventory": alone, "10 hosts in the inventory": ten},
                              cache)
        hosts[-1].stop_sshd()
        medians["10 hosts, one of them down"] = interleaved(args.runs, {"down": ten}, cache)["down"]
        base = medians["h1 alone in the inventory"]
        print("invoke restart --host h1 (dashboard on the held socket), median of %d, interleaved:" % args.runs)
        for name, value in medians.items():
            print("  %-28s %.2f s   guard adds %+.2f s" % (name, value, value - base))
    finally:
        lab.close()


if __name__ == "__main__":
    main()
