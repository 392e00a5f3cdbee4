"""Fencing on contact: a host that runs a bot whose epoch is lower than the highest this machine knows
stands down as soon as a task of ours reaches it.

Every state-changing task already asks the hosts what they run (botguard.Guard); their answers carry
each host's role and epoch record (run/bot-epoch.json). ``decide`` reads them with what this machine
remembers (the highest epoch seen per bot, beside the guard's cache) and returns the steps; ``apply``
takes them on the hosts (`ctl epoch`, which checks again under the host's lock); read-only tasks show
the same steps as "would be fenced". Equal epochs: the host whose name sorts first in byte order
keeps the bot (epochs.beats), the same rule on every machine.
"""

from __future__ import annotations

import dataclasses
import fcntl
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

from remote.host.common import epochs, wire
from remote.host.common.epochs import in_answer as record_in
from remote.host.common.files import read_json, write_json

from . import ctlcalls
from .botguard import cache_path, running_units, well_formed
from .fanout import on_host
from .inventory import Host, Inventory
from .release import operator

EPOCH_PROTOCOL = wire.SINCE["epoch"]
Record = Dict[str, Any]


@dataclasses.dataclass
class Step:
    """One thing to do on a host: ``fence`` (stand down for ``record``), ``record`` (keep ``record``,
    which names it), or ``note`` (nothing to do, something to say)."""
    host: str
    kind: str
    record: Optional[Record]
    line: str
    done: bool = False  # taken, and the host confirmed it (a fence: it stood down)


def bot_of(doc: Dict[str, Any]) -> Optional[str]:
    """Which bot (and shard set) a host's answer is about: the one it runs, else the one its .env names."""
    units = running_units(doc)
    if units:
        return epochs.unit_key(units[0]["bot_id"], units[0].get("shard_count", 1), units[0].get("shards"))
    info = doc.get("bot") if isinstance(doc, dict) else None
    ident = info.get("env_bot_id") if isinstance(info, dict) else None
    if not isinstance(ident, str) or not ident:
        return None
    services = doc.get("services") if isinstance(doc.get("services"), dict) else {}
    svc = services.get("bot") if isinstance(services.get("bot"), dict) else {}
    unit = {"bot_id": ident, "shard_count": svc.get("shard_count"), "shards": svc.get("shards")}
    return epochs.unit_key(ident, unit["shard_count"], unit["shards"]) if well_formed(unit) else ident


def _wins(one: Record, other: Record) -> bool:
    if one["epoch"] != other["epoch"]:
        return one["epoch"] > other["epoch"]
    return one["active_host"].encode() < other["active_host"].encode()


def new_record(epoch: int, bot_id: Optional[str], host: str) -> Record:
    return {"epoch": epoch, "bot_id": bot_id, "active_host": host, "since": time.time(), "by": operator()}


def highest(answers: Dict[str, Dict[str, Any]], known: Dict[str, Record],
            names: Optional[Iterable[str]] = None) -> Dict[str, Record]:
    """The winning record per bot id: this machine's memory and every answer's record. A record
    for another bot id (a host whose token changed), or naming a host outside ``names`` (the
    inventory), is not believed."""
    allowed = set(names) if names is not None else None
    best = {key: dict(rec) for key, rec in known.items() if epochs.valid(rec)}
    for doc in answers.values():
        key, rec = bot_of(doc), record_in(doc)
        if rec.get("bot_id") not in (None, key) or (allowed is not None and rec.get("active_host") not in allowed):
            continue
        if key and rec["epoch"] >= 1 and (key not in best or _wins(rec, best[key])):
            best[key] = dict(rec, bot_id=key)
    return best


def decide(answers: Dict[str, Dict[str, Any]], known: Dict[str, Record],
           names: Optional[Iterable[str]] = None) -> Tuple[List[Step], Dict[str, Record]]:
    """The steps for the hosts that answered (``answers``: name -> its status), and the highest
    record per bot id after them. Only answers decide who stands down: a garbled or missing record
    is epoch 0, which loses to any known epoch and stops nothing by itself."""
    heard = {name: doc for name, doc in answers.items() if isinstance(doc, dict) and doc.get("ok")}
    best = highest(heard, known, names)
    steps: List[Step] = []
    for key in sorted({bot_of(doc) for doc in heard.values()} - {None} - set(best)):
        runners = sorted((n for n, doc in heard.items() if bot_of(doc) == key and running_units(doc)), key=str.encode)
        unread = [n for n in runners if record_in(heard[n]).get("garbled")]
        if runners and not unread:  # a bot from before epochs: the first at this contact gets epoch 1
            best[key] = new_record(1, key, runners[0])
        elif unread:
            steps.append(Step(unread[0], "note", None, "%s: its bot's epoch does not read and no host has a known "
                              "one (epochs unknown: run `invoke failover --to %s`); nothing was stopped"
                              % (unread[0], unread[0])))
    for name in sorted(heard, key=str.encode):
        key = bot_of(heard[name])
        if key not in best:
            continue
        top, own = best[key], record_in(heard[name])
        if top["active_host"] == name:  # a holder that runs the bot learns its epoch; one that does not is
            # failover's to start (a record here would race the failover's own compare-and-set on it)
            if running_units(heard[name]) and (own["epoch"] < top["epoch"] or own.get("garbled")):
                steps.append(Step(name, "record", top, "%s: epoch %d recorded (the bot belongs here)"
                                  % (name, top["epoch"])))
        elif epochs.beats(top, own, name) and _concerned(heard[name], own):
            steps.append(Step(name, "fence", top, "%s: fenced: %s" % (name, epochs.moved(top))))
    return steps + _releases(heard, best, steps, known, names) + _unfinished(heard, best), best


def held(doc: Dict[str, Any]) -> bool:
    """The host's bot is held by boot_wait: it waits for its epoch to be checked (a live supervisor's
    word only: a stopped one's state.json keeps what it last said)."""
    supervisor = doc.get("supervisor") if isinstance(doc.get("supervisor"), dict) else {}
    if supervisor.get("running") is not True:
        return False
    services = doc.get("services") if isinstance(doc.get("services"), dict) else {}
    svc = services.get("bot") if isinstance(services.get("bot"), dict) else {}
    hold = svc.get("boot_hold")
    return isinstance(hold, (int, float)) and not isinstance(hold, bool) and hold > 0


def _releases(heard: Dict[str, Dict[str, Any]], best: Dict[str, Record], taken: List[Step],
              known: Dict[str, Record], names: Optional[Iterable[str]]) -> List[Step]:
    """Hosts whose bot boot_wait holds, and that no other step reaches: their epoch is checked now
    (`ctl epoch` marks it), so the bot starts without waiting out boot_wait. Only when the check
    means something: this machine remembers the bot's epoch, or every host of the inventory answered
    (a stale phone whose link comes back before the real holder's is not let go on its own word)."""
    reached = {step.host for step in taken}
    everyone = names is None or set(names) <= set(heard)
    found = []
    for name in sorted(heard, key=str.encode):
        doc = heard[name]
        if name in reached or not held(doc) or not (everyone or bot_of(doc) in known):
            continue
        found.append(Step(name, "release", None, "%s: epoch checked: its bot, held by boot_wait, may start" % name))
    return found


def _concerned(doc: Dict[str, Any], own: Record) -> bool:
    """A host fencing is about: it runs the bot, was named active by a failover (run/bot-role), or keeps
    a record that is behind. A host that never had the bot (no record, no recorded role) is the
    guard's: a start there is refused naming the host that runs it, never turned silently to standby."""
    info = doc.get("bot") if isinstance(doc.get("bot"), dict) else {}
    return bool(running_units(doc)) or info.get("role") == "active" or not own.get("missing")


def _unfinished(heard: Dict[str, Dict[str, Any]], best: Dict[str, Record]) -> List[Step]:
    """A failover cut short after its compare-and-set: the host it left keeps the new epoch, the
    epoch's holder answered but never took the active role up, and no host runs the bot."""
    notes = []
    for key, top in best.items():
        name = top["active_host"]
        holder = heard.get(name)
        if holder is None or any(bot_of(doc) == key and running_units(doc) for doc in heard.values()):
            continue
        left = any(other != name and record_in(doc).get("epoch") == top["epoch"]
                   and record_in(doc).get("active_host") == name for other, doc in heard.items())
        info = holder.get("bot") if isinstance(holder.get("bot"), dict) else {}
        if left and info.get("role") != "active":
            notes.append(Step(name, "note", None, "%s, which runs no bot: run `invoke failover --to %s`"
                              % (epochs.moved(top), name)))
    return notes


def epochs_path(inventory_path: Path) -> Path:
    """This machine's memory of the highest epoch per bot, beside the guard's memory of the hosts."""
    return cache_path(inventory_path, "epochs")


def remembered(inventory: Inventory) -> Dict[str, Record]:
    return {key: rec for key, rec in read_json(str(epochs_path(inventory.path))).items() if epochs.valid(rec)}


def remember(inventory: Inventory, best: Dict[str, Record]) -> None:
    """Keep the highest records seen (never a lower one: another task may have raised one meanwhile)."""
    path = epochs_path(inventory.path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(str(path) + ".lock", "a") as lock:  # the page and a task at once: no raise is lost
            fcntl.flock(lock, fcntl.LOCK_EX)
            kept = remembered(inventory)
            for key, rec in best.items():
                if key not in kept or _wins(rec, kept[key]):
                    kept[key] = rec
            write_json(str(path), kept)
    except OSError:
        pass  # a read-only home: fencing still works from the hosts' own records


def learn(inventory: Inventory, docs: List[Dict[str, Any]]) -> None:
    """Remember the epoch records that hosts' answers to a start carry (a first start's epoch 1), so
    a host that becomes unreachable right after still counts as the bot's holder."""
    found: Dict[str, Record] = {}
    for doc in docs:
        record = epochs.in_answer({"bot": {"epoch": doc.get("epoch")}}) if isinstance(doc, dict) else {}
        key = record.get("bot_id")
        if record.get("epoch", 0) >= 1 and isinstance(key, str) and (key not in found or _wins(record, found[key])):
            found[key] = record
    if found:
        remember(inventory, found)


def speaks_epochs(doc: Dict[str, Any]) -> bool:
    """The host's release knows `ctl epoch`: its answer's protocols say so, or its status carries an
    epoch (a watch's status has no protocols of its own)."""
    knows = isinstance(doc.get("bot"), dict) and "epoch" in doc["bot"]
    return knows or (wire.speaks(doc) or (1, 1))[1] >= EPOCH_PROTOCOL


def _take(host: Host, step: Step, doc: Dict[str, Any], timeout: float) -> str:
    """One step on its host; the line the operator sees. ``step.done`` once the host confirmed it."""
    if step.kind == "release":  # a check only: nothing of its record changes (a held bot: a release of ours)
        answer = on_host(host, lambda runner, target: ctlcalls.epoch(runner, target, None, timeout=timeout))
        step.done = bool(answer.get("ok"))
        return step.line if step.done else "%s: epoch NOT checked (%s)" % (host.name, answer.get("error"))
    if not speaks_epochs(doc):  # a release from before epochs: its bot stopped by its role
        if step.kind != "fence":  # (no boot_wait there either: nothing to release)
            return "%s: epoch %d not recorded (its release is older: invoke deploy --host %s)" % (
                host.name, step.record["epoch"], host.name)
        answer = on_host(host, lambda runner, target: ctlcalls.role(runner, target, "standby", timeout=timeout))
        if not answer.get("ok"):
            return "%s: NOT fenced (%s): stop its bot by hand" % (host.name, answer.get("error"))
        step.done = True
        return step.line + " (an older release: role standby; deploy it to record the epoch)"
    answer = on_host(host, lambda runner, target: ctlcalls.epoch(runner, target, step.record, timeout=timeout))
    if not answer.get("ok"):
        return "%s: NOT fenced (%s): stop its bot by hand" % (host.name, answer.get("error"))
    kept = answer.get("epoch") if isinstance(answer.get("epoch"), dict) else {}
    step.done = kept.get("epoch") == step.record["epoch"] and kept.get("active_host") == step.record["active_host"]
    if not step.done:
        return "%s: NOT fenced: it knows a later epoch (%s)" % (host.name, epochs.moved(kept) if epochs.valid(kept)
                                                                else "unreadable")
    if step.kind == "fence" and not answer.get("fenced"):
        return "%s: already standby; it keeps %s" % (host.name, epochs.moved(step.record))
    if answer.get("stopped_pid"):
        return step.line + "; its bot (pid %s) stopped" % answer["stopped_pid"]
    return step.line


def on_contact(inventory: Inventory, answers: Dict[str, Dict[str, Any]], act: bool = True, timeout: float = 20.0,
               say: Callable[[str], None] = lambda line: None, spare: Tuple[str, ...] = (),
               keep: Callable[[Step], bool] = lambda step: True) -> Tuple[List[Step], Dict[str, Record]]:
    """Fence what ``answers`` show stale (``act``), or only say what would be (a read-only task).
    The steps taken (or that would be), each line to ``say``, and the highest record per bot id.
    ``spare``: hosts not to fence (a --takeover task's targets: they start the bot with a higher epoch)."""
    steps, best = decide(answers, remembered(inventory), inventory.hosts)
    steps = [s for s in steps if not (s.kind == "fence" and s.host in spare) and keep(s)]  # --takeover: theirs
    if act:
        remember(inventory, best)
    for step in steps:
        if step.kind == "note":
            say(step.line)
        elif not act:
            say("%s (would be fenced; a task that changes state does it)" % step.line if step.kind == "fence"
                else "%s (would be recorded)" % step.line)
        else:
            say(_take(inventory.hosts[step.host], step, answers[step.host], timeout))
    return steps, best
