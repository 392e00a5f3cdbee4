"""The bot's etcd lease on real SSH test hosts (linux and termux profiles, each in a network namespace
of its own) with a real 3-member etcd cluster (TLS, auth) that the hosts reach over their links:
doctor from each host's side, one bot at a time, a host whose link goes down replaced by the other
within lease_ttl + 5 s, and the way back when the other one dies. Bots are counted on both hosts
every 0.1 s; there are never two."""

import os
import threading
import time

import etcdlab
import leaselab
import pytest
import sshlab
from dashproc import invoke, wait_for

pytestmark = pytest.mark.skipif(sshlab.available() is not None or etcdlab.available() is not None,
                                reason=str(sshlab.available() or etcdlab.available()))
TTL = 5


@pytest.fixture(scope="module")
def lab():
    with leaselab.on_the_lab(TTL) as lab:
        yield lab


class Counter:
    def __init__(self, lab):
        self.lab, self.most, self.done = lab, 0, threading.Event()
        self.seen = {name: None for name in lab.hosts}
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.done.is_set():
            running = {name: bool(host.bots()) for name, host in self.lab.hosts.items()}
            self.most = max(self.most, sum(running.values()))
            for name, up in running.items():
                if up and self.seen[name] is None:
                    self.seen[name] = time.monotonic()
            time.sleep(0.1)

    def stop(self):
        self.done.set()
        self.thread.join(5)


def test_doctor_and_one_bot_and_a_dead_link_hands_it_over_both_ways(lab):
    linux, termux, path = lab.hosts["linux"], lab.hosts["termux"], lab.inventory_path
    out = invoke(path, "doctor", "--all")
    for name in ("linux", "termux"):  # each host's own view, through its own link, with its own password
        assert "%s: etcd 3 of 3 endpoints answer, login ok" % name in out.stdout, out.stdout
    out = invoke(path, "restart", "--all")
    assert out.returncode == 0, out.stdout + out.stderr
    wait_for(lambda: linux.bots() and not termux.bots(), TTL + 10, "linux's bot (first in the inventory)")
    counter = Counter(lab)
    try:
        leaselab.link(linux, False)  # its link down: no SSH, no etcd; its supervisor stops its own bot
        cut = time.monotonic()
        wait_for(lambda: termux.bots(), TTL + 5 + 3, "termux's bot within lease_ttl + 5 s")
        assert wait_for(lambda: counter.seen["termux"], 2, "the sampler's sight of it") - cut <= TTL + 5
        wait_for(lambda: not linux.bots(), 5, "linux's bot stopped")
        leaselab.link(linux, True)
        time.sleep(2 * TTL)  # it comes back, finds termux holding the lease, and stays standby
        assert termux.bots() and not linux.bots()
        out = invoke(path, "status", "--all")
        assert "linux: lease held by termux" in out.stdout and "termux: lease held here" in out.stdout, out.stdout
        assert "linux's lease expired" in out.stdout, out.stdout
        # and back: termux's processes killed, linux takes over
        counter.seen["linux"] = None
        for pid in termux.bots():
            os.kill(pid, 9)
        sshlab.sh("pkill", "-9", "-u", termux.user.pw_name, "-f", "remote.host.supervisor", check=False)
        dead = time.monotonic()
        wait_for(lambda: linux.bots(), TTL + 5 + 3, "linux's bot again")
        assert wait_for(lambda: counter.seen["linux"], 2, "the sampler's sight of it") - dead <= TTL + 5
    finally:
        leaselab.link(linux, True)
        counter.stop()
    assert counter.most == 1, "two bots at once"
