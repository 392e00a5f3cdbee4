"""The bot's etcd lease with real supervisors on this machine: hosts are app dirs of one inventory,
each reaching a real 3-member etcd cluster (TLS, auth) through TCP forwarders of its own, so a test
can cut one host's link to etcd and nobody else's. The example bot runs on every host; a sampler
counts the bots of the whole fleet every 0.1 s (a stopped process, state T, is not a running bot) and
every test asserts there were never two.
"""

import hashlib
import os
import signal
import subprocess
import sys
import time

import etcdlab
import pytest
from dashproc import ROOT, wait_for
from leaselab import Fleet, process_state

TTL = 5  # s: the smallest lease_ttl, so that every fault resolves quickly
cluster = etcdlab.cluster  # the module's cluster fixture (tests/etcdlab.py)




@pytest.fixture
def fleet(tmp_path, cluster):
    made = []

    def make(names, **kwargs):
        made.append(Fleet(tmp_path, cluster, names, **kwargs))
        return made[-1]

    yield make
    for one in made:
        one.close()


def test_a_dead_holder_is_replaced_by_the_next_host_in_order_and_stays_standby_when_back(fleet):
    f = fleet("abc")
    f.start()
    assert f.one_runs() == "a"  # first in the inventory: it waits least
    epoch = f.bot("a")["lease"]["epoch"]
    out = f.invoke("status", host="b")[0]
    assert "b: lease held by a, epoch %d" % epoch in out.stdout, out.stdout
    f.cut("a")  # its link down, and its processes killed
    bot_pid, dead = f.running()["a"], time.monotonic()
    os.kill(f.pid("a"), signal.SIGKILL)
    os.kill(bot_pid, signal.SIGKILL)
    wait_for(lambda: "b" in f.running(), TTL + 5, "b's bot within lease_ttl + 5 s")
    assert time.monotonic() - dead <= TTL + 5
    lease = wait_for(lambda: "b took over" in (f.bot("b").get("lease", {}).get("last") or "") and f.bot("b")["lease"],
                     10, "b's lease and its election")
    assert lease["state"] == "holder" and lease["epoch"] == epoch + 1
    assert "b took over at" in lease["last"] and "a's lease expired" in lease["last"]
    time.sleep(3)
    assert set(f.running()) == {"b"}, "c must not start a second bot"
    f.cut("a", False)
    f.start("a")  # it comes back: it finds a holder and a higher epoch
    time.sleep(2 * TTL)
    assert set(f.running()) == {"b"} and f.bot("a")["state"] == "standby"
    assert f.bot("a")["lease"]["holder"] == "b"
    assert f.counter.most() == 1, "two bots at once"


def test_a_holder_cut_off_from_etcd_stops_its_bot_before_another_starts(fleet):
    f = fleet("ab")
    f.start()
    assert f.one_runs() == "a"
    cut = time.monotonic()
    f.cut("a")
    wait_for(lambda: "b" in f.running(), TTL + 8, "b's bot after a lost etcd")
    started = wait_for(lambda: f.counter.first("b"), 2, "the sampler's sight of b's bot")
    gone = f.counter.last("a")
    assert gone is not None and gone < started, "a's bot stopped after b's started"
    assert gone - cut <= TTL / 2 + 2, "a stopped its bot %.1f s after the cut" % (gone - cut)
    assert "lease: no renewal for" in f.bot("a").get("reason", "")
    page = f.page("a")  # the host's own dashboard says it too, on its Bot card
    assert 'id="bot-lease"' in page and "etcd unreachable" in page and "safety over availability" in page, page
    f.cut("a", False)
    time.sleep(2 * TTL)
    assert set(f.running()) == {"b"}, "a came back and started its bot again"
    assert f.bot("a")["lease"]["holder"] == "b" and "lease lost" in f.log("a")
    assert f.counter.most() == 1


def test_a_killed_member_moves_nothing_and_a_cluster_down_stops_the_bot_until_it_is_back(fleet, cluster):
    f = fleet("ab")
    f.start()
    assert f.one_runs() == "a"
    epoch = f.bot("a")["lease"]["epoch"]
    cluster.kill(0)
    try:
        time.sleep(3 * TTL)
        # nothing moves: the same holder and epoch, no bot elsewhere (etcd's own leader election when the
        # killed member led may cost a renewal or two: the margin is lease_ttl/2, 2.5 s here)
        assert set(f.running()) == {"a"} and f.bot("a")["lease"]["epoch"] == epoch, f.log("a")[-2000:]
        assert f.counter.first("b") is None
    finally:
        cluster.start(0, state="existing")
    for i in range(cluster.size):
        cluster.kill(i)
    down = time.monotonic()
    try:
        wait_for(lambda: not f.running(), TTL / 2 + 3, "the bot stopped with all of etcd down")
        out = f.invoke("status", host="a")[0]
        assert "etcd unreachable" in out.stdout and "safety over availability" in out.stdout, out.stdout
        assert time.monotonic() - down < TTL / 2 + 3
    finally:
        cluster.start(state="existing")
    wait_for(lambda: "a" in f.running(), 30, "the bot back on a once etcd answers")
    time.sleep(TTL)
    assert set(f.running()) == {"a"} and f.bot("a")["lease"]["epoch"] == epoch, "an election where none was due"
    assert f.counter.most() == 1


def test_a_host_with_a_wrong_password_never_runs_the_bot(fleet):
    f = fleet("ab", passwords={"a": "not-the-password"})
    f.start()
    assert f.one_runs() == "b"  # a comes first in the inventory, but cannot log in
    out = f.invoke("doctor", host="a")[0]
    assert "a: etcd PROBLEM: etcd refused user 'sulfur': wrong name or password" in out.stdout, out.stdout
    out = f.invoke("status", host="a")[0]
    assert "etcd refused the login" in out.stdout and "not-the-password" not in out.stdout, out.stdout
    time.sleep(TTL)
    assert set(f.running()) == {"b"} and f.counter.most() == 1


def test_a_bot_that_fails_lets_its_lease_go(fleet):
    f = fleet("ab", bot_commands={"a": "%s -c \"import sys; sys.exit(3)\"" % sys.executable},
              extra=", bot_starts_per_day: 1")
    f.start()
    wait_for(lambda: f.bot("a").get("state") == "failed", 30, "a's bot failed (its budget of one start spent)")
    wait_for(lambda: "b" in f.running(), TTL + 10, "b's bot after a let go")
    last = wait_for(lambda: "b took over" in (f.bot("b")["lease"].get("last") or "") and f.bot("b")["lease"]["last"],
                    10, "the election's words")
    assert "a let its lease go (its bot failed on a)" in last, last


def test_a_new_supervisor_on_the_holder_keeps_its_lease(fleet):
    f = fleet("ab")
    f.start()
    assert f.one_runs() == "a"
    epoch = f.bot("a")["lease"]["epoch"]
    os.kill(f.pid("a"), signal.SIGTERM)  # what a deploy that replaces the supervisor does first
    wait_for(lambda: not f.running(), 10, "a's stack stopped")
    f.start("a")
    wait_for(lambda: "a" in f.running(), 15, "a's bot again")
    assert f.bot("a")["lease"]["epoch"] == epoch and "kept its lease" in f.log("a")
    time.sleep(TTL)
    assert set(f.running()) == {"a"} and f.counter.most() == 1


def test_a_suspended_holder_finds_its_bot_replaced_and_stops_it_on_waking(fleet):
    f = fleet("ab")
    f.start()
    assert f.one_runs() == "a"
    supervisor, bot_pid = f.pid("a"), f.running()["a"]
    os.kill(bot_pid, signal.SIGSTOP)
    os.kill(supervisor, signal.SIGSTOP)
    wait_for(lambda: "b" in f.running(), TTL + 8, "b's bot while a sleeps")
    time.sleep(1)
    os.kill(supervisor, signal.SIGCONT)
    woke = time.monotonic()
    wait_for(lambda: process_state(bot_pid) in (None, "Z"), 5, "a's old bot gone")
    assert time.monotonic() - woke <= 1.5, "a's bot outlived its supervisor's waking by %.1f s" % (
        time.monotonic() - woke)
    time.sleep(TTL)
    assert set(f.running()) == {"b"} and f.counter.most() == 1


def test_failover_to_moves_the_lease_and_takeover_is_refused(fleet):
    f = fleet("ab")
    f.start()
    assert f.one_runs() == "a"
    epoch = f.bot("a")["lease"]["epoch"]
    out = f.invoke_all("failover", "--to", "b", "--takeover")
    assert out.returncode == 2 and "refused in an inventory with coordination" in out.stderr, out.stdout + out.stderr
    assert len((out.stdout + out.stderr).strip().splitlines()) == 1
    out = f.invoke_all("failover", "--to", "b")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "b: holds the bot's etcd lease now (epoch %d)" % (epoch + 1) in out.stdout, out.stdout
    assert set(f.running()) == {"b"}
    wait_for(lambda: f.bot("a").get("lease", {}).get("holder") == "b", 3 * TTL, "a sees b's lease")
    assert f.bot("b")["lease"]["state"] == "holder" and f.bot("b")["lease"]["epoch"] == epoch + 1
    time.sleep(TTL)
    assert set(f.running()) == {"b"} and f.counter.most() == 1


def test_stop_on_the_holder_pauses_the_election_and_start_there_resumes_it(fleet):
    f = fleet("ab")
    f.start()
    assert f.one_runs() == "a"
    epoch = f.bot("a")["lease"]["epoch"]
    out = f.invoke("stop", "--service", "bot", host="a")[0]
    assert out.returncode == 0 and "the bot's election is paused" in out.stdout, out.stdout + out.stderr
    os.kill(f.pid("a"), signal.SIGKILL)  # and then the holder dies: its lease runs out, nobody takes over
    time.sleep(TTL + 4)
    assert f.running() == {} and f.bot("b")["lease"]["paused"]
    out = f.invoke("start", "--service", "bot", host="b")[0]
    assert out.returncode != 0 and "stopped on purpose and belongs to a" in out.stdout + out.stderr, out.stdout
    assert f.running() == {}
    out = f.invoke("status", host="b")[0]
    assert "b: lease paused" in out.stdout, out.stdout
    f.start("a")  # a new supervisor there, and the bot resumed: its lease is taken again, epoch + 1
    wait_for(lambda: "a" in f.running(), 15, "a's bot again")
    assert f.bot("a")["lease"]["epoch"] == epoch + 1
    time.sleep(TTL)
    assert set(f.running()) == {"a"} and f.counter.most() == 1


def test_an_operators_failover_during_an_election_leaves_one_bot(fleet):
    f = fleet("abc")
    f.start()
    assert f.one_runs() == "a"
    os.kill(f.running()["a"], signal.SIGKILL)
    os.kill(f.pid("a"), signal.SIGKILL)  # b and c race for the lease once it runs out; the operator moves it to c
    out = f.invoke_all("failover", "--to", "c")
    wait_for(lambda: len(f.running()) == 1, 3 * TTL, "one bot after the race")
    time.sleep(TTL)
    (winner,) = f.running()
    if out.returncode == 0:
        assert winner == "c", out.stdout
    else:
        assert "refused: the lease was moved meanwhile" in out.stdout, out.stdout
    assert f.bot(winner)["lease"]["state"] == "holder" and f.counter.most() == 1


def test_the_winner_restores_the_newest_replica_of_the_dead_holders_data(fleet):
    f = fleet("ab", extra=", shared_paths: [data]")
    for name in "ab":
        (f.tmp / name / "shared" / "data").mkdir()
        (f.tmp / name / "shared" / "data" / "rows.txt").write_text("%s's own rows\n" % name)
    f.start()
    assert f.one_runs() == "a"
    (f.tmp / "a" / "shared" / "data" / "rows.txt").write_text("rows 1..42, written on a\n")
    out = f.invoke_all("backup", "--all")  # a snapshot of the owner's data, and its replica on b
    assert out.returncode == 0 and "replica" in out.stdout, out.stdout + out.stderr
    os.kill(f.running()["a"], signal.SIGKILL)
    os.kill(f.pid("a"), signal.SIGKILL)
    wait_for(lambda: "b" in f.running(), TTL + 15, "b's bot, once a's data is restored there")
    assert (f.tmp / "b" / "shared" / "data" / "rows.txt").read_text() == "rows 1..42, written on a\n"
    takeover = f.bot("b")["lease"]["takeover"]
    assert "b took the bot over from a with its snapshot" in takeover and "from the replica on b" in takeover
    assert "old" in takeover and "replicas are as fresh as the last backup --all" in takeover
    assert "alert: b took the bot over from a" in f.log("b")
    assert f.counter.most() == 1


def test_a_new_token_moves_the_lease_to_the_new_bot_id_with_the_epoch_carried(fleet):
    f = fleet("ab")
    f.start()
    assert f.one_runs() == "a"
    epoch = f.bot("a")["lease"]["epoch"]
    path = f.tmp / "inventory-all.yml"
    path.write_text(f.inventory.read_text() + f.coordinate("a"))
    env = dict(os.environ, SULFUR_INVENTORY=str(path), XDG_CACHE_HOME=str(f.tmp / "cache"),
               XDG_DATA_HOME=str(f.tmp / "data"))
    out = subprocess.run([sys.executable, "-m", "invoke", "env-set", "--key", "BOT_TOKEN", "--host", "a,b"], cwd=ROOT,
                         env=env, input="a-new-token-%s\n" % f.tmp.name, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    new_id = hashlib.sha256(("a-new-token-%s" % f.tmp.name).encode()).hexdigest()[:12]
    lease = wait_for(lambda: f.bot("a").get("bot_id") == new_id and f.bot("a")["lease"]["state"] == "holder"
                     and f.bot("a")["lease"], 6 * TTL, "a holds the new bot id's lease")  # generous: CI is busy
    assert lease["epoch"] == epoch + 1, lease  # carried over to the new bot id, then one election
    time.sleep(TTL)
    assert set(f.running()) == {"a"} and f.counter.most() == 1
    assert f.bot("b")["lease"]["holder"] == "a"


def test_a_holder_whose_supervisor_is_killed_alone_loses_its_bot_before_another_starts(fleet):
    f = fleet("ab")
    f.start()
    assert f.one_runs() == "a"
    bot_pid = f.running()["a"]
    os.kill(f.pid("a"), signal.SIGKILL)  # the OOM killer, Android's phantom process killer: the bot stays
    killed = time.monotonic()
    wait_for(lambda: "b" in f.running(), TTL + 8, "b's bot")
    started = wait_for(lambda: f.counter.first("b"), 2, "the sampler's sight of b's bot")
    gone = f.counter.last("a")
    assert process_state(bot_pid) in (None, "Z"), "a's orphaned bot still runs"
    assert gone < started and gone - killed <= TTL / 2 + 1.5, "its leash stopped it %.1f s after" % (gone - killed)
    assert "leash: the lease's last renewal is" in (f.tmp / "a" / "logs" / "bot.log").read_text()
    assert f.counter.most() == 1
