"""The fleet page fences too: each link already receives its host's status (role and epoch
included), so a host that comes back from a partition still running a stale bot is stood down within
seconds of its link coming back, not at the next task someone runs.

One pass at a time, on a thread of its own, woken by any status change (a pass a second at most):
the hosts' latest statuses go through the CLI's own fencing (fencing.on_contact, which stops the
stale bot with `ctl epoch` on a connection of its own). What it did is kept (the last few lines) for
the page's banner, which names the action taken.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Any, Callable, Deque, Dict, List, Optional

from remote import fencing
from remote.inventory import Inventory

log = logging.getLogger("sulfur.fleet")
KEPT_LINES = 5
PASS_SPACING = 1.0  # s between two passes at least
RETRY = 3.0  # s: a step that could not be taken (the host not reachable again yet) is tried again this soon
TRIES = 5  # a step that failed this many times waits for its host's next status (a host that always refuses)


def reachable_statuses(hosts: List[Any], links: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    """The reachable hosts' latest statuses (a status is replaced, never changed: no copy needed)."""
    found = {}
    for host in hosts:
        state = links[host.name].state if host.name in links else {}
        if state.get("reachable") and isinstance(state.get("status"), dict):
            found[host.name] = state["status"]
    return found


class Fencer:
    """Fencing from the page's links; ``statuses()`` gives each reachable host's latest status."""

    def __init__(self, inventory: Inventory, statuses: Callable[[], Dict[str, Dict[str, Any]]],
                 told: Callable[[], None], moving: Optional[threading.Lock] = None) -> None:
        self.inventory, self.statuses, self.told = inventory, statuses, told
        self.moving = moving  # held while the page moves the bot: no pass meanwhile (it would race the move)
        self._tries: Dict[tuple, int] = {}  # (host, kind, epoch) -> failed tries, until its host's status changes
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lines: Deque[str] = collections.deque(maxlen=KEPT_LINES)
        self.thread = threading.Thread(target=self._run, name="fencer", daemon=True)

    def start(self) -> None:
        if any(h.bot_command for h in self.inventory.hosts.values()):
            self.thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def poke(self, host: Optional[str] = None) -> None:
        """A host's status changed: a pass soon, its failed steps tried afresh."""
        if host is not None:
            self._tries = {key: n for key, n in self._tries.items() if key[0] != host}
        self._wake.set()

    def recent(self) -> List[str]:
        """What the page's fencing did lately, newest last, for the banner."""
        return list(self._lines)

    def _run(self) -> None:
        failed = False
        while not self._stop.is_set():
            self._wake.wait(RETRY if failed else None)  # a partition that heals sends no new status by itself
            if self._stop.is_set():
                return
            self._wake.clear()
            began = time.monotonic()
            try:
                failed = self.once() is None
            except Exception as exc:  # a pass that fails is this pass's: the next status brings another
                log.warning("fleet: fencing: %s", exc)
                failed = True
            self._stop.wait(max(0.0, PASS_SPACING - (time.monotonic() - began)))

    def once(self) -> Optional[List[str]]:
        """One pass over the statuses there are now; the lines of what it did, or None when a step
        could not be taken (its host not reachable yet: the link may not know it is cut off)."""
        if self.moving is not None and self.moving.locked():
            return None  # the page's failover is under way: after it
        said: List[str] = []
        answers = {name: dict(status, ok=True) for name, status in self.statuses().items()}
        steps, _ = fencing.on_contact(self.inventory, answers, act=True, say=said.append, keep=self._worth)
        taken = [line for line, step in zip(said, steps) if step.kind != "note" and step.done]
        if taken:
            stamp = time.strftime("%H:%M:%S")
            self._lines.extend("%s by this page: %s" % (stamp, line) for line in taken)
            self.told()
        failed = [step for step in steps if step.kind != "note" and not step.done]
        for step in failed:
            key = self._key(step)
            self._tries[key] = self._tries.get(key, 0) + 1
        return None if failed else taken

    @staticmethod
    def _key(step: Any) -> tuple:
        return step.host, step.kind, (step.record or {}).get("epoch")

    def _worth(self, step: Any) -> bool:
        """A step not yet tried TRIES times in vain since its host's last status."""
        return self._tries.get(self._key(step), 0) < TRIES
