"""The supervisor's end of sd_notify: a datagram socket its children send READY=1, SPARE=1, the
bot STATUS= and WATCHDOG=1, and an orphaned dashboard its socket (FDSTORE=1) to.

The sender's pid comes from SCM_CREDENTIALS, checked by the kernel: a health request could be
answered by the old dashboard that still shares the socket, this datagram only by the new one.
"""

import array
import hashlib
import os
import socket
import struct

MAX_FDS = 4


class NotifySocket:
    """run/notify.sock, or an abstract name where the path would not fit in sun_path (108 bytes)."""

    def __init__(self, path, app_dir):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if len(path) < 100:
            if os.path.exists(path):
                os.unlink(path)
            self.sock.bind(path)
            self.name = path
        else:
            # the same name for every supervisor of this app_dir: an orphaned dashboard hands its socket
            # to the next one by it (hash() is salted per process: hashlib is not)
            name = "sulfur-%d-%s" % (os.getuid(), hashlib.sha256(app_dir.encode()).hexdigest()[:12])
            self.sock.bind("\0" + name)
            self.name = "@" + name  # NOTIFY_SOCKET's spelling of the abstract namespace
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)

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
