"""Restart figures, in one run:

- local `invoke restart --service dashboard` wall time (median of 10, 2 s apart as a person restarts, and
  back to back) against the dashboard's cold start (bench/dashboard_start.py);
- remote `invoke restart --host linux1 --service dashboard` on an SSH test host (needs root);
- failed requests at >= 100 req/s (a new connection each) across 5 restarts: this project's handover,
  and beside it a naive kill-then-start restart of the same dashboard.

    sudo .venv/bin/python bench/restart.py [--runs 10]
"""

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "bench"), str(ROOT)]
import dashboard_start  # noqa: E402
import sshlab  # noqa: E402
from dashproc import free_port  # noqa: E402

LOADGEN = ROOT / "tests" / "loadgen.py"


def invoke(inventory, *args):
    env = dict(os.environ, SULFUR_INVENTORY=str(inventory))
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "invoke", *args], cwd=ROOT, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit("invoke %s failed: %s%s" % (" ".join(args), out.stdout, out.stderr))
    return time.perf_counter() - started


def local_inventory(tmp, port):
    path = Path(tmp) / "inventory.yml"
    path.write_text("hosts:\n  local: {connection: local, app_dir: %s/app, dashboard_port: %d}\n" % (tmp, port))
    return path


def under_load(port, tmp, restart, count=5):
    """Run ``restart()`` ``count`` times while loadgen hammers the port; loadgen's JSON result."""
    stop = Path(tmp) / ("stop-%d" % time.monotonic_ns())
    load = subprocess.Popen([sys.executable, str(LOADGEN), str(port), str(stop), "4"], stdout=subprocess.PIPE,
                            text=True)
    assert load.stdout.readline().strip() == "started"
    for _ in range(count):
        time.sleep(0.5)
        restart()
    time.sleep(0.5)
    stop.touch()
    result = json.loads(load.stdout.readline())
    load.wait()
    return result


def naive(port, tmp):
    """The usual way: SIGTERM the dashboard, wait for it to exit, start a new one (bind retried)."""
    env = dict(os.environ, DASHBOARD_PORT=str(port), DASHBOARD_APP_DIR=str(Path(tmp) / "naive"),
               DASHBOARD_BIND_BACKOFF="0.05")
    procs = []

    def start():
        procs.append(subprocess.Popen([sys.executable, "-m", "dashboard"], cwd=ROOT, env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        dashboard_start.first_200(port, procs[-1])

    def restart():
        procs[-1].send_signal(signal.SIGTERM)
        procs[-1].wait()
        start()

    start()
    try:
        return under_load(port, tmp, restart)
    finally:
        procs[-1].terminate()
        procs[-1].wait()


def remote_restart(runs):
    if sshlab.available():
        return None
    with sshlab.lab_with("linux") as lab:
        host, inventory = lab.hosts["linux"], lab.inventory_path
        lab.install_release()
        invoke(inventory, "restart", "--host", host.name)
        times = []
        for _ in range(runs):
            time.sleep(2.0)
            times.append(invoke(inventory, "restart", "--host", host.name, "--service", "dashboard"))
        invoke(inventory, "stop", "--host", host.name)
        return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    runs = parser.parse_args().runs
    cold = dashboard_start.measure(runs)["median_s"]
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        inventory = local_inventory(tmp, port)
        invoke(inventory, "restart")
        try:
            def spaced():  # as a person restarts: the supervisor's warm spare has had time to get ready
                time.sleep(2.0)
                return invoke(inventory, "restart", "--service", "dashboard")

            local = statistics.median(spaced() for _ in range(runs))
            tight = statistics.median(invoke(inventory, "restart", "--service", "dashboard") for _ in range(runs))
            ours = under_load(port, tmp, lambda: invoke(inventory, "restart", "--service", "dashboard"))
        finally:
            invoke(inventory, "stop")
        theirs = naive(free_port(), tmp)
    remote = remote_restart(runs)
    print("dashboard cold start (spawn -> first 200), median of %d:   %.3f s" % (runs, cold))
    print("local `invoke restart --service dashboard`, median of %d:  %.3f s  (ratio %.2f, target <= 1.3)"
          % (runs, local, local / cold))
    print("  the same back to back (the spare still importing):    %.3f s  (ratio %.2f)" % (tight, tight / cold))
    print("remote restart on a linux test host, median of %d:        %s" % (
        runs, "%.3f s  (target <= 1.5 s)" % remote if remote else "- (needs root for the SSH test host)"))
    for name, result in (("this project (held socket)", ours), ("naive kill-then-start", theirs)):
        failed = sum(result["errors"].values())
        print("%-28s %5d requests at %4.0f req/s across 5 restarts: %d failed %s"
              % (name, result["requests"], result["rate"], failed, json.dumps(result["errors"]) if failed else ""))


if __name__ == "__main__":
    main()
