"""The supervisor's chores that are not supervision: its lock, the socket it holds, Termux's wake lock,
and what it does every few seconds (a heartbeat, log rotation, invoke dev's streamed logs).

They live here so that supervisor.py reads as the loop it is.
"""

import fcntl
import os
import subprocess
from typing import Any, Callable, Dict, Optional, Tuple

from remote.host.common.files import Layout, rotate
from remote.host.common.logtail import LogFollower
from remote.host.common.system import read_pid, which
from remote.host.probes.holders import describe_holder
from remote.host.supervision import orphans
from remote.host.supervision.listener import Listener, create_listener

BEAT = 5.0      # `status` tells a dead supervisor by the age of its pidfile's mtime
ROTATE = 30.0   # logs past their cap are copied and truncated this often


def lock(paths: Layout) -> Any:
    """One supervisor per app_dir: the returned file holds the lock as long as this process lives."""
    handle = open(paths.supervisor_lock, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise SystemExit("supervisor: already running for %s (pid %s)" % (
            paths.app_dir, read_pid(paths.pidfile))) from None
    return handle


def wake_lock() -> bool:
    """Termux: keep Android from dozing the app (doctor reports whether it was taken)."""
    tool = which("termux-wake-lock")
    return bool(tool) and subprocess.run([tool], timeout=10, check=False).returncode == 0


def hold_socket(cfg: Dict[str, Any], paths: Layout, notify: Any, log: Callable[[str], None]) -> Tuple[Any, Any]:
    """(the listening socket to hold, the orphaned dashboard that serves on it or None).

    What a dead predecessor left is dealt with first: its bot and spares are stopped, its dashboard
    asked for the socket it still holds (the port never closes); else the port is bound anew."""
    orphans.stop_leftovers(paths, cfg["grace"], log)
    orphan, sock = orphans.adopt_dashboard(paths, notify, cfg["host"], cfg["port"], cfg["grace"], log)
    if sock is not None:
        return Listener(sock, inherited=True, reuse_port=False, attempts=0), orphan
    return create_listener(cfg["host"], cfg["port"], False, cfg["bind_retries"], cfg["bind_backoff"], log=log,
                           holder=describe_holder), None


class Upkeep:
    """The periodic chores, each on the monotonic clock: call ``tick()`` on every turn of the loop."""

    def __init__(self, paths: Layout, logs: Dict[str, str], stream: bool, clock: Callable[[], float]):
        self.paths, self.logs, self.stream, self.clock = paths, logs, stream, clock
        self.last_beat = self.last_rotate = clock()
        self.followers: Dict[str, LogFollower] = {}

    def tick(self, printer: Optional[Callable[[str], None]] = None) -> None:
        if self.stream:
            for name, path in self.logs.items():
                follower = self.followers.setdefault(name, LogFollower(path))
                for line in follower.poll():
                    (printer or print)("%-9s | %s" % (name, line))
        now = self.clock()
        if now - self.last_beat > BEAT:
            self.last_beat = now
            try:
                os.utime(self.paths.pidfile)
            except OSError:
                pass
        if now - self.last_rotate > ROTATE:
            self.last_rotate = now
            for path in self.logs.values():
                rotate(path, copy=True)
