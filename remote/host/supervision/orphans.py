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

from remote.host.common.system import (
    environ,
    is_alive,
    is_dashboard,
    pids,
    process_info,
    read_file,
    read_pidfile,
    stat_fields,
)
from remote.host.probes.holders import stop_process


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
    """Stop it (TERM, grace, KILL, confirmed gone); a group it led (a launcher's children) goes too."""
    try:
        leader = int(stat_fields(orphan.pid)[2]) == orphan.pid  # it leads its process group
    except (OSError, ValueError, IndexError):
        leader = False
    how = stop_process(orphan.pid, grace, orphan.start)
    if leader:
        try:
            os.killpg(orphan.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    return how


def take_socket(notify, orphan, host, port, timeout=3.0):
    """The orphaned dashboard's listening socket, asked for with SIGUSR1, or None (also when it is
    bound otherwise than the settings say now: a new bind address is a new socket)."""
    if not catches(orphan.pid, signal.SIGUSR1):
        return None
    os.kill(orphan.pid, signal.SIGUSR1)
    deadline, found = time.monotonic() + timeout, None
    while found is None and time.monotonic() < deadline:
        select.select([notify], [], [], 0.1)
        for pid, lines, fds in notify.messages():  # every descriptor but the one kept is closed
            if found is None and fds and pid == orphan.pid and b"FDSTORE=1" in lines:
                found, fds = fds[0], fds[1:]
            for fd in fds:
                os.close(fd)
    if found is None:
        return None
    sock = socket.socket(fileno=found)
    if listening_on(sock, host, port):
        return sock
    sock.close()
    return None


def listening_on(sock, host, port):
    """A listening TCP socket on exactly the address the settings name."""
    try:
        wanted = {(info[0], info[4][0]) for info in socket.getaddrinfo(host, port, socket.AF_UNSPEC,
                                                                       socket.SOCK_STREAM, 0, socket.AI_PASSIVE)}
        return (sock.type == socket.SOCK_STREAM and sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
                and sock.getsockname()[1] == port and (sock.family, sock.getsockname()[0]) in wanted)
    except (OSError, ValueError):  # socket.gaierror is an OSError
        return False


def stop_left(paths, grace, services, with_spares=True):
    """Stop what a dead supervisor left of ``services`` (run/NAME.pid), and its warm spares:
    [(name, pid, the signal that ended it)], "spare" for a spare."""
    stopped = []
    for name in services:
        orphan = recorded(paths, name)
        if orphan is not None:
            stopped.append((name, orphan.pid, stop(orphan, grace)))
    for spare in spares(paths.app_dir) if with_spares else ():
        stopped.append(("spare", spare.pid, stop(spare, grace)))
    return stopped


def stop_leftovers(paths, grace, log):
    """At a new supervisor's set-up, before anything starts: the bot its dead predecessor left is
    stopped (never the same token twice on one host), and so are its spares."""
    for name, pid, how in stop_left(paths, grace, ("bot",)):
        log("orphan %s pid %d stopped (%s)" % (name, pid, how))


def adopt_dashboard(paths, notify, host, port, grace, log):
    """(the orphaned dashboard, its listening socket) when it hands the socket over (then it serves
    until a new dashboard is ready, and the port never closes), else (None, None): stopped, if any."""
    dash = recorded(paths, "dashboard")
    if dash is None:
        return None, None
    sock = take_socket(notify, dash, host, port)
    if sock is None:
        log("orphan dashboard pid %d cannot hand its socket over: stopped (%s)" % (dash.pid, stop(dash, grace)))
        return None, None
    log("orphan dashboard pid %d handed its socket over; it serves until a new one is ready" % dash.pid)
    return dash, sock
