"""One host through the system's OpenSSH client: the quick way for a person waiting on one host.

A one-host `port-status` is a person at a prompt. Through paramiko it paid for reading paramiko and
Fabric (a quarter of a second on its own, close to a whole `ssh` run) before the first byte left.
Here, when the `ssh` client is installed, the same host command goes through it, as Ansible does,
under the rules the SSH library path keeps (remote/ssh.py):

- the inventory's user and port win over ssh_config where the inventory sets them, as there;
- host keys: only the inventory's known_hosts file (no global one), strict or accept-new as the
  inventory says, written plain; never a user's ControlMaster (its key was checked under other rules),
  never a ProxyCommand; forwardings, agent and the locale's environment are not sent, nor is Kerberos
  tried (the library does not try it either);
- the key exchange: curve25519 first, the one the SSH library uses; OpenSSH 9's default hybrid
  (sntrup761x25519) doubled the handshake's time on the test hosts.

Anything this path cannot do the same way goes the library's way instead (``Unsuitable``): a jump
host, an ssh_config setting whose source it cannot tell, and every failure to connect but a time-out.
The library's way then says what went wrong in its own words, so a refused key or an unknown host
reads the same whichever client ran first; a time-out is worded here, so as not to wait twice.
"""

from __future__ import annotations

import atexit
import getpass
import glob
import os
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
ROUTING = {"hostname", "user", "port", "proxyjump", "proxycommand", "match", "canonicalizehostname"}


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
            if depth > 4:
                return True
            for pattern in words[1:]:
                pattern = os.path.join(base, os.path.expanduser(pattern))
                if any(_routing_in(found, base, depth + 1) for found in sorted(glob.glob(pattern))):
                    return True
    return False


def resolved(host: Host, client: str) -> Dict[str, str]:
    """ssh_config's view of ``host``: hostname, user, port, proxies. ``ssh -G`` makes no connection but
    costs 11 ms, a twentieth of a one-host port-status: where the files ssh reads set nothing of the
    route (most laptops, which list keys and options only), the view is ssh's defaults."""
    config = _expand(host.ssh_config)
    user_dir = os.path.expanduser("~/.ssh")
    files = [(config, user_dir)] if config else [(os.path.join(user_dir, "config"), user_dir),
                                                  ("/etc/ssh/ssh_config", "/etc/ssh")]
    if not any(_routing_in(path, base) for path, base in files):
        return {"hostname": host.hostname, "user": getpass.getuser(), "port": "22"}
    argv = [client, "-G"] + (["-F", config] if config else []) + ["--", host.hostname]
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=GRACE, stdin=subprocess.DEVNULL)
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
    seen = resolved(host, client)
    if seen.get("proxyjump", "none") != "none" or seen.get("proxycommand", "none") != "none":
        raise Unsuitable("a proxy in ssh_config")  # the library's hops, with the inventory's key rules
    options: List[str] = []
    # ssh -G shows the default (this user, 22) when ssh_config does not set one, and the inventory's
    # default applies then; an equal value may also be ssh_config's own, so that case is the library's
    for key, flag, default, ours in (("user", "-l", getpass.getuser(), host.user),
                                     ("port", "-p", "22", str(host.port))):
        if key in host.explicit:
            options += [flag, ours]
            seen[key] = ours
        elif seen.get(key) == default and ours != default:
            raise Unsuitable("cannot tell whether ssh_config sets %s" % key)
    known_hosts = _expand(host.known_hosts) or os.path.expanduser("~/.ssh/known_hosts")
    checking = "accept-new" if host.host_key_policy == "accept-new" else "yes"
    settings = {
        "BatchMode": "yes", "StrictHostKeyChecking": checking, "UserKnownHostsFile": known_hosts,
        "GlobalKnownHostsFile": "/dev/null", "HashKnownHosts": "no", "UpdateHostKeys": "no",
        "ControlMaster": "no", "ControlPath": "none", "ClearAllForwardings": "yes", "ForwardAgent": "no",
        "ForwardX11": "no", "PermitLocalCommand": "no", "GSSAPIAuthentication": "no", "SendEnv": "-*",
        "LogLevel": "ERROR",
        "ConnectTimeout": "%d" % max(1, round(host.connect_timeout)), "KexAlgorithms": KEX,
    }
    config = _expand(host.ssh_config)
    identity = _expand(host.identity_file)
    argv = ([client, "-T"] + (["-F", config] if config else []) + (["-i", identity] if identity else [])
            + options + [part for key, value in settings.items() for part in ("-o", "%s=%s" % (key, value))]
            + ["--", host.hostname])
    return argv, "%s@%s:%s" % (seen.get("user"), seen.get("hostname", host.hostname), seen.get("port"))


#: ssh processes started ahead of their task (remote/early.py), by their whole command line
_AHEAD: Dict[tuple, subprocess.Popen] = {}


def start_ahead(host: Host, command: str) -> None:
    """Start ``command``'s ssh now, before the task that will run it is reached; its request is
    written when the task runs it (OpenSSHRunner.run takes the process whose command line is the
    same). Not taken by exit, it is killed: the host's command ends on its stdin's end, unanswered."""
    argv = argv_for(host)[0] + [command]
    _AHEAD[tuple(argv)] = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                           stderr=subprocess.PIPE)
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
            self.argv + [command], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
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
