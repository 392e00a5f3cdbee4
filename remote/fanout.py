"""Run one operation on many hosts at once, each in its own SSH connection, results in inventory order.

A host that is down, refuses auth or times out costs its own timeout and yields one row with its
error; it never delays or hides the others.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, List, Optional

from .connections import Runner, open_runner
from .errors import HostError
from .inventory import Host

DEFAULT_PARALLEL = 16
Operation = Callable[[Runner, Host], Dict[str, Any]]


def on_host(host: Host, operation: Operation, quick: bool = False) -> Dict[str, Any]:
    """``operation`` on one host; any failure becomes {"ok": False, "error": one line}. ``quick``: a
    read-only operation that only runs commands (no upload) goes through the system's ssh client when
    it can (remote/openssh.py), else as any other; it may run twice (ssh failed, in words the library
    then says again), so it must be one that changes nothing."""
    def work() -> Dict[str, Any]:
        doc = _through_openssh(host, operation) if quick else None
        if doc is None:
            with open_runner(host) as runner:
                doc = operation(runner, host)
        return doc

    return row(host, work)


def row(host: Host, work: Callable[[], Dict[str, Any]], failed: Callable[[], None] = lambda: None) -> Dict[str, Any]:
    """``work()``'s answer as ``host``'s row; a HostError or any other exception becomes
    {"ok": False, "error": one line} (after ``failed()``, for a caller that holds a connection)."""
    try:
        doc = work()
    except HostError as exc:
        failed()
        doc = {"ok": False, "error": str(exc)}
    except Exception as exc:  # a bug must not hide the other hosts' results
        failed()
        doc = {"ok": False, "error": "internal error: %s: %s" % (type(exc).__name__, exc)}
    return dict(doc, host=host.name)  # ours: a host's answer cannot put its rows under another name


def _through_openssh(host: Host, operation: Operation) -> Optional[Dict[str, Any]]:
    """The operation's answer through ssh, or None where the SSH library's path must take it."""
    if host.is_local:
        return None
    from . import openssh

    try:
        return operation(openssh.OpenSSHRunner(host), host)
    except openssh.Unsuitable:
        return None


def on_hosts(hosts: List[Host], operation: Operation, parallel: int = DEFAULT_PARALLEL,
             quick: bool = False) -> List[Dict[str, Any]]:
    """``operation`` on each host; ``quick`` (see on_host) for one host alone: with more, paramiko's
    connections in threads of this process are the faster way (bench/fanout.py)."""
    if len(hosts) == 1:
        return [on_host(hosts[0], operation, quick)]
    with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(hosts)))) as pool:
        return list(pool.map(lambda h: on_host(h, operation), hosts))


def on_hosts_until(hosts: List[Host], operation: Operation, stop: threading.Event,
                   parallel: int = DEFAULT_PARALLEL, grace: float = 30.0) -> List[Dict[str, Any]]:
    """on_hosts, for commands that run until the user's Ctrl+C: the first one sets ``stop`` (each
    host's command is told, stops and answers, connections.RequestStream), hosts not yet begun are
    not begun, and the answers still come back within ``grace`` seconds; a second Ctrl+C gives up
    waiting. The work runs in daemon threads, so that this machine never hangs on a host at exit."""
    docs: List[Optional[Dict[str, Any]]] = [None] * len(hosts)
    gate = threading.Semaphore(max(1, parallel))

    def work(index: int, host: Host) -> None:
        with gate:
            docs[index] = ({"ok": False, "host": host.name, "error": "not run: stopped by Ctrl+C"}
                           if stop.is_set() else on_host(host, operation))

    for pair in enumerate(hosts):
        threading.Thread(target=work, args=pair, daemon=True).start()
    # polled, not joined: a Thread.join that Ctrl+C interrupts may take a running thread for ended (Python 3.11)
    try:
        while None in docs:
            time.sleep(0.05)
    except KeyboardInterrupt:
        stop.set()
        deadline = time.monotonic() + grace
        while None in docs and time.monotonic() < deadline:
            time.sleep(0.05)
    return [doc or {"ok": False, "host": host.name, "error": "no answer within %g s of Ctrl+C" % grace}
            for doc, host in zip(docs, hosts)]


def in_batches(hosts: List[Host], operation: Operation, size: int, parallel: int = DEFAULT_PARALLEL,
               started: Optional[Callable[[int, int, List[Host]], None]] = None) -> List[Dict[str, Any]]:
    """``operation`` on ``size`` hosts at a time, in the order given; the first batch with a failed
    host ends the run, and the hosts after it are listed as skipped, untouched."""
    docs: List[Dict[str, Any]] = []
    batches = [hosts[i:i + size] for i in range(0, len(hosts), max(1, size))]
    for number, batch in enumerate(batches, 1):
        if started is not None:
            started(number, len(batches), batch)
        done = on_hosts(batch, operation, parallel)
        docs += done
        failed = [d["host"] for d in done if not d.get("ok")]
        if failed:
            reason = "skipped: batch %d of %d failed on %s" % (number, len(batches), ", ".join(failed))
            docs += [{"host": h.name, "ok": False, "skipped": True, "error": reason}
                     for later in batches[number:] for h in later]
            break
    return docs
