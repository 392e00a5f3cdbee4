"""The supervisor's chores that are not supervision: its lock, the socket it holds, Termux's wake lock,
and what it does every few seconds (a heartbeat, log rotation, invoke dev's streamed logs).

They live here so that supervisor.py reads as the loop it is.
"""

import fcntl
import os
import subprocess
import threading
from typing import Any, Callable, Dict, List, Optional, Tuple

from remote.host.common.files import Layout, rotate
from remote.host.common.logtail import LogFollower
from remote.host.common.system import detect_platform, read_pid, which
from remote.host.probes.holders import describe_holder
from remote.host.supervision import orphans
from remote.host.supervision.listener import Listener, create_listener

BEAT = 5.0      # `status` tells a dead supervisor by the age of its pidfile's mtime
LOG_CHECK = 0.1  # how often the log cap's thread looks at the logs' sizes


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


def wants_wake_lock(cfg: Dict[str, Any]) -> bool:
    """The inventory's wake_lock, or a phone in an etcd election: it must neither doze as the holder nor
    miss the holder's end as a standby."""
    return bool(cfg["wake_lock"] or (cfg.get("coordination") and detect_platform() == "termux"))


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


class LogCap:
    """Keeps every service's log under twice its cap, even while a service writes 20 MB/s (an SD card's
    speed): a thread of its own looks at the sizes every 0.1 s (a stat each) and copies-and-truncates
    a log past its cap, in blocks. The services keep writing to the file itself, never to a pipe
    through the supervisor, so a bot outlives a dead supervisor as before; only the cap waits for the
    next one."""

    def __init__(self, logs: List[str], interval: float = LOG_CHECK, cap: Optional[int] = None):
        self.logs, self.interval, self.cap = list(logs), interval, cap
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="log-cap", daemon=True)

    def start(self) -> "LogCap":
        self.thread.start()
        return self

    def _run(self) -> None:
        while not self.stopped.wait(self.interval):
            for path in self.logs:
                rotate(path, copy=True, cap=self.cap)

    def stop(self) -> None:
        self.stopped.set()


class Upkeep:
    """The periodic chores, each on the monotonic clock: call ``tick()`` on every turn of the loop
    (the log cap runs in its own thread, started here)."""

    def __init__(self, paths: Layout, logs: Dict[str, str], stream: bool, clock: Callable[[], float]):
        self.paths, self.logs, self.stream, self.clock = paths, logs, stream, clock
        self.last_beat = clock()
        self.followers: Dict[str, LogFollower] = {}
        self.log_cap = LogCap(list(logs.values()) + [paths.log("supervisor")]).start()

    def tick(self) -> None:
        if self.stream:
            for name, path in self.logs.items():
                follower = self.followers.setdefault(name, LogFollower(path))
                for line in follower.poll():
                    print("%-9s | %s" % (name, line), flush=True)
        now = self.clock()
        if now - self.last_beat > BEAT:
            self.last_beat = now
            try:
                os.utime(self.paths.pidfile)
            except OSError:
                pass
