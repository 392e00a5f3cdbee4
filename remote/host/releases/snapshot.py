"""A consistent snapshot of the bot's data (what shared_paths holds), as one private .tar.gz.

Every SQLite file (recognised by its header, whatever its name) is copied through SQLite's online
backup API while the bot runs, so the copy is a database as of one moment even with writes going on
(its -wal and -shm siblings are folded in, never copied). Other files are copied as they are; one
that changed while it was read is named in the snapshot, never an error. With the bot stopped,
everything (a SQLite file and its -wal included) is streamed as bytes: nothing writes, so bytes are
exact, and Python 3.8's backup API can only write to another database file.

The archive holds ``data/<shared path>/...`` and ``SNAPSHOT.json`` (host, bot id, data id, epoch,
a per-host sequence number, release, taken_at, files with size and sha256, consistency, reason).
It is written under a temporary name and renamed, mode 600, in app_dir/backups/. `.env` files are
never in it. The data id (shared/.data-id) is made with the first snapshot of data without one and
travels inside every snapshot. gzip level 1: bot data is small and a Pi's CPU is not.
"""

import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
import time

from remote.host.common.errors import Failure
from remote.host.common.files import Layout, create_private

SQLITE_HEADER = b"SQLite format 3\x00"
LEVEL = 1
CHUNK = 1 << 20


def is_sqlite(path):
    try:
        with open(path, "rb") as handle:
            return handle.read(len(SQLITE_HEADER)) == SQLITE_HEADER
    except OSError:
        return False


def backups_dir(paths):
    return os.path.join(paths.app_dir, "backups")


def data_id(paths):
    """shared/.data-id, made now when the data has none (a random id: it names the data, not a host)."""
    path = os.path.join(paths.shared, ".data-id")
    try:
        with open(path) as handle:
            known = handle.read(100).strip()
        if known:
            return known
    except OSError:
        pass
    made = os.urandom(8).hex()
    os.makedirs(paths.shared, exist_ok=True)
    tmp = "%s.%d-%s.tmp" % (path, os.getpid(), os.urandom(4).hex())
    with create_private(tmp) as handle:
        handle.write(made + "\n")
    os.replace(tmp, path)
    return made


def next_sequence(paths):
    """This host's snapshot counter: only grows (run/backup-seq)."""
    path = os.path.join(paths.run, "backup-seq")
    try:
        with open(path) as handle:
            current = int(handle.read(30).strip() or 0)
    except (OSError, ValueError):
        current = 0
    tmp = "%s.%d-%s.tmp" % (path, os.getpid(), os.urandom(4).hex())
    with create_private(tmp) as handle:
        handle.write("%d\n" % (current + 1))
    os.replace(tmp, path)
    return current + 1


def _is_env(name):
    return name == ".env" or name.startswith(".env.")


def data_files(paths, shared_paths):
    """(path on disk, name in the archive) of every regular file the snapshot holds, sorted; links
    are never followed out of shared/ (a link in the data is left out)."""
    found = []
    for entry in shared_paths:
        top = os.path.join(paths.shared, entry)
        if os.path.islink(top) or not os.path.exists(top):
            continue
        walk = [(top, [], [os.path.basename(top)])] if os.path.isfile(top) else os.walk(top)
        for folder, dirs, files in walk:
            dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(folder, d))]
            for name in files:
                path = os.path.join(os.path.dirname(top) if folder == top and os.path.isfile(top) else folder, name)
                if _is_env(name) or os.path.islink(path) or not os.path.isfile(path):
                    continue
                if name.endswith(("-wal", "-shm", "-journal")) and is_sqlite(path[:path.rindex("-")]):
                    continue  # folded into the database's copy (online) or added beside it (stopped)
                found.append((path, os.path.relpath(path, paths.shared)))
    return sorted(set(found), key=lambda item: item[1])


def _sqlite_copy(path, scratch):
    """A consistent copy of a live SQLite database, through the online backup API."""
    import sqlite3

    target = os.path.join(scratch, "%s.db" % os.urandom(6).hex())
    source = sqlite3.connect("file:%s?mode=ro" % path, uri=True, timeout=30)
    try:
        dest = sqlite3.connect(target)
        try:
            source.backup(dest)
        finally:
            dest.close()
    finally:
        source.close()
    return target


def _add(tar, path, name, record):
    """``path`` into the archive as ``name``, hashing what was read; the file's record filled in."""
    digest, size = hashlib.sha256(), 0
    before = os.stat(path)
    info = tarfile.TarInfo(name)
    info.mode, info.mtime = 0o600, int(before.st_mtime)
    with open(path, "rb") as handle:
        data = _Hashing(handle, digest)
        info.size = before.st_size
        tar.addfile(info, data)
        size = data.read_bytes
    after = os.stat(path)
    record.update(size=size, sha256=digest.hexdigest())
    if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
        record["changed"] = True


class _Hashing:
    """A file object tarfile reads from, hashing on the way (tarfile refuses a file that shrinks as it
    reads: a live file is read from a copy, see take())."""

    def __init__(self, handle, digest):
        self.handle, self.digest, self.read_bytes = handle, digest, 0

    def read(self, size=-1):
        chunk = self.handle.read(size)
        self.digest.update(chunk)
        self.read_bytes += len(chunk)
        return chunk


def take(app_dir, shared_paths, reason, stopped, about=None):
    """One snapshot now; its SNAPSHOT.json document, with ``path`` (the archive) and ``bytes``.
    ``stopped``: the bot is not running (bytes are exact). ``about``: host, bot_id, epoch, release."""
    paths = Layout(app_dir)
    paths.make()
    files = data_files(paths, shared_paths)
    need = sum(os.path.getsize(path) for path, _ in files)
    folder = backups_dir(paths)
    os.makedirs(folder, mode=0o700, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if free < 2 * need:
        raise Failure("backup refused: %d bytes free in %s, and a snapshot of %d bytes of data needs twice that"
                      % (free, folder, need))
    doc = dict(about or {}, data_id=data_id(paths), seq=next_sequence(paths), taken_at=time.time(), reason=reason,
               consistency="stopped" if stopped else "online", compression="gzip level %d" % LEVEL, files=[])
    stamp = "%s-%d" % (time.strftime("%Y%m%d%H%M%S", time.gmtime(doc["taken_at"])), doc["seq"])
    doc["stamp"] = stamp
    final = os.path.join(folder, stamp + ".tar.gz")
    tmp = final + ".partial"
    scratch = tempfile.mkdtemp(prefix=".snapshot-", dir=folder)
    try:
        with open(tmp, "xb") as raw:
            os.chmod(tmp, 0o600)
            with tarfile.open(fileobj=raw, mode="w:gz", compresslevel=LEVEL) as tar:
                listed = files + [(os.path.join(paths.shared, ".data-id"), ".data-id")]
                for path, name in listed:
                    record = {"name": name, "sqlite": is_sqlite(path)}
                    source = path
                    if record["sqlite"] and not stopped:
                        source = _sqlite_copy(path, scratch)
                    elif not stopped:  # read from a copy: tarfile refuses a file that shrinks under it
                        source = os.path.join(scratch, os.urandom(6).hex())
                        before = os.stat(path)
                        shutil.copyfile(path, source)
                        after = os.stat(path)
                        if (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns):
                            record["changed"] = True  # as found: noted, never an error
                    _add(tar, source, "data/" + name, record)
                    doc["files"].append(record)
                    if stopped and record["sqlite"]:
                        for suffix in ("-wal", "-shm"):
                            if os.path.isfile(path + suffix):
                                extra = {"name": name + suffix, "sqlite": False}
                                _add(tar, path + suffix, "data/" + name + suffix, extra)
                                doc["files"].append(extra)
                body = json.dumps(doc, indent=1, sort_keys=True).encode()
                info = tarfile.TarInfo("SNAPSHOT.json")
                info.size, info.mode, info.mtime = len(body), 0o600, int(doc["taken_at"])
                tar.addfile(info, io.BytesIO(body))
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, final)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return dict(doc, path=final, bytes=os.path.getsize(final))
