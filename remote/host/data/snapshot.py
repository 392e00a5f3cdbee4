"""A consistent snapshot of the bot's data (what shared_paths holds), as one private .tar.gz.

Every SQLite file (recognised by its header, whatever its name) is copied through SQLite's online
backup API while the bot runs, so the copy is a database as of one moment even with writes going on
(its -wal and -shm siblings are folded in, never copied). Other files are copied as they are; one
that changed while it was read is marked ``changed`` in the snapshot, never an error. With the bot
stopped, everything (a SQLite file and its -wal included) is streamed as bytes: nothing writes, so
bytes are exact, and Python 3.8's backup API can only write to another database file.

The archive holds ``data/<entry>/...``, ``data/.data-id`` and, last, ``SNAPSHOT.json`` (host, bot id,
data id, epoch, a per-host sequence number, release, taken_at, files with size and sha256,
consistency, reason): last because the checksums are known only once the files are written, and a
restore reads the archive as a stream. On the host it is written under a temporary name and renamed,
mode 600, in app_dir/backups/, with a ``<stamp>.json`` beside it (the same document plus the
archive's own sha256 and size) so that listing never opens an archive. A failover streams it instead
(``out``): nothing is staged on the source, whose disk may be full. `.env` files are never in it.
gzip level 1: bot data is small and a Pi's CPU is not.
"""

import gzip
import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
import time

from remote.host.common.errors import Failure
from remote.host.common.files import create_private, read_json, write_json
from remote.host.common.paths import inside
from remote.host.data import store

SQLITE_HEADER = b"SQLite format 3\x00"
LEVEL = 1
STAMP = "%Y%m%d%H%M%S"
REASONS = ("scheduled", "manual", "failover", "before-failover", "before-restore", "before-deploy", "takeover")


def is_sqlite(path):
    try:
        with open(path, "rb") as handle:
            return handle.read(len(SQLITE_HEADER)) == SQLITE_HEADER
    except OSError:
        return False


def backups_dir(paths):
    return os.path.join(paths.app_dir, "backups")


def _write_small(path, text):
    tmp = "%s.%d-%s.tmp" % (path, os.getpid(), os.urandom(4).hex())
    with create_private(tmp) as handle:
        handle.write(text)
    os.replace(tmp, path)


def read_data_id(paths):
    """The data's id (shared/.data-id, a link into the live generation once adopted), or None."""
    try:
        with open(os.path.join(paths.shared, store.DATA_ID)) as handle:
            known = handle.read(100).strip()
    except OSError:
        return None
    return known or None


def data_id(paths, must_keep=True):
    """The data's id, made now when it has none: random, since it names the data, not a host. Written
    where the link points once adopted, so the id stays with its generation. ``must_keep`` False (a
    streamed snapshot): an id that cannot be written (a full disk) still names this snapshot's data."""
    known = read_data_id(paths)
    if known:
        return known
    made = os.urandom(8).hex()
    try:
        os.makedirs(paths.shared, mode=0o700, exist_ok=True)
        _write_small(os.path.realpath(os.path.join(paths.shared, store.DATA_ID)), made + "\n")
    except OSError:
        if must_keep:
            raise
    return made


def next_sequence(paths, must_keep=True):
    """This host's snapshot counter (run/backup-seq): only grows, so (epoch, seq) orders snapshots.
    ``must_keep`` False (a streamed snapshot, on a source whose disk may be full): a counter that
    cannot be written is not an error; the next snapshot may then repeat the number, its stamp's time
    still differs."""
    path = os.path.join(paths.run, "backup-seq")
    try:
        with open(path) as handle:
            current = int(handle.read(30).strip() or 0)
    except (OSError, ValueError):
        current = 0
    try:
        _write_small(path, "%d\n" % (current + 1))
    except OSError:
        if must_keep:
            raise
    return current + 1


def _is_env(name):
    return name == ".env" or name.startswith(".env.")


def walk(paths, shared_paths, root=None):
    """(entry, entry's real directory, path) of every regular file under the entries (of shared/, or
    of ``root``: a kept generation), never through a link but our own from shared/<entry> into the
    live generation, never outside shared/."""
    for entry in shared_paths:
        real = os.path.realpath(os.path.join(root or paths.shared, entry))
        if not os.path.isdir(real) or not inside(paths.shared, real):
            continue
        for folder, dirs, files in os.walk(real):
            dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(folder, d))]
            for name in files:
                path = os.path.join(folder, name)
                if not os.path.islink(path) and os.path.isfile(path):
                    yield entry, real, path


def data_files(paths, shared_paths, root=None):
    """(path on disk, name in the archive) of every regular file the snapshot holds, sorted: .env
    files never, a SQLite file's -wal, -shm and -journal with their database."""
    found = []
    for entry, real, path in walk(paths, shared_paths, root):
        name = os.path.basename(path)
        if _is_env(name):
            continue
        if name.endswith(("-wal", "-shm", "-journal")) and is_sqlite(path[:path.rindex("-")]):
            continue  # folded into the database's copy (online) or added beside it (stopped)
        found.append((path, os.path.join(entry, os.path.relpath(path, real))))
    return sorted(set(found), key=lambda item: item[1])


def _sqlite_copy(path, scratch):
    """A consistent copy of a live SQLite database, through the online backup API."""
    import sqlite3

    target = os.path.join(scratch, "%s.db" % os.urandom(6).hex())
    source = sqlite3.connect("file:%s?mode=ro" % path, uri=True, timeout=30)
    try:
        dest = sqlite3.connect(target)
        try:
            source.backup(dest)  # one step: in steps, each write of the bot would start the copy over
        finally:
            dest.close()
    finally:
        source.close()
    return target


class _Hashing:
    """A file object read by tarfile or written to by gzip, hashing what passes."""

    def __init__(self, handle):
        self.handle, self.digest, self.count = handle, hashlib.sha256(), 0

    def read(self, size=-1):
        chunk = self.handle.read(size)
        self.digest.update(chunk)
        self.count += len(chunk)
        return chunk

    def write(self, data):
        self.digest.update(data)
        self.count += len(data)
        return self.handle.write(data)

    def flush(self):
        self.handle.flush()


def _add(tar, path, name, record, size=None):
    """``path`` into the archive as ``name``: exactly ``size`` bytes (its size when it was listed)."""
    info = tarfile.TarInfo(name)
    info.mode, info.size = 0o600, os.path.getsize(path) if size is None else size
    info.mtime = int(os.path.getmtime(path))
    with os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW), "rb") as handle:  # a link swapped in meanwhile
        data = _Hashing(handle)
        tar.addfile(info, data)
    record.update(size=info.size, sha256=data.digest.hexdigest())


def _write(tar, paths, files, stopped, scratch, doc):
    """Every file into ``tar``, then SNAPSHOT.json."""
    for path, name in files:
        record = {"name": name, "sqlite": is_sqlite(path)}
        source = path
        if record["sqlite"] and not stopped:
            source = _sqlite_copy(path, scratch)
        elif not stopped:  # from a copy: tarfile refuses a file that shrinks under it
            source = os.path.join(scratch, os.urandom(6).hex())
            before = os.stat(path)
            shutil.copyfile(path, source)
            after = os.stat(path)
            if (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns):
                record["changed"] = True  # as found: noted, never an error
        _add(tar, source, "data/" + name, record)
        doc["files"].append(record)
        if stopped and record["sqlite"]:
            for suffix in ("-wal", "-shm", "-journal"):  # a killed bot's hot journal rolls back on open
                if os.path.isfile(path + suffix) and not os.path.islink(path + suffix):  # never a planted link
                    extra = {"name": name + suffix, "sqlite": False}
                    _add(tar, path + suffix, "data/" + name + suffix, extra)
                    doc["files"].append(extra)
    ident = (doc["data_id"] + "\n").encode()  # the id as this snapshot names it (written or not: a full disk)
    info = tarfile.TarInfo("data/" + store.DATA_ID)
    info.size, info.mode, info.mtime = len(ident), 0o600, int(doc["taken_at"])
    tar.addfile(info, io.BytesIO(ident))
    doc["files"].append({"name": store.DATA_ID, "sqlite": False, "size": len(ident),
                         "sha256": hashlib.sha256(ident).hexdigest()})
    body = json.dumps(doc, indent=1, sort_keys=True).encode()
    info = tarfile.TarInfo("SNAPSHOT.json")
    info.size, info.mode, info.mtime = len(body), 0o600, int(doc["taken_at"])
    tar.addfile(info, io.BytesIO(body))


def _archive(sink, paths, files, stopped, scratch, doc, level=LEVEL):
    """The tar.gz, written in order to ``sink`` (tarfile's stream mode takes no level before 3.12);
    ``level`` None: members that adapt to the way out (_Members)."""
    if level is None:
        packed = _Members(sink)
        with tarfile.open(fileobj=packed, mode="w|") as tar:
            _write(tar, paths, files, stopped, scratch, doc)
        packed.close()
        return
    with gzip.GzipFile(fileobj=sink, mode="wb", compresslevel=level, mtime=int(doc["taken_at"])) as packed:
        with tarfile.open(fileobj=packed, mode="w|") as tar:
            _write(tar, paths, files, stopped, scratch, doc)


class _Members:
    """A gzip stream of 1 MB members for a failover's carry, each compressed (level 1) while the way
    out is slower than compressing and stored (level 0) while it is faster.

    Why: the carry goes source -> this machine -> target. Over a LAN the CPU is the bottleneck (zlib
    level 1 does about 60 MB/s on a laptop, far less on a Pi), over a home upload to a VPS the link
    is; each member decides from what the last ones cost: compress when the bytes it saves would take
    longer to send than compressing takes. A multi-member gzip is one valid .gz (gzip(1) and Python
    read it whole), so the copy kept here is an archive like any other."""

    BLOCK = 1 << 20
    PROBE = 8  # a stored run compresses one member in this many again, to notice a link that slowed

    def __init__(self, sink):
        self.sink, self.buf = sink, bytearray()
        self.level, self.stored_run = 1, 0
        self.cost, self.ratio, self.send = None, 1.0, 0.0  # s/byte at level 1, its packed/raw, s/byte out

    def write(self, data):
        self.buf += data
        while len(self.buf) >= self.BLOCK:
            self._member(bytes(self.buf[:self.BLOCK]))
            del self.buf[:self.BLOCK]
        return len(data)

    def close(self):
        if self.buf:
            self._member(bytes(self.buf))
            self.buf = bytearray()

    def _member(self, block):
        started = time.monotonic()
        packed = gzip.compress(block, self.level, mtime=0)
        took = time.monotonic() - started
        if self.level == 1:
            self.cost, self.ratio = took / len(block), len(packed) / len(block)
        started = time.monotonic()
        self.sink.write(packed)
        self.send = (time.monotonic() - started) / max(1, len(packed))
        saves = (1.0 - self.ratio) * self.send  # s of sending each raw byte's compression would save
        self.stored_run = self.stored_run + 1 if self.level == 0 else 0
        self.level = 1 if self.cost is None or saves > self.cost or self.stored_run >= self.PROBE else 0


def record(paths, shared_paths, reason, stopped, about=None, keep=True, level=LEVEL, make_id=True):
    """A new snapshot's document before any file is read: its data id, sequence number and stamp.
    ``make_id`` False: data without an id gets one in the document only (a restore that may still be
    refused must change nothing; the kept snapshot carries the id)."""
    ident = data_id(paths, keep) if make_id else (read_data_id(paths) or os.urandom(8).hex())
    doc = dict(about or {}, data_id=ident, seq=next_sequence(paths, keep), taken_at=time.time(),
               reason=reason, consistency="stopped" if stopped else "online",
               compression="gzip level %d" % level if level is not None
               else "gzip, 1 MB members at level 1 or 0 (stored) as the link keeps up",
               files=[], shared=list(shared_paths))
    doc["stamp"] = "%s-%d" % (time.strftime(STAMP, time.gmtime(doc["taken_at"])), doc["seq"])
    return doc


def take(paths, shared_paths, reason, stopped, about=None, out=None, check_space=True, level=LEVEL, root=None,
         fixed=None):
    """One snapshot now; its document (SNAPSHOT.json's, plus ``archive_sha256``, ``bytes`` and, when
    kept on the host, ``path``). ``stopped``: the bot is not running (bytes are exact). ``about``:
    host, bot_id, epoch, release. ``out``: a binary stream to write the archive to instead of
    backups/ (the free-space check is then skipped: nothing is staged here)."""
    paths.make()
    files = data_files(paths, shared_paths, root)
    need = sum(os.path.getsize(path) for path, _ in files)
    folder = backups_dir(paths)
    if out is None:  # a streamed snapshot writes nothing here (a stopped bot's needs no scratch copy either)
        os.makedirs(folder, mode=0o700, exist_ok=True)
        if os.stat(folder).st_mode & 0o777 != 0o700:
            os.chmod(folder, 0o700)
    if out is None and check_space:
        free = shutil.disk_usage(folder).free
        if free < 2 * need:
            raise Failure("backup refused: %.1f MB free in %s, and %.1f MB of data needs twice that; free "
                          "some space (invoke backups lists what is kept)" % (free / 2**20, folder, need / 2**20))
    keep = out is None  # a streamed one may come from a full disk: its id and number need not be written
    if fixed is not None:  # a kept generation (pack.py): its document was made when the restore replaced it
        doc = dict({k: v for k, v in fixed.items() if k != "limits"}, files=[], compression="gzip level %d" % level)
    else:
        doc = record(paths, shared_paths, reason, stopped, about, keep, level)
    scratch = None if stopped else tempfile.mkdtemp(prefix=".snapshot-", dir=folder if out is None else paths.run)
    try:
        if out is not None:
            sink = _Hashing(out)
            _archive(sink, paths, files, stopped, scratch, doc, level)
            sink.flush()
            return dict(doc, archive_sha256=sink.digest.hexdigest(), bytes=sink.count)
        return _keep(paths, folder, files, stopped, scratch, doc, level)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def _keep(paths, folder, files, stopped, scratch, doc, level):
    final = os.path.join(folder, doc["stamp"] + ".tar.gz")
    tmp = final + ".partial"
    try:
        with open(tmp, "xb") as raw:
            os.chmod(tmp, 0o600)
            sink = _Hashing(raw)
            _archive(sink, paths, files, stopped, scratch, doc, level)
            raw.flush()
            os.fsync(raw.fileno())
        doc = dict(doc, archive_sha256=sink.digest.hexdigest(), bytes=sink.count)
        write_json(sidecar(final), doc, durable=True)  # first: an archive is listed only with its record
        os.replace(tmp, final)
    except BaseException:
        for path in (tmp, sidecar(final)):
            try:
                os.unlink(path)
            except OSError:
                pass
        raise
    return dict(doc, path=final)


def sidecar(archive):
    return archive[: -len(".tar.gz")] + ".json"


def catalog(folder):
    """The records of the complete archives in ``folder`` (their ``path`` added), oldest first by
    (epoch, seq) within each data id; a record whose archive is missing is left out."""
    found = []
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    for name in names:
        if not name.endswith(".json"):
            continue
        archive = os.path.join(folder, name[: -len(".json")] + ".tar.gz")
        doc = read_json(os.path.join(folder, name))
        if doc.get("stamp") and os.path.isfile(archive) and not os.path.islink(archive):
            found.append(dict(doc, path=archive))
    return sorted(found, key=order)


def order(doc):
    """Newest is the highest (epoch, seq), never wall-clock time (a host's clock may be wrong)."""
    epoch = doc.get("epoch")
    return (epoch if type(epoch) is int else 0, doc.get("seq") if type(doc.get("seq")) is int else 0)
