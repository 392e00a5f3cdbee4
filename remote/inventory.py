"""inventory.yml: load, validate everything up front, select hosts.

Validation works on PyYAML's node tree, not on the loaded dict, so every error can name the file,
the line and the key ("inventory.yml:7: hosts.pi.port: 70000 is outside 1-65535"). Nothing runs on
any host until the whole file is valid: a typo never leaves half the hosts changed.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import yaml

from remote.host import CODE_DIR

from .coordination import Coordination
from .coordination import parse as parse_coordination
from .errors import InventoryError
from .inventory_yaml import brief, compose, construct, one_line
from .units import UnitError, parse_duration, parse_size

LOCAL = "local"

# every pattern is used with fullmatch: `$` after match() also accepts a trailing newline ("pi\n")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")  # host and group names
_HOSTNAME = re.compile(r"[A-Za-z0-9._:%-]+")  # DNS names, IPv4, IPv6 (with zone); no shell syntax
_USER = re.compile(r"[A-Za-z0-9._][A-Za-z0-9._@-]*")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_COMMAND_WORD = re.compile(r"[A-Za-z0-9._/+~-]+")  # an interpreter name or path


def _port(value: Any) -> Optional[str]:
    return None if 1 <= value <= 65535 else "%s is outside 1-65535" % value


def _positive(value: Any) -> Optional[str]:
    return None if value > 0 else "%s must be greater than 0" % value


def _matches(pattern: re.Pattern, what: str):
    def check(value: str) -> Optional[str]:
        return None if pattern.fullmatch(value) else "%r is not a valid %s (letters, digits, . _ - only)" % (
            value, what)
    return check


def _plain_text(value: str, what: str) -> Optional[str]:
    """No empty value and no control characters: these go into paths, scripts and units on hosts."""
    if not value.strip():
        return "must name %s, not be empty" % what
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        return "%r has control characters" % value
    return None


def _hooks(value: Any) -> Optional[str]:
    """The hooks as the host will read them (one check for both sides)."""
    from remote.host.common.errors import BadRequest
    from remote.host.releases.hooks import normalize

    try:
        normalize(value)
    except BadRequest as exc:
        return str(exc)
    return None


@dataclass(frozen=True)
class _Units:
    """A setting written with units, read by remote/units.py (``parse_duration``, ``parse_size``):
    in SETTINGS in place of the types; its check then gets the number and says what is wrong
    with it without repeating it ("must be greater than 0"), since the message shows what was written."""

    parse: Callable[..., Any]
    allow_off: bool = False


_DURATION = _Units(parse_duration)


def _one_of(*choices: str):
    def check(value: str) -> Optional[str]:
        return None if value in choices else "%r is not one of: %s" % (value, ", ".join(choices))
    return check


# key -> (types, default, extra check); types are YAML-loaded Python types, or _Units (a duration, a size)
SETTINGS: Dict[str, tuple] = {
    "user": ((str,), None, _matches(_USER, "user name")),
    "port": ((int,), 22, _port),
    "platform": ((str,), "linux", _one_of("linux", "termux")),
    "python": ((str,), None, _matches(_COMMAND_WORD, "interpreter")),
    "app_dir": ((str,), "~/sulfur", lambda v: _plain_text(v, "a directory")),
    "dashboard_port": ((int,), 5000, _port),
    "dashboard_host": ((str,), "127.0.0.1", _matches(_HOSTNAME, "bind address")),  # 0.0.0.0 needs a token
    "bot_command": ((str, type(None)), None, None),
    "identity_file": ((str, type(None)), None, None),
    "known_hosts": ((str,), "~/.ssh/known_hosts", None),
    "host_key_policy": ((str,), "strict", _one_of("strict", "accept-new")),
    "connect_timeout": (_DURATION, 10, lambda v: None if v > 0 else "must be greater than 0"),  # never off
    "wake_lock": ((bool, type(None)), None, None),
    "alert_webhook": ((str, type(None)), None, None),
    "source": ((str, type(None)), None, None),
    "shared_paths": ((list,), [], None),
    "keep_releases": ((int,), 5, lambda v: None if v >= 2 else "keep at least 2 releases"),
    # the bot: which token names it, its role, its liveness, its start budget, its shards
    "bot_token_env": ((str, type(None)), None, _matches(_ENV_NAME, "variable name")),
    "standby": ((bool,), False, None),
    "watchdog_sec": (_Units(parse_duration, allow_off=True), 0, None),  # 0 or off: no watchdog
    # starts confirmed by READY=1: true; false: never (a bot that stopped saying it); unset: once it has said it
    "bot_notify": ((bool, type(None)), None, None),
    "bot_ready_timeout": (_DURATION, 60, lambda v: None if 0 < v <= 3600 else "must be between 1s and 1h"),
    "boot_wait": (_Units(parse_duration, allow_off=True), 0,  # 0 or off: the bot starts at boot at once
                  lambda v: None if v <= 3600 else "%s s is over 1h: a bot held that long at boot is a bot down" % v),
    "bot_starts_per_day": ((int,), 50, lambda v: None if 1 <= v <= 1000 else
                           "%s is outside 1-1000 (Discord resets a token after 1000 logins a day)" % v),
    "shard_count": ((int,), 1, _positive),
    "shards": ((str, int, type(None)), None, None),
    # the bot's data (remote/host/data): scheduled snapshots on the active host, their retention, replicas
    "backup_every": (_Units(parse_duration, allow_off=True), 21600,  # 0 or off: no scheduled snapshots
                     lambda v: None if v == 0 or v >= 30 else "%s s is under 30s: snapshots that often are a load, "
                     "not a backup" % v),
    "backup_keep": ((int,), 10, _positive),
    "backup_max": (_Units(parse_size), 1 << 30, lambda v: None if v > 0 else "must be greater than 0"),
    "replicate": ((bool,), False, None),
    "replicate_max": (_Units(parse_size), 100 << 20, lambda v: None if v > 0 else "must be greater than 0"),
    # reaching hosts: another inventory host or user@host[:port] in between (a list: a chain)
    "jump": ((str, list, type(None)), None, None),
    "ssh_config": ((str, type(None)), None, lambda v: _plain_text(v, "an ssh_config file")),
    # deploy: commands run on each host before and after the switch (a host's replace the defaults')
    "hooks": ((dict, type(None)), None, _hooks),
    "hook_timeout": (_DURATION, 300, lambda v: None if 0 < v <= 86400 else  # never off: a hook must end
                     "must be greater than 0 and at most a day (1d, 86400)"),
}
HOST_ONLY = {
    "hostname": ((str,), None, _matches(_HOSTNAME, "host name")),
    "connection": ((str,), "ssh", _one_of("ssh", "local")),
}


@dataclass
class Host:
    """One inventory host with every setting resolved (its own, else the defaults, else built in).

    The settings' fields are SETTINGS' keys (tests/test_inventory.py holds the two together)."""

    name: str
    hostname: Optional[str]
    connection: str
    user: str
    port: int
    platform: str
    python: str
    app_dir: str
    dashboard_port: int
    dashboard_host: str
    bot_command: Optional[str]
    identity_file: Optional[str]
    known_hosts: str
    host_key_policy: str
    connect_timeout: float
    wake_lock: bool
    alert_webhook: Optional[str]
    source: Optional[str]
    shared_paths: List[str]
    keep_releases: int
    bot_token_env: Optional[str]
    standby: bool
    watchdog_sec: float
    bot_notify: Optional[bool]
    bot_ready_timeout: float
    boot_wait: float
    bot_starts_per_day: int
    shard_count: int
    shards: Optional[str]
    backup_every: float
    backup_keep: int
    backup_max: int
    replicate: bool
    replicate_max: int
    jump: Any
    ssh_config: Optional[str]
    hooks: Optional[Dict[str, Any]]
    hook_timeout: float
    groups: List[str] = field(default_factory=list)
    explicit: set = field(default_factory=set)  # keys the file sets: the rest may come from ~/.ssh/config
    hops: List[Host] = field(default_factory=list)  # the jump hosts in between, first one first
    dev_settings: Optional[Dict[str, Any]] = None  # this machine's running `invoke dev` stack (devstack.running_dev)
    coordination: Optional[Coordination] = None  # the inventory's etcd section, the same for every host
    place: int = 0  # the bot's hosts in inventory order, standby ones last: 1 s of waiting per place in an election

    @property
    def is_local(self) -> bool:
        return self.connection == LOCAL

    @property
    def address(self) -> str:
        if self.is_local:
            return "local"
        return self.hostname if self.port == 22 else "%s:%d" % (self.hostname, self.port)


@dataclass
class Inventory:
    path: Path
    hosts: Dict[str, Host]  # in file order
    groups: Dict[str, List[str]]
    coordination: Optional[Coordination] = None

    def select(self, names: Optional[str] = None, every: bool = False) -> List[Host]:
        """Hosts for --host NAMES (hosts or groups, comma-separated) or --all, in inventory order.

        Neither: this machine ("local"), from the inventory if it has a local entry.
        """
        if every:
            return [h for h in self.hosts.values() if not h.is_local]
        if not names:
            local = [h for h in self.hosts.values() if h.is_local]
            return local[:1] or [self._implicit_local()]
        wanted: set = set()
        for name in (n.strip() for n in names.split(",")):
            if name in self.hosts:
                wanted.add(name)
            elif name in self.groups:
                wanted.update(self.groups[name])
            else:
                known = ", ".join(list(self.hosts) + ["group " + g for g in self.groups])
                raise InventoryError("%s: unknown host or group %r in --host (known: %s)"
                                     % (self.path, name, known or "none"))
        return [h for n, h in self.hosts.items() if n in wanted]

    def _implicit_local(self) -> Host:
        settings = {k: v[1] for k, v in SETTINGS.items()}
        _fill_platform_defaults(settings)
        return Host(LOCAL, None, LOCAL, **settings)


def inventory_path() -> Path:
    return Path(os.environ.get("SULFUR_INVENTORY") or Path(CODE_DIR) / "inventory.yml")


def _fill_platform_defaults(settings: Dict[str, Any]) -> None:
    termux = settings["platform"] == "termux"
    if settings["python"] is None:
        settings["python"] = "python" if termux else "python3"
    if settings["user"] is None:
        settings["user"] = "bot"
    if settings["wake_lock"] is None:
        settings["wake_lock"] = termux


class _Checker:
    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, node: yaml.Node, key: str, message: str) -> InventoryError:
        return InventoryError(one_line("%s:%d: %s: %s" % (self.path, node.start_mark.line + 1, key, message)))

    def mapping(self, node: yaml.Node, key: str) -> List[tuple]:
        if isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null"):
            return []
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(node, key, "expected a mapping (key: value)")
        seen = set()
        for k, _ in node.value:
            if k.value in seen:
                raise self.fail(k, key + "." + k.value, "given twice")
            seen.add(k.value)
        return [(k, v) for k, v in node.value]

    def value(self, node: yaml.Node, key: str, spec: tuple) -> Any:
        types, _, check = spec
        null = isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null")  # `key:` with nothing after
        try:
            value = None if null else construct(node)
        except ValueError as exc:
            raise self.fail(node, key, str(exc)) from None
        if isinstance(types, _Units):
            return self.with_units(node, key, types, check, value)
        if isinstance(value, bool) and bool not in types:
            raise self.fail(node, key, "expected %s, got %s" % (_names(types), brief(value)))
        if not isinstance(value, types):
            raise self.fail(node, key, "expected %s, got %s" % (_names(types), brief(value)))
        if key.endswith("shared_paths"):
            self.shared_paths(node, key, value)
        problem = check(value) if check and value is not None else None
        if problem:
            raise self.fail(node, key, problem)
        return value

    def shared_paths(self, node: yaml.Node, key: str, value: List[Any]) -> None:
        """Each entry a relative, normal directory inside shared/, as the host checks it: the line of the
        entry that is not."""
        from remote.host.common.paths import shared_paths_problem

        items = node.value  # a list comes from a sequence node: an entry's own line
        for count in range(1, len(value) + 1):
            problem = shared_paths_problem(value[:count])
            if problem:
                raise self.fail(items[count - 1], key, problem)

    def with_units(self, node: yaml.Node, key: str, units: _Units, check: Any, value: Any) -> Any:
        """A duration or a size: the number, checked; the message shows it as written (`2d`, `yes`)."""
        written = node.value if isinstance(node, yaml.ScalarNode) else None
        try:
            number = units.parse(value, allow_off=units.allow_off, written=written)
        except UnitError as exc:
            raise self.fail(node, key, str(exc)) from None
        problem = check(number) if check else None
        if problem:
            raise self.fail(node, key, "%s %s" % (written, problem))
        return number

    def settings(self, node: yaml.Node, prefix: str, allowed: Dict[str, tuple],
                 nodes: Optional[Dict[str, yaml.Node]] = None) -> Dict[str, Any]:
        """The mapping's settings, checked; ``nodes`` (if given) learns where each one was written."""
        out = {}
        for knode, vnode in self.mapping(node, prefix.rstrip(".")):
            key = knode.value
            if key not in allowed:
                raise self.fail(knode, prefix + key, "unknown key (known: %s)" % ", ".join(sorted(allowed)))
            out[key] = self.value(vnode, prefix + key, allowed[key])
            if nodes is not None:
                nodes[key] = vnode
        return out


def _app_dir(check: _Checker, value: str, connection: str, path: Path, key: str, node: yaml.Node) -> str:
    """Absolute or ~/...; a relative one only for this machine, taken from the inventory's folder
    (a host's working directory over SSH is nobody's choice)."""
    if value.startswith(("/", "~/")) or value == "~":
        return value
    if connection == LOCAL:
        return str((path.resolve().parent / value).resolve())
    raise check.fail(node, key, "%r is relative: use ~/%s or an absolute path (relative ones are for "
                                "connection: local hosts only)" % (value, value))


_JUMP = re.compile(r"(?:([A-Za-z0-9._][A-Za-z0-9._@-]*)@)?([A-Za-z0-9._%-]+|\[[0-9A-Fa-f:.%]+\])(?::(\d{1,5}))?")


def jump_host(spec: str, defaults: Dict[str, Any], name: str) -> Optional[Host]:
    """``user@host[:port]`` as a Host with the defaults' settings, or None when it is not one."""
    match = _JUMP.fullmatch(spec)
    if not match or not 1 <= int(match.group(3) or 22) <= 65535:
        return None
    settings = dict(defaults, jump=None, user=match.group(1) or defaults["user"], port=int(match.group(3) or 22))
    _fill_platform_defaults(settings)
    explicit = {"user"} if match.group(1) else set()
    return Host(name, match.group(2).strip("[]"), "ssh", **settings, explicit=explicit | ({"port"} if match.group(3)
                                                                                      else set()))


def _resolve_jumps(check: _Checker, hosts: Dict[str, Host], defaults: Dict[str, Any],
                   nodes: Dict[str, yaml.Node]) -> None:
    """Each host's hops: inventory hosts (with their own settings, and their own jumps before them)
    or user@host[:port] with the defaults'. A loop, local or a malformed entry: one line."""
    def chain(name: str, seen: tuple) -> List[Host]:
        host, key = hosts[name], "hosts.%s.jump" % name
        specs = host.jump if isinstance(host.jump, list) else [host.jump] if host.jump else []
        hops: List[Host] = []
        for spec in specs:
            if not isinstance(spec, str):
                raise check.fail(nodes[name], key, "expected host names or user@host[:port], got %s" % brief(spec))
            if spec in hosts:
                if spec in seen or spec == name:
                    raise check.fail(nodes[name], key, "jump loop: %s" % " -> ".join(seen + (name, spec)))
                if hosts[spec].is_local:
                    raise check.fail(nodes[name], key, "%r is this machine: it cannot be a jump host" % spec)
                hops += chain(spec, seen + (name,)) + [hosts[spec]]
            else:
                found = jump_host(spec, defaults, spec)
                if found is None:
                    raise check.fail(nodes[name], key, "%r is neither a host of this inventory nor user@host[:port]"
                                     % spec)
                hops.append(found)
        return hops

    for name, host in hosts.items():
        if host.jump and host.is_local:
            raise check.fail(nodes[name], "hosts.%s.jump" % name, "a connection: local host has no jump")
        host.hops = chain(name, ())


def _check_shards(check: _Checker, settings: Dict[str, Any], name: str, node: yaml.Node) -> None:
    """shards ("0-3", "0,2") within shard_count, as the supervisor will read them."""
    from remote.host.common.errors import BadRequest
    from remote.host.supervision.bot import parse_shards

    if settings["shards"] is not None:
        settings["shards"] = str(settings["shards"])
    try:
        parse_shards(settings["shards"], settings["shard_count"])
    except BadRequest as exc:
        raise check.fail(node, "hosts.%s.shards" % name, str(exc)) from None


def _names(types: Sequence[type]) -> str:
    names = {int: "a number", float: "a number", str: "text", bool: "true or false", list: "a list",
             type(None): "nothing", dict: "a mapping"}
    return " or ".join(dict.fromkeys(names[t] for t in types))


def load(path: Optional[Path] = None) -> Inventory:
    """Parse and validate the inventory; raise InventoryError (one line) on the first problem."""
    path = Path(path or inventory_path())
    root = compose(path)  # every YAML problem (a tag, a key twice, an alias bomb) is one line here
    check = _Checker(path)
    if root is None:
        raise InventoryError("%s: the inventory is empty; see README (Inventory)" % path)
    sections = {}
    for knode, vnode in check.mapping(root, "inventory"):
        if knode.value not in ("defaults", "hosts", "groups", "coordination"):
            raise check.fail(knode, knode.value, "unknown section (known: defaults, hosts, groups, coordination)")
        sections[knode.value] = (knode, vnode)
    coordination = _coordination(check, path, sections.get("coordination"))

    defaults = {k: v[1] for k, v in SETTINGS.items()}
    explicit_defaults: set = set()
    default_nodes: Dict[str, yaml.Node] = {}
    if "defaults" in sections:
        given = check.settings(sections["defaults"][1], "defaults.", SETTINGS, default_nodes)
        defaults.update(given)
        explicit_defaults = set(given)

    hosts: Dict[str, Host] = {}
    host_nodes: Dict[str, yaml.Node] = {}
    for knode, vnode in check.mapping(sections["hosts"][1], "hosts") if "hosts" in sections else []:
        name = knode.value
        if not NAME.fullmatch(str(name)):
            raise check.fail(knode, "hosts." + str(name), "host names use letters, digits, _ and - only")
        own_nodes: Dict[str, yaml.Node] = {}
        own = check.settings(vnode, "hosts.%s." % name, dict(SETTINGS, **HOST_ONLY), own_nodes)
        host_nodes[name] = own_nodes.get("jump") or default_nodes.get("jump") or vnode
        connection = own.pop("connection", "ssh")
        hostname = own.pop("hostname", None)
        if connection == "ssh" and not hostname:
            raise check.fail(vnode, "hosts.%s.hostname" % name, "missing (or set connection: local)")
        settings = dict(defaults, **own)
        _fill_platform_defaults(settings)
        where = ("hosts.%s.app_dir" % name, own_nodes["app_dir"]) if "app_dir" in own else (
            "defaults.app_dir", default_nodes.get("app_dir", vnode))
        settings["app_dir"] = _app_dir(check, settings["app_dir"], connection, path, *where)
        _check_shards(check, settings, name, own_nodes.get("shards") or default_nodes.get("shards") or vnode)
        hosts[name] = Host(name, hostname, connection, **settings, explicit=explicit_defaults | set(own))

    _resolve_jumps(check, hosts, defaults, host_nodes)
    groups: Dict[str, List[str]] = {}
    for knode, vnode in check.mapping(sections["groups"][1], "groups") if "groups" in sections else []:
        name = knode.value
        if not NAME.fullmatch(str(name)):
            raise check.fail(knode, "groups." + str(name), "group names use letters, digits, _ and - only")
        if name in hosts:
            raise check.fail(knode, "groups." + name, "a host has this name already")
        members = check.value(vnode, "groups." + name, ((list,), None, None))
        for member in members:
            if not isinstance(member, str):
                raise check.fail(vnode, "groups." + name, "expected host names, got %s" % brief(member))
            if member not in hosts:
                raise check.fail(vnode, "groups." + name, "unknown host %r" % member)
            hosts[member].groups.append(name)
        groups[name] = list(members)
    ordered = sorted((h for h in hosts.values() if h.bot_command), key=lambda h: h.standby)  # stable: file order
    for place, host in enumerate(ordered):
        host.place = place
    for host in hosts.values():
        host.coordination = coordination
    return Inventory(path, hosts, groups, coordination)


def _coordination(check: _Checker, path: Path, section: Optional[tuple]) -> Optional[Coordination]:
    """The `coordination:` section (remote/coordination.py), or None without one."""
    if section is None:
        return None
    nodes = {k.value: (k, v) for k, v in check.mapping(section[1], "coordination")}
    values = {key: yaml.safe_load(yaml.serialize(vnode)) for key, (knode, vnode) in nodes.items()}
    try:
        return parse_coordination(values, path)
    except KeyError as exc:
        key, why = exc.args
        raise check.fail(nodes[key][1] if key in nodes else section[1], "coordination." + key, why) from None
