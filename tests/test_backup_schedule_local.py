"""Scheduled snapshots, on this machine with a real supervisor and a bot writing SQLite rows: the
active host's supervisor takes one off its loop, status and doctor say how old it is, a standby
takes none."""

import json
import sqlite3
import sys
import time

from dashproc import invoke, local_inventory, wait_for

WRITER = """
import os, signal, sqlite3, sys, time
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
db = sqlite3.connect(os.environ["ROWS_DB"], isolation_level=None)
db.execute("pragma journal_mode=wal")
db.execute("create table if not exists rows (n integer primary key, at real)")
while True:
    db.execute("insert into rows (at) values (?)", (time.time(),))
    time.sleep(0.01)
"""


def setup(tmp_path, port, extra=""):
    app = tmp_path / "app"
    (app / "shared" / "data").mkdir(parents=True)
    db = app / "shared" / "data" / "rows.sqlite"
    (app / "shared" / ".env").write_text("BOT_TOKEN=schedule-%s\nROWS_DB=%s\n" % (tmp_path.name, db))
    writer = tmp_path / "writer.py"
    writer.write_text(WRITER)
    inventory = local_inventory(tmp_path / "inventory.yml", app, port)
    inventory.write_text(inventory.read_text().replace(
        "connection: local,", "connection: local, bot_command: '%s %s', shared_paths: [data], backup_every: 30s, "
        "backup_keep: 3%s," % (sys.executable, writer, extra)))
    return app, inventory, db


def backups(app):
    try:
        return json.loads((app / "run" / "backups.json").read_text())
    except FileNotFoundError:
        return {}


def test_the_active_supervisor_takes_a_scheduled_snapshot_and_status_says_how_old(tmp_path, port):
    app, inventory, db = setup(tmp_path, port)
    try:
        assert invoke(inventory, "restart").returncode == 0
        done = wait_for(lambda: backups(app).get("last_ok"), 60, "a scheduled snapshot")
        assert done["reason"] == "scheduled" and done["files"] >= 1
        listed = json.loads(invoke(inventory, "backups", "--json").stdout)
        scheduled = [r for r in listed if r["reason"] == "scheduled"]
        assert scheduled and scheduled[0]["consistency"] == "online" and scheduled[0]["where"] == "host"
        out = invoke(inventory, "status")
        assert "local: last backup " in out.stdout and " s ago (" in out.stdout, out.stdout
        out = invoke(inventory, "doctor")
        assert "local: last backup " in out.stdout, out.stdout
        log = (app / "logs" / "supervisor.log").read_text()
        assert "backup: snapshot %s" % done["stamp"] in log
        with sqlite3.connect(str(db)) as check:
            assert check.execute("select count(*) from rows").fetchone()[0] > 0
    finally:
        invoke(inventory, "stop")


def test_a_standby_takes_no_scheduled_snapshot(tmp_path, port):
    app, inventory, _ = setup(tmp_path, port, ", standby: true")
    try:
        assert invoke(inventory, "restart").returncode == 0
        wait_for(lambda: (app / "run" / "state.json").exists(), 30, "the supervisor")
        time.sleep(3)  # a snapshot due at start would be done by now
        assert not backups(app) and not list((app / "backups").glob("*.tar.gz"))
    finally:
        invoke(inventory, "stop")



def test_a_failing_scheduled_snapshot_is_alerted_and_status_warns(tmp_path, port):
    """shared/data made a link out of shared/ (a careless hand): the scheduled snapshot is refused,
    alerted once in the supervisor's log, and status and doctor say so."""
    app, inventory, _ = setup(tmp_path, port)
    outside = tmp_path / "outside"
    (app / "shared" / "data").rename(outside)
    (app / "shared" / "data").symlink_to(outside)
    try:
        assert invoke(inventory, "restart").returncode == 0
        last = wait_for(lambda: backups(app).get("last"), 60, "a scheduled attempt")
        assert not last["ok"] and "outside shared/" in last["error"]
        log = wait_for(lambda: "alert: backup failed on local" in (app / "logs" / "supervisor.log").read_text()
                       and (app / "logs" / "supervisor.log").read_text(), 30, "the alert")
        assert log.count("alert: backup failed on local") == 1
        out = invoke(inventory, "status")
        assert "local: WARNING: the last backup failed: " in out.stdout, out.stdout
    finally:
        invoke(inventory, "stop")
