"""The supervisor's end of sd_notify: a datagram socket its children send READY=1, SPARE=1, the
bot STATUS= and WATCHDOG=1, and an orphaned dashboard its socket (FDSTORE=1) to.

The sender's pid comes from SCM_CREDENTIALS, checked by the kernel: a health request could be
answered by the old dashboard that still shares the socket, this datagram only by the new one.

Where: run/notify.sock, inside the private run/ (mode 700), so no other user can bind it first or
send to it. Where that path does not fit in sun_path (a deep app_dir), an abstract name, which has
no permissions at all: so it is random (16 bytes), never one another user could work out and take
first. The name the running supervisor hears on is recorded in run/notify.name (mode 600) with its
pid: an orphaned dashboard, whose NOTIFY_SOCKET names its dead supervisor's socket, reads it there
before it hands its listening socket over (``handover_address``).
"""

import array
import errno
import os
import socket
import struct

from remote.host.common.files import read_json, write_json
from remote.host.common.system import is_alive, process_start

MAX_FDS = 4
SUN_PATH = 108  # bytes in sockaddr_un's sun_path, its closing NUL included
NAME_FILE = "notify.name"


def fitting_path(run_dir):
    """run/notify.sock where it fits in sun_path, by the run directory's real path (no symlink on
    the way) first, else by the path as given; None when neither fits."""
    for folder in (os.path.realpath(run_dir), os.path.abspath(run_dir)):
        path = os.path.join(folder, "notify.sock")
        if len(os.fsencode(path)) < SUN_PATH:
            return path
    return None


def record(run_dir, name):
    """run/notify.name: where this supervisor hears, with its pid and start (a dead one's is stale)."""
    pid = os.getpid()
    write_json(os.path.join(run_dir, NAME_FILE), {"name": name, "pid": pid, "start": process_start(pid)})


def recorded(run_dir):
    """(the recorded name, whether the supervisor that recorded it still lives), or (None, False)."""
    doc = read_json(os.path.join(run_dir, NAME_FILE))
    name, pid, start = doc.get("name"), doc.get("pid"), doc.get("start")
    if not isinstance(name, str) or not name:
        return None, False
    return name, isinstance(pid, int) and isinstance(start, int) and is_alive(pid, start)


def handover_address(app_dir, notify_socket):
    """Where an orphaned dashboard sends its socket: the live supervisor's recorded name; else its
    own NOTIFY_SOCKET (a supervisor from before the record), but never the name a dead supervisor
    recorded, which anyone who saw it in /proc/net/unix may have bound since."""
    if app_dir:
        name, live = recorded(os.path.join(app_dir, "run"))
        if live:
            return name
        if name is not None and name == notify_socket:
            return None
    return notify_socket or None


class NotifySocket:
    """run/notify.sock, or a random abstract name where the path would not fit in sun_path."""

    def __init__(self, run_dir, attempts=5):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            self.name = self._bind(run_dir, attempts)
        except OSError:
            self.sock.close()
            raise
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)

    def _bind(self, run_dir, attempts):
        """The name bound, recorded first: once it is bound, a dashboard asked for its socket finds it."""
        path = fitting_path(run_dir)
        if path is not None:
            record(run_dir, path)
            _unlink(path)
            self.sock.bind(path)
            return path
        for attempt in range(attempts):
            name = "@sulfur-%d-%s" % (os.getuid(), os.urandom(16).hex())  # NOTIFY_SOCKET's spelling: "@"
            record(run_dir, name)
            try:
                self.sock.bind("\0" + name[1:])
                return name
            except OSError as exc:  # taken: only by chance, as nobody can know the name before it is bound
                if exc.errno != errno.EADDRINUSE or attempt == attempts - 1:
                    raise
        raise OSError(errno.EADDRINUSE, "no abstract name for the notify socket")

    def fileno(self):
        return self.sock.fileno()

    def messages(self):
        """[(sender pid or None, [lines], [descriptors])] of every datagram waiting now; never blocks.

        Descriptors come with FDSTORE=1 (an orphaned dashboard handing its socket over); the caller
        owns them and closes those it does not keep."""
        found = []
        space = socket.CMSG_SPACE(12) + socket.CMSG_SPACE(4 * MAX_FDS)
        while True:
            try:
                data, ancillary, _, _ = self.sock.recvmsg(4096, space, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return found
            pid, fds = None, []
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = struct.unpack("3i", payload[:12])[0]
                elif level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds.extend(array.array("i", payload[:len(payload) - len(payload) % 4]))
            found.append((pid, data.split(b"\n"), fds))


def _unlink(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
