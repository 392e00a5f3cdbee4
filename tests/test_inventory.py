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
    ("hosts:\n" + GOOD + "groups:\n  'a b': [good]\n", 4, "groups.a b: group names use letters"),
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
    assert expected in lines[0]
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
                                                "dev_settings"}
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


GOOD_SIZES = [("500KB", 500_000), ("100MB", 100_000_000), ("1GB", 1_000_000_000), ("1kB", 1000), ("7B", 7),
              ("512KiB", 524_288), ("100MiB", 104_857_600), ("1GiB", 1_073_741_824), ("0", 0), (0, 0)]


@pytest.mark.parametrize("value, size", GOOD_SIZES)
def test_parse_size_reads_powers_of_1000_and_of_1024(value, size):
    from remote.units import parse_size

    got = parse_size(value)
    assert got == size and type(got) is int
