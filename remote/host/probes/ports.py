"""Who listens on a port, asked of whichever tool the host has: each tool's runner and its parser.

Methods, first that works wins: ss, lsof, netstat, fuser, /proc/net/tcp, then connect and bind probes
(no tool needed; they work where Android denies netlink and /proc/net). A tool that exists but fails
raises MethodFailed and the next one is tried: a failure is never read as "free". The parsers are pure
functions over a tool's text, tested on recorded output.
"""

import errno
import re
import socket
import subprocess

from remote.host.common.system import open_paths, read_file, which

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


def socket_owners(inodes):
    """Map socket inode -> pid by reading /proc/*/fd (only processes we may look into)."""
    wanted, owners = set(inodes), {}
    for pid, target in open_paths():
        if target.startswith("socket:[") and target[8:-1] in wanted:
            owners.setdefault(target[8:-1], pid)
    return owners


# ----------------------------------------------------------------------------------------- methods


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
            text = read_file(name)
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
