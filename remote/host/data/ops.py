"""The data commands a host's ctl runs: snapshot, restore, backups, backup-read (and replica-put).

Thin: it gathers what a snapshot says about itself (host, bot id, epoch, release), takes the
host's operator lock for anything that changes data, and leaves the work to snapshot.py, restore.py,
store.py and retention.py. The operator stops and starts the bot around a restore through the guard,
as for any start; a restore here only refuses to replace data under a running bot.
"""

import json
import os
import re
import time

from remote.host.common import epochs
from remote.host.common.errors import BadRequest, Failure
from remote.host.common.files import Layout, current_stamp, read_json, sha256_of, write_json
from remote.host.common.paths import remove, shared_paths_problem, shared_problem
from remote.host.data import restore, retention, snapshot, store

STAMP = re.compile(r"[0-9]{14}-[0-9]{1,9}")
HOST_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
REPLICAS = "replica"
DEFAULT_KEEP, DEFAULT_MAX = 10, 1 << 30


def check_stamp(stamp):
    if not isinstance(stamp, str) or not STAMP.fullmatch(stamp):
        raise BadRequest("%r is not a snapshot's stamp (UTC time and sequence, such as 20261207101500-42; "
                         "invoke backups lists them)" % (stamp,))
    return stamp


def folder(paths, replica_of=None):
    """backups/ for this host's own snapshots, backups/replica/<host>/ for another host's copies."""
    if replica_of is None:
        return snapshot.backups_dir(paths)
    if not isinstance(replica_of, str) or not HOST_NAME.fullmatch(replica_of):
        raise BadRequest("%r is not a host name" % (replica_of,))
    return os.path.join(snapshot.backups_dir(paths), REPLICAS, replica_of)


def entries(settings, paths):
    """The shared_paths entries, by their text and then with the links already in shared/ followed
    (a link shared/cache -> /elsewhere must not bring /elsewhere into a snapshot or a generation)."""
    names = list(settings.get("shared_paths") or [])
    problem = shared_paths_problem(names) or shared_problem(paths.shared, paths.shared, names)
    if problem:
        raise BadRequest("shared_paths: %s; nothing was changed" % problem)
    return names


def bot_stopped(paths):
    """Whether no bot of ours runs here (a supervised, orphaned or failing-with-retry one counts)."""
    from remote.host.supervision import guard

    return guard.running(paths) is None


def about(paths, settings):
    from remote.host.supervision import guard

    record = epochs.read(paths.bot_epoch)
    return {"host": settings.get("name"), "bot_id": record.get("bot_id") or guard.env_bot_id(
        paths, settings.get("bot_token_env")), "epoch": record.get("epoch") or 0, "release": current_stamp(paths)}


def limits(settings):
    keep = settings.get("backup_keep")
    most = settings.get("backup_max")
    return (keep if type(keep) is int and keep > 0 else DEFAULT_KEEP,
            most if type(most) is int and most > 0 else DEFAULT_MAX)


def prune(where, keep, max_bytes):
    """Retention in one folder; the stamps removed."""
    gone = []
    for doc in retention.plan(snapshot.catalog(where), keep, max_bytes):
        drop(where, doc)
        gone.append(doc["stamp"])
    return gone


def drop(where, doc):
    """One kept archive and its record gone."""
    remove(where, doc["path"], ignore_errors=True)
    remove(where, snapshot.sidecar(doc["path"]), ignore_errors=True)


def record_result(paths, doc=None, error=None, reason=None):
    """run/backups.json: the last snapshot's result, which status, doctor and the pages show."""
    last = read_json(os.path.join(paths.run, "backups.json"))
    entry = {"at": time.time(), "ok": error is None, "reason": reason or (doc or {}).get("reason")}
    if doc:
        entry.update(stamp=doc["stamp"], bytes=doc["bytes"], files=len(doc["files"]))
    if error:
        entry["error"] = error
    last["last"] = entry
    if error is None:
        last["last_ok"] = entry
    write_json(os.path.join(paths.run, "backups.json"), last)


def take(app_dir, settings, reason, out=None, level=None):
    """One snapshot of this host's data; kept in backups/ with retention applied (or, with ``out``,
    streamed there and kept nowhere)."""
    paths = Layout(app_dir)
    if reason not in snapshot.REASONS:
        raise BadRequest("%r is not a snapshot reason (%s)" % (reason, ", ".join(snapshot.REASONS)))
    try:  # every refusal here is the last backup's result (status and the pages show it)
        names = entries(settings, paths)
        if level is not None and not 0 <= level <= 9:
            raise BadRequest("gzip level %r is outside 0-9" % (level,))
        doc = snapshot.take(paths, names, reason, bot_stopped(paths), about(paths, settings), out=out,
                            level=(None if out is not None else snapshot.LEVEL) if level is None else level)
    except Failure as exc:
        if out is None:
            record_result(paths, error=str(exc), reason=reason)
        raise
    answer = {"ok": True, "snapshot": _short(doc)}
    if out is None:
        record_result(paths, doc)
        answer["removed"] = prune(snapshot.backups_dir(paths), *limits(settings))
    return answer


def _short(doc):
    """A snapshot's record for an answer: its files counted, not listed (thousands of files would make
    an answer line the operator cannot read whole), and no path of this host."""
    return dict({k: v for k, v in doc.items() if k not in ("path", "files")}, files=len(doc.get("files") or []))


def listing(app_dir):
    """This host's own snapshots and the replicas it holds of others'."""
    paths = Layout(app_dir)
    rows = [dict(doc, where="host") for doc in snapshot.catalog(snapshot.backups_dir(paths))]
    replicas = os.path.join(snapshot.backups_dir(paths), REPLICAS)
    for name in sorted(os.listdir(replicas)) if os.path.isdir(replicas) else []:
        if HOST_NAME.fullmatch(name):
            found = snapshot.catalog(os.path.join(replicas, name))
            rows += [dict(doc, where="replica", replica_of=name) for doc in found]
    for kept in store.pending(paths):  # a restore's data before, still being packed (pack.py)
        mark = read_json(os.path.join(kept, store.KEPT_MARK))
        if mark.get("stamp"):
            rows.append(dict(mark, where="host", packing=True, bytes=None, files=None))
    for row in rows:
        row.pop("path", None)
        row.pop("limits", None)
        if not row.get("packing"):
            row["files"] = len(row.get("files") or [])
    return {"ok": True, "backups": rows, "last": read_json(os.path.join(paths.run, "backups.json")),
            "data_id": snapshot.read_data_id(paths)}


def archive(app_dir, stamp, replica_of=None):
    """The path of a kept archive and its record (no ``stamp``: the newest of this data's own, or of
    the replicas of ``replica_of``'s, whatever their data id: the caller named whose); Failure when there
    is none."""
    paths = Layout(app_dir)
    where = folder(paths, replica_of)
    if stamp is None:
        ours = snapshot.read_data_id(paths)
        mine = [doc for doc in snapshot.catalog(where) if replica_of or ours is None or doc.get("data_id") == ours]
        if not mine:
            raise Failure("no snapshot of this host's data here to restore (invoke backups lists what there is)")
        stamp = mine[-1]["stamp"]
    check_stamp(stamp)
    path = os.path.join(where, stamp + ".tar.gz")
    doc = read_json(snapshot.sidecar(path))
    if not doc or not os.path.isfile(path) or os.path.islink(path):
        raise Failure("no snapshot %s %s (invoke backups lists them)" % (
            stamp, "of %s on this host" % replica_of if replica_of else "on this host"))
    return path, doc


def _plain(value):
    """A value from an archive, fit for one log line: printable, short."""
    return "".join(c if c.isprintable() else "?" for c in str(value))[:80]


def verified(path, doc):
    """The kept archive at ``path``, opened, once its bytes match the sha256 of its record."""
    if sha256_of(path) != doc.get("archive_sha256"):
        raise restore.Refused("%s does not match its checksum (the file changed or is damaged): refused" % path)
    return open(path, "rb")


def restore_data(app_dir, settings, source, force, reason, lock_timeout, by=None):
    """The data replaced by the snapshot ``source`` reads (a binary stream), under the operator lock,
    with the bot stopped: this host's current data kept first as a ``reason`` snapshot, the new one
    checked and built beside it, then switched in by one rename."""
    from remote.host.supervision.stack import operator_lock

    paths = Layout(app_dir)
    names = entries(settings, paths)
    if not names:
        raise restore.Refused("this host has no shared_paths: there is no data to restore into")
    with operator_lock(paths, lock_timeout, "restore by %s" % (by or "?")):
        if not bot_stopped(paths):
            raise restore.Refused("the bot runs on this host: stop it first (invoke restore does)")
        store.tidy(paths)
        ours = snapshot.read_data_id(paths)
        store.adopt(paths, names)
        kept, mark = None, os.path.join(store.live_dir(paths), store.KEPT_MARK)
        if snapshot.data_files(paths, names) or ours:  # the data before: kept as it is, packed after the switch
            kept = snapshot.record(paths, names, reason, True, about(paths, settings), level=snapshot.LEVEL,
                                   make_id=False)
            write_json(mark, dict(kept, limits=list(limits(settings))), durable=True)
        try:
            built, doc = restore.receive(paths, source, names, force, ours)
        except BaseException:
            if kept:
                os.unlink(mark)
            raise
        store.switch(paths, built)
        if store.pending(paths):  # this restore's data before, and any a killed one left
            store.spawn_packer(paths)
        epochs.log(paths, "data restored from snapshot %s of %s (the data before kept as %s)" % (
            _plain(doc.get("stamp")), _plain(doc.get("host")), kept["stamp"] if kept else "nothing: there was none"))
    return {"ok": True, "restored": _short(doc), "files": len(doc.get("files") or []),
            "kept": kept and dict(_short(kept), packing=True)}


def replica_put(app_dir, source, replica_of, stamp, archive_sha256, keep):
    """Another host's snapshot, read from ``source``, kept as a replica (backups/replica/<host>/):
    private, complete and matching ``archive_sha256`` or absent; the newest ``keep`` of it stay."""
    import hashlib
    import tarfile

    paths = Layout(app_dir)
    if not replica_of or not isinstance(archive_sha256, str):
        raise BadRequest("replica-put needs replica_of and archive_sha256")
    where = folder(paths, replica_of)
    check_stamp(stamp)
    os.makedirs(where, mode=0o700, exist_ok=True)
    final = os.path.join(where, stamp + ".tar.gz")
    tmp = "%s.%d-%s.partial" % (final, os.getpid(), os.urandom(4).hex())
    digest, count = hashlib.sha256(), 0
    try:
        with open(tmp, "xb") as out:
            os.chmod(tmp, 0o600)
            for block in iter(lambda: source.read(1 << 16), b""):
                digest.update(block)
                count += len(block)
                out.write(block)
            out.flush()
            os.fsync(out.fileno())
        if digest.hexdigest() != archive_sha256:
            raise restore.Refused("the replica of %s does not match its sha256 (cut short on the way?): refused"
                                  % stamp)
        try:
            with tarfile.open(tmp, "r:gz") as tar:
                member = tar.getmember("SNAPSHOT.json")
                if not member.isreg() or member.size > restore.MAX_DOC:
                    raise ValueError("not a snapshot's SNAPSHOT.json")
                doc = json.loads(tar.extractfile(member).read().decode("utf-8"))
        except (OSError, EOFError, KeyError, ValueError, RecursionError, tarfile.TarError):
            raise restore.Refused("the replica of %s is not a snapshot (no SNAPSHOT.json): refused" % stamp) from None
        if not isinstance(doc, dict) or doc.get("stamp") != stamp:
            raise restore.Refused("the replica's SNAPSHOT.json is of another snapshot than %s: refused" % stamp)
        doc.update(archive_sha256=archive_sha256, bytes=count)
        write_json(snapshot.sidecar(final), doc)
        os.replace(tmp, final)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    mine = snapshot.catalog(where)
    for old in mine[:-keep] if keep > 0 else []:
        drop(where, old)
    return {"ok": True, "replica_of": replica_of, "stamp": stamp, "bytes": count}
