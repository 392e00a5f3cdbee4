"""The supervised stack on this machine (no --host): the same flow, through invoke's Context."""

import json
import os
import sys
import time
from pathlib import Path

import pytest
import requests
from dashproc import ROOT, Load, ctl_run, free_port, invoke, local_inventory


def test_restart_status_stop_locally(tmp_path, port):
    inventory = local_inventory(tmp_path / "inventory.yml", tmp_path / "app", port)
    try:
        out = invoke(inventory, "restart")
        assert out.returncode == 0, out.stdout + out.stderr
        assert out.stdout.startswith("local: dashboard up at http://127.0.0.1:%d (pid " % port)
        assert "[started]" in out.stdout
        first = requests.get("http://127.0.0.1:%d/healthz" % port, timeout=5).json()["pid"]
        out = invoke(inventory, "restart", "--service", "dashboard", "--json")
        doc = json.loads(out.stdout)[0]
        assert doc["action"] == "restarted" and doc["pid"] != first
        status = invoke(inventory, "status")
        assert status.returncode == 0
        supervisor, row = (line.split() for line in status.stdout.splitlines()[1:3])
        assert supervisor[:3] == ["local", "supervisor", "running"]
        assert row[:4] == ["local", "dashboard", "running", str(doc["pid"])] and row[5] == "1"
        page = requests.get("http://127.0.0.1:%d/api/status" % port, timeout=5).json()
        assert page["services"]["services"]["dashboard"]["pid"] == doc["pid"]  # the page's card reads it
        assert page["port"]["how"] == "inherited"
        logs = invoke(inventory, "logs", "--service", "supervisor", "--lines", "3")
        assert logs.returncode == 0 and len(logs.stdout.splitlines()) == 3
        assert "dashboard: pid %d ready" % doc["pid"] in logs.stdout
    finally:
        out = invoke(inventory, "stop")
    assert out.returncode == 0 and "stopped all" in out.stdout
    assert json.loads(invoke(inventory, "port-status", "--json").stdout)[0]["listeners"] == []


def test_the_pages_restart_button_needs_the_token(tmp_path, port):
    inventory = local_inventory(tmp_path / "inventory.yml", tmp_path / "app", port)
    (tmp_path / "app" / "shared").mkdir(parents=True)
    (tmp_path / "app" / "shared" / ".env").write_text("DASHBOARD_TOKEN=page-token\n")
    try:
        assert invoke(inventory, "restart").returncode == 0
        url = "http://127.0.0.1:%d" % port
        first = requests.get(url + "/healthz", timeout=5).json()["pid"]
        assert requests.post(url + "/api/restart/dashboard", timeout=30).status_code == 401
        answer = requests.post(url + "/api/restart/dashboard", headers={"Authorization": "Bearer page-token"},
                               timeout=30)
        assert answer.status_code == 200 and answer.json()["pid"] != first
        deadline = time.monotonic() + 10
        while requests.get(url + "/healthz", timeout=5).json()["pid"] == first and time.monotonic() < deadline:
            time.sleep(0.05)
        assert requests.get(url + "/healthz", timeout=5).json()["pid"] == answer.json()["pid"]
        page = requests.get(url + "/", headers={"Authorization": "Bearer page-token"}, timeout=5).text
        assert 'data-service="dashboard"' in page
    finally:
        invoke(inventory, "stop")


def test_zero_failed_requests_across_five_local_restarts(tmp_path, port):
    inventory = local_inventory(tmp_path / "inventory.yml", tmp_path / "app", port)
    try:
        assert invoke(inventory, "restart").returncode == 0
        stop_file = tmp_path / "stop"
        load = Load(port, stop_file)
        for _ in range(5):
            time.sleep(0.4)
            assert invoke(inventory, "restart", "--service", "dashboard").returncode == 0
        time.sleep(0.4)
        result = load.finish()
        assert result["errors"] == {} and result["rate"] >= 100, result
        assert len(result["pids"]) == 6
    finally:
        invoke(inventory, "stop")


def _state(app_dir):
    return json.loads((app_dir / "run" / "state.json").read_text())


def _armed_spare(app_dir, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = _state(app_dir).get("spare_pid")
        if pid:
            return pid
        time.sleep(0.05)
    raise AssertionError("no spare armed")


def test_a_restart_is_taken_over_by_the_warm_spare(tmp_path, port):
    inventory = local_inventory(tmp_path / "inventory.yml", tmp_path / "app", port)
    try:
        assert invoke(inventory, "restart").returncode == 0
        spare = _armed_spare(tmp_path / "app")
        doc = json.loads(invoke(inventory, "restart", "--service", "dashboard", "--json").stdout)[0]
        assert doc["pid"] == spare  # already imported: no cold start in the restart
        health = requests.get("http://127.0.0.1:%d/healthz" % port, timeout=5).json()
        assert health["pid"] == spare and time.time() - _iso(health["started_at"]) < 5  # started = activation
        assert _armed_spare(tmp_path / "app") != spare  # and a new spare follows
    finally:
        invoke(inventory, "stop")
    assert not any(_alive(pid) for pid in (spare,))


def test_a_spare_with_stale_code_is_never_used(tmp_path, port):
    import shutil

    code = tmp_path / "code"
    for part in ("dashboard", "remote"):
        shutil.copytree(ROOT / part, code / part, ignore=shutil.ignore_patterns("__pycache__"))
    app = tmp_path / "app"
    settings = {"code_dir": str(code), "python": sys.executable, "port": port}
    try:
        assert json.loads(ctl_run(code, "restart", app, settings=settings).stdout)["ok"]
        spare = _armed_spare(app)
        page = code / "dashboard" / "templates" / "index.html"
        os.utime(page, (time.time() + 10, time.time() + 10))  # the code changed after the spare loaded it
        doc = json.loads(ctl_run(code, "restart", app, {"service": "dashboard"}, settings).stdout)
        assert doc["ok"] and doc["pid"] != spare
        deadline = time.monotonic() + 10
        while _alive(spare) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(spare)  # retired, not kept
    finally:
        ctl_run(code, "stop", app)


def _alive(pid):
    try:
        state = Path("/proc/%d/stat" % pid).read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except OSError:
        return False


def _iso(text):
    from datetime import datetime

    return datetime.fromisoformat(text).timestamp()


def test_start_after_a_stop_with_other_settings_says_started(tmp_path, port):
    """Settings that differ from a stopped stack's are no 'supervisor restart': nothing was running."""
    inventory = local_inventory(tmp_path / "inventory.yml", tmp_path / "app", port)
    try:
        assert invoke(inventory, "restart").returncode == 0
        assert invoke(inventory, "stop").returncode == 0
        other = free_port()
        local_inventory(inventory, tmp_path / "app", other)
        doc = json.loads(invoke(inventory, "restart", "--json").stdout)[0]
        assert doc["ok"] and doc["action"] == "started" and doc["port"] == other
        local_inventory(inventory, tmp_path / "app", port)  # and while running: the supervisor is replaced
        doc = json.loads(invoke(inventory, "restart", "--json").stdout)[0]
        assert doc["ok"] and doc["action"] == "restarted the supervisor (port changed)" and doc["port"] == port
    finally:
        invoke(inventory, "stop")


def _environ(pid):
    raw = Path("/proc/%d/environ" % pid).read_bytes()
    return dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)


def test_each_service_gets_only_its_own_secrets(tmp_path, port):
    inventory = local_inventory(tmp_path / "inventory.yml", tmp_path / "app", port)
    text = inventory.read_text().replace("connection: local,", "connection: local, bot_command: 'python3 -c "
                                         "\"import time; time.sleep(600)\"',")
    inventory.write_text(text)
    (tmp_path / "app" / "shared").mkdir(parents=True)
    (tmp_path / "app" / "shared" / ".env").write_text("BOT_TOKEN=the-bots-secret\nDASHBOARD_TOKEN=page-token\n")
    try:
        assert invoke(inventory, "restart").returncode == 0
        services = _state(tmp_path / "app")["services"]
        dashboard, bot = _environ(services["dashboard"]["pid"]), _environ(services["bot"]["pid"])
        assert bot["BOT_TOKEN"] == "the-bots-secret"
        assert "BOT_TOKEN" not in dashboard and dashboard["DASHBOARD_TOKEN"] == "page-token"
        # a new .env (deploy --env-file) reaches the next start without a new supervisor
        (tmp_path / "app" / "shared" / ".env").write_text("BOT_TOKEN=rotated\nDASHBOARD_TOKEN=page-token\n")
        doc = json.loads(invoke(inventory, "restart", "--json").stdout)[0]
        assert doc["action"] == "restarted"
        assert _environ(_state(tmp_path / "app")["services"]["bot"]["pid"])["BOT_TOKEN"] == "rotated"
    finally:
        invoke(inventory, "stop")


def test_a_release_whose_venv_is_gone_is_named_in_one_line_at_once(tmp_path, port):
    """A cut deploy or a Python upgrade left current/.venv pointing nowhere: say so, start nothing."""
    import shutil

    app = tmp_path / "app"
    release = app / "releases" / "20260101000000"
    for part in ("dashboard", "remote"):
        shutil.copytree(ROOT / part, release / part, ignore=shutil.ignore_patterns("__pycache__"))
    (release / ".venv").symlink_to("../../venvs/0123456789abcdef")  # removed
    (app / "current").symlink_to(release)
    inventory = local_inventory(tmp_path / "inventory.yml", app, port)
    out = invoke(inventory, "restart")
    assert out.returncode == 1
    assert out.stdout.strip() == ("local: FAILED: the dashboard's interpreter %s/current/.venv/bin/python cannot run "
                                  "(No such file or directory): its venv is gone; run invoke deploy --host local"
                                  % app)
    assert not (app / "run" / "supervisor.pid").exists() and not (app / "logs" / "dashboard.log").exists()


def test_state_settings_and_commands_stay_private_under_a_loose_umask(tmp_path, port):
    app = tmp_path / "app"
    settings = {"code_dir": str(ROOT), "python": sys.executable, "port": port, "alert_webhook": "http://127.0.0.1:9/x"}
    try:
        out = ctl_run(ROOT, "restart", app, settings=settings, preexec_fn=lambda: os.umask(0o002))
        assert json.loads(out.stdout)["ok"], out.stdout + out.stderr
        for folder in ("run", "run/commands", "logs"):
            assert (app / folder).stat().st_mode & 0o777 == 0o700, folder
        for private in ("run/supervisor.json", "run/state.json", "logs/dashboard.log", "logs/supervisor.log"):
            assert (app / private).stat().st_mode & 0o077 == 0, private
    finally:
        ctl_run(ROOT, "stop", app)


def test_private_files_never_follow_a_planted_symlink(tmp_path):
    from remote.host.common.files import create_private

    victim = tmp_path / "victim"
    victim.write_text("keep me")
    (tmp_path / "planted").symlink_to(victim)
    with pytest.raises(FileExistsError):
        create_private(str(tmp_path / "planted"))
    assert victim.read_text() == "keep me"


def test_a_supervisor_of_an_older_release_is_replaced_by_the_next_restart(tmp_path, port):
    """Deploys hand the dashboard over and leave the supervisor running: one from before a fix must go."""
    import shutil

    code, app = tmp_path / "code", tmp_path / "app"
    for part in ("dashboard", "remote"):
        shutil.copytree(ROOT / part, code / part, ignore=shutil.ignore_patterns("__pycache__"))
    module = code / "remote" / "host" / "supervision" / "loop.py"
    current = module.read_text()
    module.write_text(current.replace("\nVERSION = ", "\nVERSION = -1 + "))  # an older supervisor
    settings = {"code_dir": str(code), "python": sys.executable, "port": port}
    try:
        assert json.loads(ctl_run(code, "restart", app, settings=settings).stdout)["ok"]
        old = _state(app)["supervisor"]["pid"]
        module.write_text(current)  # the new release is deployed into the code dir
        doc = json.loads(ctl_run(code, "restart", app, settings=settings).stdout)
        assert doc["ok"] and doc["action"] == "restarted the supervisor (supervisor code changed)"
        assert _state(app)["supervisor"]["pid"] != old
        doc = json.loads(ctl_run(code, "restart", app, {"service": "dashboard"}, settings).stdout)
        assert doc["action"] == "restarted"  # and from then on, handovers again
    finally:
        ctl_run(code, "stop", app)
