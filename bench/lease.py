"""The bot's etcd lease, its figures, with real supervisors on this machine and a real 3-member etcd
(TLS, auth), each host reaching it through forwarders of its own that count its requests and bytes
(tests/leaselab.py):

- unattended failover: the holder's supervisor and bot SIGKILLed (its last sign of life) to the other
  host's new bot saying READY=1, at lease_ttl 10s, ``--runs`` times, with the fleet's bots counted
  every 0.1 s (the overlap must be zero);
- steady state: etcd requests per host per minute (the holder renews, the standby watches) and the
  bytes they make (TLS included), scaled to a day, as a phone on mobile data would pay them.

    .venv/bin/python bench/lease.py [--runs 20] [--ttl 10] [--steady 60] [--suspends 3]
    sudo .venv/bin/python bench/lease.py --lab [--runs 10]   # on the SSH lab's linux and termux hosts
"""

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))
import etcdlab  # noqa: E402
from dashproc import wait_for  # noqa: E402
from leaselab import Fleet  # noqa: E402


def ready_pid(fleet, name):
    """The pid of ``name``'s bot once it said READY=1 (state.json is written at once when it does)."""
    bot = fleet.bot(name)
    return bot.get("pid") if bot.get("state") == "running" and bot.get("ready") else None


def requests(fleet, name):
    """The etcd requests the host's supervisor made so far (its state.json counts them, written at
    least every 5 s: over a minute, a few percent)."""
    return fleet.bot(name)["lease"]["etcd_requests"]


def steady(cluster, folder, ttl, seconds):
    fleet = Fleet(folder, cluster, "ab", ttl=ttl)
    try:
        fleet.start()
        assert fleet.one_runs() == "a"
        time.sleep(ttl)  # past the first election and the first reads
        before = {n: (requests(fleet, n), sum(p.bytes for p in fleet.proxies[n])) for n in fleet.names}
        time.sleep(seconds)
        out = {}
        for name, role in (("a", "holder"), ("b", "standby")):
            calls = requests(fleet, name) - before[name][0]
            sent = sum(p.bytes for p in fleet.proxies[name]) - before[name][1]
            out[role] = {"requests_per_min": round(calls * 60.0 / seconds, 1),
                         "bytes_per_day": int(sent * 86400.0 / seconds)}
        return out
    finally:
        fleet.close()


def failovers(cluster, folder, ttl, runs):
    fleet = Fleet(folder, cluster, "ab", ttl=ttl)
    times = []
    try:
        fleet.start()
        holder = fleet.one_runs()
        for _ in range(runs):
            other = "b" if holder == "a" else "a"
            wait_for(lambda o=other, h=holder: fleet.bot(o).get("lease", {}).get("holder") == h, 3 * ttl, "a standby")
            bot_pid = fleet.running()[holder]
            os.kill(fleet.pid(holder), signal.SIGKILL)
            os.kill(bot_pid, signal.SIGKILL)
            dead = time.monotonic()
            wait_for(lambda o=other: ready_pid(fleet, o), ttl + 20, "%s's bot READY" % other)
            times.append(time.monotonic() - dead)
            print("  %s -> %s: %.2f s" % (holder, other, times[-1]), flush=True)
            fleet.start(holder)  # back as a standby
            holder = other
            time.sleep(1)
        return times, fleet.counter.most()
    finally:
        fleet.close()


def suspended(cluster, folder, ttl, runs):
    """The holder's supervisor and bot SIGSTOPped past lease_ttl (a laptop lid, a phone in deep sleep),
    the other host's bot READY meanwhile, then SIGCONT of the supervisor first: how long the old bot
    lives on after its supervisor wakes, and the overlap (both bots able to run: neither stopped)."""
    fleet = Fleet(folder, cluster, "ab", ttl=ttl)
    gone, overlap = [], []
    try:
        fleet.start()
        for _ in range(runs):
            holder = fleet.one_runs(timeout=3 * ttl)
            other = "b" if holder == "a" else "a"
            wait_for(lambda o=other, h=holder: fleet.bot(o).get("lease", {}).get("holder") == h, 3 * ttl, "a standby")
            supervisor, bot_pid = fleet.pid(holder), fleet.running()[holder]
            os.kill(bot_pid, signal.SIGSTOP)
            os.kill(supervisor, signal.SIGSTOP)
            wait_for(lambda o=other: ready_pid(fleet, o), ttl + 20, "%s's bot READY" % other)
            os.kill(supervisor, signal.SIGCONT)
            woke = time.monotonic()
            wait_for(lambda pid=bot_pid: _state(pid) in (None, "Z"), 10, "the old bot gone")
            gone.append(time.monotonic() - woke)
            both = [t for t, found in fleet.counter.samples if len(found) > 1]
            overlap.append(0.1 * len(both))
            print("  %s suspended, %s took over; the old bot gone %.2f s after its supervisor woke" % (
                holder, other, gone[-1]), flush=True)
            time.sleep(1)
        return gone, max(overlap), fleet.counter.most()
    finally:
        fleet.close()


def _state(pid):
    try:
        return Path("/proc/%d/stat" % pid).read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def on_the_lab(args):
    """The same figures on the SSH lab's linux and termux hosts (needs root): requests a minute of each
    as holder and as standby, and unattended failovers both ways (SIGKILL of the holder's supervisor and
    bot -> the other's READY=1)."""
    import threading

    import sshlab
    from dashproc import invoke
    from leaselab import lab_bot, on_the_lab

    if sshlab.available():
        sys.exit("bench/lease.py --lab: %s" % sshlab.available())
    with on_the_lab(args.ttl) as lab:
        hosts = lab.hosts
        most, done = [0], threading.Event()

        def count():
            while not done.is_set():
                most[0] = max(most[0], sum(1 for h in hosts.values() if h.bots()))
                time.sleep(0.1)

        threading.Thread(target=count, daemon=True).start()
        assert invoke(lab.inventory_path, "restart", "--all").returncode == 0

        def holder():
            found = [n for n, h in hosts.items()
                     if h.bots() and lab_bot(h).get("ready") and lab_bot(h).get("state") == "running"]
            return found[0] if len(found) == 1 else None

        def rates(seconds):
            before = {n: lab_bot(h)["lease"]["etcd_requests"] for n, h in hosts.items()}
            time.sleep(seconds)
            return {n: round((lab_bot(h)["lease"]["etcd_requests"] - before[n]) * 60.0 / seconds, 1)
                    for n, h in hosts.items()}

        first = wait_for(holder, 30, "a holder")
        time.sleep(args.ttl)
        seen = rates(args.steady)
        figures = {"%s (%s)" % (n, "holder" if n == first else "standby"): r for n, r in seen.items()}
        times = {}
        for _ in range(args.runs):
            dead_name = holder() or wait_for(holder, 30, "a holder")
            other = next(n for n in hosts if n != dead_name)
            dead = hosts[dead_name]
            wait_for(lambda o=other, d=dead_name: lab_bot(hosts[o]).get("lease", {}).get("holder") == d,
                     3 * args.ttl, "a standby")
            sshlab.sh("pkill", "-9", "-u", dead.user.pw_name, "-f", "remote.host.supervisor", check=False)
            for pid in dead.bots():
                os.kill(pid, signal.SIGKILL)
            killed = time.monotonic()
            wait_for(lambda o=other: holder() == o, args.ttl + 20, "%s's bot READY" % other)
            times.setdefault("%s -> %s" % (dead_name, other), []).append(time.monotonic() - killed)
            print("  %s -> %s: %.2f s" % (dead_name, other, time.monotonic() - killed), flush=True)
            assert invoke(lab.inventory_path, "restart", "--host", dead_name).returncode == 0
        last = holder()
        time.sleep(args.ttl)
        seen = rates(args.steady)
        figures.update({"%s (%s)" % (n, "holder" if n == last else "standby"): r for n, r in seen.items()})
        done.set()
    for name, rate in sorted(figures.items()):
        print("  %-18s %5.1f etcd requests/min" % (name, rate))
    for way, values in sorted(times.items()):
        print("  failover %s: median %.2f s, %.2f-%.2f s over %d" % (
            way, statistics.median(values), min(values), max(values), len(values)))
    print("  most bots at once: %d" % most[0])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--ttl", type=int, default=10)
    parser.add_argument("--steady", type=float, default=60.0)
    parser.add_argument("--suspends", type=int, default=3)
    parser.add_argument("--lab", action="store_true", help="on the SSH lab's linux and termux hosts (root)")
    args = parser.parse_args()
    if etcdlab.available():
        sys.exit("bench/lease.py: %s" % etcdlab.available())
    if args.lab:
        on_the_lab(args)
        return
    folder = Path(tempfile.mkdtemp(prefix="sulfur-bench-lease-"))
    with etcdlab.running() as cluster:
        print("steady state, lease_ttl %ds, %.0f s:" % (args.ttl, args.steady), flush=True)
        rates = steady(cluster, folder / "steady", args.ttl, args.steady)
        for role, figures in rates.items():
            print("  %-8s %5.1f etcd requests/min, %6.1f MB/day" % (
                role, figures["requests_per_min"], figures["bytes_per_day"] / 1e6))
        print("unattended failover, lease_ttl %ds, %d runs (holder SIGKILLed -> the other's READY=1):"
              % (args.ttl, args.runs), flush=True)
        times, most = failovers(cluster, folder / "failover", args.ttl, args.runs)
        print("a suspended holder (SIGSTOP of its supervisor and bot past lease_ttl, SIGCONT of the supervisor "
              "first), %d runs:" % args.suspends, flush=True)
        gone, overlap, most_suspended = suspended(cluster, folder / "suspend", args.ttl, args.suspends)
    print("suspended: the old bot gone %.2f-%.2f s after its supervisor woke; overlap %.1f s; most bots "
          "at once: %d" % (min(gone), max(gone), overlap, most_suspended))
    print("failover: median %.2f s, min %.2f s, max %.2f s over %d runs; most bots at once: %d (goal: <= 15 s, 1)"
          % (statistics.median(times), min(times), max(times), len(times), most))
    print(json.dumps({"ttl": args.ttl, "steady": rates, "failover_s": [round(t, 2) for t in times],
                      "most_bots_at_once": most, "suspended_gone_s": [round(t, 2) for t in gone],
                      "suspended_overlap_s": overlap}))


if __name__ == "__main__":
    main()
