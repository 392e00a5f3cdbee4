"""A bounded HTTP load: GET /healthz with a new connection each, from several threads, until a stop file
appears (or a time limit passes). Prints one JSON line: requests, errors by kind, pids in order.

Standard library only, so it runs as a test host's user inside its namespace:
    python3 loadgen.py PORT STOP_FILE [THREADS] [MAX_SECONDS]
"""

import collections
import http.client
import json
import os
import sys
import threading
import time


def main():
    port, stop_file = int(sys.argv[1]), sys.argv[2]
    threads = int(sys.argv[3]) if len(sys.argv) > 3 else 4
    limit = float(sys.argv[4]) if len(sys.argv) > 4 else 120.0
    errors, pids, lock = collections.Counter(), [], threading.Lock()
    done = threading.Event()
    count = [0]

    def worker():
        while not done.is_set():
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                conn.request("GET", "/healthz", headers={"Connection": "close"})
                resp = conn.getresponse()
                body = resp.read()
                conn.close()
                with lock:
                    if resp.status != 200:
                        errors["HTTP %d" % resp.status] += 1
                    else:
                        count[0] += 1
                        pid = json.loads(body)["pid"]
                        if pid not in pids:
                            pids.append(pid)
            except Exception as exc:
                with lock:
                    errors["%s: %s" % (type(exc).__name__, str(exc)[:80])] += 1
            time.sleep(0.004)

    workers = [threading.Thread(target=worker) for _ in range(threads)]
    started = time.time()
    for w in workers:
        w.start()
    print("started", flush=True)
    while not os.path.exists(stop_file) and time.time() - started < limit:
        time.sleep(0.05)
    done.set()
    for w in workers:
        w.join()
    elapsed = time.time() - started
    print(json.dumps({"requests": count[0], "rate": count[0] / elapsed, "errors": dict(errors), "pids": pids}))


if __name__ == "__main__":
    main()
