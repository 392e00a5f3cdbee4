"""`replicate: true`: the page copies each new scheduled snapshot of an active host to the standbys
of the same bot, so that a takeover while nobody watches finds recent data there.

Each link's status carries the host's last snapshot (run/backups.json, `ctl watch` sends a new status
when it changes). A new scheduled one on a host with `replicate: true` is fetched here once
(sha256-checked, kept as `invoke backup` keeps copies) and sent to each standby (`replica-put`), at
most `replicate_max` bytes, one copy at a time on a thread of its own: a phone on mobile data gets
nothing unless its inventory says so, and a slow host never holds up the page.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any, Callable, Dict, List, Optional

from remote import backups, dataflows, fencing
from remote.connections import open_runner
from remote.inventory import Inventory

log = logging.getLogger("sulfur.fleet")


class Replicator:
    def __init__(self, inventory: Inventory, statuses: Callable[[], Dict[str, Dict[str, Any]]]) -> None:
        self.inventory, self.statuses = inventory, statuses
        self.seen: Dict[str, Optional[str]] = {}  # host -> the stamp of its last snapshot already handled
        self.done: List[Dict[str, Any]] = []  # what was sent (the newest few), for tests and the log
        self._queue: queue.Queue[Optional[str]] = queue.Queue()
        self.thread = threading.Thread(target=self._run, name="replicator", daemon=True)

    def start(self) -> None:
        if any(h.replicate for h in self.inventory.hosts.values()):
            self.thread.start()

    def stop(self) -> None:
        self._queue.put(None)

    def poke(self, host: str) -> None:
        """A host's status changed: look at its last snapshot (on the replicator's thread)."""
        if self.inventory.hosts.get(host) is not None and self.inventory.hosts[host].replicate:
            self._queue.put(host)

    def _run(self) -> None:
        while True:
            name = self._queue.get()
            if name is None:
                return
            try:
                self.once(name)
            except Exception as exc:  # one host's failure is logged; the next snapshot tries again
                log.warning("fleet: replicating %s: %s", name, exc)

    def once(self, name: str) -> Optional[Dict[str, Any]]:
        statuses = self.statuses()
        status = statuses.get(name) or {}
        last = ((status.get("backups") or {}).get("last_ok") or {}) if isinstance(status.get("backups"), dict) else {}
        stamp = last.get("stamp") if isinstance(last, dict) else None
        if not isinstance(stamp, str) or last.get("reason") != "scheduled" or self.seen.get(name) == stamp:
            self.seen.setdefault(name, stamp if isinstance(stamp, str) else None)
            return None
        self.seen[name] = stamp
        source = self.inventory.hosts[name]
        answers = {n: dict(s, ok=True) for n, s in statuses.items()}
        owners = dataflows.owners(self.inventory, answers)
        bot_id = fencing.bot_of(answers.get(name) or {})
        if not bot_id or owners.get(bot_id) != name:
            return None  # not the bot's data owner: its snapshot is not the bot's data
        targets = dataflows.standbys(self.inventory, answers, bot_id, name)
        if not targets:
            return None
        with open_runner(source) as runner:
            doc = backups.fetch(runner, source, stamp, backups.local_dir(self.inventory.path, name))
        sent = dataflows.replicate(self.inventory, source, doc, targets)
        result = {"host": name, "stamp": stamp, "sent": sent}
        self.done = (self.done + [result])[-5:]
        for item in sent:
            if not item.get("ok"):
                log.warning("fleet: replica of %s's snapshot %s on %s: %s", name, stamp, item.get("host"),
                            item.get("error"))
        return result
