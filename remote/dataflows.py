"""The data tasks' flows: which hosts hold a bot's data, `backup`, `backups` and `restore`.

Whose data counts is the fencing record's: the host that holds a bot's highest epoch is its data's
owner (its bot may be stopped or failed: its data is still the newest). With no epoch known, a host
running the bot is. Library code: it returns rows and raises SulfurError; tasks.py prints.
"""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from remote.host.data import ops

from . import backups, fencing
from .actions import service_action
from .botguard import Guard
from .connections import open_runner
from .errors import HostError, UsageError
from .fanout import DEFAULT_PARALLEL, on_hosts
from .inventory import Host, Inventory

REPLICAS_KEPT = 2  # per source host on a standby: the newest and the one before


def owners(inventory: Inventory, answers: Dict[str, Dict[str, Any]]) -> Dict[str, str]:
    """bot id -> the host whose data is the bot's: the holder of its highest epoch, else the host
    that runs it. Hosts without shared_paths hold no data and are never named."""
    found: Dict[str, str] = {}
    for bot_id, record in fencing.highest(answers, fencing.remembered(inventory)).items():
        name = record.get("active_host")
        if name in inventory.hosts and inventory.hosts[name].shared_paths:
            found[bot_id] = name
    for name, doc in answers.items():
        bot_id = fencing.bot_of(doc)
        running = (doc.get("bot") or {}).get("running") if doc.get("ok") else None
        if bot_id and running and bot_id not in found and inventory.hosts[name].shared_paths:
            found[bot_id] = name
    return found


def standbys(inventory: Inventory, answers: Dict[str, Dict[str, Any]], bot_id: str, owner: str) -> List[Host]:
    """The other hosts of the same bot (its token in their .env) that keep data: replicas go there."""
    return [inventory.hosts[name] for name, doc in answers.items()
            if name != owner and doc.get("ok") and fencing.bot_of(doc) == bot_id and inventory.hosts[name].shared_paths]


def backup_targets(inventory: Inventory, host: Optional[str]) -> Tuple[List[Host], Guard]:
    """--host H: those hosts; else each bot's data owner (asked of every host)."""
    hosts = [h for h in inventory.hosts.values() if h.bot_command or h.shared_paths]
    guard = Guard(inventory, hosts, with_targets=True)
    if host:
        targets = inventory.select(host)
    else:
        names = set(owners(inventory, guard.answers()).values())
        targets = [h for h in inventory.hosts.values() if h.name in names]
        if not targets:
            raise UsageError("no host holds a bot's data yet (no epoch, no running bot with shared_paths): "
                             "name one with --host")
    for target in targets:
        if not target.shared_paths:
            raise UsageError("%s has no shared_paths in the inventory: it keeps no bot data to back up" % target.name)
    return targets, guard


def backup_one(runner: Any, host: Host, inventory: Inventory,
               progress: Optional[Callable[[str], None]] = None) -> Dict[str, Any]:
    """A manual snapshot on the host, copied here (checked), this machine's retention applied."""
    answer = backups.take(runner, host)
    if not answer.get("ok"):
        return answer
    folder = backups.local_dir(inventory.path, host.name)
    doc = backups.fetch(runner, host, answer["snapshot"]["stamp"], folder, progress=progress)
    removed = backups.prune_local(folder, host.backup_keep, host.backup_max)
    return {"ok": True, "snapshot": doc, "local": str(folder), "removed_here": removed,
            "removed_on_host": answer.get("removed") or []}


def replicate(inventory: Inventory, source: Host, doc: Dict[str, Any], targets: List[Host],
              parallel: int = DEFAULT_PARALLEL) -> List[Dict[str, Any]]:
    """This machine's copy of ``source``'s snapshot ``doc`` sent to each standby (backups/replica/)."""
    path = backups.local_dir(inventory.path, source.name) / (doc["stamp"] + ".tar.gz")

    def send(runner: Any, target: Host) -> Dict[str, Any]:
        if doc.get("bytes", 0) > target.replicate_max:
            return {"ok": True, "skipped": "%.1f MB is over replicate_max" % (doc["bytes"] / 2**20)}
        with open(path, "rb") as handle:
            return backups.replica_put(runner, target, source.name, doc, handle, REPLICAS_KEPT)

    return on_hosts(targets, send, parallel)


def backup(inventory: Inventory, host: Optional[str], every: bool, progress: Callable[[str, str], None],
           parallel: int = DEFAULT_PARALLEL) -> List[Dict[str, Any]]:
    """`invoke backup`: one row per host backed up; with ``every``, the replicas sent to its standbys."""
    targets, guard = backup_targets(inventory, host)
    docs = on_hosts(targets, lambda runner, h: backup_one(runner, h, inventory,
                                                          functools.partial(progress, h.name)), parallel)
    if every:
        answers = guard.answers()
        for doc in docs:
            if doc.get("ok"):
                source = inventory.hosts[doc["host"]]
                bot_id = fencing.bot_of(answers.get(source.name) or {}) or doc["snapshot"].get("bot_id")
                doc["replicas"] = replicate(inventory, source, doc["snapshot"],
                                            standbys(inventory, answers, bot_id, source.name), parallel)
    return docs


ROW_KEYS = ("host", "where", "replica_on", "stamp", "taken_at", "bytes", "files", "bot_id", "data_id", "epoch",
            "seq", "consistency", "reason")


def _row(doc: Dict[str, Any], host: str, where: str, replica_on: Optional[str] = None) -> Dict[str, Any]:
    files = doc.get("files")
    row = {key: doc.get(key) for key in ROW_KEYS}
    row.update(host=host, where=where, replica_on=replica_on, files=len(files) if isinstance(files, list) else files)
    return row


def listing(inventory: Inventory, host: Optional[str], parallel: int = DEFAULT_PARALLEL) -> Dict[str, Any]:
    """`invoke backups`: every snapshot on the hosts named (default: all of them) and on this machine,
    one row each; the hosts that could not be asked."""
    targets = inventory.select(host) if host else [h for h in inventory.hosts.values() if h.shared_paths]
    answers = on_hosts(targets, backups.host_rows, parallel)
    rows: List[Dict[str, Any]] = []
    errors = []
    for answer in answers:
        if not answer.get("ok"):
            errors.append({"host": answer["host"], "error": answer.get("error")})
            continue
        for doc in answer.get("backups") or []:
            if doc.get("where") == "replica":
                rows.append(_row(doc, doc.get("replica_of"), "replica", answer["host"]))
            else:
                rows.append(_row(doc, answer["host"], "host"))
    for target in targets:
        rows += [_row(doc, target.name, "local") for doc in backups.local_rows(inventory.path, target.name)]
    rows.sort(key=lambda r: (str(r["host"]), r["where"], str(r.get("replica_on")), r.get("epoch") or 0,
                             r.get("seq") or 0))
    return {"rows": rows, "errors": errors}


def find(inventory: Inventory, target: Host, stamp: Optional[str], data_id: Optional[str],
         answer: Dict[str, Any]) -> Dict[str, Any]:
    """Where to restore from: {"where": host|local|replica, "doc", "replica_of"?, "path"?}. A stamp
    is looked up on the host, then here, then in the host's replicas; one found twice with two
    checksums is refused (which one was meant?)."""
    own = [d for d in answer.get("backups") or [] if d.get("where") == "host"]
    replicas = [d for d in answer.get("backups") or [] if d.get("where") == "replica"]
    here = backups.local_rows(inventory.path, target.name)
    if stamp is None:
        best = backups.newest(own, data_id) or backups.newest(here, data_id)
        if best is None:
            raise UsageError("no snapshot of %s's data on it or here to restore: invoke backups lists what there "
                             "is (--from STAMP)" % target.name)
        return {"where": "host" if best in own else "local", "doc": best}
    ops.check_stamp(stamp)
    matches = [("host", d) for d in own if d.get("stamp") == stamp] + \
        [("local", d) for d in here if d.get("stamp") == stamp] + \
        [("replica", d) for d in replicas if d.get("stamp") == stamp]
    if not matches:
        raise UsageError("no snapshot %s on %s, here or in its replicas: invoke backups --host %s lists them"
                         % (stamp, target.name, target.name))
    sums = {d.get("archive_sha256") for _, d in matches}
    if len(sums) > 1:
        raise UsageError("snapshot %s is found %d times with different checksums (%s): restore one with --file"
                         % (stamp, len(matches), ", ".join(w for w, _ in matches)))
    where, doc = matches[0]
    return {"where": where, "doc": doc, "replica_of": doc.get("replica_of")}


def describe(found: Dict[str, Any], target: Host) -> str:
    doc = found["doc"]
    whose = doc.get("host") or target.name
    where = {"host": "on %s" % target.name, "local": "on this machine",
             "replica": "in the replica on %s" % target.name, "file": "from %s" % found.get("path")}[found["where"]]
    files = doc.get("files")
    count = len(files) if isinstance(files, list) else files if type(files) is int else "?"
    return "%s's snapshot %s (%s, %s, %s files, data %s) %s" % (
        whose, doc.get("stamp"), doc.get("reason"), doc.get("consistency"), count, doc.get("data_id"), where)


def restore(inventory: Inventory, host: str, stamp: Optional[str], file: Optional[str], force: bool,
            confirm: Callable[[str], bool], say: Callable[[str], None]) -> Dict[str, Any]:
    """`invoke restore`: find the snapshot, ask, stop the bot (fenced and guarded as any start),
    restore (the current data kept as before-restore), start the bot again if it ran."""
    targets = inventory.select(host)
    if len(targets) != 1:
        raise UsageError("restore takes one host, not %d: --host NAME" % len(targets))
    target = targets[0]
    if not target.shared_paths:
        raise UsageError("%s has no shared_paths in the inventory: there is no data to restore" % target.name)
    if stamp and file:
        raise UsageError("--from and --file name two sources: give one")
    guard = Guard(inventory, [target], with_targets=True)
    from .actions import fence

    fence(inventory, guard, True, say=say)
    with open_runner(target) as runner:
        answer = backups.host_rows(runner, target)
        if not answer.get("ok"):
            raise HostError("%s: %s" % (target.name, answer.get("error")))
        if file:
            path = Path(file).expanduser()
            if not path.is_file():
                raise UsageError("--file %s is not a readable file" % path)
            found = {"where": "file", "doc": backups.read_document(path), "path": str(path)}
        else:
            found = find(inventory, target, stamp, answer.get("data_id"), answer)
        theirs, ours = found["doc"].get("data_id"), answer.get("data_id")
        if ours and theirs != ours and not force:
            raise UsageError("%s is of data %s, and %s's data is %s: --force to replace it anyway"
                             % (found["doc"].get("stamp"), theirs, target.name, ours))
        if not confirm("Replace the bot's data on %s with %s? [y/N] " % (target.name, describe(found, target))):
            raise UsageError("nothing was changed (--yes answers for scripts)")
        status = (guard.answers().get(target.name) or {})
        was_running = bool((status.get("bot") or {}).get("running"))
        if was_running:
            say("%s: stopping the bot" % target.name)
            from .ctlcalls import stop

            stopped = stop(runner, target, service="bot")
            if not stopped.get("ok"):
                raise HostError("%s: the bot did not stop: %s" % (target.name, stopped.get("error")))
        result = _restore_from(inventory, runner, target, found, force)
    started = None
    if was_running:
        say("%s: starting the bot again" % target.name)
        started = service_action(guard, [target], "start", "bot")[0]
    return dict(result, host=target.name, source=describe(found, target), was_running=was_running, started=started,
                ok=bool(result.get("ok")) and (started is None or bool(started.get("ok"))))


def _restore_from(inventory: Inventory, runner: Any, target: Host, found: Dict[str, Any],
                  force: bool) -> Dict[str, Any]:
    where, doc = found["where"], found["doc"]
    if where in ("host", "replica"):
        return backups.restore_kept(runner, target, doc["stamp"], found.get("replica_of"), True)
    path = found.get("path") or str(backups.local_dir(inventory.path, target.name) / (doc["stamp"] + ".tar.gz"))
    if where == "local":
        backups.verify_local(Path(path), doc)
    with open(path, "rb") as handle:
        return backups.restore_stream(runner, target, handle, True, "before-restore")



class Prepared:
    """Connections to hosts opened now, on threads of their own, for a step that comes later (a
    failover's carry opens the source's and the target's while the source's bot is being stopped)."""

    def __init__(self, hosts: List[Host]) -> None:
        self._pool = ThreadPoolExecutor(max_workers=max(1, len(hosts)))
        self._opening = {h.name: self._pool.submit(self._open, h) for h in hosts}
        self._pool.shutdown(wait=False)
        self._closers: List[Any] = []

    @staticmethod
    def _open(host: Host) -> Tuple[Any, Any]:
        manager = open_runner(host)
        return manager, manager.__enter__()

    def runner(self, host: Host) -> Any:
        """The host's open runner; HostError when it could not be opened."""
        manager, runner = self._opening[host.name].result()
        self._closers.append(manager)
        return runner

    def close(self) -> None:
        for future in self._opening.values():
            try:
                manager, _ = future.result()
            except Exception:  # it never opened: nothing to close
                continue
            try:
                manager.__exit__(None, None, None)
            except Exception:  # a connection that died meanwhile
                pass


def carry(inventory: Inventory, source: Host, target: Host,
          progress: Optional[Callable[[str], None]] = None, prepared: Optional[Prepared] = None
          ) -> Optional[Dict[str, Any]]:
    """A failover's data: the source's (its bot stopped) streamed into the target; a copy kept here.
    {"ok", "note"} when one of them has no shared_paths; None when neither has (a bot without data)."""
    if not source.shared_paths and not target.shared_paths:
        return None
    for host in (target, source):
        if not host.shared_paths:
            return {"ok": True, "note": "data: not carried (%s has no shared_paths)" % host.name}
    mine = prepared is None
    prepared = prepared or Prepared([source, target])  # both at once: one handshake's time
    try:
        return backups.carry(prepared.runner(source), source, prepared.runner(target), target,
                             backups.local_dir(inventory.path, source.name), progress)
    except HostError as exc:
        return {"ok": False, "error": str(exc)}
    finally:
        if mine:
            prepared.close()


def takeover_copy(inventory: Inventory, owner: str, target: Host, now: Optional[float] = None
                  ) -> Optional[Dict[str, Any]]:
    """A takeover's data: the newest snapshot of the unreachable owner's data there is (the target's
    replica of it, or this machine's copies), restored on the target (its own data kept as
    ``takeover``); {"ok", "note"} saying which and how old, or loudly that there is none."""
    import time

    from .render_data import age, stamp_time

    if not target.shared_paths:
        return None if not inventory.hosts[owner].shared_paths else {
            "ok": True, "note": "data: not restored (%s has no shared_paths)" % target.name}
    try:
        with open_runner(target) as runner:
            answer = backups.host_rows(runner, target)
            if not answer.get("ok"):
                return {"ok": False, "error": "%s: %s" % (target.name, answer.get("error"))}
            replicas = [dict(d, where="replica") for d in answer.get("backups") or []
                        if d.get("where") == "replica" and d.get("replica_of") == owner]
            best = backups.newest(replicas + backups.local_rows(inventory.path, owner))
            if best is None:
                return {"ok": True, "loud": True, "note": "NO COPY of %s's data on %s or here: %s starts with its own "
                        "data, which may be old or empty (invoke backup --all keeps replicas)"
                        % (owner, target.name, target.name)}
            found = {"where": best["where"], "doc": best, "replica_of": owner}
            if best["where"] == "local":
                found["path"] = str(backups.local_dir(inventory.path, owner) / (best["stamp"] + ".tar.gz"))
                backups.verify_local(Path(found["path"]), best)
                with open(found["path"], "rb") as handle:
                    done = backups.restore_stream(runner, target, handle, True, "takeover")
            else:
                done = backups.restore_kept(runner, target, best["stamp"], owner, True, reason="takeover")
    except (HostError, UsageError) as exc:
        return {"ok": False, "error": str(exc)}
    where = "from the replica on %s" % target.name if best["where"] == "replica" else "from this machine's copy"
    note = "data: %s's snapshot #%s of %s, %s, %s" % (owner, best.get("seq"), stamp_time(best.get("taken_at")),
                                                    age(best.get("taken_at"), now or time.time()), where)
    if not done.get("ok"):
        return {"ok": False, "error": "%s refused %s's snapshot %s: %s" % (target.name, owner, best.get("stamp"),
                                                                          done.get("error"))}
    return {"ok": True, "note": note, "restored": best}
