"""A new host's first contact: its SSH host key fetched (as ssh-keyscan does) and its fingerprint, the
trust recorded in the inventory's known_hosts, and the one-time setup a Termux phone needs.

Only the key exchange happens here: no authentication, no command. Trust is the user's decision (or
--accept-new's); a key that differs from the one already known is never trusted by this code.
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from . import inventory_text
from .errors import HostError, UsageError
from .inventory import NAME, Host, load

_APPEND = threading.Lock()


@dataclass
class HostKey:
    known_as: str        # the known_hosts name: host, or [host]:port
    keytype: str
    base64: str

    @property
    def fingerprint(self) -> str:
        """OpenSSH's form: SHA256:<base64 of the key's sha256, unpadded>."""
        digest = hashlib.sha256(base64.b64decode(self.base64)).digest()
        return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def known_as(hostname: str, port: int) -> str:
    return hostname if port == 22 else "[%s]:%d" % (hostname, port)


def scan(host: Host, prefer: List[str]) -> HostKey:
    """The host's key, from the key exchange alone, through its jump hosts as every task reaches it;
    of a type in ``prefer`` when known_hosts records some (as OpenSSH asks for the known type).
    HostError with what to check when it fails."""
    import paramiko

    from . import ssh  # paramiko's logging kept quiet (our error is one line), and the hops

    hostname, port, timeout = host.hostname, host.port, host.connect_timeout
    where = "%s:%d" % (hostname, port)
    try:
        hops = ssh.ssh_config_hops(host)
        sock = ssh.HOPS.through(hops, host) if hops else socket.create_connection((hostname, port), timeout=timeout)
    except socket.gaierror:
        raise HostError("cannot resolve host name %r: check the name (or use its IP address)" % hostname) from None
    except socket.timeout:
        raise HostError("cannot connect to %s: timed out after %s s (is the host on, and on this network?)"
                        % (where, timeout)) from None
    except OSError as exc:
        raise HostError("cannot connect to %s: %s (is sshd running on port %d?)"
                        % (where, exc.strerror or exc, port)) from None
    transport = paramiko.Transport(sock)
    transport.banner_timeout = transport.handshake_timeout = timeout
    usable = [kind for kind in prefer if kind in transport.get_security_options().key_types]
    if usable:
        transport.get_security_options().key_types = usable
    try:
        transport.start_client(timeout=timeout)
        key = transport.get_remote_server_key()
    except (paramiko.SSHException, EOFError, OSError) as exc:
        raise HostError("no SSH answer from %s within %s s: is sshd (not another service) on port %d? (%s)"
                        % (where, timeout, port, exc or type(exc).__name__)) from None
    finally:
        transport.close()
    return HostKey(known_as(hostname, port), key.get_name(), key.get_base64())


def recorded(known_hosts: Path, name: str) -> Dict[str, str]:
    """keytype -> base64 of what known_hosts records for ``name``; HostError when it cannot be read
    (an unreadable file must never look like "nothing known yet")."""
    import paramiko

    if not known_hosts.exists():
        return {}
    try:
        found = paramiko.HostKeys(str(known_hosts)).lookup(name)
    except (OSError, paramiko.SSHException, ValueError) as exc:
        raise HostError("cannot read %s (%s): fix or move it, then add-host again" % (known_hosts, exc)) from None
    return {kind: key.get_base64() for kind, key in (found or {}).items()}


def known_state(known: Dict[str, str], key: HostKey) -> str:
    """new (nothing recorded), known (this very key), or changed: another key is recorded, of its
    type or of another (a host that offers a new type instead of the known one is refused too)."""
    if not known:
        return "new"
    return "known" if known.get(key.keytype) == key.base64 else "changed"


def trust(known_hosts: Path, key: HostKey) -> None:
    """Append the key to known_hosts (created 600 in a 700 directory); never rewrite the file."""
    with _APPEND:
        known_hosts.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(str(known_hosts), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "a") as handle:
            handle.write("%s %s %s\n" % (key.known_as, key.keytype, key.base64))


def public_key(identity_file: Optional[str]) -> Optional[str]:
    """The operator's public key line (identity_file + .pub, else the usual ones), or None."""
    candidates = [identity_file + ".pub"] if identity_file else [
        "~/.ssh/id_ed25519.pub", "~/.ssh/id_ecdsa.pub", "~/.ssh/id_rsa.pub"]
    for candidate in candidates:
        path = Path(os.path.expanduser(candidate))
        if path.is_file():
            return path.read_text().strip()
    return None


def termux_setup(pubkey: Optional[str], port: int = 8022) -> List[str]:
    """The commands to paste into Termux once, with what `invoke doctor` checks afterwards."""
    key_step = ("echo %s >> ~/.ssh/authorized_keys" % _quote(pubkey) if pubkey else
                "# no public key found here: make one with ssh-keygen -t ed25519, then run add-host again")
    return [
        "pkg install -y python openssh termux-api",
        "mkdir -p ~/.ssh && chmod 700 ~/.ssh",
        key_step,
        "chmod 600 ~/.ssh/authorized_keys",
        "sshd    # listens on port %d" % port,
        "termux-wake-lock    # keeps Android from pausing Termux; the notification shows it",
        "mkdir -p ~/.termux/boot && printf '#!/data/data/com.termux/files/usr/bin/sh\\ntermux-wake-lock\\nsshd\\n' "
        "> ~/.termux/boot/start-sshd && chmod 700 ~/.termux/boot/start-sshd",
        "# also: install the Termux:API and Termux:Boot apps (F-Droid, same source as Termux) and open "
        "Termux:Boot once",
        "ifconfig 2>/dev/null | grep 'inet ' || ip addr    # the phone's address, for --hostname",
    ]


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


# ------------------------------------------------------------------------------------ the tasks' flows


@dataclass
class Added:
    host: Host
    written: bool            # the inventory got the entry (False: it was there already)
    key: Optional[HostKey]   # None: the host could not be reached
    key_state: str           # new (now trusted) | known | unreachable
    problem: Optional[str]   # why it could not be reached, and what to check


def entry(hostname: str, port: Optional[str] = None, user: Optional[str] = None,
          termux: bool = False) -> Dict[str, Any]:
    """add-host's flags as the inventory entry it writes: only what was given, so that the inventory's
    defaults still apply to the rest; a Termux phone's sshd listens on 8022 and its interpreter is python."""
    values: Dict[str, Any] = {"hostname": hostname}
    if port or termux:
        values["port"] = int(port or 8022)
    if user:
        values["user"] = user
    if termux:
        values.update(platform="termux", python="python")
    return values


def add(path: Path, name: str, values: Dict[str, Any], group: Optional[str], accept_new: bool,
        say: Callable[[str], None], ask: Callable[[str], bool],
        before_contact: Optional[Callable[[Host], None]] = None) -> Added:
    """add-host: validate, fetch and trust the key, then append to the inventory. Nothing is written
    when the values are wrong, the key changed or the user does not trust it. ``before_contact`` gets
    the host, with every setting resolved, once it is valid and before it is reached."""
    for what, value in (("host name", name), ("group name", group)):
        if value is not None and not NAME.fullmatch(value):
            raise UsageError("%r is not a valid %s: letters, digits, _ and - only" % (value, what))
    inventory = load(path)
    text = path.read_text()
    existing = inventory.hosts.get(name)
    if existing is not None:
        same = existing.hostname == values["hostname"] and existing.port == values.get("port", existing.port)
        if not same:
            raise UsageError("%s: host %s exists already (hostname %s, port %d): pick another name, or "
                             "invoke remove-host %s first" % (path, name, existing.hostname, existing.port, name))
        say("%s is in the inventory already with these settings: checking its host key only" % name)
        host, new_text = existing, None
    else:
        if name in inventory.groups:
            raise UsageError("%s: %s is the name of a group: pick another name" % (path, name))
        new_text = inventory_text.add_host(text, path, name, values, group)
        host = inventory_text.check(path, new_text).hosts[name]  # every value checked as the inventory does
    if before_contact is not None:
        before_contact(host)
    known_hosts = Path(os.path.expanduser(host.known_hosts))
    known = recorded(known_hosts, known_as(host.hostname, host.port))
    try:
        key = scan(host, list(known))
    except HostError as exc:
        if new_text is not None:
            inventory_text.write(path, new_text)
        return Added(host, new_text is not None, None, "unreachable", str(exc))
    say("%s (%s) has a %s key, fingerprint %s" % (name, key.known_as, key.keytype, key.fingerprint))
    state = known_state(known, key)
    if state == "changed":
        raise HostError("HOST KEY CHANGED for %s: %s records another key (%s) for it; nothing written. If the "
                        "host was reinstalled: ssh-keygen -R '%s' -f %s, then add-host again"
                        % (key.known_as, known_hosts, ", ".join(sorted(known)), key.known_as, known_hosts))
    if state == "new":
        if not (accept_new or ask("Trust this key (compare it with the host's own: ssh-keygen -lf "
                                  "/etc/ssh/ssh_host_%s_key.pub, or on Termux $PREFIX/etc/ssh/)? [y/N] "
                                  % key.keytype.replace("ssh-", "").split("-")[0])):
            raise HostError("%s: the key was not trusted: nothing written" % name)
        trust(known_hosts, key)
        say("trusted: %s %s added to %s" % (key.known_as, key.keytype, known_hosts))
    if new_text is not None:
        inventory_text.write(path, new_text)
    return Added(host, new_text is not None, key, state, None)


def remove(path: Path, name: str) -> List[str]:
    """remove-host: the entry and its place in groups out of the inventory; refused for a jump host.
    Returns the groups it was in."""
    inventory = load(path)
    if name not in inventory.hosts:
        raise UsageError("%s: no host %s (known: %s)" % (path, name, ", ".join(inventory.hosts) or "none"))
    users = [h.name for h in inventory.hosts.values() if h.name != name and
             name in (h.jump if isinstance(h.jump, list) else [h.jump])]
    if users:
        raise UsageError("%s: %s is the jump host of %s: change their `jump:` first" % (path, name, ", ".join(users)))
    new_text = inventory_text.remove_host(path.read_text(), path, name)
    inventory_text.check(path, new_text)
    inventory_text.write(path, new_text)
    return inventory.hosts[name].groups
