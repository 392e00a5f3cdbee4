"""The host's 24 h history ring (remote/host/common/history.py) and `ctl watch`, on real files and processes:
the ring's size never grows, old and future records are left out, CPU and RSS come from /proc, and
watch sends the backlog, then each change, and ends with its stdin."""

import json
import os
import subprocess
import sys
import time

from dashproc import ROOT, invoke, local_inventory, wait_for

from remote.host.common import history

SPIN = "import time\nend = time.monotonic() + 1.5\nwhile time.monotonic() < end:\n    pass\ntime.sleep(30)\n"


class Wall:
    def __init__(self, now):
        self.now = now

    def __call__(self):
        return self.now


def test_the_ring_keeps_24_hours_in_a_file_that_never_grows(tmp_path):
    ring = str(tmp_path / "history.bin")
    base = 1_800_000_000
    record = dict.fromkeys(history.FIELDS, 0)
    for step in range(0, history.SLOTS + 100):  # a day and 100 slots more
        history.write(ring, dict(record, t=base + step * history.INTERVAL, load=step % 500))
    assert os.path.getsize(ring) == history.HEADER.size + history.SLOTS * history.RECORD.size < 400_000
    assert os.stat(ring).st_mode & 0o777 == 0o600
    now = base + (history.SLOTS + 99) * history.INTERVAL
    kept = history.read(ring, now=now)
    assert len(kept) == history.SLOTS and kept[-1]["t"] == now
    assert kept[0]["t"] == base + 100 * history.INTERVAL  # the first 100 were overwritten by the newest
    assert [r["t"] for r in kept] == sorted(r["t"] for r in kept)
    assert history.read(ring, since=now - 30, now=now) == kept[-3:]
    assert history.read(ring, now=now + 48 * 3600) == []  # a day later: nothing is from the last 24 h
    columns = history.columns(kept[-2:])
    assert set(columns) == set(history.FIELDS) and columns["t"] == [now - 10, now]


def test_a_sample_has_cpu_and_rss_of_real_processes(tmp_path):
    spinner = subprocess.Popen([sys.executable, "-c", SPIN])
    idle = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        paths = type("Paths", (), {"run": str(tmp_path)})
        clock = [100.0]
        sampler = history.Sampler(paths, clock=lambda: clock[0], wall=Wall(1_800_000_000))
        pids = {"supervisor": os.getpid(), "dashboard": idle.pid, "bot": spinner.pid}
        assert sampler.maybe(pids, {"bot": 2}, True) is not None
        assert sampler.maybe(pids, {"bot": 2}, True) is None  # not due yet
        time.sleep(1.0)
        clock[0] += 10.0  # ten seconds on the sampler's clock, 1 s of them spent spinning for real
        sampler.wall.now += 10
        second = sampler.maybe(pids, {"bot": 3}, True)
        assert second["bot_cpu"] >= 30 and second["dashboard_cpu"] <= 10  # 0.1 % units over 10 s
        assert second["bot_rss"] > 1000 and second["dashboard_rss"] > 1000 and second["bot_restarts"] == 3
        assert second["mem_total"] > second["mem_used"] > 0 and second["serving"] == 1
        stored = history.read(history.path(paths), now=sampler.wall.now)
        assert [r["t"] for r in stored] == [1_800_000_000, 1_800_000_010] and stored[-1] == second
    finally:
        for proc in (spinner, idle):
            proc.kill()
            proc.wait()


def _watch(app_dir, since=None):
    request = {"protocol": 1, "command": "watch", "app_dir": str(app_dir), "options": {"since": since}}
    proc = subprocess.Popen([sys.executable, "-S", "-m", "remote.host.ctl", "watch"], cwd=ROOT, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    proc.stdin.write(json.dumps(request) + "\n")
    proc.stdin.flush()
    return proc


def test_watch_sends_the_backlog_then_each_change_and_ends_with_its_channel(tmp_path):
    app = tmp_path / "app"
    (app / "run").mkdir(parents=True)
    ring = str(app / "run" / "history.bin")
    now = int(time.time())
    record = dict.fromkeys(history.FIELDS, 0)
    for t in (now - 40, now - 30, now - 20):
        history.write(ring, dict(record, t=t, load=t % 100))
    proc = _watch(app, since=now - 35)
    try:
        assert json.loads(proc.stdout.readline())["kind"] == "status"  # the states first, for the cards
        first = json.loads(proc.stdout.readline())
        assert first["kind"] == "history" and first["samples"]["t"] == [now - 30, now - 20]
        history.write(ring, dict(record, t=now - 10, load=7))
        sample = json.loads(proc.stdout.readline())
        assert sample["kind"] == "sample" and sample["t"] == now - 10 and sample["load"] == 7
        (app / "run" / "state.json").write_text(json.dumps({"services": {}, "supervisor": {"pid": 1}}))
        assert json.loads(proc.stdout.readline())["kind"] == "status"
        proc.stdin.close()  # the SSH channel closes
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_days_backlog_is_thinned_to_one_sample_a_minute_the_newest_kept(tmp_path):
    app = tmp_path / "app"
    (app / "run").mkdir(parents=True)
    ring = str(app / "run" / "history.bin")
    now = int(time.time()) // 10 * 10
    record = dict.fromkeys(history.FIELDS, 0)
    for n in range(history.SLOTS - 1, -1, -1):
        history.write(ring, dict(record, t=now - 10 * n, bot_restarts=1 if n < 1000 else 0))
    proc = _watch(app)
    try:
        assert json.loads(proc.stdout.readline())["kind"] == "status"
        samples = json.loads(proc.stdout.readline())["samples"]
        times = samples["t"]
        assert 1400 <= len(times) <= 1440 and times[-1] == now and times == sorted(times)
        assert {b - a for a, b in zip(times, times[1:])} == {60}  # evenly: one a minute
        assert samples["bot_restarts"][0] == 0 and samples["bot_restarts"][-1] == 1  # the step survives
    finally:
        proc.stdin.close()
        proc.wait(timeout=10)


def test_the_supervisor_samples_its_stack(tmp_path, port):
    inventory = local_inventory(tmp_path / "inventory.yml", tmp_path / "app", port)
    try:
        assert invoke(inventory, "restart").returncode == 0
        ring = str(tmp_path / "app" / "run" / "history.bin")
        wait_for(lambda: len(history.read(ring)) >= 2, 40, "two samples in %s" % ring)
        last = history.read(ring)[-1]
        state = json.loads((tmp_path / "app" / "run" / "state.json").read_text())
        assert last["serving"] == 1 and last["dashboard_rss"] > 1000 and last["supervisor_rss"] > 1000
        assert abs(last["t"] - time.time()) < 60 and state["services"]["dashboard"]["state"] == "running"
    finally:
        invoke(inventory, "stop")
