"""Files the host side shares: where things live under app_dir, atomic JSON, .env, pidfiles, logs.

Standard library only, Python 3.8+: the supervisor, hostctl, hostrelease and the dashboard use it.
"""

import json
import os
import re

from dashboard.logtail import last_lines
from remote import agent

ERROR_LINE = re.compile(r"error|exception|traceback|failed|in use", re.I)
LOG_CAP = 5 * 1024 * 1024


class Layout:
    """Where things live under app_dir (DESIGN.md, Host layout)."""

    def __init__(self, app_dir):
        self.app_dir = os.path.abspath(os.path.expanduser(app_dir))
        self.run, self.logs = os.path.join(self.app_dir, "run"), os.path.join(self.app_dir, "logs")
        self.shared = os.path.join(self.app_dir, "shared")
        self.state = os.path.join(self.run, "state.json")
        self.config = os.path.join(self.run, "supervisor.json")
        self.lock = os.path.join(self.run, "supervisor.lock")
        self.pidfile = os.path.join(self.run, "supervisor.pid")
        self.commands = os.path.join(self.run, "commands")

    def log(self, name):
        return os.path.join(self.logs, name + ".log")

    def make(self):
        for path in (self.run, self.logs, self.commands):
            os.makedirs(path, exist_ok=True)


def write_json(path, data):
    """Atomic: readers see the old document or the new one, never half of one."""
    tmp = "%s.%d.tmp" % (path, os.getpid())
    with open(tmp, "w") as handle:
        json.dump(data, handle, indent=1, sort_keys=True)
    os.replace(tmp, path)


def read_env_file(path):
    """KEY=VALUE lines of shared/.env (comments, blank lines, `export` and quotes allowed)."""
    env = {}
    try:
        with open(path) as handle:
            for line in handle:
                line = line.strip()
                if not line or line.startswith("#") or "=" not in line:
                    continue
                key, value = line.split("=", 1)
                key = key.strip()
                if key.startswith("export "):
                    key = key[7:].strip()
                value = value.strip()
                if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                    value = value[1:-1]
                env[key] = value
    except OSError:
        pass
    return env


def pidfile_line(pid):
    info = agent.process_info(pid)
    return "%d %s %s\n" % (pid, info["start"], info["cmdline"] or "")


def error_tail(path, count=20):
    """Up to 5 lines that look like the error, else the last ``count`` lines of the log."""
    lines = last_lines(path, 400)
    errors = [line for line in lines if ERROR_LINE.search(line)]
    return errors[-5:] if errors else lines[-count:]


def rotate(path, copy=False):
    """Keep a log under LOG_CAP: move it to .1 (or copy and truncate it while a child writes to it)."""
    try:
        if os.path.getsize(path) < LOG_CAP:
            return
        if copy:  # the child holds the file open with O_APPEND: truncating keeps its writes coming
            with open(path, "rb") as src, open(path + ".1", "wb") as dst:
                dst.write(src.read())
            os.truncate(path, 0)
        else:
            os.replace(path, path + ".1")
    except OSError:
        pass


def read_pid(pidfile):
    """The pid in a pidfile, only while that process still has the recorded start time."""
    record = agent.read_pidfile(pidfile)
    try:
        return record[0] if record and agent.process_start(record[0]) == record[1] else None
    except (OSError, ValueError, IndexError):  # gone, or a zombie
        return None
