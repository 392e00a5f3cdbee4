"""One host through the system's OpenSSH client: the quick way for a person waiting on one host.

A one-host `port-status` is a person at a prompt. Through paramiko it paid for reading paramiko and
Fabric (a quarter of a second on its own, close to a whole `ssh` run) before the first byte left.
Here, when the `ssh` client is installed, the same host command goes through it, as Ansible does,
under the rules the SSH library path keeps (remote/ssh.py):

- the inventory's user and port win over ssh_config where the inventory sets them, as there;
- host keys: only the inventory's known_hosts file (no global one, no KnownHostsCommand, no DNS, no
  alias), strict or accept-new as the inventory says, written plain; never a user's ControlMaster
  (its key was checked under other rules), never a proxy; forwardings, agent and the locale's
  environment are not sent, nor is Kerberos tried (the library does not try it either);
- the key exchange: curve25519 first, the one the SSH library uses; OpenSSH 9's default hybrid
  (sntrup761x25519) doubled the handshake's time on the test hosts.

Anything this path cannot do the same way goes the library's way instead (``Unsuitable``): a jump
host, an ssh_config setting whose source it cannot tell, and every failure to connect but a time-out.
The library's way then says what went wrong in its own words, so a refused key or an unknown host
reads the same whichever client ran first; a time-out is worded here, so as not to wait twice.
"""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import selectors
import shutil
import subprocess
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from .capture import MAX_ANSWER, AnswerTooLarge
from .errors import HostError
from .inventory import Host

#: seconds past the connect and command time-outs before the client is given up (it never hangs a task)
GRACE = 10.0
KEX = "^curve25519-sha256,curve25519-sha256@libssh.org"


class Unsuitable(Exception):
    """This host or this failure is for the SSH library's path (fanout.on_host takes it)."""


@dataclass
class Result:
    """What invoke's run returns, as far as connections.call reads it."""

    stdout: str
    stderr: str
    exited: int


def _expand(path: Optional[str]) -> Optional[str]:
    return os.path.expanduser(path) if path else None


#: ssh_config keywords that change where, as whom or through what a host is reached (or may: Match)
ROUTING = {"hostname", "user", "port", "proxyjump", "proxycommand", "match", "canonicalizehostname",
           "hostkeyalias"}
#: where ssh may read its system-wide file: Debian's, Homebrew's (Apple silicon, Intel)
SYSTEM_CONFIGS = ("/etc/ssh/ssh_config", "/opt/homebrew/etc/ssh/ssh_config", "/usr/local/etc/ssh/ssh_config")


def _routing_in(path: str, base: str, depth: int = 0) -> bool:
    """Whether ssh_config file ``path`` (and what it includes: relative names are under ``base``, as
    ssh reads them) sets any ROUTING keyword; an unreadable or deeply nested one counts as yes."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            lines = handle.read().splitlines()
    except FileNotFoundError:
        return False
    except OSError:
        return True
    for line in lines:
        words = line.replace("=", " ").split()
        keyword = words[0].lower() if words else "#"
        if keyword in ROUTING:
            return True
        if keyword == "include":
            if depth > 4 or "$" in line or "%" in line:  # tokens ssh expands: its own reading then
                return True
            for pattern in words[1:]:
                pattern = os.path.join(base, os.path.expanduser(pattern))
                if any(_routing_in(found, base, depth + 1) for found in sorted(glob.glob(pattern))):
                    return True
    return False


def _me() -> str:
    """This machine's account name, as ssh takes it (not $LOGNAME, which getpass reads first)."""
    return pwd.getpwuid(os.getuid()).pw_name


def resolved(host: Host, client: str, options: List[str]) -> Dict[str, str]:
    """ssh_config's view of ``host`` with the command line's ``options`` (a Match may depend on them):
    hostname, user, port, proxies. ``ssh -G`` makes no connection but costs 11 ms, a twentieth of a
    one-host port-status: where the files ssh reads set nothing of the route (most laptops, which list
    keys and options only), the view is ssh's defaults."""
    config = _expand(host.ssh_config)
    user_dir = os.path.expanduser("~/.ssh")
    files = [(config, user_dir)] if config else [(os.path.join(user_dir, "config"), user_dir)] + [
        (path, os.path.dirname(path)) for path in SYSTEM_CONFIGS]
    if not any(_routing_in(path, base) for path, base in files):
        return {"hostname": host.hostname, "user": _me(), "port": "22"}
    argv = [client, "-G"] + (["-F", config] if config else []) + options + ["--", host.hostname]
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=GRACE, stdin=subprocess.DEVNULL,
                             env=_environment())
    except (OSError, subprocess.TimeoutExpired):
        raise Unsuitable("ssh -G failed") from None
    if out.returncode != 0:
        raise Unsuitable(out.stderr.strip())
    found: Dict[str, str] = {}
    for line in out.stdout.splitlines():
        key, _, value = line.partition(" ")
        found.setdefault(key.lower(), value)
    return found


def argv_for(host: Host) -> tuple:
    """(the ssh command line for ``host``, "user@host:port" as it connects), or Unsuitable when the
    SSH library's path must take it."""
    client = shutil.which("ssh")
    if client is None or host.is_local or host.jump or host.hops:
        raise Unsuitable("no ssh client, or a jump host")
    options: List[str] = []
    for key, flag, ours in (("user", "-l", host.user), ("port", "-p", str(host.port))):
        if key in host.explicit:
            options += [flag, ours]
    seen = resolved(host, client, options)
    if seen.get("proxyjump", "none") != "none" or seen.get("proxycommand", "none") != "none":
        raise Unsuitable("a proxy in ssh_config")  # the library's hops, with the inventory's key rules
    if seen.get("hostkeyalias", "none") != "none":
        raise Unsuitable("a HostKeyAlias: the key would be looked up under another name")
    # ssh -G shows the default (this user, 22) when ssh_config does not set one, and the inventory's
    # default applies then; an equal value may also be ssh_config's own, so that case is the library's
    for key, default, ours in (("user", _me(), host.user), ("port", "22", str(host.port))):
        if key in host.explicit:
            seen[key] = ours
        elif seen.get(key) == default and ours != default:
            raise Unsuitable("cannot tell whether ssh_config sets %s" % key)
    known_hosts = _expand(host.known_hosts) or os.path.expanduser("~/.ssh/known_hosts")
    config, identity = _expand(host.ssh_config), _expand(host.identity_file)
    for path in (known_hosts, identity):  # ssh reads these as its config's words: spaces, %h, "none"
        if path and (path.strip().lower() == "none" or any(c in path for c in " \t%\"'#")):
            raise Unsuitable("a path ssh would read otherwise than as written: %r" % path)
    checking = "yes"
    if host.host_key_policy == "accept-new":
        checking = "accept-new"
        _writable(known_hosts)
    settings = {
        "BatchMode": "yes", "StrictHostKeyChecking": checking, "UserKnownHostsFile": known_hosts,
        "GlobalKnownHostsFile": "/dev/null", "HashKnownHosts": "no", "UpdateHostKeys": "no",
        "KnownHostsCommand": "none", "VerifyHostKeyDNS": "no", "CheckHostIP": "no", "CanonicalizeHostname": "no",
        "ControlMaster": "no", "ControlPath": "none", "ProxyCommand": "none", "ClearAllForwardings": "yes",
        "ForwardAgent": "no", "ForwardX11": "no", "PermitLocalCommand": "no", "GSSAPIAuthentication": "no",
        "LogLevel": "ERROR", "ConnectTimeout": "%d" % max(1, round(host.connect_timeout)), "KexAlgorithms": KEX,
    }
    argv = ([client, "-T"] + (["-F", config] if config else []) + (["-i", identity] if identity else [])
            + options + [part for key, value in settings.items() for part in ("-o", "%s=%s" % (key, value))]
            + ["--", host.hostname])
    return argv, "%s@%s:%s" % (seen.get("user"), seen.get("hostname", host.hostname), seen.get("port"))


def _writable(known_hosts: str) -> None:
    """accept-new must be able to keep a new key: OpenSSH connects anyway when it cannot (and says so
    only at a log level below ours), which would accept any key at every run. Its folder is made as
    the library's policy makes it; a file that cannot be written is the library's to refuse."""
    folder = os.path.dirname(known_hosts) or "."
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
    except OSError:
        raise Unsuitable("cannot create %s" % folder) from None
    if not os.access(known_hosts if os.path.exists(known_hosts) else folder, os.W_OK):
        raise Unsuitable("%s cannot be written" % known_hosts)


def _environment() -> Dict[str, str]:
    """ssh's environment without the locale: ssh_config's SendEnv (Debian's sends LANG and LC_*) would
    otherwise reach the host, whose tools would then answer in the user's language."""
    return {k: v for k, v in os.environ.items() if not (k in ("LANG", "LANGUAGE") or k.startswith("LC_"))}


#: ssh processes started ahead of their task (remote/early.py), by their whole command line
_AHEAD: Dict[tuple, subprocess.Popen] = {}


def start_ahead(host: Host, command: str) -> None:
    """Start ``command``'s ssh now, before the task that will run it is reached; its request is
    written when the task runs it (OpenSSHRunner.run takes the process whose command line is the
    same). Not taken by exit, it is killed: the host's command ends on its stdin's end, unanswered."""
    argv = argv_for(host)[0] + [command]
    _AHEAD[tuple(argv)] = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                           stderr=subprocess.PIPE, env=_environment())
    if len(_AHEAD) == 1:
        atexit.register(_drop_ahead)


def _drop_ahead() -> None:
    for proc in _AHEAD.values():
        proc.kill()
        proc.wait()
    _AHEAD.clear()


class OpenSSHRunner:
    """A runner (connections.Runner) of one host command through ssh: `run()` only, no uploads."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.argv, self.where = argv_for(host)

    def run(self, command: str, timeout: Optional[float] = None, in_stream: Any = None, **_: Any) -> Result:
        request = (in_stream.read() or "") if in_stream is not None else ""
        limit = (timeout or 0) + self.host.connect_timeout + GRACE
        proc = _AHEAD.pop(tuple(self.argv + [command]), None) or subprocess.Popen(
            self.argv + [command], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=_environment())
        try:
            out, err = _exchange(proc, request.encode(), limit)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        result = Result(out.decode("utf-8", "replace"), err.decode("utf-8", "replace"), proc.returncode)
        if result.exited == 255 and not result.stdout.strip():
            raise self._failed(result.stderr)
        return result

    def _failed(self, stderr: str) -> Exception:
        """ssh's own failure: a time-out worded as the library words it, anything else is the library's."""
        if "timed out" not in stderr.lower():
            return Unsuitable(stderr.strip())
        if "banner" in stderr:
            return HostError("no SSH answer from %s within %s s: is sshd (not another service) on port %s?"
                             % (self.where, self.host.connect_timeout, self.where.rsplit(":", 1)[1]))
        return HostError("cannot connect to %s: timed out after %s s" % (self.where, self.host.connect_timeout))


def _exchange(proc: subprocess.Popen, request: bytes, limit: float) -> tuple:
    """Send the request, read both pipes to their end: stdout bounded by MAX_ANSWER, stderr's tail
    kept; a command still running ``limit`` seconds on (the monotonic clock) is killed: HostError."""
    deadline = time.monotonic() + limit
    out, err = bytearray(), bytearray()
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    try:
        proc.stdin.write(request)
        proc.stdin.close()
    except OSError:  # ssh gone already (it could not connect): its stderr says why
        pass
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ, out)
        selector.register(proc.stderr, selectors.EVENT_READ, err)
        while selector.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                raise HostError("command timed out after %g s" % limit)
            for key, _ in selector.select(left):
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    selector.unregister(key.fileobj)
                    continue
                key.data.extend(chunk)
                if key.data is out and len(out) > MAX_ANSWER:
                    raise HostError(str(AnswerTooLarge(MAX_ANSWER)))
                if key.data is err and len(err) > 65536:
                    del err[:-65536]
    return bytes(out), bytes(err)
