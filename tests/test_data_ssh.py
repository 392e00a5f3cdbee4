"""The bot's data goes where the bot goes, on real SSH test hosts (linux and termux profiles), with a
bot that writes SQLite rows without pause: backups copied here and checked, a listing of every copy,
restores through the task, failovers both ways that lose no row, a takeover that restores the newest
copy and names its age, and bad archives refused with the data unchanged."""

import json
import os
import re
import sqlite3
import time
from pathlib import Path

import pytest
import sshlab
from dashproc import invoke, wait_for

pytestmark = pytest.mark.skipif(sshlab.available() is not None, reason=str(sshlab.available()))
TOKEN = "the-data-bot-token"
#: a bot that commits one row every 20 ms to data/rows.sqlite and logs each row's number once committed
WRITER = """
import os, signal, sqlite3, sys, time
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
os.makedirs("data", exist_ok=True)
db = sqlite3.connect("data/rows.sqlite", isolation_level=None)
db.execute("pragma journal_mode=wal")
db.execute("create table if not exists rows (n integer primary key, host text, at real, pad text)")
host = os.environ.get("WRITER_HOST", "?")
while True:
    n = (db.execute("select max(n) from rows").fetchone()[0] or 0) + 1
    db.execute("insert into rows values (?, ?, ?, ?)", (n, host, time.time(), "x" * 200))
    print("committed %d" % n, flush=True)
    time.sleep(0.02)
"""


@pytest.fixture(scope="module")
def lab():
    with sshlab.lab_with("linux", "termux") as lab:
        (lab.dir / "writer_bot.py").write_text(WRITER)
        (lab.dir / "writer_bot.py").chmod(0o644)
        lab.inventory_path = inventory(lab)  # deployed with shared_paths: [data], linked into the release
        lab.install_release()
        yield lab


def write_env(host):
    path = Path(host.app_dir, "shared", ".env")
    path.write_text("BOT_TOKEN=%s\nWRITER_HOST=%s\n" % (TOKEN, host.name))
    os.chown(path, host.user.pw_uid, host.user.pw_gid)
    path.chmod(0o600)


def inventory(lab, extra=""):
    text = lab.inventory(list(lab.hosts.values()), path=lab.dir / "data-inventory.yml").read_text()
    for name in lab.hosts:
        every = "" if "backup_every" in extra else "backup_every: 'off', "
        text = text.replace("  %s: {" % name, "  %s: {bot_command: 'python %s/writer_bot.py', shared_paths: [data], "
                            "%s%s" % (name, lab.dir, every, extra))
    path = lab.dir / "data-inventory.yml"
    path.write_text(text)
    return path


@pytest.fixture(autouse=True)
def clean(lab):
    for host in lab.hosts.values():
        write_env(host)
    yield
    path = lab.dir / "data-inventory.yml"
    if path.exists():
        invoke(path, "stop", "--all")
    for host in lab.hosts.values():
        for pid in host.bots():
            os.kill(pid, 9)
        host.kill_children()


def db_path(host):
    return Path(host.app_dir, "shared", "data", "rows.sqlite")


def rows(host):
    """The rows on the host, read as its bot would see them (through shared/data)."""
    with sqlite3.connect("file:%s?mode=ro" % db_path(host), uri=True) as db:
        return [n for (n,) in db.execute("select n from rows order by n")]


def committed(host, since=0):
    """Every row number a bot on the host said it committed (its log; ``since``: from that offset)."""
    found = set()
    for name in ("bot.log.1", "bot.log") if not since else ("bot.log",):
        path = Path(host.app_dir, "logs", name)
        if path.exists():
            with open(path, "rb") as handle:
                handle.seek(since)
                text = handle.read().decode("utf-8", "replace")
            found |= {int(n) for n in re.findall(r"^committed (\d+)$", text, re.M)}
    return found


def log_size(host):
    path = Path(host.app_dir, "logs", "bot.log")
    return path.stat().st_size if path.exists() else 0


def running(host, timeout=30):
    return wait_for(lambda: host.bots() and committed(host), timeout, "the writer on %s" % host.name)


def start_the_writer(lab, path):
    """The writer started where the bot's epoch says (restart --all), or on linux in a lab without one
    (restart --all then refuses two hosts with one token); the host that runs it."""
    if invoke(path, "restart", "--all").returncode != 0:
        assert invoke(path, "restart", "--host", "linux").returncode == 0
    return wait_for(lambda: next((h for h in lab.hosts.values() if h.bots()), None), 30, "the writer")


def start_on_linux(lab, path):
    """The writer started on linux; (linux, termux)."""
    linux, termux = lab.hosts["linux"], lab.hosts["termux"]
    assert invoke(path, "restart", "--host", "linux").returncode == 0
    running(linux)
    return linux, termux


def test_failovers_both_ways_lose_no_row_and_a_copy_stays_here(lab):
    path = inventory(lab)
    linux, termux = start_on_linux(lab, path)
    time.sleep(1.0)
    out = invoke(path, "failover", "--to", "termux")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "termux: data: linux's snapshot" in out.stdout and "carried in" in out.stdout, out.stdout
    running(termux)
    time.sleep(1.0)
    out = invoke(path, "failover", "--to", "linux")
    assert out.returncode == 0, out.stdout + out.stderr
    running(linux)
    time.sleep(0.5)
    assert invoke(path, "stop", "--all").returncode == 0
    final = rows(linux)
    assert final == list(range(1, len(final) + 1)), "every row, once, in order"
    written = committed(linux) | committed(termux)
    assert written <= set(final), "rows lost: %s" % sorted(written - set(final))[:10]
    assert len(committed(termux)) > 10  # termux wrote too, and its rows came back
    # termux kept its data from before the move as before-failover; this machine kept each carried copy
    out = invoke(path, "backups", "--json")
    assert out.returncode == 0, out.stderr
    listed = json.loads(out.stdout)
    reasons = {(r["host"], r["where"], r["reason"]) for r in listed}
    assert ("linux", "local", "failover") in reasons and ("termux", "local", "failover") in reasons
    assert ("linux", "host", "before-failover") in reasons
    assert all(set(r) >= {"host", "where", "replica_on", "stamp", "taken_at", "bytes", "files", "bot_id", "data_id",
                          "epoch", "seq", "consistency", "reason"} for r in listed)
    carried = [r for r in listed if r["reason"] == "failover"]
    assert {r["consistency"] for r in carried} == {"stopped"} and len({r["data_id"] for r in carried}) == 1


def test_backup_restore_and_a_takeover_restores_the_newest_replica(lab):
    path = inventory(lab)
    linux, termux = start_on_linux(lab, path)
    time.sleep(0.5)
    out = invoke(path, "backup", "--all")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "linux: snapshot " in out.stdout and "replica on termux" in out.stdout, out.stdout
    listed = json.loads(invoke(path, "backups", "--json").stdout)
    manual = [r for r in listed if r["reason"] == "manual"]
    assert {(r["where"], r["replica_on"]) for r in manual} == {("host", None), ("local", None), ("replica", "termux")}
    assert {r["consistency"] for r in manual} == {"online"}
    stamp = manual[0]["stamp"]
    backed = max(n for n in committed(linux))
    # a restore of it on linux: asks first (no answer: nothing changed), then with --yes
    out = invoke(path, "restore", "--host", "linux", "--from", stamp)
    assert out.returncode == 2 and "nothing was changed" in out.stderr
    out = invoke(path, "restore", "--host", "linux", "--from", stamp, "--yes")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "bot started again" in out.stdout and "before-restore" in out.stdout
    running(linux)
    # the takeover: linux cut off, termux restores the newest copy of linux's data and says how old
    assert invoke(path, "backup", "--all").returncode == 0
    newest = max(r["seq"] for r in json.loads(invoke(path, "backups", "--json").stdout)
                 if r["where"] == "replica" and r["host"] == "linux")
    linux.stop_sshd()
    try:
        out = invoke(path, "failover", "--to", "termux", "--takeover")
        assert out.returncode == 0, out.stdout + out.stderr
        assert "termux: data: linux's snapshot #%d of " % newest in out.stdout, out.stdout
        assert "min ago" in out.stdout or "s ago" in out.stdout
        assert "from the replica on termux" in out.stdout
        wait_for(lambda: termux.bots(), 30, "the writer on termux")
        time.sleep(0.5)
        got = rows(termux)
        assert got and min(got) == 1 and max(got) > backed  # linux's rows, as of the replica, then termux's
    finally:
        linux.start_sshd()
        invoke(path, "stop", "--all")


def test_a_bad_archive_is_refused_with_the_data_unchanged(lab, tmp_path):
    path = inventory(lab)
    linux = start_the_writer(lab, path)
    running(linux)
    assert invoke(path, "backup", "--host", linux.name).returncode == 0
    assert invoke(path, "stop", "--all").returncode == 0
    before = rows(linux)
    local = json.loads(invoke(path, "backups", "--json", "--host", linux.name).stdout)
    copy = [r for r in local if r["where"] == "local"][0]
    archive = next((lab.dir / "data").rglob(copy["stamp"] + ".tar.gz"))
    bad = tmp_path / "cut.tar.gz"
    bad.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    out = invoke(path, "restore", "--host", linux.name, "--file", str(bad), "--yes")
    assert out.returncode != 0 and "not a readable snapshot" in out.stderr, out.stdout + out.stderr
    assert rows(linux) == before
    damaged = bytearray(archive.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    bad.write_bytes(bytes(damaged))  # one bit flipped: gzip's CRC or the host's sha256 catches it
    out = invoke(path, "restore", "--host", linux.name, "--file", str(bad), "--yes")
    assert out.returncode != 0, out.stdout + out.stderr
    assert rows(linux) == before


def test_a_deploy_keeps_the_data_first_and_rollback_names_it(lab):
    path = inventory(lab)
    host = start_the_writer(lab, path)
    running(host)
    out = invoke(path, "deploy", "--host", host.name, "--wheels", timeout=900)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "the bot's data kept as snapshot " in out.stdout and "(before-deploy)" in out.stdout, out.stdout
    kept = [r for r in json.loads(invoke(path, "backups", "--json", "--host", host.name).stdout)
            if r["reason"] == "before-deploy" and r["where"] == "host"]
    assert len(kept) == 1 and kept[0]["consistency"] == "online"
    out = invoke(path, "rollback", "--host", host.name)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "snapshot %s (invoke restore --host %s --from %s)" % (kept[0]["stamp"], host.name, kept[0]["stamp"]) \
        in out.stdout, out.stdout


def test_the_fleet_page_shows_the_backups_backs_up_now_and_replicates_a_scheduled_snapshot(lab):
    """With `replicate: true`, a new scheduled snapshot on the active host reaches its standby within a
    minute of the page seeing it; the card says how old the last backup is; "back up now" is the CLI's."""
    import shutil
    import subprocess
    import sys

    from dashproc import ROOT, free_port

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        pytest.skip("needs chromium")
    from playwright.sync_api import sync_playwright

    path = inventory(lab, "backup_every: 30s, replicate: true, ")
    owner = start_the_writer(lab, path)
    other = next(h for h in lab.hosts.values() if h is not owner)
    port = free_port()
    env = dict(os.environ, SULFUR_INVENTORY=str(path), XDG_CACHE_HOME=str(lab.dir / "cache"),
               XDG_DATA_HOME=str(lab.dir / "data"))
    proc = subprocess.Popen([sys.executable, "-m", "invoke", "fleet", "--port", str(port), "--no-browser"], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        opener = re.search(r"(file://\S+)", proc.stdout.readline()).group(1)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
            page = browser.new_page()
            page.goto(opener)
            card = 'section.card[data-host="%s"]' % owner.name
            page.wait_for_selector(card + " p.backups", timeout=60000)
            assert page.locator(card + " label.carry").count() == 0  # it runs there: no move button
            page.wait_for_selector('section.card[data-host="%s"] input.carry:checked' % other.name, timeout=30000)
            page.once("dialog", lambda dialog: dialog.accept())
            page.locator(card + " button.backup").click()
            wait_for(lambda: "copied here" in page.locator("#result").inner_text(), 120, "the backup's answer")
            assert page.locator("#result").inner_text().startswith("%s: snapshot " % owner.name)
            replicas = Path(other.app_dir, "backups", "replica", owner.name)
            shot = wait_for(lambda: [p for p in replicas.glob("*.json")
                                     if json.loads(p.read_text()).get("reason") == "scheduled"], 150,
                            "a scheduled snapshot replicated to %s" % other.name)
            assert Path(str(shot[0])[:-5] + ".tar.gz").exists()
            page.wait_for_function("([c, o]) => document.querySelector(c + ' p.backups') && "
                                   "/last backup \\d/.test(document.querySelector(c + ' p.backups').textContent)",
                                   arg=[card, owner.name], timeout=60000)
            other_card = 'section.card[data-host="%s"] p.backups' % other.name
            page.wait_for_function("c => /replica of /.test((document.querySelector(c) || {}).textContent || '')",
                                   arg=other_card, timeout=60000)
            browser.close()
    finally:
        proc.send_signal(2)
        proc.wait(timeout=20)


def test_a_failover_from_a_source_with_no_room_for_a_snapshot_still_carries_the_data(lab):
    """The source's backups/ on a tmpfs that is full: nothing is staged there, so the data still moves."""
    import subprocess

    path = inventory(lab)
    owner = start_the_writer(lab, path)
    other = next(h for h in lab.hosts.values() if h is not owner)
    mark = log_size(owner)
    wait_for(lambda: committed(owner, mark), 30, "new rows")
    folder = Path(owner.app_dir, "backups")
    aside = Path(owner.app_dir, "backups.aside")
    if folder.exists():
        folder.rename(aside)
    folder.mkdir()
    os.chown(folder, owner.user.pw_uid, owner.user.pw_gid)
    inside = ["nsenter", "-t", str(owner.sshd.pid), "-m", "--"]  # the host's own mounts (its sshd's namespace)
    subprocess.run(inside + ["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700,uid=%d,gid=%d" % (
        owner.user.pw_uid, owner.user.pw_gid), "tmpfs", str(folder)], check=True)
    try:
        subprocess.run(inside + ["sh", "-c", "cat /dev/zero > %s/filler" % folder], stderr=subprocess.DEVNULL)
        out = invoke(path, "backup", "--host", owner.name)
        assert out.returncode == 1 and "backup refused" in out.stdout + out.stderr, out.stdout + out.stderr
        out = invoke(path, "failover", "--to", other.name)
        assert out.returncode == 0 and "carried in" in out.stdout, out.stdout + out.stderr
        assert invoke(path, "stop", "--all").returncode == 0
        written = committed(owner, mark)
        assert written and written <= set(rows(other)), "rows lost: %s" % sorted(written - set(rows(other)))[:10]
    finally:
        subprocess.run(inside + ["umount", "-l", str(folder)], check=False)
        folder.rmdir()
        if aside.exists():
            aside.rename(folder)


def test_a_carry_that_fails_starts_nothing_on_the_target_and_the_source_gets_the_bot_back(lab, tmp_path):
    """The target refuses the data (its shared/data a link out of shared/): no bot starts there, the
    source runs it again, and the data on both is as it was."""
    path = inventory(lab)
    owner = start_the_writer(lab, path)
    other = next(h for h in lab.hosts.values() if h is not owner)
    running(owner)
    data = Path(other.app_dir, "shared", "data")
    aside = Path(other.app_dir, "shared", "data.aside")
    outside = Path(other.app_dir, "outside")
    data.rename(aside)  # its own data (a directory, or our link into the store) set aside as it is
    outside.mkdir()
    data.symlink_to(outside)
    try:
        out = invoke(path, "failover", "--to", other.name)
        assert out.returncode == 1, out.stdout + out.stderr
        assert "data NOT carried" in out.stdout and "nothing starts here" in out.stdout, out.stdout
        assert "bot started again" in out.stdout, out.stdout
        wait_for(lambda: owner.bots(), 30, "the bot back on %s" % owner.name)
        assert not other.bots()
    finally:
        data.unlink()
        outside.rmdir()
        aside.rename(data)
