"""SSH connections with Fabric, and OpenSSH's host key semantics instead of Fabric's AutoAddPolicy.

Fabric installs paramiko's AutoAddPolicy (fabric#2071), which trusts any host key; here `strict`
refuses an unknown key, `accept-new` saves it, and a changed key is always refused (paramiko raises
BadHostKeyException before any policy is asked). Imported only when a task really reaches a host
over SSH: Fabric and paramiko take a quarter of a second to import, which local tasks never pay.
"""

from __future__ import annotations

import atexit
import logging
import os
import socket
import threading
from pathlib import Path
from typing import Any, Dict, List, Optional

import paramiko
from fabric import Config, Connection
from fabric.runners import Remote

from .capture import handle_output
from .errors import HostError, UnknownHostKey
from .inventory import SETTINGS, Host, jump_host

# paramiko's transport thread logs a traceback when a peer never speaks SSH; with no handler,
# Python's last-resort one prints it. The task's one-line error says the same.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

_known_hosts_lock = threading.Lock()


class StrictPolicy(paramiko.MissingHostKeyPolicy):
    def __init__(self, known_hosts: Path, host: Host) -> None:
        self.known_hosts, self.host = known_hosts, host

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        raise UnknownHostKey(
            "unknown host key for %s (%s %s); check it, then add it: ssh-keyscan -p %d %s >> %s "
            "(or set host_key_policy: accept-new)"
            % (hostname, key.get_name(), key.fingerprint, self.host.port, self.host.hostname,
               self.known_hosts)
        )


class AcceptNewPolicy(paramiko.MissingHostKeyPolicy):
    """OpenSSH's StrictHostKeyChecking=accept-new: remember a new key, never a changed one."""

    def __init__(self, known_hosts: Path) -> None:
        self.known_hosts = known_hosts

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        client.get_host_keys().add(hostname, key.get_name(), key)
        with _known_hosts_lock:
            self.known_hosts.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            with open(self.known_hosts, "a") as handle:  # append: never rewrite the user's file
                handle.write("%s %s %s\n" % (hostname, key.get_name(), key.get_base64()))


#: seconds past connect_timeout that a host may take to start a command (open a channel, answer exec)
START_GRACE = 10.0


class QuietStdinRemote(Remote):
    """Fabric's runner, minus a traceback when a command ends before reading its request, and with
    Ctrl+C passed on to the host.

    A shell guard (no release here) or a missing interpreter exits at once; writing the request to its
    closed channel then fails in invoke's stdin thread, which would replace the command's own answer
    (its exit status and the line it printed) with a ThreadException. invoke's local runner ignores
    the same case (a broken pipe) already.

    Without a pty Fabric re-raises Ctrl+C and then waits for the output threads, which end only when
    the host's command does: `logs --follow` went on, and only a second Ctrl+C got out (status 1).
    Here the first Ctrl+C sends ETX, as invoke's local runner does, and the host side stops on it
    (wire.Stdin.closed), so the command ends by itself with its own status; a second Ctrl+C is
    re-raised for a command that does not listen."""

    _etx_sent = False

    def send_interrupt(self, interrupt: KeyboardInterrupt) -> None:
        if self.using_pty or self._etx_sent:
            super().send_interrupt(interrupt)
            return
        self._etx_sent = True
        try:
            self.channel.send(b"\x03")
        except (OSError, EOFError):
            raise interrupt from None

    def start(self, command: str, shell: str, env: Dict[str, str], timeout: Optional[float] = None) -> None:
        """Fabric's start, bounded: paramiko waits for the answer to an exec request forever, and
        invoke's own timeout only starts once the command has started. A host that takes the
        channel and never answers the request is given up here, its channel closed."""
        limit = (getattr(self.context, "connect_timeout", None) or 10) + START_GRACE
        timer = threading.Timer(limit, self._abandon)
        timer.daemon = True
        timer.start()
        try:
            super().start(command, shell, env, timeout)
        finally:
            timer.cancel()

    def _abandon(self) -> None:
        channel = getattr(self, "channel", None)
        if channel is not None:
            channel.close()  # the exec request's wait ends, with an SSHException

    def _handle_output(self, buffer_: List[str], hide: bool, output: Any, reader: Any) -> None:
        handle_output(self, buffer_, hide, output, reader)  # bounded: a host cannot fill this machine's memory

    def _write_proc_stdin(self, data: bytes) -> None:
        try:
            super()._write_proc_stdin(data)
        except (OSError, EOFError):
            pass

    def close_proc_stdin(self) -> None:
        try:
            super().close_proc_stdin()
        except (OSError, EOFError):
            pass


def _expand(path: Optional[str]) -> Optional[Path]:
    return Path(os.path.expanduser(path)) if path else None


def _config(host: Host) -> Config:
    """Fabric's config with our runner, reading ``ssh_config:`` from the inventory or ~/.ssh/config."""
    path = _expand(host.ssh_config)
    if path is not None and not path.is_file():
        raise HostError("ssh_config %s is not a readable file: fix ssh_config in the inventory" % path)
    return Config(overrides={"runners": {"remote": QuietStdinRemote}},
                  runtime_ssh_path=str(path) if path else None)


def ssh_config_hops(host: Host) -> List[Host]:
    """The ProxyJump of the ssh_config entry for ``host`` as hops with ``host``'s own key settings
    (the inventory's ``jump`` wins); a ProxyCommand is refused: it runs a shell command per host."""
    if host.hops or host.jump:
        return list(host.hops)
    found = _config(host).base_ssh_config.lookup(host.hostname)
    if "proxycommand" in found:
        raise HostError("%s: ProxyCommand in ssh_config is not supported: use ProxyJump there, or jump: in the "
                        "inventory" % host.name)
    hops = []
    for spec in (found.get("proxyjump") or "").split(","):
        spec = spec.strip()
        if spec and spec.lower() != "none":
            hop = jump_host(spec, dict(_settings(host), jump=None), spec)
            if hop is None:
                raise HostError("%s: ProxyJump %r in ssh_config is not user@host[:port]" % (host.name, spec))
            hops.append(hop)
    return hops


def _settings(host: Host) -> dict:
    return {k: getattr(host, k) for k in SETTINGS}


def connection_for(host: Host, sock: Any = None) -> Connection:
    """A Fabric Connection for ``host`` (through ``sock``, a channel of the previous hop); ssh_config
    fills what the inventory does not set. Fabric's own gateway is off: it would trust any key on
    the jump hop and connect it without a timeout."""
    config = _config(host)
    ssh_config = config.base_ssh_config.lookup(host.hostname)
    user = host.user if "user" in host.explicit or "user" not in ssh_config else None
    port = host.port if "port" in host.explicit or "port" not in ssh_config else None
    # connect_timeout bounds the whole handshake: a host that accepts TCP but never speaks SSH
    # would otherwise hold its row for paramiko's 15 s banner and 30 s auth defaults
    connect_kwargs = {"banner_timeout": host.connect_timeout, "auth_timeout": host.connect_timeout}
    identity = _expand(host.identity_file)
    if identity:
        connect_kwargs["key_filename"] = [str(identity)]
    if sock is not None:
        connect_kwargs["sock"] = sock
    conn = Connection(host.hostname, user=user, port=port, config=config, gateway=False,
                      connect_timeout=host.connect_timeout, connect_kwargs=connect_kwargs)
    known_hosts = _expand(host.known_hosts)
    if known_hosts and known_hosts.exists():
        conn.client.load_host_keys(str(known_hosts))
    policy = AcceptNewPolicy(known_hosts) if host.host_key_policy == "accept-new" else StrictPolicy(
        known_hosts, host)
    conn.client.set_missing_host_key_policy(policy)
    return conn


def _open(host: Host, sock: Any = None, hop_of: Optional[Host] = None) -> Connection:
    conn = connection_for(host, sock)
    try:
        conn.open()
    except Exception as exc:  # every way a connect can fail becomes one line
        conn.close()
        text = describe_connect_error(host, conn, exc)
        raise HostError("jump host %s (for %s): %s" % (host.name, hop_of.name, text) if hop_of else text) from None
    _no_delay(conn)
    transport = conn.client.get_transport()
    if transport is not None:  # a host that takes the login and never opens the channel: not 3600 s
        transport.channel_timeout = host.connect_timeout
    return conn


def _no_delay(conn: Connection) -> None:
    """TCP_NODELAY, as OpenSSH's own client sets for a session: every call here is small requests
    and answers, and Nagle's algorithm held the second of two small writes (a request, then its
    stdin) for the server's delayed ACK, about 40 ms on each ctl call. A hop's channel is no socket."""
    sock = getattr(conn.client.get_transport(), "sock", None)
    if isinstance(sock, socket.socket) and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _Hops:
    """Jump hosts connected once per task, whatever number of hosts sit behind them (and from
    however many threads): kept open until the task ends."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.open: Dict[tuple, Connection] = {}
        self.locks: Dict[tuple, threading.Lock] = {}

    def through(self, chain: List[Host], target: Host) -> Any:
        """A direct-tcpip channel to ``target`` through ``chain`` (None: no chain)."""
        sock, key = None, ()
        for i, hop in enumerate(chain):
            key += ((hop.user, hop.hostname, hop.port),)
            with self.lock:
                hop_lock = self.locks.setdefault(key, threading.Lock())
            with hop_lock:
                conn = self.open.get(key)
                if conn is None or not conn.is_connected:
                    conn = self.open[key] = _open(hop, sock, target)
            after = chain[i + 1] if i + 1 < len(chain) else target
            sock = self.channel(conn, hop, after, target)
        return sock

    @staticmethod
    def channel(conn: Connection, hop: Host, after: Host, target: Host) -> Any:
        where = connection_for(after)  # not connected: its HostName and Port as ssh_config resolves them
        try:
            return conn.transport.open_channel("direct-tcpip", (where.host, where.port), ("127.0.0.1", 0),
                                               timeout=after.connect_timeout)
        except Exception as exc:  # refused forwarding, an unreachable next hop, a timeout
            raise HostError("jump host %s (for %s): cannot reach %s:%s from there: %s" % (
                hop.name, target.name, where.host, where.port, str(exc).strip() or type(exc).__name__)) from None

    def close(self) -> None:
        for conn in reversed(list(self.open.values())):
            try:
                conn.close()
            except Exception:
                pass
        self.open.clear()


HOPS = _Hops()
atexit.register(HOPS.close)


def connect(host: Host) -> Connection:
    """An open connection (through its jump hosts), or HostError with the reason in one line."""
    return _open(host, HOPS.through(ssh_config_hops(host), host))


def route(host: Host) -> List[str]:
    """The names of the hops to ``host``, first one first (doctor prints them)."""
    return [hop.name for hop in ssh_config_hops(host)]


def describe_connect_error(host: Host, conn: Connection, exc: BaseException) -> str:
    where = "%s@%s:%s" % (conn.user, conn.host, conn.port)
    if isinstance(exc, HostError):
        return str(exc)
    if isinstance(exc, paramiko.BadHostKeyException):
        return ("HOST KEY CHANGED for %s: refusing to connect (possible man-in-the-middle). If the host "
                "was reinstalled, remove the old key: ssh-keygen -R '%s' -f %s"
                % (where, exc.hostname, host.known_hosts))
    if isinstance(exc, paramiko.PasswordRequiredException):
        return ("key %s is encrypted: add it to ssh-agent with ssh-add %s (a parallel run never asks for a "
                "passphrase)" % (host.identity_file, host.identity_file))
    if isinstance(exc, paramiko.AuthenticationException):
        return "authentication failed for %s: check user and identity_file, or ssh-copy-id" % where
    if isinstance(exc, socket.gaierror):
        return "cannot resolve host name %r: check hostname in the inventory" % conn.host
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "cannot connect to %s: timed out after %s s" % (where, host.connect_timeout)
    if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError) or isinstance(exc, ConnectionError):
        return "cannot connect to %s: connection refused (is sshd running on port %s?)" % (where, conn.port)
    if isinstance(exc, paramiko.SSHException) and (
            "banner" in str(exc) or "No existing session" in str(exc)):
        # paramiko's words when the peer accepted TCP but never spoke SSH within the timeout
        return "no SSH answer from %s within %s s: is sshd (not another service) on port %s?" % (
            where, host.connect_timeout, conn.port)
    if isinstance(exc, OSError):
        return "cannot connect to %s: %s" % (where, exc.strerror or exc)
    return "cannot connect to %s: %s" % (where, exc)


