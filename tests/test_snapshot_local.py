"""The bot's data as one snapshot (remote/host/releases/snapshot.py), on this machine: a SQLite file
written to by another process the whole time comes out whole and consistent, other files as found,
.env never, the archive private and complete or absent."""

import json
import os
import sqlite3
import subprocess
import sys
import tarfile

import pytest

from remote.host.common.errors import Failure
from remote.host.common.files import Layout
from remote.host.releases import snapshot

WRITER = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("pragma journal_mode=wal")
db.execute("create table if not exists rows (n integer primary key, at real, pad text)")
n = 0
while True:
    n += 1
    db.execute("insert into rows (at, pad) values (?, ?)", (time.time(), "x" * 500))
    if n % 50 == 0:
        print(n, flush=True)
"""


@pytest.fixture
def app(tmp_path):
    app = tmp_path / "app"
    (app / "shared" / "data").mkdir(parents=True)
    (app / "shared" / ".env").write_text("BOT_TOKEN=secret\n")
    (app / "shared" / "data" / ".env.local").write_text("ALSO=secret\n")
    (app / "shared" / "data" / "settings.txt").write_text("prefix=!\n")
    return app


def members(path):
    with tarfile.open(path) as tar:
        return {m.name: m for m in tar.getmembers()}, json.load(tar.extractfile("SNAPSHOT.json"))


def test_a_live_sqlite_file_comes_out_whole_and_the_archive_is_private_and_complete(app, tmp_path):
    db = app / "shared" / "data" / "levels.sqlite"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(db)], stdout=subprocess.PIPE, text=True)
    try:
        assert int(writer.stdout.readline()) >= 50  # rows are going in
        doc = snapshot.take(str(app), ["data"], "manual", stopped=False, about={"host": "pi", "epoch": 3})
        assert int(writer.stdout.readline()) > 0  # and went on during the snapshot
    finally:
        writer.kill()
        writer.wait()
    assert doc["consistency"] == "online" and doc["reason"] == "manual" and doc["epoch"] == 3
    assert os.stat(doc["path"]).st_mode & 0o777 == 0o600 and not os.path.exists(doc["path"] + ".partial")
    found, inside = members(doc["path"])
    assert set(found) == {"data/data/levels.sqlite", "data/data/settings.txt", "data/.data-id", "SNAPSHOT.json"}
    assert not any(".env" in name for name in found)  # neither shared/.env nor data/.env.local
    assert inside["data_id"] == (app / "shared" / ".data-id").read_text().strip() == doc["data_id"]
    out = tmp_path / "out"
    with tarfile.open(doc["path"]) as tar:
        tar.extractall(out, filter="data") if hasattr(tarfile, "data_filter") else tar.extractall(out)
    copy = sqlite3.connect(str(out / "data" / "data" / "levels.sqlite"))
    assert copy.execute("pragma integrity_check").fetchone() == ("ok",)
    rows = copy.execute("select count(*), max(n) from rows").fetchone()
    assert rows[0] >= 50 and rows[0] == rows[1]  # a database as of one moment: no gap, no torn page
    record = {f["name"]: f for f in inside["files"]}["data/levels.sqlite"]
    import hashlib

    assert record["sha256"] == hashlib.sha256((out / "data" / "data" / "levels.sqlite").read_bytes()).hexdigest()


def test_the_data_id_is_made_once_and_the_sequence_only_grows(app):
    one = snapshot.take(str(app), ["data"], "manual", stopped=True)
    two = snapshot.take(str(app), ["data"], "scheduled", stopped=True)
    assert one["data_id"] == two["data_id"] and two["seq"] == one["seq"] + 1
    assert one["stamp"] != two["stamp"] and one["consistency"] == "stopped"


def test_a_snapshot_that_does_not_fit_twice_is_refused_and_leaves_nothing(tmp_path):
    """On a real 4 MB tmpfs, 3 MB of data: a snapshot needs twice that free."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(small)], check=True)
    try:
        app = small / "app"
        (app / "shared" / "data").mkdir(parents=True)
        (app / "shared" / "data" / "big.bin").write_bytes(os.urandom(3 << 20))
        with pytest.raises(Failure) as refused:
            snapshot.take(str(app), ["data"], "manual", stopped=True)
        assert "needs twice that" in str(refused.value)
        left = os.listdir(snapshot.backups_dir(Layout(str(app))))
        assert not [n for n in left if n.endswith((".gz", ".partial"))], left
    finally:
        subprocess.run(["umount", "-l", str(small)], check=False)

