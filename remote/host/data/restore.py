"""A snapshot read back into the bot's data: checked member by member, built as the next generation,
and switched in by one rename (store.py), so the data is old or new whatever kills it.

The archive is read as a stream (a failover pipes it from the source host through the operator), so
SNAPSHOT.json comes last and every check that needs it runs once the stream has ended, before
anything is switched. Refused, with nothing changed: a truncated or corrupt archive, a member that is
not a regular file (a link, a device), a name outside ``data/<entry>/`` for this host's shared_paths,
a file whose size or sha256 differs from SNAPSHOT.json's or that it does not list, a snapshot of
another data id (unless forced).
"""

import gzip
import hashlib
import json
import os
import posixpath
import shutil
import tarfile
import zlib

from remote.host.common.errors import Failure
from remote.host.common.paths import remove
from remote.host.data import snapshot, store

WRITEBACK = 8 << 20  # bytes of a large file written between two nudges to the disk's writeback
MAX_DOC = 16 << 20  # SNAPSHOT.json: a record per file; larger is not one of ours
MAX_HEADER = 1 << 20  # a pax header or GNU long name larger than this is not one of ours
MAX_PADDING = 1 << 20  # zeros after a tar's end: tar pads to its record size (10 KB), never more


class Refused(Failure):
    kind = "refused"


def _member_name(member, entries):
    """The path below data/ a member stands for, or Refused: regular files only, under an entry."""
    name = member.name
    if not member.isreg():
        raise Refused("the archive has %s, which is not a regular file (a link or a device): refused" % name)
    if name.startswith("/") or "\\" in name or any(ord(c) < 32 for c in name):
        raise Refused("the archive has a member named %r: refused" % name)
    parts = name.split("/")
    if ".." in parts or "." in parts or "" in parts or posixpath.normpath(name) != name:
        raise Refused("the archive has a member %r that is not a plain path: refused" % name)
    if parts[0] != "data" or len(parts) < 2:
        raise Refused("the archive has %s, outside data/: refused" % name)
    inner = "/".join(parts[1:])
    if inner == store.DATA_ID:
        return inner
    if not any(inner.startswith(entry + "/") for entry in entries):
        raise Refused("the archive has %s, which is not under this host's shared_paths (%s): refused"
                      % (name, ", ".join(entries) or "none"))
    if snapshot._is_env(parts[-1]):
        raise Refused("the archive has %s, a .env file, which snapshots never hold: refused" % name)
    return inner


def unpack(stream, target, entries):
    """Every member of the archive on ``stream`` into ``target`` (each entry's directory made, even
    empty), hashed on the way; SNAPSHOT.json's document once all of it is checked."""
    for entry in entries:
        os.makedirs(os.path.join(target, entry), mode=0o700, exist_ok=True)
    seen, doc = {}, None
    try:
        packed = gzip.GzipFile(fileobj=stream, mode="rb")  # gzip members too (a failover's stream)
        with tarfile.open(fileobj=packed, mode="r|", tarinfo=_Capped) as tar:
            for member in tar:
                if doc is not None:
                    raise Refused("the archive goes on after SNAPSHOT.json (%s): refused" % member.name)
                if member.name == "SNAPSHOT.json" and member.isreg() and member.size <= MAX_DOC:
                    doc = _document(tar.extractfile(member).read())
                    continue
                inner = _member_name(member, entries)
                if inner in seen:
                    raise Refused("the archive has %s twice: refused" % member.name)
                seen[inner] = _extract(tar, member, os.path.join(target, inner))
        _to_the_end(packed)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        if isinstance(exc, OSError) and exc.errno:  # a full disk here, not a bad archive
            raise Failure("could not write the restored data: %s" % exc) from None
        raise Refused("the archive is truncated or corrupt (%s): refused" % (str(exc) or type(exc).__name__)) from None
    if doc is None:
        raise Refused("the archive has no SNAPSHOT.json at its end (truncated, or not a snapshot): refused")
    listed = {}
    for record in doc.get("files") or []:
        if isinstance(record, dict) and isinstance(record.get("name"), str):
            listed[record["name"]] = record
    for inner, (size, digest) in seen.items():
        record = listed.pop(inner, None)
        if record is None:
            raise Refused("the archive has data/%s, which SNAPSHOT.json does not list: refused" % inner)
        if record.get("size") != size or record.get("sha256") != digest:
            raise Refused("data/%s does not match its checksum in SNAPSHOT.json: refused" % inner)
    if listed:
        raise Refused("SNAPSHOT.json lists %s, missing from the archive: refused" % ", ".join(sorted(listed)))
    return doc


class _Capped(tarfile.TarInfo):
    """A tar header whose extension (a pax header, a GNU long name) is read whole into memory by
    tarfile: refused above MAX_HEADER, so that a few KB of gzip cannot make a Pi allocate gigabytes."""

    def _proc_member(self, tarfile_):
        if self.type in (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE, tarfile.GNUTYPE_LONGNAME,
                         tarfile.GNUTYPE_LONGLINK) and self.size > MAX_HEADER:
            raise tarfile.ReadError("a %d-byte header extension" % self.size)
        return super()._proc_member(tarfile_)


def _to_the_end(packed):
    """After the tar's end: only its zero padding may follow, and the gzip stream must end whole (its
    last CRC checked): an archive cut short or with something appended is refused."""
    left = 0
    while True:
        block = packed.read(64 * 1024)
        if not block:
            return
        left += len(block)
        if block.strip(b"\0") or left > MAX_PADDING:
            raise tarfile.ReadError("data after the archive's end")


def _document(raw):
    try:
        doc = json.loads(raw.decode("utf-8"))
    except ValueError:
        raise Refused("the archive's SNAPSHOT.json is not JSON: refused") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("files"), list):
        raise Refused("the archive's SNAPSHOT.json is not a snapshot's: refused")
    return doc


def _extract(tar, member, path):
    """One member to ``path`` (private, never through a link: O_EXCL|O_NOFOLLOW); (size, sha256)."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    digest, size = hashlib.sha256(), 0
    source = tar.extractfile(member)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    flushed = 0
    with os.fdopen(fd, "wb") as handle:
        while True:
            chunk = source.read(1 << 20)
            if not chunk:
                break
            digest.update(chunk)
            size += len(chunk)
            handle.write(chunk)
            if size - flushed >= WRITEBACK and hasattr(os, "posix_fadvise"):
                handle.flush()  # start the disk's writeback now: the fsync before the switch then waits less
                os.posix_fadvise(fd, flushed, size - flushed, os.POSIX_FADV_DONTNEED)
                flushed = size
    return size, digest.hexdigest()


def _keep_env_files(paths, entries, built):
    """The .env files in this host's data (secrets a snapshot never holds) carried into the new
    generation as they are: a restore replaces data, never a host's secrets."""
    for entry, real, path in snapshot.walk(paths, entries):
        if snapshot._is_env(os.path.basename(path)):
            target = os.path.join(built, entry, os.path.relpath(path, real))
            if not os.path.lexists(target):
                os.makedirs(os.path.dirname(target), mode=0o700, exist_ok=True)
                shutil.copy2(path, target)


def _keep_unnamed(paths, entries, built):
    """What the live generation holds that shared_paths does not name (an entry taken out of the
    inventory since) carried into the new one as it is, by hard links (no copy of the bytes): a
    restore replaces the named data only, and never deletes data nobody asked about."""
    live = store.live_dir(paths)
    if live is None:
        return

    def walk(folder, prefix):
        for name in sorted(os.listdir(folder)):
            inner = prefix + name
            path = os.path.join(folder, name)
            if inner in entries or inner in (store.DATA_ID, store.KEPT_MARK):
                continue
            if any(entry.startswith(inner + "/") for entry in entries) and os.path.isdir(path) \
                    and not os.path.islink(path):
                walk(path, inner + "/")
                continue
            target = os.path.join(built, inner)
            if os.path.lexists(target):
                continue
            os.makedirs(os.path.dirname(target), mode=0o700, exist_ok=True)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.copytree(path, target, symlinks=True, copy_function=os.link)
            elif os.path.islink(path):
                os.symlink(os.readlink(path), target)
            else:
                os.link(path, target)

    walk(live, "")


def receive(paths, stream, entries, force=False, ours=None):
    """The archive on ``stream`` built and checked as the next generation; (directory, document).
    ``ours``: this host's data id as it was before anything here made one (None: any is accepted).
    Nothing live is touched: ``store.switch`` makes it live. A refusal removes what was built."""
    built = store.incoming(paths)
    try:
        doc = unpack(stream, built, entries)
        theirs = doc.get("data_id")
        if ours and theirs != ours and not force:
            raise Refused("the snapshot is of data %s, and this host's data is %s: refused (--force to replace "
                          "it anyway)" % (theirs, ours))
        if not os.path.exists(os.path.join(built, store.DATA_ID)) and theirs:
            snapshot._write_small(os.path.join(built, store.DATA_ID), "%s\n" % theirs)
        _keep_env_files(paths, entries, built)
        _keep_unnamed(paths, entries, built)
    except BaseException:
        remove(store.store_dir(paths), built, ignore_errors=True)
        raise
    return built, doc
