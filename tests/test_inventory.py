"""Every inventory error: one line naming file, line and key; exit status 2; nothing executed.

Each bad inventory also names a valid host whose "sshd" is a TCP server counting its connections:
it must see none, since validation happens before any host is touched.
"""

import os
import socket
import subprocess
import sys
import threading

import pytest
from dashproc import ROOT

from remote.inventory import InventoryError, load
from remote.render import escape


@pytest.fixture
def counting_server():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    server.settimeout(0.2)
    accepted = []
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = server.accept()
                accepted.append(conn)
            except OSError:
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1], accepted
    stop.set()
    thread.join()
    server.close()


GOOD = "  good: {hostname: 127.0.0.1, port: PORT}\n"

CASES = [
    # (inventory text, line, expected text)
    ("defaults:\n  colour: red\nhosts:\n" + GOOD, 2, "defaults.colour: unknown key"),
    ("hosts:\n" + GOOD + "  pi: {hostname: pi.local, port: 70000}\n", 3, "hosts.pi.port: 70000 is outside 1-65535"),
    ("hosts:\n" + GOOD + "  pi: {hostname: pi.local, port: '22'}\n", 3, "hosts.pi.port: expected a number"),
    ("hosts:\n" + GOOD + "  pi: {hostname: pi.local, port: true}\n", 3, "hosts.pi.port: expected a number"),
    ("hosts:\n" + GOOD + "  pi: {hostname: pi.local, platform: windows}\n", 3,
     "hosts.pi.platform: 'windows' is not one of: linux, termux"),
    ("defaults:\n  host_key_policy: yolo\nhosts:\n" + GOOD, 2, "defaults.host_key_policy: 'yolo' is not one of"),
    ("hosts:\n" + GOOD + "  pi: {hostname: 'pi.local; rm -rf ~'}\n", 3, "hosts.pi.hostname: 'pi.local; rm -rf ~'"),
    ("hosts:\n" + GOOD + "  pi: {hostname: pi.local, user: 'bot$(id)'}\n", 3, "hosts.pi.user: 'bot$(id)'"),
    ("hosts:\n" + GOOD + "  pi: {port: 22}\n", 3, "hosts.pi.hostname: missing"),
    ("hosts:\n" + GOOD + "groups:\n  home: [good, nas]\n", 4, "groups.home: unknown host 'nas'"),
    ("hosts:\n" + GOOD + "  pi: {hostname: pi.local, python: 'python3 -c evil'}\n", 3, "hosts.pi.python"),
    ("hosts:\n" + GOOD + "  pi: {hostname: pi.local}\n  pi: {hostname: other}\n", 4, "hosts.pi: given twice"),
    ("hosts:\n" + GOOD + "  pi: [hostname, pi.local\n", 4, "not valid YAML"),
    ("servers:\n" + GOOD, 1, "servers: unknown section"),
    ("hosts:\n" + GOOD + "  pi: {hostname: pi.local, app_dir: ''}\n", 3, "hosts.pi.app_dir: must name a directory"),
    ("defaults:\n  app_dir: sulfur\nhosts:\n" + GOOD, 2,
     "defaults.app_dir: 'sulfur' is relative: use ~/sulfur or an absolute path"),
    ("hosts:\n" + GOOD + "  pi: {hostname: pi.local, app_dir: \"~/x\\ny\"}\n", 3,
     "hosts.pi.app_dir: '~/x\\ny' has control"),
    ("defaults:\n  shard_count: 2\nhosts:\n" + GOOD + "  pi: {hostname: pi.local, shards: '1-2'}\n", 5,
     "hosts.pi.shards: shards '1-2': 1-2 is outside 0-1 (shard_count 2)"),
    ("hosts:\n" + GOOD + "  pi: {hostname: pi.local, bot_starts_per_day: 5000}\n", 3,
     "hosts.pi.bot_starts_per_day: 5000 is outside 1-1000"),
    ("hosts:\n" + GOOD + "  pi: {hostname: pi.local, bot_token_env: 'A B'}\n", 3, "hosts.pi.bot_token_env: 'A B'"),
    ("hosts:\n" + GOOD + "  pi: {hostname: pi.local, standby: 'yes'}\n", 3, "hosts.pi.standby: expected true or false"),
    ("hosts:\n" + GOOD + "  pi: {hostname: pi.local, jump: 'a b'}\n", 3,
     "hosts.pi.jump: 'a b' is neither a host of this inventory nor user@host[:port]"),
    ("hosts:\n" + GOOD + "  pi: {hostname: pi.local, jump: good}\n  good2: {hostname: x, jump: pi}\n"
     "  a: {hostname: a, jump: b}\n  b: {hostname: b, jump: a}\n", 6, "hosts.b.jump: jump loop: a -> b -> a"),
    ("hosts:\n" + GOOD + "  me: {connection: local}\n  pi: {hostname: pi.local, jump: me}\n", 4,
     "hosts.pi.jump: 'me' is this machine"),
    ("defaults:\n  hooks: {before: migrate}\nhosts:\n" + GOOD, 2,
     "defaults.hooks: unknown hook 'before' (known: before_switch, after_switch)"),
    ("hosts:\n" + GOOD + "  pi: {hostname: pi.local, hooks: {after_switch: {run: x, on_rollback: 'yes'}}}\n", 3,
     "hosts.pi.hooks: after_switch: on_rollback must be true or false"),
    ("hosts:\n" + GOOD + "  pi: {hostname: pi.local, hooks: {before_switch: ''}}\n", 3,
     "hosts.pi.hooks: before_switch: run must be a command"),
    ("hosts:\n" + GOOD + "  pi: {hostname: pi.local, hooks: [migrate]}\n", 3, "hosts.pi.hooks: expected a mapping"),
    ("hosts:\n" + GOOD + "  pi: {hostname: pi.local, hook_timeout: 0}\n", 3, "hosts.pi.hook_timeout: 0 must be"),
    ("hosts:\n" + GOOD + "groups:\n  home:\n", 4, "groups.home: expected a list, got None"),
    ("hosts:\n" + GOOD + "  pi: {hostname: pi.local, watchdog_sec: 10x}\n", 3,
     "hosts.pi.watchdog_sec: '10x' is not a duration: write seconds (30) or a whole number of s, m, h or d"),
    ("hosts:\n" + GOOD + "  pi: {hostname: pi.local, hook_timeout: 1.5m}\n", 3,
     "hosts.pi.hook_timeout: '1.5m' is not a whole number of minutes: write 90s"),
    ("defaults:\n  connect_timeout: off\nhosts:\n" + GOOD, 2, "defaults.connect_timeout: off: this key cannot be off"),
    ("hosts:\n" + GOOD + "  pi: {hostname: pi.local, watchdog_sec: -5}\n", 3, "hosts.pi.watchdog_sec: -5 is negative"),
    ("hosts:\n" + GOOD + "groups:\n  'a b': [good]\n", 4, "groups.a b: group names use letters"),
    # shared_paths: relative, normal, inside shared/ (the host checks them again against its links)
    ("hosts:\n" + GOOD + "  pi: {hostname: pi.local, shared_paths: [/srv/x]}\n", 3,
     "hosts.pi.shared_paths: '/srv/x' is absolute: name a relative directory inside shared/"),
    ("hosts:\n" + GOOD + "  pi:\n    hostname: pi.local\n    shared_paths:\n      - data\n      - ../..\n", 7,
     "hosts.pi.shared_paths: '../..' has '..'"),
    ("defaults:\n  shared_paths: [data/../../x]\nhosts:\n" + GOOD, 2, "defaults.shared_paths: 'data/../../x' has '..'"),
    ("hosts:\n" + GOOD + "  pi: {hostname: pi.local, shared_paths: [..]}\n", 3, "hosts.pi.shared_paths: '..' has '..'"),
    ("hosts:\n" + GOOD + "  pi: {hostname: pi.local, shared_paths: [.]}\n", 3,
     "hosts.pi.shared_paths: '.' is shared/ itself"),
    ("hosts:\n" + GOOD + "  pi: {hostname: pi.local, shared_paths: ['~/data']}\n", 3,
     "hosts.pi.shared_paths: '~/data' starts with ~"),
    ("hosts:\n" + GOOD + "  pi: {hostname: pi.local, shared_paths: [data/]}\n", 3,
     "hosts.pi.shared_paths: 'data/' is not a normal path (no ./, // or trailing /): write 'data'"),
    ("hosts:\n" + GOOD + "  pi: {hostname: pi.local, shared_paths: [./data]}\n", 3,
     "hosts.pi.shared_paths: './data' is not a normal path"),
    ("hosts:\n" + GOOD + "  pi: {hostname: pi.local, shared_paths: ['']}\n", 3,
     "hosts.pi.shared_paths: an empty entry names no directory"),
    ("hosts:\n" + GOOD + "  pi: {hostname: pi.local, shared_paths: [\"data\\n\"]}\n", 3,
     "hosts.pi.shared_paths: 'data\\n' has control characters"),
    ("hosts:\n" + GOOD + "  pi: {hostname: pi.local, shared_paths: [data, data/cache]}\n", 3,
     "hosts.pi.shared_paths: 'data' and 'data/cache' overlap"),
    ("hosts:\n" + GOOD + "  pi: {hostname: pi.local, shared_paths: [.env]}\n", 3,
     "hosts.pi.shared_paths: '.env' is the release's own"),
    ("hosts:\n" + GOOD + "  pi: {hostname: pi.local, shared_paths: [[data]]}\n", 3,
     "hosts.pi.shared_paths: ['data'] is not a directory name"),
]


@pytest.mark.parametrize("text, line, expected", CASES, ids=[c[2].split(":")[0] for c in CASES])
def test_bad_inventory_is_one_line_exit_2_and_touches_no_host(tmp_path, counting_server, text, line, expected):
    port, accepted = counting_server
    path = tmp_path / "inventory.yml"
    path.write_text(text.replace("PORT", str(port)))
    env = dict(os.environ, SULFUR_INVENTORY=str(path))
    out = subprocess.run([sys.executable, "-m", "invoke", "port-status", "--all"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("error: %s:%d: " % (path, line)), lines[0]
    assert escape(expected) in lines[0]  # the one line is escaped for the terminal, backslashes too
    assert "Traceback" not in out.stderr and out.stdout == ""
    assert accepted == []


def test_unknown_host_name_is_exit_2(tmp_path, counting_server):
    port, accepted = counting_server
    path = tmp_path / "inventory.yml"
    path.write_text("hosts:\n" + GOOD.replace("PORT", str(port)) + "groups:\n  home: [good]\n")
    env = dict(os.environ, SULFUR_INVENTORY=str(path))
    out = subprocess.run([sys.executable, "-m", "invoke", "port-status", "--host", "good,nope"], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert out.stderr.strip() == ("error: %s: unknown host or group 'nope' in --host (known: good, group home)"
                                  % path)
    assert accepted == []


def test_missing_inventory_file(tmp_path):
    with pytest.raises(InventoryError) as caught:
        load(tmp_path / "none.yml")
    assert "cannot read the inventory" in str(caught.value) and "SULFUR_INVENTORY" in str(caught.value)


def test_selection_defaults_groups_and_order(tmp_path):
    path = tmp_path / "inventory.yml"
    path.write_text(
        "defaults:\n  user: bot\n  port: 2222\nhosts:\n"
        "  pi: {hostname: pi.local}\n"
        "  phone: {hostname: 10.0.0.5, port: 8022, platform: termux}\n"
        "  local: {connection: local}\n"
        "  vps: {hostname: vps.example.org, user: admin}\n"
        "groups:\n  home: [phone, pi]\n"
    )
    inv = load(path)
    assert [h.name for h in inv.select("home")] == ["pi", "phone"]  # inventory order, not group order
    assert [h.name for h in inv.select(every=True)] == ["pi", "phone", "vps"]  # --all skips local
    assert [h.name for h in inv.select()] == ["local"]
    assert [h.name for h in inv.select("vps,home")] == ["pi", "phone", "vps"]
    phone = inv.hosts["phone"]
    assert (phone.port, phone.python, phone.wake_lock, phone.user) == (8022, "python", True, "bot")
    assert (inv.hosts["pi"].port, inv.hosts["pi"].python, inv.hosts["pi"].wake_lock) == (2222, "python3", False)
    assert inv.hosts["vps"].user == "admin"
    assert inv.hosts["pi"].groups == ["home"]


def test_the_shipped_example_inventory_is_valid():
    inv = load(ROOT / "inventory.yml")
    assert [h.name for h in inv.select()] == ["local"]


def test_a_relative_app_dir_of_this_machine_is_taken_from_the_inventorys_folder(tmp_path):
    path = tmp_path / "inventory.yml"
    path.write_text("hosts:\n  local: {connection: local, app_dir: var/app}\n")
    assert load(path).hosts["local"].app_dir == str(tmp_path.resolve() / "var" / "app")


def test_every_setting_is_a_declared_field_of_host():
    from dataclasses import fields

    from remote.inventory import SETTINGS, Host

    declared = {f.name for f in fields(Host)} - {"name", "hostname", "connection", "groups", "explicit", "hops",
                                                "dev_settings", "coordination", "place"}
    assert declared == set(SETTINGS)


def test_jump_chains_resolve_to_hops_with_their_own_settings(tmp_path):
    path = tmp_path / "inventory.yml"
    path.write_text("defaults:\n  user: bot\nhosts:\n  vps: {hostname: 1.2.3.4, user: admin, connect_timeout: 3}\n"
                    "  phone: {hostname: 10.0.0.5, port: 8022, jump: vps}\n"
                    "  pi: {hostname: pi.lan, jump: [phone, 'ops@gw.example:2222']}\n")
    hosts = load(path).hosts
    assert [(h.name, h.user, h.port, h.connect_timeout) for h in hosts["phone"].hops] == [("vps", "admin", 22, 3)]
    assert [(h.name, h.user, h.hostname, h.port) for h in hosts["pi"].hops] == [
        ("vps", "admin", "1.2.3.4", 22), ("phone", "bot", "10.0.0.5", 8022), ("ops@gw.example:2222", "ops",
                                                                               "gw.example", 2222)]


def test_a_host_that_never_speaks_ssh_is_one_line_not_paramikos_traceback(tmp_path, counting_server):
    """TCP accepted, no SSH banner (a captive portal, the wrong port): paramiko's thread logged a
    traceback to stderr next to our one-line error."""
    port, accepted = counting_server
    path = tmp_path / "inventory.yml"
    path.write_text("defaults:\n  connect_timeout: 1\nhosts:\n  mute: {hostname: 127.0.0.1, port: %d}\n" % port)
    env = dict(os.environ, SULFUR_INVENTORY=str(path))
    for args in (["port-status", "--host", "mute"], ["add-host", "other", "--hostname", "127.0.0.1", "--port",
                                                     str(port)]):
        out = subprocess.run([sys.executable, "-m", "invoke", *args], cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=60)
        assert "no SSH answer from" in out.stdout and "within 1 s" in out.stdout, out.stdout
        assert "Traceback" not in out.stderr and "Exception" not in out.stderr, out.stderr
    assert accepted  # it was reached


# Durations (connect_timeout, watchdog_sec, hook_timeout) go through units.parse_duration; sizes
# (no key yet) through units.parse_size. Each test loads a real file through the real loader.

def test_bare_numbers_load_as_before_same_values_same_types(tmp_path):
    """Inventories written before units: ints stay ints, fractions stay floats, and the host gets them."""
    import json

    from remote.ctlcalls import stack_settings

    path = tmp_path / "inventory.yml"
    path.write_text("defaults:\n  connect_timeout: 3\n  watchdog_sec: 2.5\n  hook_timeout: 0.5\nhosts:\n"
                    "  pi: {hostname: pi.local, connect_timeout: 1.5, watchdog_sec: 30, hook_timeout: 600}\n"
                    "  vps: {hostname: vps.example.org, watchdog_sec: 0}\n  nas: {hostname: nas.local}\n")
    hosts = load(path).hosts
    got = {n: (h.connect_timeout, h.watchdog_sec, h.hook_timeout) for n, h in hosts.items()}
    assert got == {"pi": (1.5, 30, 600), "vps": (3, 0, 0.5), "nas": (3, 2.5, 0.5)}
    kinds = {n: tuple(type(v) for v in values) for n, values in got.items()}
    assert kinds == {"pi": (float, int, int), "vps": (int, int, float), "nas": (int, float, float)}
    sent = json.loads(json.dumps(stack_settings(hosts["pi"])))
    assert sent["watchdog_sec"] == 30 and type(sent["watchdog_sec"]) is int


def test_an_inventory_without_durations_keeps_the_built_in_ones(tmp_path):
    path = tmp_path / "inventory.yml"
    path.write_text("hosts:\n  pi: {hostname: pi.local}\n")
    pi = load(path).hosts["pi"]
    assert (pi.connect_timeout, pi.watchdog_sec, pi.hook_timeout) == (10, 0, 300)


def test_durations_with_units_are_whole_seconds(tmp_path):
    from remote.ctlcalls import stack_settings

    path = tmp_path / "inventory.yml"
    path.write_text("defaults:\n  connect_timeout: 30s\n  hook_timeout: 1d\nhosts:\n"
                    "  a: {hostname: a, watchdog_sec: 2m, hook_timeout: 6h, connect_timeout: 1m}\n"
                    "  b: {hostname: b, watchdog_sec: '45s', hook_timeout: '90'}\n"
                    "  c: {hostname: c, watchdog_sec: 0s}\n")
    hosts = load(path).hosts
    got = {n: (h.connect_timeout, h.watchdog_sec, h.hook_timeout) for n, h in hosts.items()}
    assert got == {"a": (60, 120, 21600), "b": (30, 45, 90), "c": (30, 0, 86400)}
    assert all(type(v) is int for values in got.values() for v in values)
    # 2m is the very setting 120 was: the host cannot tell them apart (no restart for a rewrite)
    path.write_text("hosts:\n  a: {hostname: a, watchdog_sec: 120}\n")
    assert stack_settings(load(path).hosts["a"]) == stack_settings(hosts["a"])


@pytest.mark.parametrize("written", ["off", "false", "'off'", "0"])
def test_watchdog_sec_may_be_off(tmp_path, written):
    path = tmp_path / "inventory.yml"
    path.write_text("defaults:\n  watchdog_sec: 30s\nhosts:\n  pi: {hostname: pi.local, watchdog_sec: %s}\n"
                    % written)
    value = load(path).hosts["pi"].watchdog_sec
    assert value == 0 and type(value) is int


FORMS = "write seconds (30) or a whole number of s, m, h or d (30s, 2m, 6h, 1d)"
BAD_DURATIONS = [
    # (key: value, the message after "KEY: ")
    ("watchdog_sec: 10x", "'10x' is not a duration: %s, or off" % FORMS),
    ("watchdog_sec: 1h30m", "'1h30m' is not a duration: %s, or off" % FORMS),
    ("watchdog_sec: true", "true is not a duration: %s, or off" % FORMS),
    ("watchdog_sec: yes", "yes (YAML reads it as true) is not a duration: %s, or off" % FORMS),
    ("watchdog_sec: -5", "-5 is negative: %s, or off" % FORMS),
    ("watchdog_sec: '-5s'", "'-5s' is negative: %s, or off" % FORMS),
    ("watchdog_sec: ''", "'' is empty: %s, or off" % FORMS),
    ("watchdog_sec:", "no value: %s, or off" % FORMS),
    ("watchdog_sec: [30]", "[30] is not a duration: %s, or off" % FORMS),
    ("watchdog_sec: .inf", ".inf is not a duration: %s, or off" % FORMS),
    ("hook_timeout: 1.5m", "'1.5m' is not a whole number of minutes: write 90s"),
    ("hook_timeout: 1.5d", "'1.5d' is not a whole number of days: write 36h"),
    ("hook_timeout: 2.5s", "'2.5s' is not a whole number of seconds: write 2.5 (a bare number is seconds)"),
    ("hook_timeout: 2M", "'2M' is not written as a duration: write 2m (minutes)"),
    ("hook_timeout: '30 s'", "'30 s' is not written as a duration: write 30s (seconds)"),
    ("hook_timeout: 2d", "2d must be greater than 0 and at most a day (1d, 86400)"),
    ("hook_timeout: 0s", "0s must be greater than 0 and at most a day (1d, 86400)"),
    ("hook_timeout: off", "off: this key cannot be off; %s" % FORMS),
    ("connect_timeout: false", "false: this key cannot be off; %s" % FORMS),
    ("connect_timeout: 0", "0 must be greater than 0"),
    ("connect_timeout: true", "true is not a duration: %s" % FORMS),
]


@pytest.mark.parametrize("setting, message", BAD_DURATIONS, ids=[c[0] for c in BAD_DURATIONS])
def test_a_bad_duration_is_one_line_with_file_line_key_and_what_to_write(tmp_path, setting, message):
    path = tmp_path / "inventory.yml"
    path.write_text("hosts:\n  nas: {hostname: nas.local}\n  pi:\n    hostname: pi.local\n    %s\n" % setting)
    with pytest.raises(InventoryError) as caught:
        load(path)
    key = setting.split(":")[0]
    assert str(caught.value) == "%s:5: hosts.pi.%s: %s" % (path, key, message)


def test_a_bad_duration_in_defaults_names_the_defaults_line(tmp_path):
    path = tmp_path / "inventory.yml"
    path.write_text("# fleet\ndefaults:\n  user: bot\n  hook_timeout: 5 min\nhosts:\n  pi: {hostname: pi.local}\n")
    with pytest.raises(InventoryError) as caught:
        load(path)
    assert str(caught.value) == "%s:4: defaults.hook_timeout: '5 min' is not a duration: %s" % (path, FORMS)


GOOD_SIZES = [("500KB", 500_000), ("100MB", 100_000_000), ("1GB", 1_000_000_000), ("1kB", 1000), ("7B", 7),
              ("512KiB", 524_288), ("100MiB", 104_857_600), ("1GiB", 1_073_741_824), ("0", 0), (0, 0)]


@pytest.mark.parametrize("value, size", GOOD_SIZES)
def test_parse_size_reads_powers_of_1000_and_of_1024(value, size):
    from remote.units import parse_size

    got = parse_size(value)
    assert got == size and type(got) is int


SIZES = "write a whole number of B, KB, MB, GB (powers of 1000) or KiB, MiB, GiB (powers of 1024): 500KB, 100MB, 1GiB"
BAD_SIZES = [
    ("1.5GB", "'1.5GB' is not a whole number of GB: write 1500MB"),
    ("0.5MiB", "'0.5MiB' is not a whole number of MiB: write 512KiB"),
    ("1.5B", "'1.5B' is not a whole number of bytes: " + SIZES),
    ("100", "100 has no unit: " + SIZES),
    ("2.5", "2.5 has no unit: " + SIZES),
    ("100mb", "'100mb' is not written as a size: write 100MB"),
    ("10x", "'10x' is not a size: " + SIZES),
    ("-1MB", "'-1MB' is negative: " + SIZES),
    ("-1", "-1 is negative: " + SIZES),
    ("true", "true is not a size: " + SIZES),
    ("off", "off: this key cannot be off; " + SIZES),
    ("''", "'' is empty: " + SIZES),
]


@pytest.mark.parametrize("written, message", BAD_SIZES, ids=[c[0] for c in BAD_SIZES])
def test_a_bad_size_is_one_line_with_file_line_and_key(tmp_path, written, message):
    """No inventory key is a size yet: a made-up one, checked by the loader's own checker on a real
    file, shows what a later key (a log cap, a snapshot limit) will report."""
    import yaml

    from remote.inventory import SETTINGS, _Checker, _Units
    from remote.units import parse_size

    path = tmp_path / "inventory.yml"
    path.write_text("defaults:\n  user: bot\n  log_cap: %s\n" % written)
    node = yaml.compose(path.read_text()).value[0][1]
    with pytest.raises(InventoryError) as caught:
        _Checker(path).settings(node, "defaults.", dict(SETTINGS, log_cap=(_Units(parse_size), None, None)))
    assert str(caught.value) == "%s:3: defaults.log_cap: %s" % (path, message)


def test_a_size_key_may_allow_off(tmp_path):
    import yaml

    from remote.inventory import _Checker, _Units
    from remote.units import parse_size

    path = tmp_path / "inventory.yml"
    path.write_text("defaults:\n  log_cap: off\n  snapshot_cap: 2MiB\n")
    spec = (_Units(parse_size, allow_off=True), None, None)
    node = yaml.compose(path.read_text()).value[0][1]
    assert _Checker(path).settings(node, "defaults.", {"log_cap": spec, "snapshot_cap": spec}) == {
        "log_cap": 0, "snapshot_cap": 2_097_152}


BAD_YAML = [
    # (inventory bytes, line, expected text): names end where they end; every YAML problem is one line
    (b"hosts:\n  pi: {hostname: !!python/object/apply:os.system [touch CANARY]}\n" + GOOD.encode(), 2,
     "hosts.pi.hostname: the tag !!python/object/apply:os.system is not allowed"),
    (b"hosts:\n" + GOOD.encode() + b"  pi: !!python/object/apply:os.system [touch CANARY]\n", 3,
     "hosts.pi: the tag !!python/object/apply:os.system is not allowed"),
    (b"hosts: !!python/object:os.system\n" + GOOD.encode(), 1,
     "hosts: the tag !!python/object:os.system is not allowed"),
    (b"defaults:\n  python: !!python/name:os.system\nhosts:\n" + GOOD.encode(), 2,
     "defaults.python: the tag !!python/name:os.system is not allowed"),
    (b"hosts:\n" + GOOD.encode() + b"  pi: {hostname: !mine pi.local}\n", 3, "hosts.pi.hostname: the tag !mine is not"),
    (b"hosts:\n" + GOOD.encode() + b"  pi: {hostname: !!binary cGk=}\n", 3,
     "hosts.pi.hostname: the tag !!binary is not"),
    (b"hosts:\n" + GOOD.encode() + b"  pi: {hostname: pi.local, port: !!int abc}\n", 3,
     "hosts.pi.port: !!int cannot read 'abc'"),
    (b"hosts:\n" + GOOD.encode() + b"hosts:\n  other: {hostname: x}\n", 3, "hosts: given twice"),
    (b"hosts:\n" + GOOD.encode() + b"  pi:\n    hostname: pi.local\n    port: 22\n    port: 2222\n", 6,
     "hosts.pi.port: given twice"),
    (b"hosts:\n" + GOOD.encode() + b"  pi: {hostname: pi.local, hooks: {before_switch: a, before_switch: b}}\n", 3,
     "hosts.pi.hooks.before_switch: given twice"),
    (b"hosts:\n" + GOOD.encode() + b"  ? [pi]\n  : {hostname: pi.local}\n", 3,
     "hosts: a key must be plain text, not a list or a mapping"),
    (b"hosts:\n" + GOOD.encode() + b"  \"pi\\n\": {hostname: pi.local}\n", 3,
     "hosts.pi\\n: host names use letters, digits, _ and - only"),
    (b"hosts:\n" + GOOD.encode() + b"groups:\n  \"home\\n\": [good]\n", 4, "groups.home\\n: group names use letters"),
    (b"hosts:\n" + GOOD.encode() + b"  pi: {hostname: \"pi.local\\n\"}\n", 3,
     "hosts.pi.hostname: 'pi.local\\n' is not a valid host name"),
    (b"hosts:\n" + GOOD.encode() + b"  pi: {hostname: pi.local, user: \"bot\\n\"}\n", 3,
     "hosts.pi.user: 'bot\\n' is not a valid user name"),
    (b"hosts:\n" + GOOD.encode() + b"  pi: {hostname: pi.local, python: \"python3\\n\"}\n", 3,
     "hosts.pi.python: 'python3\\n' is not a valid interpreter"),
    (b"hosts:\n" + GOOD.encode() + b"  pi: {hostname: pi.local, bot_token_env: \"TOKEN\\n\"}\n", 3,
     "hosts.pi.bot_token_env: 'TOKEN\\n' is not a valid variable name"),
    (b"hosts:\n" + GOOD.encode() + b"  pi: {hostname: pi.local, jump: \"bot@gw\\n\"}\n", 3,
     "hosts.pi.jump: 'bot@gw\\n' is neither a host of this inventory nor user@host[:port]"),
    (b"hosts:\n" + GOOD.encode() + b"  pi: {hostname: pi.local}\n  x: \x07\n", 4,
     "not valid YAML: character #x0007: special characters are not allowed"),
    (b"hosts:\n" + GOOD.encode() + b"  pi: {hostname: \xff}\n", 3, "not UTF-8 text (byte 0xff)"),
    (b"hosts:\n" + GOOD.encode() + b"---\nhosts: {}\n", 3,
     "not valid YAML: expected a single document in the stream but found another document"),
    (b"hosts:\n" + GOOD.encode() + b"groups:\n  loop: &a [*a]\n", 4, "groups.loop: an alias refers to the value"),
    (b"hosts:\n" + GOOD.encode() + b"groups:\n  deep: " + b"[" * 60 + b"]" * 60 + b"\n", 4, "nested more than 50"),
    (b"hosts:\n" + GOOD.encode() + b"groups:\n  home: [[good]]\n", 4, "groups.home: expected host names, got ['good']"),
]


def _laughs() -> bytes:
    """A billion laughs: nine levels of nine aliases, 387 million values once expanded."""
    lines = [b"defaults:", b"  shared_paths: &l0 [x, x, x, x, x, x, x, x, x]", b"hosts:", GOOD.encode().rstrip(),
             b"groups:"]
    lines += [b"  g%d: &l%d [%s]" % (n, n, b", ".join([b"*l%d" % (n - 1)] * 9)) for n in range(1, 9)]
    lines.append(b"  home: *l8")
    return b"\n".join(lines) + b"\n"


BAD_YAML.append((_laughs(), 10, "groups.g5: stands for more than 100000 values once its aliases are followed"))


@pytest.mark.parametrize("raw, line, expected", BAD_YAML, ids=[c[2].split(":")[0][:40] for c in BAD_YAML])
def test_every_yaml_problem_is_one_line_with_file_and_line(tmp_path, counting_server, raw, line, expected):
    """Through the real task: a tag, a key given twice, a name with a trailing newline, an alias bomb.
    Exit 2, one line, no traceback, nothing run (the canary file of os.system is never made) and no
    host touched, within the test's timeout (the bomb is refused, never expanded)."""
    port, accepted = counting_server
    path = tmp_path / "inventory.yml"
    path.write_bytes(raw.replace(b"PORT", str(port).encode()).replace(b"CANARY", str(tmp_path / "ran").encode()))
    env = dict(os.environ, SULFUR_INVENTORY=str(path))
    out = subprocess.run([sys.executable, "-m", "invoke", "status", "--all"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stdout + out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and out.stdout == "", out.stdout + out.stderr
    assert lines[0].startswith("error: %s:%d: " % (path, line)), lines[0]
    assert escape(expected) in lines[0], lines[0]  # escaped for the terminal, backslashes too
    assert "Traceback" not in out.stderr and len(lines[0]) < 400
    assert not (tmp_path / "ran").exists() and accepted == []


def test_add_host_names_end_where_they_end(tmp_path):
    """add-host checks a name as the loader does (no trailing newline), and writes a value that ends
    in one quoted, so what it appends reads back as it was given."""
    from remote import onboard
    from remote.errors import UsageError
    from remote.inventory_text import scalar

    path = tmp_path / "inventory.yml"
    path.write_text("hosts:\n  good: {hostname: 127.0.0.1}\n")
    for name, group in (("pi\n", None), ("pi", "home\n")):
        with pytest.raises(UsageError, match="is not a valid (host|group) name"):
            onboard.add(path, name, {"hostname": "pi.local"}, group, False, print, lambda question: False)
    assert path.read_text() == "hosts:\n  good: {hostname: 127.0.0.1}\n"
    assert scalar("pi.local") == "pi.local" and scalar("pi.local\n") == '"pi.local\\n"'
