"""What this machine tells about itself: commands on PATH, the platform, processes from /proc, pidfiles.

Every reader here works for our own processes on Termux too (Android hides other apps' /proc entries
and all of /proc/net, not our own /proc/PID), and says None where the machine will not tell.
"""

import os
import platform
import pwd
import re
import shutil
import sys

#: non-login SSH sessions often lack the sbin directories, where ss and fuser live
EXTRA_PATH = ("/usr/sbin", "/sbin", "/usr/bin", "/bin")
#: where autostart writes its systemd user unit and its Termux:Boot script (doctor reports them)
UNIT_NAME, BOOT_NAME = "sulfur-ops.service", "sulfur-ops"


def autostart_paths():
    """(the systemd user unit, the Termux:Boot script) of this user."""
    home = os.path.expanduser("~")
    return (os.path.join(home, ".config", "systemd", "user", UNIT_NAME),
            os.path.join(home, ".termux", "boot", BOOT_NAME))


#: how our dashboard appears in a command line: `python -m dashboard`
_DASHBOARD = re.compile(r"(^|\s)-m dashboard(\s|$)")


def which(name):
    """A command on PATH, or in the sbin directories that non-login SSH PATHs often lack."""
    path = os.environ.get("PATH", "") + os.pathsep + os.pathsep.join(EXTRA_PATH)
    return shutil.which(name, path=path)


def detect_platform(environ=None):
    """'termux' or 'linux'. Python 3.13+ on Termux says sys.platform == 'android', older ones not."""
    env = os.environ if environ is None else environ
    if env.get("TERMUX_VERSION") or "com.termux" in env.get("PREFIX", ""):
        return "termux"
    if sys.platform == "android" or platform.system() == "Android":
        return "termux"
    return "linux"


def existing_parent(path):
    """``path`` or its nearest existing ancestor. Stops where dirname stops changing, so a relative
    or empty path ends at '' instead of looping."""
    while path and not os.path.exists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path or "."


def read_file(path, mode="r"):
    with open(path, mode) as handle:
        return handle.read()


def is_dashboard(cmdline):
    """True for a `python -m dashboard` command line."""
    return bool(_DASHBOARD.search(cmdline or ""))


# ------------------------------------------------------------------------------------ /proc/PID


def stat_fields(pid):
    """/proc/PID/stat after the command name: fields[0] is the state, [1] the parent, [19] the start.

    The name is cut at the *last* parenthesis: a process may call itself "a) b".
    """
    text = read_file("/proc/%d/stat" % pid)
    return text[text.rindex(")") + 2:].split()


def process_start(pid):
    """The process's start time in clock ticks since boot: with the pid, it names one process.

    A zombie (exited, not yet reaped by its parent) has no start time: it holds nothing any more.
    """
    fields = stat_fields(pid)
    if fields[0] in ("Z", "X"):
        raise ValueError("pid %d has exited" % pid)
    return int(fields[19])


def parent_pid(pid):
    return int(stat_fields(pid)[1])


def process_info(pid):
    """{'process', 'cmdline', 'user', 'start'} for a pid, with None where /proc will not tell."""
    info = {"process": None, "cmdline": None, "user": None, "start": None}
    try:
        info["process"] = read_file("/proc/%d/comm" % pid).strip()
        raw = read_file("/proc/%d/cmdline" % pid, "rb")
        # whitespace folded: an argument may hold newlines, and every report is one line per holder
        info["cmdline"] = " ".join(raw.replace(b"\0", b" ").decode("utf-8", "replace").split()) or None
        uid = os.stat("/proc/%d" % pid).st_uid
        try:
            info["user"] = pwd.getpwuid(uid).pw_name
        except KeyError:
            info["user"] = str(uid)
        info["start"] = process_start(pid)
    except (OSError, ValueError, IndexError):
        pass
    return info


def environ(pid):
    """A process's environment as a dict, or None where we may not read it."""
    try:
        raw = read_file("/proc/%d/environ" % pid, "rb")
    except OSError:
        return None
    return dict(item.decode("utf-8", "replace").split("=", 1) for item in raw.split(b"\0") if b"=" in item)


def pids():
    """Every pid we can see in /proc."""
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def open_paths(with_cwd=False):
    """(pid, target) for every descriptor of every process we may look into (and its cwd)."""
    for pid in pids():
        base = "/proc/%d" % pid
        if with_cwd:
            try:
                yield pid, os.readlink(base + "/cwd")
            except OSError:
                pass
        try:
            fds = os.listdir(base + "/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                yield pid, os.readlink("%s/fd/%s" % (base, fd))
            except OSError:
                pass


# ------------------------------------------------------------------------------------ pidfiles


def pidfile_line(pid):
    """"PID START COMMAND": START (clock ticks since boot) makes a reused pid a different process."""
    info = process_info(pid)
    return "%d %s %s\n" % (pid, info["start"], info["cmdline"] or "")


def read_pidfile(path):
    """(pid, start, command or None) from one pidfile, or None when it is missing or unreadable."""
    try:
        fields = read_file(path).split(None, 2)
        return int(fields[0]), int(fields[1]), fields[2].strip() if len(fields) > 2 else None
    except (OSError, ValueError, IndexError):
        return None


def read_pidfiles(app_dir):
    """The records of each app_dir/run/*.pid: the processes our stack started."""
    run = os.path.join(os.path.expanduser(app_dir), "run")
    try:
        names = sorted(n for n in os.listdir(run) if n.endswith(".pid"))
    except OSError:
        return []
    return [r for r in (read_pidfile(os.path.join(run, n)) for n in names) if r]


def is_alive(pid, start):
    """The process ``pid`` is still the one that started at ``start``."""
    try:
        return process_start(pid) == start
    except (OSError, ValueError, IndexError):  # gone, or a zombie
        return False


def read_pid(pidfile):
    """The pid in a pidfile, only while that process still has the recorded start time."""
    record = read_pidfile(pidfile)
    return record[0] if record and is_alive(record[0], record[1]) else None


def live_pidfile_pids(app_dir):
    """pids from app_dir's pidfiles whose process is still the one recorded."""
    return [pid for pid, start, _ in read_pidfiles(app_dir) if is_alive(pid, start)]
