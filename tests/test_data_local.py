"""The bot's data on one host (remote/host/data), on this machine with real files, real SQLite
writers and the real ctl: snapshots consistent under writes, restores that check every member and
switch all of the data in one step whenever they are killed, and retention by count, day and size."""

import hashlib
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tarfile
import time

import pytest
from dashproc import tmpfs

from remote.host.common import wire
from remote.host.common.errors import Failure
from remote.host.common.files import Layout
from remote.host.data import ops, retention, snapshot, store

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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
SETTINGS = {"name": "pi", "shared_paths": ["data", "cache/images"]}


@pytest.fixture
def app(tmp_path):
    app = tmp_path / "app"
    (app / "shared" / "data").mkdir(parents=True)
    (app / "shared" / "cache" / "images").mkdir(parents=True)
    (app / "shared" / ".env").write_text("BOT_TOKEN=secret\n")
    (app / "shared" / "data" / ".env.local").write_text("ALSO=secret\n")
    (app / "shared" / "data" / "settings.txt").write_text("prefix=!\n")
    (app / "shared" / "cache" / "images" / "a.png").write_bytes(b"\x89PNG" + os.urandom(100))
    return app


def ctl(app, command, options=None, settings=None, data=b"", timeout=60):
    """The real ctl, as the operator runs it: (answer, stdout's bytes). Binary commands answer on stderr."""
    request = dict(wire.header(command), command=command, app_dir=str(app), options=options or {},
                   settings=settings or SETTINGS)
    proc = subprocess.run([sys.executable, "-S", "-m", "remote.host.ctl", command], cwd=ROOT, timeout=timeout,
                          input=json.dumps(request).encode() + b"\n" + data, capture_output=True)
    binary = command in ("backup-read",) or (command == "snapshot" and (options or {}).get("stream"))
    text = (proc.stderr if binary else proc.stdout).decode().strip().splitlines()
    return json.loads(text[-1]), proc.stdout


def packed(app, timeout=60):
    """Once the restores' packers are done: no kept generation left (pack.py), their snapshots made,
    and the generations they packed removed (a packer renames one to trash- before removing it)."""
    deadline = time.monotonic() + timeout
    layout = Layout(str(app))
    while store.pending(layout) or [n for n in os.listdir(store.store_dir(layout)) if n.startswith(store.TRASH)]:
        assert time.monotonic() < deadline, "the packer did not finish within %d s" % timeout
        time.sleep(0.05)


def tree(app):
    """What the bot sees of its data through shared/: {name: sha256}; .env files are the host's, not
    data (a restore keeps them as they are: see the streamed restore's test)."""
    out = {}
    for entry in SETTINGS["shared_paths"]:
        top = os.path.realpath(app / "shared" / entry)
        for folder, _dirs, files in os.walk(top):
            for name in files:
                path = os.path.join(folder, name)
                if name.startswith(".env"):
                    continue
                with open(path, "rb") as handle:
                    out[os.path.join(entry, os.path.relpath(path, top))] = hashlib.sha256(handle.read()).hexdigest()
    return out


def members(path):
    with tarfile.open(path) as tar:
        return {m.name: m for m in tar.getmembers()}, json.load(tar.extractfile("SNAPSHOT.json"))


def test_a_live_sqlite_file_comes_out_whole_and_the_archive_is_private_and_complete(app, tmp_path):
    db = app / "shared" / "data" / "levels.sqlite"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(db)], stdout=subprocess.PIPE, text=True)
    try:
        assert int(writer.stdout.readline()) >= 50  # rows are going in
        doc = snapshot.take(Layout(str(app)), ["data"], "manual", stopped=False, about={"host": "pi", "epoch": 3})
        assert int(writer.stdout.readline()) > 0  # and went on during the snapshot
    finally:
        writer.kill()
        writer.wait()
    assert doc["consistency"] == "online" and doc["reason"] == "manual" and doc["epoch"] == 3
    assert os.stat(doc["path"]).st_mode & 0o777 == 0o600 and not os.path.exists(doc["path"] + ".partial")
    assert doc["archive_sha256"] == hashlib.sha256(open(doc["path"], "rb").read()).hexdigest()
    found, inside = members(doc["path"])
    assert set(found) == {"data/data/levels.sqlite", "data/data/settings.txt", "data/.data-id", "SNAPSHOT.json"}
    assert list(found)[-1] == "SNAPSHOT.json"  # last: a restore reads the archive as a stream
    assert inside["data_id"] == (app / "shared" / ".data-id").read_text().strip() == doc["data_id"]
    out = tmp_path / "out"
    with tarfile.open(doc["path"]) as tar:
        tar.extractall(out, filter="data") if hasattr(tarfile, "data_filter") else tar.extractall(out)
    copy = sqlite3.connect(str(out / "data" / "data" / "levels.sqlite"))
    assert copy.execute("pragma integrity_check").fetchone() == ("ok",)
    rows = copy.execute("select count(*), max(n) from rows").fetchone()
    assert rows[0] >= 50 and rows[0] == rows[1]  # a database as of one moment: no gap, no torn page
    record = {f["name"]: f for f in inside["files"]}["data/levels.sqlite"]
    assert record["sha256"] == hashlib.sha256((out / "data" / "data" / "levels.sqlite").read_bytes()).hexdigest()


def test_the_data_id_is_made_once_and_the_sequence_only_grows(app):
    one = snapshot.take(Layout(str(app)), ["data"], "manual", stopped=True)
    two = snapshot.take(Layout(str(app)), ["data"], "scheduled", stopped=True)
    assert one["data_id"] == two["data_id"] and two["seq"] == one["seq"] + 1
    assert one["stamp"] != two["stamp"] and one["consistency"] == "stopped"


def test_a_snapshot_that_does_not_fit_twice_is_refused_and_leaves_nothing(tmp_path):
    """On a real 4 MB tmpfs, 3 MB of data: a snapshot needs twice that free."""
    with tmpfs(tmp_path / "small", "4m") as small:
        app = small / "app"
        (app / "shared" / "data").mkdir(parents=True)
        (app / "shared" / "data" / "big.bin").write_bytes(os.urandom(3 << 20))
        with pytest.raises(Failure) as refused:
            snapshot.take(Layout(str(app)), ["data"], "manual", stopped=True)
        assert "needs twice that" in str(refused.value)
        left = os.listdir(snapshot.backups_dir(Layout(str(app))))
        assert not [n for n in left if n.endswith((".gz", ".partial"))], left


def test_a_streamed_snapshot_restores_through_the_ctl_and_the_old_data_is_kept(app):
    release = app / "releases" / "20260101000000"  # a release links shared/data as deploys do
    release.mkdir(parents=True)
    os.symlink("../../shared/data", release / "data")
    before = tree(app)
    answer, archive = ctl(app, "snapshot", {"stream": True, "reason": "failover"})
    assert answer["ok"], answer
    assert answer["snapshot"]["archive_sha256"] == hashlib.sha256(archive).hexdigest()
    folder = snapshot.backups_dir(Layout(str(app)))
    assert not os.path.exists(folder) or not os.listdir(folder), "a streamed snapshot is staged nowhere"
    (app / "shared" / "data" / "settings.txt").write_text("prefix=?\n")
    (app / "shared" / "data" / "new.txt").write_text("later\n")
    changed = tree(app)
    answer, _ = ctl(app, "restore", {"stream": True, "reason": "before-failover"}, data=archive)
    assert answer["ok"], answer
    assert tree(app) == before
    assert (release / "data" / "settings.txt").read_text() == "prefix=!\n"  # the release sees it too
    assert os.readlink(app / "shared" / "data") == ".sulfur-data/live/data"
    assert (app / "shared" / ".env").read_text() == "BOT_TOKEN=secret\n"  # .env is never data
    assert (app / "shared" / "data" / ".env.local").read_text() == "ALSO=secret\n"  # nor one in the data
    kept = answer["kept"]
    assert kept["reason"] == "before-failover" and kept["consistency"] == "stopped" and kept["packing"]
    listing, _ = ctl(app, "backups")
    assert kept["stamp"] in [row["stamp"] for row in listing["backups"]]  # listed at once, packed or packing
    packed(app)
    again, _ = ctl(app, "restore", {"stamp": kept["stamp"]})
    assert again["ok"], again
    assert tree(app) == changed  # the data before the restore, back
    packed(app)
    listing, _ = ctl(app, "backups")
    assert {row["reason"] for row in listing["backups"]} == {"before-failover", "before-restore"}
    row = {r["stamp"]: r for r in listing["backups"]}[kept["stamp"]]
    read, raw = ctl(app, "backup-read", {"stamp": kept["stamp"]})
    assert read["ok"] and hashlib.sha256(raw).hexdigest() == row["archive_sha256"]
    assert not [n for n in os.listdir(store.store_dir(Layout(str(app)))) if n.startswith("kept-")]


def _archive(files, doc_extra=None, links=(), drop=None, corrupt=None):
    """A snapshot-shaped archive made here: ``files`` {name under data/: bytes}."""
    buf = io.BytesIO()
    records = []
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, body in files.items():
            info = tarfile.TarInfo("data/" + name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body if name != corrupt else body[::-1]))
            if name != drop:
                records.append({"name": name, "size": len(body), "sha256": hashlib.sha256(body).hexdigest()})
        for name, target in links:
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
        body = json.dumps(dict({"files": records, "data_id": "abc", "stamp": "20260101000000-1"},
                               **(doc_extra or {}))).encode()
        info = tarfile.TarInfo("SNAPSHOT.json")
        info.size = len(body)
        tar.addfile(info, io.BytesIO(body))
    return buf.getvalue()


GOOD = {"data/levels.sqlite": b"rows", "cache/images/b.png": b"png", ".data-id": b"abc\n"}


@pytest.mark.parametrize("bad, why", [
    (_archive(GOOD, corrupt="data/levels.sqlite"), "does not match its checksum"),
    (_archive(GOOD)[:-40], "truncated"),
    (_archive(GOOD)[:200], "truncated"),
    (_archive(dict(GOOD, **{"../outside": b"x"})), "not a plain path"),
    (_archive(dict(GOOD, **{"elsewhere/x": b"x"})), "not under this host's shared_paths"),
    (_archive(GOOD, links=[("data/data/link", "/etc/passwd")]), "not a regular file"),
    (_archive(dict(GOOD, **{"data/.env": b"TOKEN=x"})), "a .env file"),
    (_archive(dict(GOOD, **{"data/extra": b"x"}), drop="data/extra"), "does not list"),
    (_archive(GOOD, doc_extra={"data_id": "other"}), "another"),  # this host's data is abc
    (b"not an archive at all", "truncated"),
])
def test_a_bad_archive_is_refused_and_the_data_is_unchanged(app, bad, why):
    (app / "shared" / ".data-id").write_text("abc\n")
    if "another" in why:
        (app / "shared" / ".data-id").write_text("mine\n")
        why = "this host's data is mine"
    before = tree(app)
    answer, _ = ctl(app, "restore", {"stream": True}, data=bad)
    assert not answer["ok"] and why in answer["error"], answer
    assert answer["kind"] == "refused"
    assert tree(app) == before
    assert not [n for n in os.listdir(store.store_dir(Layout(str(app)))) if n.startswith("incoming-")]
    assert not os.path.exists(app / "shared" / "outside") and not os.path.exists(app / "outside")


def test_another_data_id_is_restored_with_force_and_data_without_an_id_accepts_any(app):
    answer, _ = ctl(app, "restore", {"stream": True}, data=_archive(GOOD))  # no id here yet
    assert answer["ok"], answer
    assert (app / "shared" / ".data-id").read_text() == "abc\n"
    other = _archive(dict(GOOD, **{".data-id": b"other\n"}), doc_extra={"data_id": "other"})
    assert not ctl(app, "restore", {"stream": True}, data=other)[0]["ok"]
    answer, _ = ctl(app, "restore", {"stream": True, "force": True}, data=other)
    assert answer["ok"], answer
    assert (app / "shared" / ".data-id").read_text() == "other\n"  # the id travels with the data


def test_a_restore_under_a_running_bot_is_refused(app):
    """A bot whose supervisor is gone still counts (orphaned): its run/bot.pid names a live process."""
    from remote.host.common.system import pidfile_line

    paths = Layout(str(app))
    paths.make()
    bot = subprocess.Popen(["sleep", "60"])
    try:
        (app / "run" / "bot.pid").write_text(pidfile_line(bot.pid))
        (app / "run" / "state.json").write_text(json.dumps({"services": {"bot": {"bot_id": "b1", "state": "running"}}}))
        before = tree(app)
        answer, _ = ctl(app, "restore", {"stream": True}, data=_archive(GOOD))
        assert not answer["ok"] and "the bot runs on this host" in answer["error"], answer
        assert tree(app) == before
    finally:
        bot.kill()
        bot.wait()


def test_a_restore_killed_at_any_moment_leaves_the_old_data_or_the_new(app):
    """Two shared paths, many files: SIGKILL at random moments during the ctl's restore; what the bot
    would see through shared/ is exactly the old data or exactly the new, never a mix."""
    for n in range(40):
        (app / "shared" / "data" / ("f%02d.bin" % n)).write_bytes(os.urandom(64 << 10))
    (app / "shared" / ".data-id").write_text("abc\n")
    old_archive = snapshot_of(app)
    new_files = {"data/f%02d.bin" % n: os.urandom(64 << 10) for n in range(40)}
    new_files.update({"cache/images/n.png": b"new", ".data-id": b"abc\n"})
    archive = _archive(new_files)
    request = dict(wire.header("restore"), command="restore", app_dir=str(app), options={"stream": True},
                   settings=SETTINGS)
    start = time.monotonic()
    assert ctl(app, "restore", {"stream": True}, data=archive)[0]["ok"]
    took = time.monotonic() - start
    assert tree(app) == tree_of(archive)
    outcomes = []
    for attempt in range(12):  # from before the ctl runs to well after it is done
        target = old_archive if attempt % 2 == 0 else archive
        proc = subprocess.Popen([sys.executable, "-S", "-m", "remote.host.ctl", "restore"], cwd=ROOT,
                                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        before = tree(app)
        proc.stdin.write(json.dumps(request).encode() + b"\n" + target)
        proc.stdin.close()
        time.sleep(took * (attempt / 8.0) if attempt < 11 else took * 3)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        after = tree(app)
        assert after in (before, tree_of(target)), "a mix of old and new data"
        outcomes.append("same" if after == before and before != tree_of(target) else "switched")
    assert "same" in outcomes and "switched" in outcomes, outcomes
    assert ctl(app, "backups")[0]["ok"]
    assert ctl(app, "restore", {"stream": True}, data=archive)[0]["ok"]  # tidies what the kills left
    packed(app)
    assert not [n for n in os.listdir(store.store_dir(Layout(str(app)))) if not n.startswith(("g", "live"))]
    assert len([n for n in os.listdir(store.store_dir(Layout(str(app)))) if n.startswith("g")]) == 1


def snapshot_of(app, settings=None):
    answer, archive = ctl(app, "snapshot", {"stream": True}, settings=settings)
    assert answer["ok"], answer
    return archive


def tree_of(archive):
    out = {}
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        for member in tar:
            if member.name.startswith("data/") and member.name != "data/.data-id":
                out[member.name[5:]] = hashlib.sha256(tar.extractfile(member).read()).hexdigest()
    return out


def test_the_data_s_own_names_are_no_shared_path():
    from remote.host.common.paths import shared_path_problem

    assert "data's generations" in shared_path_problem(".sulfur-data/x")
    assert shared_path_problem(".data-id") and shared_path_problem("data") is None


def test_an_adoption_cut_short_is_finished_and_a_deploy_never_hides_it(app):
    paths = Layout(str(app))
    store.adopt(paths, [])  # a first generation, nothing moved yet
    live = store.live_dir(paths)
    os.rename(app / "shared" / "data", os.path.join(live, "data"))  # killed between the move and the link
    store.repair(paths, ["data", "cache/images"])
    assert (app / "shared" / "data" / "settings.txt").read_text() == "prefix=!\n"
    assert os.path.islink(app / "shared" / "cache" / "images")


def _doc(seq, reason="scheduled", day=0, size=100, epoch=1, now=1_800_000_000):
    return {"stamp": "s%d" % seq, "seq": seq, "epoch": epoch, "reason": reason, "bytes": size,
            "taken_at": now - day * 86400 - (1000 - seq)}


def test_retention_keeps_by_count_by_day_and_by_size():
    now = 1_800_000_000
    docs = [_doc(n, day=(30 - n) // 3) for n in range(30)]  # 3 a day over 10 days
    gone = {d["stamp"] for d in retention.plan(docs, keep=4, max_bytes=10**9, now=now)}
    kept = [d for d in docs if d["stamp"] not in gone]
    newest4 = {"s29", "s28", "s27", "s26"}
    assert newest4 <= {d["stamp"] for d in kept}
    days = {time.strftime("%Y-%m-%d", time.gmtime(d["taken_at"])) for d in kept}
    assert len(days) == 7 and len(kept) == 4 + 5  # 4 newest (2 days) + the newest of 5 more days
    others = docs + [_doc(100 + n, reason="before-deploy") for n in range(6)]
    gone = {d["stamp"] for d in retention.plan(others, keep=4, max_bytes=10**9, now=now)}
    assert {"s100", "s101"} <= gone and not {"s102", "s103", "s104", "s105"} & gone
    big = [_doc(n, size=400) for n in range(5)] + [_doc(10, reason="manual", size=400)]
    gone = [d["stamp"] for d in retention.plan(big, keep=10, max_bytes=1000, now=now)]
    assert gone == ["s3", "s2", "s1", "s0"][::-1][::-1] or set(gone) == {"s0", "s1", "s2", "s3"}
    assert "s10" not in gone and "s4" not in gone  # scheduled ones go first, the newest stays
    assert retention.plan([_doc(1, size=5000)], keep=10, max_bytes=10, now=now) == []  # never the last one


def test_a_kept_snapshot_is_pruned_on_the_host(app):
    settings = dict(SETTINGS, backup_keep=2)
    stamps = [ctl(app, "snapshot", {"reason": "scheduled"}, settings=settings)[0]["snapshot"]["stamp"]
              for _ in range(4)]
    listing = ctl(app, "backups")[0]["backups"]
    assert [row["stamp"] for row in listing] == stamps[-2:]
    assert len(os.listdir(snapshot.backups_dir(Layout(str(app))))) == 4  # 2 archives, 2 records
    assert ctl(app, "backups")[0]["last"]["last"]["ok"]
    assert ops.check_stamp(stamps[0]) == stamps[0]
    with pytest.raises(Failure):
        ops.check_stamp("../../etc")


def test_a_link_in_shared_never_brings_outside_data_in_and_unnamed_data_survives_a_restore(app, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "images").mkdir(parents=True)
    (elsewhere / "images" / "a.png").write_bytes(b"outside")
    os.rename(app / "shared" / "cache", tmp_path / "old-cache")
    os.symlink(str(elsewhere), app / "shared" / "cache")  # shared/cache -> outside shared/
    answer, _ = ctl(app, "restore", {"stream": True}, data=_archive(GOOD))
    assert not answer["ok"] and "outside shared/" in answer["error"], answer
    assert (elsewhere / "images" / "a.png").read_bytes() == b"outside" and not os.path.islink(elsewhere / "images")
    os.unlink(app / "shared" / "cache")
    os.rename(tmp_path / "old-cache", app / "shared" / "cache")
    # an entry taken out of shared_paths after the data was adopted is kept as it is, its .env too
    (app / "shared" / "logs").mkdir()
    (app / "shared" / "logs" / ".env").write_text("LOG_KEY=secret\n")
    (app / "shared" / "logs" / "bot.txt").write_text("old lines\n")
    with_logs = dict(SETTINGS, shared_paths=SETTINGS["shared_paths"] + ["logs"])
    assert ctl(app, "snapshot", {"reason": "manual"}, settings=with_logs)[0]["ok"]
    assert ctl(app, "restore", {"stream": True}, settings=with_logs, data=snapshot_of(app, with_logs))[0]["ok"]
    assert os.path.islink(app / "shared" / "logs")  # adopted
    answer, _ = ctl(app, "restore", {"stream": True, "force": True}, data=_archive(GOOD))  # logs no longer named
    assert answer["ok"], answer
    assert (app / "shared" / "logs" / ".env").read_text() == "LOG_KEY=secret\n"
    assert (app / "shared" / "logs" / "bot.txt").read_text() == "old lines\n"


def test_a_planted_wal_link_never_brings_a_secret_into_a_stopped_snapshot(app):
    db = app / "shared" / "data" / "bot.db"
    sqlite3.connect(str(db)).execute("create table t (x)").connection.commit()
    os.symlink("../.env", app / "shared" / "data" / "bot.db-wal")
    doc = snapshot.take(Layout(str(app)), ["data"], "manual", stopped=True)
    found, inside = members(doc["path"])
    assert "data/data/bot.db" in found and not [n for n in found if n.endswith("-wal")]
    with tarfile.open(doc["path"]) as tar:
        assert not any(b"secret" in tar.extractfile(m).read() for m in tar.getmembers() if m.isreg())


def test_a_stamp_found_twice_with_two_checksums_is_refused(tmp_path, monkeypatch):
    """restore --from looks a stamp up on the host, here and in replicas; the same stamp with two
    sha256s (two hosts' snapshots, or a damaged copy) is refused, naming where it was found."""
    from remote import backups, dataflows
    from remote.errors import UsageError
    from remote.inventory import load

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    inventory = tmp_path / "inventory.yml"
    inventory.write_text("hosts:\n  pi: {hostname: 10.0.0.1, shared_paths: [data]}\n")
    inv = load(inventory)
    here = backups.local_dir(inventory, "pi")
    here.mkdir(parents=True)
    stamp = "20261207101502-7"
    (here / (stamp + ".tar.gz")).write_bytes(b"not checked here")
    (here / (stamp + ".json")).write_text(json.dumps({"stamp": stamp, "archive_sha256": "b" * 64, "seq": 7,
                                                      "epoch": 1, "data_id": "d"}))
    answer = {"backups": [{"where": "host", "stamp": stamp, "archive_sha256": "a" * 64, "seq": 7, "epoch": 1,
                           "data_id": "d"}]}
    with pytest.raises(UsageError) as refused:
        dataflows.find(inv, inv.hosts["pi"], stamp, "d", answer)
    assert "different checksums (host, local)" in str(refused.value)
    answer["backups"][0]["archive_sha256"] = "b" * 64
    assert dataflows.find(inv, inv.hosts["pi"], stamp, "d", answer)["where"] == "host"


def test_an_archive_with_a_huge_header_or_something_after_its_end_is_refused(app):
    """A pax header that claims hundreds of MB (tarfile reads it whole) is refused before it is read;
    an archive with bytes appended after its end, or cut short by one byte, is refused too."""
    import gzip

    body = io.BytesIO()
    with tarfile.open(fileobj=body, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("data/data/x")
        info.pax_headers = {"comment": "x" * (3 << 20)}
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    before = tree(app)
    answer, _ = ctl(app, "restore", {"stream": True}, data=gzip.compress(body.getvalue(), 1))
    assert not answer["ok"] and "header extension" in answer["error"], answer
    good = _archive(GOOD)
    for bad in (good + gzip.compress(b"appended"), good[:-1]):
        answer, _ = ctl(app, "restore", {"stream": True}, data=bad)
        assert not answer["ok"] and answer["kind"] == "refused", answer
    assert tree(app) == before
    assert ctl(app, "restore", {"stream": True}, data=good)[0]["ok"]  # the same archive whole is fine
