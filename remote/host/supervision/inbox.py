"""The supervisor's control inbox: request files under run/commands, woken by SIGUSR1.

Files, not a socket: their permissions are the access control, no socket path length limit applies
(Termux paths are long), and a lost signal only delays a request to the supervisor's next tick.
A request is {"action": restart|stop|start, "service": NAME|all}; its answer is written next to it
as NAME.result, {"ok": ..., "error": ..., "pid": ...}.
"""

import json
import os
import signal
import time

from remote.host.common.errors import Failure
from remote.host.common.files import write_json
from remote.host.common.system import read_pid

ACTIONS = ("restart", "stop", "start")


def ask(paths, action, service, timeout, grace=None):
    """Ask the running supervisor and wait (up to ``timeout`` s) for its answer. ``grace``: a stop's
    seconds between TERM and KILL, instead of the service's own (a supervisor before it ignores it)."""
    pid = read_pid(paths.pidfile)
    if not pid:
        raise Failure("the supervisor is not running")
    name = "%020d-%d" % (time.monotonic_ns(), os.getpid())  # names sort in the order they were asked
    request = {"action": action, "service": service}
    if grace is not None:
        request["grace"] = grace
    write_json(os.path.join(paths.commands, name + ".request"), request)
    os.kill(pid, signal.SIGUSR1)
    result = os.path.join(paths.commands, name + ".result")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(result) as handle:
                answer = json.load(handle)
            os.unlink(result)
            return answer
        except (OSError, ValueError):
            time.sleep(0.01)
    raise Failure("the supervisor (pid %d) did not answer %s %s within %.0f s" % (pid, action, service, timeout))


class Inbox:
    """The supervisor's side: the requests waiting, oldest first, each with where its answer goes."""

    def __init__(self, directory):
        self.directory = directory

    def take(self):
        """[(action, service, reply_path, grace)], each request file removed as it is read."""
        taken = []
        for name in sorted(os.listdir(self.directory)):
            if not name.endswith(".request"):
                continue
            path = os.path.join(self.directory, name)
            try:
                with open(path) as handle:
                    request = json.load(handle)
                os.unlink(path)
            except (OSError, ValueError):
                continue
            if isinstance(request, dict):
                reply = os.path.join(self.directory, name[:-len(".request")] + ".result")
                grace = request.get("grace")
                grace = float(grace) if isinstance(grace, (int, float)) and not isinstance(grace, bool) \
                    and 0 <= grace <= 600 else None
                taken.append((request.get("action"), request.get("service", "all"), reply, grace))
        return taken


def reply(path, ok, error=None, **extra):
    """Answer a request (nothing to do for a request nobody waits for: ``path`` None)."""
    if path:
        write_json(path, dict({"ok": ok, "error": error}, **extra))
