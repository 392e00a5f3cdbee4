"""The bot's data, operator side: snapshots now, copies on this machine, listings, restores, and the
carry of a failover (the source's archive streamed through here into the target, a copy kept here).

This machine keeps its copies in ``$XDG_DATA_HOME/sulfur-ops/backups/<inventory key>/<host>/`` (the
key as the guard's cache uses it), each archive with the same ``<stamp>.json`` record a host keeps,
and the same retention. Every copy is checked against the sha256 the host computed while writing.
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, Dict, List, Optional

from remote.host.common.epochs import MAX_EPOCH
from remote.host.common.files import create_private, sha256_of, write_json
from remote.host.data import ops, restore, snapshot

from .botguard import inventory_key
from .ctlcalls import call_ctl, ctl_command, ctl_request
from .errors import HostError, UsageError
from .inventory import Host
from .streams import Exec, Meter

STREAM_TIMEOUT = 60.0  # s of silence mid-archive before a host is given up
STREAM_DEADLINE = 3600.0  # s for a whole archive: a host that trickles bytes for ever is given up too
MAX_NUMBER = MAX_EPOCH  # an epoch or a sequence number beyond is not one a host of ours writes


def local_dir(inventory_path: Path, host_name: str) -> Path:
    base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "sulfur-ops" / "backups"
    return base / inventory_key(inventory_path) / host_name


def take(runner: Any, host: Host, reason: str = "manual", timeout: float = 600.0) -> Dict[str, Any]:
    """A snapshot now on the host, kept there (with the host's retention); its answer."""
    return call_ctl(runner, host, "snapshot", {"reason": reason}, settings=True, timeout=timeout)


def _keep_local(folder: Path, doc: Dict[str, Any], partial: Path) -> Path:
    """A received archive (``partial``, its bytes checked) kept under its stamp with its record."""
    final = folder / (ops.check_stamp(doc["stamp"]) + ".tar.gz")
    write_json(snapshot.sidecar(str(final)), doc)
    os.replace(partial, final)
    return final


def prune_local(folder: Path, keep: int, max_bytes: int) -> List[str]:
    return ops.prune(str(folder), keep, max_bytes) if folder.is_dir() else []


def fetch(runner: Any, host: Host, stamp: str, folder: Path, replica_of: Optional[str] = None,
          progress: Optional[Callable[[str], None]] = None) -> Dict[str, Any]:
    """One archive kept on the host copied into ``folder``, sha256-checked; its record."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    partial = folder / (".%s.%s.partial" % (ops.check_stamp(stamp), os.urandom(4).hex()))
    run = Exec(runner, host, ctl_command(host, "backup-read"), STREAM_TIMEOUT)
    try:
        run.send_request(ctl_request(host, "backup-read", {"stamp": stamp, "replica_of": replica_of}))
        run.end_input()
        digest, meter = hashlib.sha256(), Meter(progress)
        with create_private(str(partial), binary=True) as out:
            for block in iter(run.read, b""):
                digest.update(block)
                out.write(block)
                meter.add(len(block))
                bound(meter, host)
        answer = run.finish("backup-read", answer_on_stderr=True)
        if not answer.get("ok"):
            raise HostError("%s: %s" % (host.name, answer.get("error")))
        claimed = answer.get("snapshot") if isinstance(answer.get("snapshot"), dict) else {}
        if digest.hexdigest() != claimed.get("archive_sha256"):
            raise HostError("%s: the copy of %s does not match its sha256: nothing kept" % (host.name, stamp))
        doc = record(partial, stamp, digest.hexdigest(), meter.count)
        _keep_local(folder, doc, partial)
        return dict(doc, seconds=meter.seconds)
    finally:
        run.close()
        if partial.exists():
            partial.unlink()


def record(archive: Path, stamp: Optional[str], sha256: str, count: int) -> Dict[str, Any]:
    """What this machine keeps beside a copy: the archive's own SNAPSHOT.json (never the host's
    answer, which a hostile host could word to make retention drop every other copy), with the
    sha256 and size measured here; HostError when it is not the snapshot asked for or its numbers
    are not ones a host of ours writes."""
    doc = read_document(archive)
    if stamp is not None and doc.get("stamp") != stamp:
        raise HostError("the archive received is snapshot %r, not %s: nothing kept" % (doc.get("stamp"), stamp))
    ops.check_stamp(doc.get("stamp"))
    for key in ("epoch", "seq"):
        value = doc.get(key)
        if type(value) is not int or not 0 <= value <= MAX_NUMBER:
            raise HostError("snapshot %s has %s %r, which no host of ours writes: nothing kept" % (
                doc.get("stamp"), key, value))
    return dict(doc, archive_sha256=sha256, bytes=count)


def bound(meter: Meter, host: Host) -> None:
    """A host's archive stays within what it may hold (twice its backup_max) and within the deadline:
    a hostile or broken host cannot fill this machine's disk or hold a task for ever."""
    if meter.count > 2 * host.backup_max:
        raise HostError("%s sent over %.0f MB, twice its backup_max: given up, nothing kept" % (
            host.name, 2 * host.backup_max / 2**20))
    if meter.seconds > STREAM_DEADLINE:
        raise HostError("%s's archive took over %.0f s: given up, nothing kept" % (host.name, STREAM_DEADLINE))


def read_document(archive: Path) -> Dict[str, Any]:
    """SNAPSHOT.json of an archive on this machine; UsageError when it is not a snapshot."""
    try:
        with tarfile.open(str(archive), "r:gz") as tar:
            for member in tar:
                if member.name == "SNAPSHOT.json" and member.isreg() and member.size <= restore.MAX_DOC:
                    doc = json.loads(tar.extractfile(member).read().decode("utf-8"))  # type: ignore[union-attr]
                    if isinstance(doc, dict):
                        return doc
    except (OSError, EOFError, tarfile.TarError, ValueError, RecursionError) as exc:
        raise UsageError("%s is not a readable snapshot (%s): name a .tar.gz that invoke backups lists"
                         % (archive, exc)) from None
    raise UsageError("%s has no SNAPSHOT.json: it is not a snapshot of ours" % archive)


def local_rows(inventory_path: Path, host_name: str) -> List[Dict[str, Any]]:
    rows = []
    for doc in snapshot.catalog(str(local_dir(inventory_path, host_name))):
        rows.append(dict(doc, where="local", files=len(doc.get("files") or [])))
    return rows


def host_rows(runner: Any, host: Host) -> Dict[str, Any]:
    """The host's answer to `ctl backups`: its own snapshots, the replicas it holds, its last result."""
    return call_ctl(runner, host, "backups", timeout=60.0)


def restore_stream(runner: Any, host: Host, source: BinaryIO, force: bool, reason: str,
                   progress: Optional[Callable[[str], None]] = None) -> Dict[str, Any]:
    """An archive from this machine (``source``) restored on the host."""
    run = Exec(runner, host, ctl_command(host, "restore"), STREAM_TIMEOUT)
    try:
        run.send_request(ctl_request(host, "restore", {"stream": True, "force": force, "reason": reason},
                                     settings=True))
        meter = Meter(progress)
        for block in iter(lambda: source.read(1 << 16), b""):
            run.send(block)
            meter.add(len(block))
        run.end_input()
        return run.finish("restore", answer_on_stderr=False)
    finally:
        run.close()


def restore_kept(runner: Any, host: Host, stamp: Optional[str], replica_of: Optional[str], force: bool,
                 reason: str = "before-restore") -> Dict[str, Any]:
    """A snapshot the host keeps (its own, or a replica of another host's) restored there."""
    return call_ctl(runner, host, "restore", {"stamp": stamp, "replica_of": replica_of, "force": force,
                                              "reason": reason}, settings=True, timeout=900.0)


def carry(source_runner: Any, source: Host, target_runner: Any, target: Host, folder: Path,
          progress: Optional[Callable[[str], None]] = None, kept_reason: str = "before-failover") -> Dict[str, Any]:
    """The source's data, as a `stopped` snapshot streamed out of it (nothing staged there), into
    the target (which keeps its own data first as ``kept_reason``) and into ``folder`` here at once.

    The target checks every member against SNAPSHOT.json and switches only a complete archive; the
    bytes that passed are checked here against the sha256 the source computed. The answer:
    {"ok", "snapshot", "kept", "bytes", "seconds", "local"} or {"ok": False, "error"}."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    partial = folder / (".carry.%s.partial" % os.urandom(4).hex())
    out = Exec(source_runner, source, ctl_command(source, "snapshot"), STREAM_TIMEOUT)
    into = None
    try:
        out.send_request(ctl_request(source, "snapshot", {"stream": True, "reason": "failover"}, settings=True))
        out.end_input()
        into = Exec(target_runner, target, ctl_command(target, "restore"), STREAM_TIMEOUT)
        into.send_request(ctl_request(target, "restore", {"stream": True, "force": True, "reason": kept_reason},
                                      settings=True))
        digest, meter = hashlib.sha256(), Meter(progress)
        with create_private(str(partial), binary=True) as local:
            for block in iter(out.read, b""):
                bound(meter, source)
                into.send(block)
                digest.update(block)
                local.write(block)
                meter.add(len(block))
        sent = out.finish("snapshot", answer_on_stderr=True)
        if not sent.get("ok"):  # the target sees an archive without its end: refused, nothing switched
            into.close()
            return {"ok": False, "error": "the snapshot on %s failed: %s" % (source.name, sent.get("error"))}
        into.end_input()
        reading = _Background(record, partial, None, digest.hexdigest(), meter.count)  # while the target finishes
        got = into.finish("restore", answer_on_stderr=False)
        claimed = sent.get("snapshot") if isinstance(sent.get("snapshot"), dict) else {}
        if digest.hexdigest() != claimed.get("archive_sha256"):
            return {"ok": False, "error": "the archive from %s changed on the way (sha256): %s" % (
                source.name, "restored all the same: check it" if got.get("ok") else "nothing restored")}
        doc = reading.result()
        kept_local = _keep_local(folder, doc, partial)
        if not got.get("ok"):
            return {"ok": False, "error": "%s refused the data: %s" % (target.name, got.get("error")),
                    "snapshot": doc, "local": str(kept_local)}
        return {"ok": True, "snapshot": doc, "kept": got.get("kept"), "bytes": meter.count,
                "seconds": meter.seconds, "local": str(kept_local)}
    finally:
        out.close()
        if into is not None:
            into.close()
        if partial.exists():
            partial.unlink()


def verify_local(path: Path, doc: Dict[str, Any]) -> None:
    """A copy on this machine still has the bytes its record names (a disk, a hand, may change it)."""
    if sha256_of(str(path)) != doc.get("archive_sha256"):
        raise UsageError("%s does not match its sha256 (changed or damaged): refused, nothing changed" % path)


def replica_put(runner: Any, host: Host, source_name: str, doc: Dict[str, Any], handle: BinaryIO,
                keep: int) -> Dict[str, Any]:
    """A copy of another host's snapshot sent to ``host`` (backups/replica/<source>/), checked there."""
    run = Exec(runner, host, ctl_command(host, "replica-put"), STREAM_TIMEOUT)
    try:
        run.send_request(ctl_request(host, "replica-put", {"replica_of": source_name, "stamp": doc["stamp"],
                                                           "archive_sha256": doc["archive_sha256"], "keep": keep}))
        for block in iter(lambda: handle.read(1 << 16), b""):
            run.send(block)
        run.end_input()
        return run.finish("replica-put", answer_on_stderr=False)
    finally:
        run.close()


class _Background:
    """``fn(*args)`` on a thread; ``result()`` waits for it and raises what it raised."""

    def __init__(self, fn: Callable[..., Any], *args: Any) -> None:
        import threading

        self.value: Any = None
        self.error: Optional[BaseException] = None
        self.thread = threading.Thread(target=self._run, args=(fn, args), daemon=True)
        self.thread.start()

    def _run(self, fn: Callable[..., Any], args: tuple) -> None:
        try:
            self.value = fn(*args)
        except BaseException as exc:  # handed to result()
            self.error = exc

    def result(self) -> Any:
        self.thread.join()
        if self.error is not None:
            raise self.error
        return self.value


def newest(rows: List[Dict[str, Any]], data_id: Optional[str] = None) -> Optional[Dict[str, Any]]:
    """The newest of ``rows`` (highest epoch, then sequence), within ``data_id`` when given."""
    mine = [row for row in rows if data_id is None or row.get("data_id") == data_id]
    return max(mine, key=snapshot.order) if mine else None

