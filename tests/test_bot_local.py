"""The supervisor's bot duties on this machine, with real processes: the example bot (demo mode) as
the bot, its watchdog, login spacing, the start budget, roles, a killed supervisor's orphans, and
the host-side exactly-once check."""

import hashlib
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

from dashproc import ROOT, Load, alive, ctl_run, invoke, local_inventory, wait_for

EXAMPLE = ROOT / "examples" / "bot" / "bot.py"
TOKEN = "token-for-tests-only"  # each app below has its own, with its path in it: bots() tells them apart


def setup(tmp_path, port, env="", **keys):
    """A local inventory running the example bot (demo mode with a token: it has a bot id)."""
    app = tmp_path / "app"
    (app / "shared").mkdir(parents=True)
    (app / "shared" / ".env").write_text("BOT_TOKEN=%s\nEXAMPLE_BOT_DEMO=1\n%s" % (token(app), env))
    inventory = local_inventory(tmp_path / "inventory.yml", app, port)
    extra = "".join(", %s: %s" % item for item in keys.items())
    inventory.write_text(inventory.read_text().replace(
        "connection: local,", "connection: local, bot_command: '%s %s'%s," % (sys.executable, EXAMPLE, extra)))
    return app, inventory


def token(app):
    return "%s-%s" % (TOKEN, app)


def ident(app):
    return hashlib.sha256(token(app).encode()).hexdigest()[:12]


def state(app):
    return json.loads((app / "run" / "state.json").read_text())


def bot(app):
    return state(app)["services"]["bot"]


def starts(app):
    return sorted(s["mono"] for s in json.loads((app / "run" / "bot-starts.json").read_text())["starts"])


def bots(app):
    """Live processes of the example bot with this app's token in their environment."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmd = Path("/proc", entry, "cmdline").read_bytes()
                env = Path("/proc", entry, "environ").read_bytes()
            except OSError:
                continue
            if str(EXAMPLE).encode() in cmd and ("BOT_TOKEN=%s\0" % token(app)).encode() in env \
                    and not cmd.split(b"\0")[0].endswith(b"sh") and alive(int(entry)):  # python, not a launcher
                found.append(int(entry))
    return found


def test_the_bot_has_its_id_shards_notify_socket_and_status_line(tmp_path, port):
    app, inventory = setup(tmp_path, port, shard_count=4, shards="'1-2'")
    try:
        assert invoke(inventory, "restart").returncode == 0, "restart failed"
        svc = wait_for(lambda: bot(app).get("status") and bot(app), 15, "a STATUS line")
        assert svc["bot_id"] == ident(app)
        assert (svc["shard_count"], svc["shards"], svc["role"]) == (4, [1, 2], "active")
        assert "guilds" in svc["status"] and svc["budget"]["used"] == 1 and svc["budget"]["limit"] == 50
        env = dict(item.split("=", 1) for item in Path("/proc/%d/environ" % svc["pid"]).read_text().split("\0")
                   if "=" in item)
        assert env["SHARD_COUNT"] == "4" and env["SHARD_IDS"] == "1,2" and env["NOTIFY_SOCKET"]
        assert "WATCHDOG_USEC" not in env
        out = invoke(inventory, "status")
        assert svc["bot_id"] in out.stdout and "BOT-ID" in out.stdout and TOKEN not in out.stdout + out.stderr
    finally:
        invoke(inventory, "stop")


def test_a_bot_that_stops_its_watchdog_is_restarted_within_the_bound(tmp_path, port):
    app, inventory = setup(tmp_path, port, "EXAMPLE_BOT_HANG_AFTER=2\n", watchdog_sec=2)
    try:
        assert invoke(inventory, "restart").returncode == 0
        first = bot(app)
        env = Path("/proc/%d/environ" % first["pid"]).read_bytes()
        assert b"WATCHDOG_USEC=2000000" in env and ("WATCHDOG_PID=%d" % first["pid"]).encode() in env
        second = wait_for(lambda: bot(app)["pid"] != first["pid"] and bot(app).get("state") == "running"
                          and bot(app), 20, "a restart by the watchdog")
        # it hung at 2 s; the bound is max(watchdog_sec + 2 s, 5 s after the previous start) from its last ping
        assert second["started_at"] - first["started_at"] <= 2 + max(2 + 2, 5) + 1.0
        assert second["last_exit"] == "watchdog" and not alive(first["pid"])
        log = (app / "logs" / "supervisor.log").read_text()
        assert "no WATCHDOG=1 for 2 s" in log and "alert: bot on" in log and "missed its watchdog" in log
    finally:
        invoke(inventory, "stop")


def test_a_crashing_bot_starts_5_s_apart_spends_a_small_budget_and_reset_budget_starts_it(tmp_path, port):
    app, inventory = setup(tmp_path, port, "EXAMPLE_BOT_CRASH_AFTER=0.2\n", bot_starts_per_day=3)
    try:
        assert invoke(inventory, "restart").returncode == 0
        svc = wait_for(lambda: bot(app).get("state") == "failed" and bot(app), 40, "the budget spent")
        assert svc["reason"] == "start budget spent (3 in 24 h)" and svc["budget"]["used"] == 3
        times = starts(app)
        assert len(times) == 3 and all(b - a >= 4.99 for a, b in zip(times, times[1:])), times
        log = (app / "logs" / "supervisor.log").read_text()
        assert "alert: bot on" in log and "start budget spent (3 in 24 h)" in log
        out = invoke(inventory, "start", "--service", "bot")
        assert out.returncode == 1 and "start budget spent" in out.stdout
        (app / "shared" / ".env").write_text("BOT_TOKEN=%s\nEXAMPLE_BOT_DEMO=1\n" % token(app))  # fixed
        out = invoke(inventory, "start", "--service", "bot", "--reset-budget")
        assert out.returncode == 0, out.stdout + out.stderr
        svc = wait_for(lambda: bot(app).get("state") == "running" and bot(app), 15, "the bot running again")
        assert svc["budget"]["used"] == 1
        assert "recovered" in (app / "logs" / "supervisor.log").read_text()
    finally:
        invoke(inventory, "stop")


def test_a_standby_host_runs_no_bot_until_its_role_is_active_and_keeps_it_across_restarts(tmp_path, port):
    app, inventory = setup(tmp_path, port, standby="true")
    try:
        assert invoke(inventory, "restart").returncode == 0
        assert bot(app)["state"] == "standby" and bot(app)["pid"] is None and not bots(app)
        settings = json.loads((app / "run" / "supervisor.json").read_text())
        doc = json.loads(ctl_run(ROOT, "role", app, {"role": "active", "settle": 1.0}, settings).stdout)
        assert doc["ok"] and doc["role"] == "active" and doc["pid"] in bots(app)
        assert invoke(inventory, "restart").returncode == 0
        svc = wait_for(lambda: bot(app).get("state") == "running" and bot(app), 15, "the bot after a restart")
        assert svc["role"] == "active" and len(bots(app)) == 1
        doc = json.loads(ctl_run(ROOT, "role", app, {"role": "standby"}, settings).stdout)
        assert doc["ok"] and doc["stopped_pid"] == svc["pid"] and not alive(svc["pid"]) and not bots(app)
        assert invoke(inventory, "restart").returncode == 0
        assert bot(app)["state"] == "standby" and not bots(app)
    finally:
        invoke(inventory, "stop")


def test_a_bot_that_has_said_ready_counts_as_started_at_ready_not_after_the_settle_time(tmp_path, port):
    """Started means READY=1 (and the same pid 0.5 s later) once the bot has spoken sd_notify here; before
    that, the settle time. The failover's start confirmation (ctl role) shows both."""
    app, inventory = setup(tmp_path, port, standby="true")
    try:
        assert invoke(inventory, "restart").returncode == 0
        settings = json.loads((app / "run" / "supervisor.json").read_text())
        assert not (app / "run" / "bot-notify").exists()
        began = time.monotonic()
        doc = json.loads(ctl_run(ROOT, "role", app, {"role": "active", "settle": 3.0}, settings).stdout)
        assert doc["ok"] and time.monotonic() - began >= 3.0, doc  # not known to speak notify yet: settled
        assert (app / "run" / "bot-notify").exists()  # its READY=1 is remembered for the next starts
        assert json.loads(ctl_run(ROOT, "role", app, {"role": "standby"}, settings).stdout)["ok"]
        began = time.monotonic()
        doc = json.loads(ctl_run(ROOT, "role", app, {"role": "active", "settle": 120.0}, settings).stdout)
        took = time.monotonic() - began
        assert doc["ok"] and took < 60, (doc, took)  # READY, not 120 s of settling (the 5 s spacing included)
        assert bot(app)["ready"] and bot(app)["pid"] == doc["pid"]
    finally:
        invoke(inventory, "stop")


def test_a_notify_bot_that_never_says_ready_has_failed_at_bot_ready_timeout(tmp_path, port):
    app = tmp_path / "app"
    (app / "shared").mkdir(parents=True)
    inventory = local_inventory(tmp_path / "inventory.yml", app, port)
    silent = "%s -c 'import time; time.sleep(600)'" % sys.executable
    keys = "bot_command: \"%s\", bot_notify: true, bot_ready_timeout: 2s, standby: true," % silent
    inventory.write_text(inventory.read_text().replace("connection: local,", "connection: local, " + keys))
    try:
        assert invoke(inventory, "restart").returncode == 0
        settings = json.loads((app / "run" / "supervisor.json").read_text())
        assert settings["bot_notify"] is True and settings["bot_ready_timeout"] == 2.0
        began = time.monotonic()
        doc = json.loads(ctl_run(ROOT, "role", app, {"role": "active", "settle": 120.0}, settings).stdout)
        assert not doc["ok"] and "did not say READY=1 within 2 s of its start (bot_ready_timeout;" in doc["error"], doc
        assert time.monotonic() - began < 60
        # bot_notify: false outweighs what the host learned: the fixed wait again, and the silent bot is up
        (app / "run" / "bot-notify").write_text("READY=1 first seen long ago\n")
        settings["bot_notify"] = False
        doc = json.loads(ctl_run(ROOT, "role", app, {"role": "active", "settle": 1.0}, settings).stdout)
        assert doc["ok"], doc
    finally:
        invoke(inventory, "stop")


def test_the_host_refuses_a_start_that_another_host_runs_and_takeover_passes_a_cached_one(tmp_path, port):
    app, inventory = setup(tmp_path, port)
    settings = {"code_dir": str(ROOT), "python": sys.executable, "port": port,
                "bot_command": "%s %s" % (sys.executable, EXAMPLE)}
    unit = {"bot_id": ident(app), "shard_count": 1, "shards": [0], "pid": 812, "uptime": 7400, "state": "running"}
    checks = {"others": [{"host": "pi", "cached": False, "units": [unit]}], "takeover": False}
    out = ctl_run(ROOT, "restart", app, {"checks": checks}, settings)
    doc = json.loads(out.stdout)
    assert out.returncode == 1 and not doc["ok"]
    expected = "bot %s (the only shard) already runs on pi (pid 812, up 2h03m): refused" % ident(app)
    assert doc["error"].startswith(expected)
    assert not (app / "run" / "supervisor.pid").exists()  # nothing changed
    # a dashboard-only restart of a stopped stack starts a supervisor, and the bot with it: checked too
    out = ctl_run(ROOT, "restart", app, {"checks": checks, "service": "dashboard"}, settings)
    assert out.returncode == 1 and "already runs on pi" in json.loads(out.stdout)["error"]
    # a host that answered but could not say what it runs (an older release) blocks like one running it
    unknown = {"others": [{"host": "pi", "unknown": True, "units": [], "error": "older release"}]}
    out = json.loads(ctl_run(ROOT, "restart", app, {"checks": unknown}, settings).stdout)
    assert not out["ok"] and out["error"].startswith("pi cannot tell which bot it runs (older release): refused")
    other = dict(unit, bot_id="0" * 12)
    out = ctl_run(ROOT, "restart", app, {"checks": dict(checks, others=[{"host": "pi", "units": [other]}]),
                                         "service": "dashboard"}, settings)
    assert json.loads(out.stdout)["ok"]
    cached = {"others": [{"host": "pi", "cached": True, "seen_at": time.time() - 60, "units": [unit]}]}
    out = json.loads(ctl_run(ROOT, "restart", app, {"checks": cached}, settings).stdout)
    assert not out["ok"] and "pi cannot be reached and was last seen running bot" in out["error"]
    assert "--takeover" in out["error"]
    out = json.loads(ctl_run(ROOT, "restart", app, {"checks": dict(cached, takeover=True)}, settings).stdout)
    try:
        assert out["ok"] and out["notes"][0].startswith("TAKEOVER: pi was last seen running bot %s" % ident(app))
    finally:
        ctl_run(ROOT, "stop", app)


def test_stop_after_a_kill_9_of_the_supervisor_stops_what_it_left(tmp_path, port):
    """`invoke stop` on a host whose supervisor was killed: its bot, dashboard and spare keep running
    ("orphaned" in status) until stop stops them, and says so."""
    app, inventory = setup(tmp_path, port)
    try:
        assert invoke(inventory, "restart").returncode == 0
        before = state(app)
        old_bot, old_dash = before["services"]["bot"]["pid"], before["services"]["dashboard"]["pid"]
        wait_for(lambda: spare_pids(app), 15, "the warm spare")
        spare = spare_pids(app)[0]
        os.kill(before["supervisor"]["pid"], signal.SIGKILL)
        time.sleep(0.3)
        out = invoke(inventory, "stop")
        assert out.returncode == 0, out.stdout + out.stderr
        assert "bot pid %d" % old_bot in out.stdout and "dashboard pid %d" % old_dash in out.stdout, out.stdout
        assert not alive(old_bot) and not alive(old_dash) and not alive(spare) and bots(app) == []
        doc = json.loads(invoke(inventory, "status", "--json").stdout)[0]
        assert {doc["services"][s]["state"] for s in ("bot", "dashboard")} == {"stopped"}, doc
    finally:
        invoke(inventory, "stop")


def spare_pids(app):
    """Live warm spares of this app's dashboard (DASHBOARD_SPARE in their environment)."""
    from remote.host.supervision import orphans

    return [orphan.pid for orphan in orphans.spares(str(app))]


def test_kill_9_of_the_supervisor_status_is_truthful_and_restart_leaves_one_bot_and_never_refuses(tmp_path, port):
    app, inventory = setup(tmp_path, port)
    try:
        assert invoke(inventory, "restart").returncode == 0
        before = state(app)
        old_bot, old_dash = before["services"]["bot"]["pid"], before["services"]["dashboard"]["pid"]
        time.sleep(1.0)  # the spare is up: an orphan too
        os.kill(before["supervisor"]["pid"], signal.SIGKILL)
        time.sleep(0.3)
        doc = json.loads(invoke(inventory, "status", "--json").stdout)[0]
        assert doc["supervisor"]["state"] == "dead" and doc["supervisor"]["last_seen"]
        assert doc["services"]["bot"]["state"] == "orphaned" and doc["services"]["bot"]["pid"] == old_bot
        assert doc["services"]["dashboard"]["state"] == "orphaned"
        assert "dead since" in invoke(inventory, "status").stdout
        stop_file = tmp_path / "stop"
        load = Load(port, stop_file)
        time.sleep(0.3)
        out = invoke(inventory, "restart")
        assert out.returncode == 0, out.stdout + out.stderr
        assert "the last one had died" in out.stdout
        time.sleep(0.5)
        result = load.finish()
        assert result["errors"] == {}, result  # the orphan served until the new dashboard was ready
        wait_for(lambda: bot(app).get("state") == "running", 15, "the new bot")
        assert not alive(old_bot) and not alive(old_dash) and bots(app) == [bot(app)["pid"]]
        log = (app / "logs" / "supervisor.log").read_text()
        assert "orphan bot pid %d stopped" % old_bot in log and "handed its socket over" in log
    finally:
        invoke(inventory, "stop")


def test_restarts_asked_at_once_never_run_two_bots_and_a_launchers_child_goes_with_it(tmp_path, port):
    app, inventory = setup(tmp_path, port)
    launcher = "/bin/sh -c '%s %s; exit 1'" % (sys.executable, EXAMPLE)  # the bot is sh's child, not sh
    inventory.write_text(inventory.read_text().replace("bot_command: '%s %s'" % (sys.executable, EXAMPLE),
                                                       'bot_command: "%s"' % launcher))
    from remote.host.common.files import Layout
    from remote.host.supervision.inbox import ask

    try:
        assert invoke(inventory, "restart").returncode == 0
        first = wait_for(lambda: bots(app), 15, "the bot under its launcher")
        assert len(first) == 1 and first[0] != bot(app)["pid"]  # the launcher is the service's pid
        seen, done = [], threading.Event()

        def sample():
            while not done.is_set():
                seen.append(len(bots(app)))
                time.sleep(0.02)

        sampler = threading.Thread(target=sample)
        sampler.start()
        answers = []
        askers = [threading.Thread(target=lambda: answers.append(ask(Layout(str(app)), "restart", "bot", 30)))
                  for _ in range(3)]  # three clicks of the page's button at once
        for thread in askers:
            thread.start()
        for thread in askers:
            thread.join()
        wait_for(lambda: bot(app).get("state") == "running" and len(bots(app)) == 1, 20, "one bot again")
        time.sleep(1.0)
        done.set()
        sampler.join()
        assert all(a["ok"] for a in answers) and max(seen) == 1, (answers, max(seen))
        assert not alive(first[0])  # the launcher's child was stopped with it
    finally:
        invoke(inventory, "stop")
    assert not bots(app)


def test_an_alert_to_a_webhook_that_never_answers_holds_up_nothing(tmp_path, port):
    """The alert's HTTP call runs as a job off the supervisor's loop: a webhook that accepts and never
    answers costs the watchdog restart nothing, and its failure is logged once its 5 s are up."""
    import socket

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts (the kernel does), never reads nor answers
    url = "http://127.0.0.1:%d/api/webhooks/1/x" % silent.getsockname()[1]
    app, inventory = setup(tmp_path, port, "EXAMPLE_BOT_HANG_AFTER=2\n", watchdog_sec=2, alert_webhook="'%s'" % url)
    try:
        assert invoke(inventory, "restart").returncode == 0
        first = bot(app)
        second = wait_for(lambda: bot(app)["pid"] != first["pid"] and bot(app).get("state") == "running"
                          and bot(app), 20, "a restart by the watchdog")
        assert second["started_at"] - first["started_at"] <= 2 + max(2 + 2, 5) + 1.0  # as with no webhook
        log = lambda: (app / "logs" / "supervisor.log").read_text()  # noqa: E731
        assert "missed its watchdog" in log()
        wait_for(lambda: "alert not delivered" in log(), 20, "the alert's failure in the log")
        assert "timed out" in log().split("alert not delivered")[1].splitlines()[0]
    finally:
        invoke(inventory, "stop")
        silent.close()
