"""Processes of ours that outlived their supervisor (the OOM killer, Android's phantom process
killer): found, and dealt with, before a new supervisor starts anything.

- An orphaned bot is stopped (TERM, grace, KILL, confirmed gone) before a new one starts: the same
  token twice on one host is the one thing a bot host must never do.
- An orphaned dashboard keeps serving: it still holds the listening socket, and hands a copy over
  (sd_notify's FDSTORE=1, the descriptor in SCM_RIGHTS) when asked with SIGUSR1, so the new
  supervisor holds the same socket and the port never closes. A dashboard that does not catch
  SIGUSR1 (an older release: the signal would kill it) is stopped instead, and the port is bound anew.
- An orphaned warm spare serves nobody: it is stopped.
"""

import os
import select
import signal
import socket
import time

from remote.host.agent import stop_process
from remote.host.system import environ, is_alive, is_dashboard, pids, process_info, read_file, read_pidfile


class Orphan:
    """A process we did not start, with Popen's few methods the supervisor's retiring list uses."""

    def __init__(self, pid, start):
        self.pid, self.start, self.returncode = pid, start, None

    def poll(self):
        if self.returncode is None and not is_alive(self.pid, self.start):
            self.returncode = -1
        return self.returncode

    def send_signal(self, sig):
        if self.poll() is None:
            os.kill(self.pid, sig)

    def kill(self):
        self.send_signal(signal.SIGKILL)


def recorded(paths, name):
    """The live process behind run/NAME.pid, as an Orphan, or None."""
    record = read_pidfile(paths.pid(name))
    if record and is_alive(record[0], record[1]):
        return Orphan(record[0], record[1])
    return None


def spares(app_dir):
    """Warm spares of this app_dir: dashboards started with DASHBOARD_SPARE (or its old name)."""
    found, app_dir = [], os.path.realpath(app_dir)
    for pid in pids():
        info = process_info(pid)
        if info["start"] is None or not is_dashboard(info["cmdline"]):
            continue
        env = environ(pid) or {}
        if os.path.realpath(env.get("DASHBOARD_APP_DIR", "/nonexistent")) != app_dir:
            continue
        if env.get("DASHBOARD_SPARE") or env.get("DASHBOARD_STANDBY"):
            found.append(Orphan(pid, info["start"]))
    return found


def catches(pid, sig):
    """The process has a handler for ``sig`` (/proc/PID/status SigCgt), so sending it is safe."""
    try:
        for line in read_file("/proc/%d/status" % pid).splitlines():
            if line.startswith("SigCgt:"):
                return bool(int(line.split()[1], 16) & (1 << (sig - 1)))
    except (OSError, ValueError, IndexError):
        pass
    return False


def stop(orphan, grace):
    return stop_process(orphan.pid, grace, orphan.start)


def take_socket(notify, orphan, port, timeout=3.0):
    """The orphaned dashboard's listening socket, asked for with SIGUSR1, or None."""
    if not catches(orphan.pid, signal.SIGUSR1):
        return None
    os.kill(orphan.pid, signal.SIGUSR1)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        select.select([notify], [], [], 0.1)
        for pid, lines, fds in notify.messages():
            wanted = pid == orphan.pid and b"FDSTORE=1" in lines
            for fd in fds[1:] if wanted else fds:
                os.close(fd)
            if wanted and fds:
                sock = socket.socket(fileno=fds[0])
                if listening_on(sock, port):
                    return sock
                sock.close()
                return None
    return None


def listening_on(sock, port):
    try:
        return (sock.type == socket.SOCK_STREAM and sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
                and sock.getsockname()[1] == port)
    except OSError:
        return False
