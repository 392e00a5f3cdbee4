"""Fan-out: `invoke port-status --all --json` on 1, 5, 10 and 20 linux test hosts, against references.

Needs root (it builds the SSH test hosts of tests/sshlab.py). For each host count it prints the median
wall time of 5 runs, the SSH connections and execs each host saw (counted in its sshd log), and in the
same run on the same hosts: the floor, plain OpenSSH `ssh HOST ss -Htln` to every host in parallel
(xargs -P), and Ansible's community.general.listen_ports_facts when `ansible` is installed
(`make bench` installs it from requirements-bench.txt).

One host goes through the system's ssh client (remote/openssh.py): its row has three times the runs,
its figures being a few hundredths of a second apart, and a second floor beside it, OpenSSH with the
key exchange ours offers first (curve25519), so that both comparisons are in view. Python writes its
bytecode here as on any user's machine (PYTHONDONTWRITEBYTECODE, set by some shells, is dropped).

    sudo .venv/bin/python bench/fanout.py [--counts 1,10,30] [--runs 5]
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
import sshlab  # noqa: E402


def timed(argv, env=None, stdin=None):
    started = time.perf_counter()
    out = subprocess.run(argv, env=env, input=stdin, capture_output=True, text=True, cwd=ROOT)
    elapsed = time.perf_counter() - started
    if out.returncode != 0:
        raise SystemExit("failed: %s\n%s%s" % (" ".join(argv[:4]), out.stdout[-2000:], out.stderr[-2000:]))
    return elapsed, out.stdout


def median_of(runs, argv, env=None, stdin=None):
    timed(argv, env, stdin)  # warm-up: page cache, first connection
    return statistics.median(timed(argv, env, stdin)[0] for _ in range(runs))


def log_counts(hosts):
    counts = []
    for host in hosts:
        text = host.sshd_log.read_text()
        counts.append((text.count("Accepted publickey"), text.count("Starting session: command")))
    return counts


def ours(lab, hosts, runs):
    inventory = lab.inventory(hosts, lab.dir / ("bench-%d.yml" % len(hosts)))
    env = dict(os.environ, SULFUR_INVENTORY=str(inventory))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    argv = [sys.executable, "-m", "invoke", "port-status", "--all", "--json", "--parallel", "32"]
    wall = median_of(runs, argv, env)
    before = log_counts(hosts)
    _, out = timed(argv, env)
    docs = json.loads(out)
    assert len(docs) == len(hosts) and all(d["ok"] for d in docs), docs
    after = log_counts(hosts)
    conns = {a[0] - b[0] for a, b in zip(after, before)}
    execs = {a[1] - b[1] for a, b in zip(after, before)}
    return wall, conns, execs


def openssh_floor(lab, hosts, runs, extra=()):
    ssh = ["ssh", "-i", str(lab.client_key), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
           "-o", "UserKnownHostsFile=%s" % lab.known_hosts, "-l", "sulfur-linux", *extra]
    argv = ["xargs", "-P", str(len(hosts)), "-I{}"] + ssh + ["{}", "ss", "-Htln"]
    return median_of(runs, argv, stdin="\n".join(h.address for h in hosts) + "\n")


def ansible_bin():
    found = shutil.which("ansible") or str(Path(sys.executable).with_name("ansible"))
    return found if os.path.exists(found) else None


def ansible(lab, hosts, runs, binary):
    inventory = lab.dir / ("ansible-%d.ini" % len(hosts))
    inventory.write_text("[bench]\n" + "".join(
        "%s ansible_user=sulfur-linux ansible_python_interpreter=/usr/bin/python3\n" % h.address for h in hosts))
    env = dict(os.environ, ANSIBLE_PRIVATE_KEY_FILE=str(lab.client_key), ANSIBLE_HOST_KEY_CHECKING="True",
               ANSIBLE_SSH_ARGS="-o UserKnownHostsFile=%s -o ControlMaster=no" % lab.known_hosts,
               ANSIBLE_LOCAL_TEMP=str(lab.dir / "ansible-tmp"), ANSIBLE_NOCOLOR="1")
    argv = [binary, "bench", "-i", str(inventory), "-f", str(len(hosts)), "-m",
            "community.general.listen_ports_facts"]
    return median_of(runs, argv, env)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", default="1,10,30")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    reason = sshlab.available()
    if reason:
        raise SystemExit("bench/fanout.py %s" % reason)
    counts = [int(c) for c in args.counts.split(",")]
    binary = ansible_bin()
    lab = sshlab.Lab()
    try:
        hosts = [lab.add("linux") for _ in range(max(counts))]
        print("port-status --all --json, median of %d runs (%d for one host; 2 cores shared by every host)"
              % (args.runs, args.runs * 3))
        print("%5s  %9s  %9s  %7s  %9s  %8s  %s" % ("hosts", "ours", "openssh", "ratio", "ansible",
                                                     "speedup", "ssh conns/execs per host"))
        for n in counts:
            runs = args.runs * (3 if n == 1 else 1)
            wall, conns, execs = ours(lab, hosts[:n], runs)
            floor = openssh_floor(lab, hosts[:n], runs)
            ans = ansible(lab, hosts[:n], runs, binary) if binary else None
            print("%5d  %8.3fs  %8.3fs  %6.2fx  %9s  %8s  %s/%s" % (
                n, wall, floor, wall / floor, "%.3fs" % ans if ans else "-",
                "%.1fx" % (ans / wall) if ans else "-", ",".join(map(str, conns)), ",".join(map(str, execs))))
            if n == 1:
                same_kex = openssh_floor(lab, hosts[:1], runs, ("-o", "KexAlgorithms=curve25519-sha256"))
                print("%5s  (OpenSSH with curve25519, the key exchange ours offers first: %.3fs, ours %.2fx that)"
                      % ("", same_kex, wall / same_kex))
        if not binary:
            print("(ansible not installed: `make bench` installs it to compare)")
    finally:
        lab.close()


if __name__ == "__main__":
    main()
