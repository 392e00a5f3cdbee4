"""`invoke port-status --json` on hosts behind a jump host against the same number of direct hosts.

The hosts are alike (linux test hosts of tests/sshlab.py, one namespace each); the ones behind the jump
have no route from this machine and are reached through one connection to the jump (direct-tcpip
channels), which is opened once per task. Prints medians of the runs, taken in turns.

    sudo .venv/bin/python bench/jump.py [--hosts 5] [--runs 5]
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
import sshlab  # noqa: E402


def timed(inventory):
    env = dict(os.environ, SULFUR_INVENTORY=str(inventory))
    argv = [sys.executable, "-m", "invoke", "port-status", "--all", "--json"]
    started = time.perf_counter()
    out = subprocess.run(argv, env=env, capture_output=True, text=True, cwd=ROOT)
    elapsed = time.perf_counter() - started
    docs = json.loads(out.stdout or "[]")
    if out.returncode != 0 or not all(d["ok"] for d in docs):
        raise SystemExit("port-status failed:\n%s%s" % (out.stdout, out.stderr))
    return elapsed


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=5)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    if sshlab.available():
        raise SystemExit("bench/jump.py: %s" % sshlab.available())
    lab = sshlab.Lab()
    try:
        vps = lab.add("linux", "vps")
        direct = [lab.add("linux", "d%d" % i) for i in range(args.hosts)]
        behind = [lab.add("linux", "b%d" % i, behind=vps) for i in range(args.hosts)]
        inventories = {"direct": lab.inventory(direct, lab.dir / "direct.yml"),
                       "through the jump": lab.inventory([vps] + behind, lab.dir / "behind.yml")}
        # the second one lists the jump too (it is a host of --all): time it alone as well
        inventories["the jump host alone"] = lab.inventory([vps], lab.dir / "vps.yml")
        times = {name: [] for name in inventories}
        for path in inventories.values():
            timed(path)  # warm-up
        for _ in range(args.runs):
            for name, path in inventories.items():
                times[name].append(timed(path))
        print("invoke port-status --all --json, median of %d, taken in turns:" % args.runs)
        for name, values in times.items():
            print("  %-22s %.2f s" % (name, statistics.median(values)))
        print("  (%d hosts direct; %d behind the jump plus the jump itself)" % (args.hosts, args.hosts))
    finally:
        lab.close()


if __name__ == "__main__":
    main()
