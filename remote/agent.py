"""sulfur-ops host agent: answers one question per run with one JSON document on stdout.

Runs on the host (Linux, Termux) or locally, standard library only, Python 3.8+. The operator side
sends this file over its SSH connection (or runs a cached copy) with the inventory's interpreter, so
it never relies on #!/usr/bin/env, /bin/bash or python3 being there.

Who holds a port is asked of whichever tool the host has, first that works wins: ss, lsof, netstat,
fuser, /proc/net/tcp, then connect and bind probes (no tool needed; they work where Android denies
netlink and /proc/net). A tool that exists but fails is recorded in ``tried`` and the next one is
used: a failure is never read as "free". Parsers are pure functions over the tool's text.
"""

import errno
import json
import os
import platform
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

AGENT_VERSION = 1
EXTRA_PATH = ("/usr/sbin", "/sbin", "/usr/bin", "/bin")
TCP_LISTEN, TCP_TIME_WAIT = "0A", "06"  # /proc/net/tcp state codes
_SS_USERS = re.compile(r'\("([^"]*)",pid=(\d+),fd=\d+\)')


class MethodFailed(Exception):
    """A port tool exists but could not answer (denied, non-zero exit, unparsable output)."""


# ---------------------------------------------------------------------------------------- parsing


def split_hostport(text):
    """'0.0.0.0:5000' / '[::]:5000' / '*:5000' / ':::5000' / '127.0.0.1%lo:5000' -> (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError("not an address: %r" % text)
    host = host.strip("[]").split("%")[0]
    if host in ("", "*"):
        host = "*"  # ss: any address, IPv4 and IPv6
    return host, int(port)


def _listener(host, port, pid=None, process=None):
    address = "[%s]:%d" % (host, port) if ":" in host else "%s:%d" % (host, port)
    return {"pid": pid, "process": process, "address": address}


def parse_ss(text, port):
    """`ss -Htanp sport = :PORT` -> (listeners, time_wait). Owner columns appear only when visible."""
    listeners, time_wait = [], 0
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 5:
            continue
        if not fields[1].isdigit():
            raise MethodFailed("unexpected ss line: %r" % line[:80])
        host, lport = split_hostport(fields[3])
        if lport != port:
            continue
        if fields[0] == "LISTEN":
            owners = _SS_USERS.findall(" ".join(fields[5:]))
            if not owners:
                listeners.append(_listener(host, lport))
            for name, pid in owners:
                listeners.append(_listener(host, lport, int(pid), name))
        elif fields[0] == "TIME-WAIT":
            time_wait += 1
    return listeners, time_wait


def parse_lsof(text, port):
    """`lsof -nP -iTCP:PORT -sTCP:LISTEN -F pcn` field output -> listeners."""
    listeners, pid, name = [], None, None
    for line in text.splitlines():
        tag, value = line[:1], line[1:]
        if tag == "p":
            pid, name = int(value), None
        elif tag == "c":
            name = value
        elif tag == "n" and "->" not in value:
            host, lport = split_hostport(value)
            if lport == port:
                listeners.append(_listener(host, lport, pid, name))
    return listeners


def parse_netstat(text, port):
    """`netstat -tanp` (net-tools or busybox) -> (listeners, time_wait)."""
    listeners, time_wait, seen_header = [], 0, False
    for line in text.splitlines():
        fields = line.split()
        if fields[:1] == ["Proto"]:
            seen_header = True
            continue
        if len(fields) < 6 or not fields[0].startswith("tcp"):
            continue
        host, lport = split_hostport(fields[3])
        if fields[0] == "tcp6" and host == "0.0.0.0":
            host = "::"
        if lport != port:
            continue
        if fields[5] == "LISTEN":
            owner = fields[6] if len(fields) > 6 else "-"
            pid, _, name = owner.partition("/")
            if pid.isdigit():
                listeners.append(_listener(host, lport, int(pid), name or None))
            else:
                listeners.append(_listener(host, lport))
        elif fields[5] == "TIME_WAIT":
            time_wait += 1
    if not seen_header and text.strip():
        raise MethodFailed("unexpected netstat output")
    return listeners, time_wait


def parse_fuser(stdout, port):
    """`fuser -n tcp PORT` -> listeners (pids only; fuser does not tell the address)."""
    return [_listener("*", port, int(p)) for p in re.findall(r"\d+", stdout)]


def _hex_address(text):
    host_hex, port_hex = text.split(":")
    raw = bytes.fromhex(host_hex)
    if len(raw) == 4:
        host = socket.inet_ntop(socket.AF_INET, raw[::-1])
    else:  # four little-endian 32-bit words
        words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
        host = socket.inet_ntop(socket.AF_INET6, words)
    return host, int(port_hex, 16)


def parse_proc_net_tcp(text, port):
    """/proc/net/tcp or tcp6 -> (listeners keyed by socket inode, time_wait)."""
    listeners, time_wait = {}, 0
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10:
            continue
        host, lport = _hex_address(fields[1])
        if lport != port:
            continue
        if fields[3] == TCP_LISTEN:
            listeners[fields[9]] = _listener(host, lport)
        elif fields[3] == TCP_TIME_WAIT:
            time_wait += 1
    return listeners, time_wait


# ------------------------------------------------------------------------------------- processes


def which(name):
    """A command on PATH, or in the sbin directories that non-login SSH PATHs often lack."""
    path = os.environ.get("PATH", "") + os.pathsep + os.pathsep.join(EXTRA_PATH)
    return shutil.which(name, path=path)


def _read(path, mode="r"):
    with open(path, mode) as handle:
        return handle.read()


def process_info(pid):
    """{'process', 'cmdline', 'user', 'start'} for a pid, with None where /proc will not tell."""
    info = {"process": None, "cmdline": None, "user": None, "start": None}
    try:
        info["process"] = _read("/proc/%d/comm" % pid).strip()
        raw = _read("/proc/%d/cmdline" % pid, "rb")
        # whitespace folded: an argument may hold newlines, and every report is one line per holder
        info["cmdline"] = " ".join(raw.replace(b"\0", b" ").decode("utf-8", "replace").split()) or None
        uid = os.stat("/proc/%d" % pid).st_uid
        try:
            info["user"] = pwd.getpwuid(uid).pw_name
        except KeyError:
            info["user"] = str(uid)
        info["start"] = process_start(pid)
    except (OSError, ValueError):
        pass
    return info


def process_start(pid):
    """The process's start time in clock ticks since boot: with the pid, it names one process.

    A zombie (exited, not yet reaped by its parent) has no start time: it holds nothing any more.
    """
    fields = _read("/proc/%d/stat" % pid)
    fields = fields[fields.rindex(")") + 2:].split()
    if fields[0] in ("Z", "X"):
        raise ValueError("pid %d has exited" % pid)
    return int(fields[19])


def socket_owners(inodes):
    """Map socket inode -> pid by reading /proc/*/fd (only processes we may look into)."""
    wanted, owners = set(inodes), {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fds = os.listdir("/proc/%s/fd" % entry)
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink("/proc/%s/fd/%s" % (entry, fd))
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in wanted:
                owners.setdefault(target[8:-1], int(entry))
    return owners


# ----------------------------------------------------------------------------------------- probe


def _run(argv, timeout=5.0):
    try:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise MethodFailed(str(exc)) from None
    return proc.returncode, proc.stdout.decode("utf-8", "replace"), \
        proc.stderr.decode("utf-8", "replace").strip()


def _fail_if(stderr, code, allowed=(0,)):
    if code not in allowed or re.search(r"denied|cannot open|not permitted", stderr, re.I):
        raise MethodFailed(stderr.splitlines()[0] if stderr else "exit status %d" % code)


def probe_ss(port):
    code, out, err = _run([which("ss"), "-Htanp", "sport", "=", ":%d" % port])
    _fail_if(err, code)
    return parse_ss(out, port)


def probe_lsof(port):
    code, out, err = _run([which("lsof"), "-nP", "-iTCP:%d" % port, "-sTCP:LISTEN", "-F", "pcn"])
    if not out.strip():  # lsof sees only processes it may inspect: silence is not "free"
        raise MethodFailed(err.splitlines()[0] if err else "no listener visible to lsof")
    _fail_if("", code)
    return parse_lsof(out, port), None


def probe_netstat(port):
    code, out, err = _run([which("netstat"), "-tanp"])
    _fail_if(err if "(Not all processes" not in err else "", code)
    return parse_netstat(out, port)


def probe_fuser(port):
    # fuser warns on stderr about every process it may not inspect, and finds no owner it cannot
    # see: it can name a holder, never prove the port free.
    code, out, err = _run([which("fuser"), "-n", "tcp", str(port)])
    listeners = parse_fuser(out, port)
    if not listeners:
        raise MethodFailed(err.splitlines()[-1] if err else "exit status %d" % code)
    return listeners, None


def probe_proc(port):
    found, time_wait, read = {}, 0, 0
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            text = _read(name)
        except FileNotFoundError:
            continue  # no IPv6 on this host; no IPv4 either is caught below
        except OSError as exc:
            raise MethodFailed("%s: %s" % (name, exc.strerror)) from None
        read += 1
        listeners, waits = parse_proc_net_tcp(text, port)
        found.update(listeners)
        time_wait += waits
    if not read:
        raise MethodFailed("/proc/net/tcp: not available (hidden from this process)")
    owners = socket_owners(found)
    result = []
    for inode, item in found.items():
        item["pid"] = owners.get(inode)
        result.append(item)
    return result, time_wait


def probe_sockets(port):
    """Connect to loopback, then try a bind: no tool needed, works on Android."""
    listeners = []
    for host in ("127.0.0.1", "::1"):
        try:
            with socket.create_connection((host, port), timeout=1.0):
                listeners.append(_listener(host, port))
        except OSError:
            pass
    if listeners:
        return listeners, None
    for family, host in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
        try:
            with socket.socket(family, socket.SOCK_STREAM) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return [_listener("?", port)], None
    return [], None


METHODS = (("ss", probe_ss), ("lsof", probe_lsof), ("netstat", probe_netstat),
           ("fuser", probe_fuser), ("proc", probe_proc), ("socket", probe_sockets))


def probe(port, app_dir=None, methods=None):
    """Who holds ``port`` here: the port-status document of DESIGN.md (less the host name)."""
    tried, result = [], None
    for name, func in METHODS:
        if methods and name not in methods:
            continue
        if name not in ("proc", "socket") and not which(name):
            continue
        try:
            listeners, time_wait = func(port)
        except (MethodFailed, ValueError, IndexError) as exc:
            tried.append({"method": name, "ok": False, "detail": str(exc)[:200]})
            continue
        tried.append({"method": name, "ok": True, "detail": ""})
        result = (name, listeners, time_wait)
        break
    if result is None:
        return {"ok": True, "error": None, "port": port, "state": "unknown", "listeners": [],
                "time_wait": None, "method": None, "tried": tried}
    name, listeners, time_wait = result
    _attribute_hidden(listeners, port, app_dir)
    for item in listeners:
        item.update(_owner(item["pid"], app_dir))
    state = "listening" if listeners else ("time_wait" if time_wait else "free")
    return {"ok": True, "error": None, "port": port, "state": state, "listeners": listeners,
            "time_wait": time_wait, "method": name, "tried": tried}


def _attribute_hidden(listeners, port, app_dir):
    """Where no tool may name a listener's owner (Android), it may still be ours: a process from a
    pidfile under app_dir/run, or a `-m dashboard` process of this app_dir (an orphan of an older
    run), whose DASHBOARD_PORT is this port. Our own processes stay visible in /proc there."""
    hidden = [item for item in listeners if not item["pid"]]
    if not hidden or not app_dir:
        return
    recorded = _pidfile_pids(app_dir)
    for pid in recorded + [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) not in recorded]:
        env = _environ(pid)
        if env is None:
            continue
        info = process_info(pid)
        dashboard = re.search(r"(^|\s)-m dashboard(\s|$)", info["cmdline"] or "")
        if env.get("DASHBOARD_PORT", "5000" if dashboard else None) != str(port):
            continue  # the bot's and the supervisor's pidfiles name no port
        if pid in recorded or (dashboard and is_managed(pid, info, app_dir)):
            for item in hidden:
                item["pid"], item["via"] = pid, "pidfile" if pid in recorded else "our process list"
            return


def _environ(pid):
    """A process's environment as a dict, or None where we may not read it."""
    try:
        raw = _read("/proc/%d/environ" % pid, "rb")
    except OSError:
        return None
    return dict(item.decode("utf-8", "replace").split("=", 1) for item in raw.split(b"\0") if b"=" in item)


def read_pidfile(path):
    """(pid, start, command or None) from one pidfile, or None when it is missing or unreadable.

    A pidfile line is "PID START [COMMAND]"; START (clock ticks since boot, from /proc/PID/stat)
    makes a reused pid count as a different process.
    """
    try:
        fields = _read(path).split(None, 2)
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


def _pidfile_pids(app_dir):
    """pids from the pidfiles whose process is still the one recorded."""
    pids = []
    for pid, start, _ in read_pidfiles(app_dir):
        try:
            if process_start(pid) == start:
                pids.append(pid)
        except (OSError, ValueError, IndexError):
            continue
    return pids


def _owner(pid, app_dir):
    info = process_info(pid) if pid else {"process": None, "cmdline": None, "user": None}
    return {"process": info["process"], "cmdline": info["cmdline"], "user": info["user"],
            "managed": bool(pid) and is_managed(pid, info, app_dir)}


def is_managed(pid, info, app_dir):
    """Our dashboard for this app_dir: a pidfile under run/ whose start time and command match, or
    a `-m dashboard` process whose DASHBOARD_APP_DIR or working directory is this app_dir."""
    if not app_dir:
        return False
    for recorded, start, command in read_pidfiles(app_dir):
        if recorded == pid and start == info.get("start"):
            return command is None or command == (info.get("cmdline") or "")
    app_dir = os.path.realpath(os.path.expanduser(app_dir))
    if not re.search(r"(^|\s)-m dashboard(\s|$)", info.get("cmdline") or ""):
        return False
    env = _environ(pid)
    if env is None:
        return False
    if "DASHBOARD_APP_DIR" in env:
        return os.path.realpath(os.path.expanduser(env["DASHBOARD_APP_DIR"])) == app_dir
    try:
        cwd = os.path.realpath(os.readlink("/proc/%d/cwd" % pid))
    except OSError:
        return False
    return cwd == app_dir or cwd.startswith(app_dir + os.sep)


def describe_holder(port):
    """One short phrase naming who holds ``port``: 'pid 812 (python -m http.server, user bot)'."""
    found = probe(port)
    names = []
    for item in found["listeners"]:
        if item["pid"]:
            command = item["cmdline"] or item["process"] or "?"
            if len(command) > 80:
                command = command[:77] + "..."
            names.append("pid %d (%s, user %s)" % (item["pid"], command, item["user"]))
    return ", ".join(names) or None


# ------------------------------------------------------------------------------------------ free


def protected_pids():
    """pid 1, this agent and every parent of it (the SSH session, sshd): never signalled."""
    pids, pid = {1, 0}, os.getpid()
    while pid > 1 and pid not in pids:
        pids.add(pid)
        try:
            stat = _read("/proc/%d/stat" % pid)
            pid = int(stat[stat.rindex(")") + 2:].split()[1])
        except (OSError, ValueError):
            break
    return pids


def stop_process(pid, grace, start=None):
    """SIGTERM, wait up to ``grace`` s, SIGKILL, confirm gone. Returns the signal that ended it.

    ``start`` (from process_start) pins the process: if the pid now names another process, the
    one we meant is gone and nothing is sent.
    """
    def alive():
        try:
            return start is None or process_start(pid) == start
        except (OSError, ValueError, IndexError):
            return False

    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        if not alive():
            return "gone"
        os.kill(pid, sig)  # PermissionError propagates: another user's process
        deadline = time.time() + wait
        while time.time() < deadline:
            if not alive():
                return sig.name
            time.sleep(0.05)
    raise MethodFailed("pid %d survived SIGKILL" % pid)


def free(port, app_dir=None, force=False, grace=3.0):
    """Stop what holds ``port`` if it is ours (or ``force``), then wait until nothing listens."""
    before = probe(port, app_dir)
    result = dict(before, stopped=[], refused=[])
    if before["state"] == "unknown":
        result.update(ok=False, error="cannot tell who holds port %d: every method failed" % port)
        return result
    never = protected_pids()
    for item in before["listeners"]:
        pid, holder = item["pid"], who(item) if item["pid"] else None
        if not pid:  # ss/lsof name no owner: another user's process, or Android hiding everything
            result["refused"].append(dict(item, reason=(
                "port %d is held by a process this user cannot see (another user's, or hidden by Android):"
                " free it with sudo or as its owner" % port)))
        elif pid in never:
            result["refused"].append(dict(item, reason="pid %d is this agent or its parent" % pid))
        elif not item["managed"] and not force:
            result["refused"].append(dict(item, reason="foreign holder %s: left alone (use --force)" % holder))
        else:
            try:
                how = stop_process(pid, grace, process_info(pid)["start"])
                result["stopped"].append(dict(item, signal=how))
            except PermissionError:
                result["refused"].append(dict(item, reason="permission denied for %s: free it with sudo "
                                              "or by hand" % holder))
            except (OSError, MethodFailed) as exc:
                result["refused"].append(dict(item, reason="%s: %s" % (holder, exc)))
    after = before
    deadline = time.time() + max(grace, 5.0)
    while result["stopped"] and time.time() < deadline:
        after = probe(port, app_dir)
        if after["state"] != "listening":
            break
        time.sleep(0.1)
    result.update(state=after["state"], listeners=after["listeners"], time_wait=after["time_wait"],
                  method=after["method"], tried=after["tried"], listeners_before=before["listeners"])
    result["ok"] = not result["refused"] and after["state"] in ("free", "time_wait")
    if not result["ok"]:
        reasons = [r["reason"] for r in result["refused"]] or ["port %d still held" % port]
        result["error"] = "; ".join(reasons)
    return result


def who(item):
    """'pid 812 (python -m http.server, user bot)': a holder as the refusals name it."""
    return "pid %s (%s, user %s)" % (item["pid"], item["cmdline"] or item["process"] or "?", item["user"])


# -------------------------------------------------------------------------------------- platform


def detect_platform(environ=None):
    """'termux' or 'linux'. Python 3.13+ on Termux says sys.platform == 'android', older ones not."""
    env = os.environ if environ is None else environ
    if env.get("TERMUX_VERSION") or "com.termux" in env.get("PREFIX", ""):
        return "termux"
    if sys.platform == "android" or platform.system() == "Android":
        return "termux"
    return "linux"


def doctor(port, app_dir):
    """What this host really offers: platform, interpreter, which port methods answer, the app dir.

    Each method is tried on a listener the agent opens itself: a method works when it finds it (and
    "owner" says whether it could name our pid), since lsof or fuser finding nothing proves nothing.
    """
    methods = []
    with socket.socket() as own:
        own.bind(("127.0.0.1", 0))
        own.listen(1)
        test_port = own.getsockname()[1]
        for name, func in METHODS:
            if name not in ("proc", "socket") and not which(name):
                methods.append({"method": name, "ok": False, "owner": False, "detail": "not installed"})
                continue
            try:
                found = func(test_port)[0]
            except (MethodFailed, ValueError, IndexError) as exc:
                methods.append({"method": name, "ok": False, "owner": False, "detail": str(exc)[:200]})
                continue
            owner = any(item["pid"] == os.getpid() for item in found)
            methods.append({"method": name, "ok": bool(found), "owner": owner,
                            "detail": "" if found else "did not see a listener the agent opened"})
    path = os.path.expanduser(app_dir)
    existing = path
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    try:
        disk = shutil.disk_usage(existing)
        free_bytes = disk.free
    except OSError:
        free_bytes = None
    return {"ok": True, "error": None, "platform": detect_platform(), "python": platform.python_version(),
            "python_path": sys.executable, "user": pwd.getpwuid(os.getuid()).pw_name,
            "uname": " ".join(platform.uname()[:3]), "methods": methods, "app_dir": path,
            "app_dir_exists": os.path.isdir(path), "app_dir_writable": os.access(existing, os.W_OK),
            "disk_free": free_bytes, "autostart": [p for p in (
                os.path.expanduser("~/.config/systemd/user/sulfur-ops.service"),
                os.path.expanduser("~/.termux/boot/sulfur-ops")) if os.path.exists(p)]}


def main(argv=None):
    """agent.py probe|free|doctor PORT [APP_DIR] [--force] [--grace S]: one JSON document out."""
    args = list(sys.argv[1:] if argv is None else argv)
    force = "--force" in args
    grace = 3.0
    if "--grace" in args:
        i = args.index("--grace")
        grace = float(args[i + 1])
        del args[i:i + 2]
    args = [a for a in args if a != "--force"]
    try:
        command, port = args[0], int(args[1])
        app_dir = args[2] if len(args) > 2 else "~/sulfur"
        if command == "probe":
            out = probe(port, app_dir)
        elif command == "free":
            out = free(port, app_dir, force, grace)
        elif command == "doctor":
            out = doctor(port, app_dir)
        else:
            raise ValueError(command)
    except (IndexError, ValueError):
        out = {"ok": False, "error": "usage: agent.py probe|free|doctor PORT [APP_DIR] [--force] [--grace S]"}
    print(json.dumps(out))
    return 0 if out.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
