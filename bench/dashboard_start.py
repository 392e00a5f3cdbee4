"""Cold start of the dashboard: spawn `python -m dashboard` -> first 200 from /healthz, and its RSS.

Every restart in this project is measured against this floor. Not a test: it prints figures.
    .venv/bin/python bench/dashboard_start.py [--runs 10]
"""

import argparse
import http.client
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from dashproc import Dashboard, free_port  # noqa: E402


def first_200(port: int, proc, timeout: float = 30.0) -> float:
    """Poll /healthz every 2 ms; return the moment of the first 200."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if proc.poll() is not None:
            raise SystemExit("dashboard exited with %s" % proc.returncode)
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                return time.perf_counter()
        except OSError:
            pass
        finally:
            conn.close()
        time.sleep(0.002)
    raise SystemExit("no 200 within %.0f s" % timeout)


def rss_mib(pid: int) -> float:
    for line in Path("/proc/%d/status" % pid).read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(runs: int) -> dict:
    times, rss = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(runs):
            port = free_port()
            started = time.perf_counter()
            board = Dashboard(Path(tmp), port)
            try:
                times.append(first_200(port, board.proc) - started)
                rss.append(rss_mib(board.proc.pid))
            finally:
                board.stop()
    return {"runs": runs, "median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
            "stdev_s": statistics.stdev(times) if runs > 1 else 0.0, "rss_mib": statistics.median(rss)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    result = measure(parser.parse_args().runs)
    print("dashboard cold start (spawn -> first 200 /healthz), %d runs" % result["runs"])
    print("  median %.3f s   min %.3f s   max %.3f s   stdev %.3f s"
          % (result["median_s"], result["min_s"], result["max_s"], result["stdev_s"]))
    print("  RSS of the running dashboard: %.1f MiB (median)" % result["rss_mib"])


if __name__ == "__main__":
    main()
