"""`invoke env`, `env-set` and `env-unset` on this machine with a real stack (the same host-side code
every host runs): names listed never values, values read from stdin (never argv), the file private
and its previous copies kept (five), only the services that see a change restarted, and the one
environment rule: the bot and hooks never see DASHBOARD_* or ETCD_* keys."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from dashproc import ROOT, invoke, local_inventory, wait_for

EXAMPLE = ROOT / "examples" / "bot" / "bot.py"


def setup(tmp_path, port):
    app = tmp_path / "app"
    (app / "shared").mkdir(parents=True)
    (app / "shared" / ".env").write_text("# the bot's settings\nBOT_TOKEN=env-tests-%s\nEXAMPLE_BOT_DEMO=1\n"
                                         "DASHBOARD_TOKEN=dash-secret-%s\nETCD_PASSWORD=etcd-secret\n"
                                         % (tmp_path.name, tmp_path.name))
    inventory = local_inventory(tmp_path / "inventory.yml", app, port)
    inventory.write_text(inventory.read_text().replace(
        "connection: local,", "connection: local, bot_command: '%s %s'," % (sys.executable, EXAMPLE)))
    return app, inventory


def env_set(inventory, *args, stdin=""):
    env = dict(os.environ, SULFUR_INVENTORY=str(inventory), XDG_CACHE_HOME=str(Path(inventory).parent / "cache"))
    return subprocess.run([sys.executable, "-m", "invoke", "env-set", *args], cwd=ROOT, env=env, input=stdin,
                          capture_output=True, text=True, timeout=120)


def pids(app):
    state = json.loads((app / "run" / "state.json").read_text())["services"]
    return state["dashboard"].get("pid"), state["bot"].get("pid")


def environ(pid):
    raw = Path("/proc/%d/environ" % pid).read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def test_env_lists_names_only_and_the_bot_sees_neither_dashboard_nor_etcd_keys(tmp_path, port):
    app, inventory = setup(tmp_path, port)
    try:
        assert invoke(inventory, "restart").returncode == 0
        dash, bot = wait_for(lambda: all(pids(app)) and pids(app), 30, "both services")
        out = invoke(inventory, "env")
        assert out.returncode == 0, out.stdout + out.stderr
        lines = {tuple(line.split()) for line in out.stdout.splitlines()[1:]}
        assert ("local", "BOT_TOKEN", "bot") in lines and ("local", "DASHBOARD_TOKEN", "dashboard") in lines
        assert ("local", "ETCD_PASSWORD", "supervisor") in lines
        assert "secret" not in out.stdout and "env-tests" not in out.stdout
        seen = environ(bot)
        assert seen["BOT_TOKEN"].startswith("env-tests-") and "DASHBOARD_TOKEN" not in seen
        assert "ETCD_PASSWORD" not in seen
        dash_env = environ(dash)
        assert dash_env["DASHBOARD_TOKEN"].startswith("dash-secret") and "BOT_TOKEN" not in dash_env
    finally:
        invoke(inventory, "stop")


def test_env_set_reads_values_from_stdin_keeps_the_file_before_and_restarts_only_what_sees_it(tmp_path, port):
    app, inventory = setup(tmp_path, port)
    try:
        assert invoke(inventory, "restart").returncode == 0
        dash, bot = wait_for(lambda: all(pids(app)) and pids(app), 30, "both services")
        refused = env_set(inventory, "--key", "PREFIX=!")
        assert refused.returncode == 2 and "never from the command line" in refused.stderr, refused.stderr
        out = env_set(inventory, "--key", "PREFIX", "--key", "GREETING", stdin="!\nhello there # not a comment\n")
        assert out.returncode == 0, out.stdout + out.stderr
        assert "local: changed GREETING, PREFIX (the file before kept as shared/.env.before-env-" in out.stdout
        assert "local: restarted bot" in out.stdout and "hello" not in out.stdout
        new_bot = wait_for(lambda: pids(app)[1] != bot and pids(app)[1], 30, "the bot restarted")
        assert pids(app)[0] == dash  # the dashboard sees no change: left alone
        seen = environ(new_bot)
        assert seen["PREFIX"] == "!" and seen["GREETING"] == "hello there # not a comment"
        text = (app / "shared" / ".env").read_text()
        assert text.startswith("# the bot's settings\n") and os.stat(app / "shared" / ".env").st_mode & 0o777 == 0o600
        out = env_set(inventory, "--key", "DASHBOARD_TITLE", stdin="My bot\n")
        assert "local: restarted dashboard" in out.stdout, out.stdout + out.stderr
        wait_for(lambda: pids(app)[0] != dash, 30, "the dashboard restarted")
        assert pids(app)[1] == new_bot  # the bot sees no change
        out = env_set(inventory, "--key", "TLS_KEY", "--multiline", "--no-restart",
                      stdin="-----BEGIN KEY-----\nabc\n-----END KEY-----\n")
        assert "--no-restart: bot keep the old values" in out.stdout, out.stdout + out.stderr
        assert pids(app)[1] == new_bot
        from remote.host.common.files import read_env_file

        assert read_env_file(app / "shared" / ".env")["TLS_KEY"] == "-----BEGIN KEY-----\nabc\n-----END KEY-----"
        for n in range(4):
            env_set(inventory, "--key", "COUNTER", "--no-restart", stdin="%d\n" % n)
            time.sleep(0.01)
        copies = sorted(p.name for p in (app / "shared").glob(".env.before-env-*"))
        assert len(copies) == 5 and all(oct((app / "shared" / c).stat().st_mode & 0o777) == "0o600" for c in copies)
        out = invoke(inventory, "env-unset", "--key", "COUNTER", "--no-restart")
        assert out.returncode == 0 and "local: changed COUNTER" in out.stdout
        assert "COUNTER" not in read_env_file(app / "shared" / ".env")
        out = env_set(inventory, "--key", "A", "--key", "B", stdin="only one line\n")
        assert out.returncode == 2 and "stdin ended before the value of B" in out.stderr
        out = env_set(inventory, "--key", "9BAD", stdin="x\n")
        assert out.returncode == 2 and "is not a variable name" in out.stderr
    finally:
        invoke(inventory, "stop")


def test_log_lines_that_leave_the_host_show_env_secrets_as_their_key(tmp_path):
    """A bot that prints its token (or a traceback that quotes it): the failure's lines, and `invoke logs`,
    show [BOT_TOKEN]; short values (a port, 1) are settings and stay."""
    from remote.host.common.files import Layout, error_tail, log_lines

    paths = Layout(str(tmp_path / "app"))
    os.makedirs(paths.shared)
    os.makedirs(paths.logs)
    Path(paths.shared, ".env").write_text("BOT_TOKEN=MTE.secret-token.xyz\nWEBHOOK=https://hooks.example/abc\n"
                                          "PORT=5000\n")
    Path(paths.log("bot")).write_text("port 5000 up\nError: login with MTE.secret-token.xyz failed\n"
                                      "posting to https://hooks.example/abc\n")
    assert error_tail(paths.log("bot")) == ["Error: login with [BOT_TOKEN] failed"]
    assert log_lines(paths, "bot", 5) == ["port 5000 up", "Error: login with [BOT_TOKEN] failed",
                                          "posting to [WEBHOOK]"]


def test_a_follow_redacts_keys_set_after_it_began_and_each_line_of_a_multi_line_value(tmp_path):
    from remote.host.common.files import FreshRedactor, Layout

    paths = Layout(str(tmp_path / "app"))
    os.makedirs(paths.shared)
    env = Path(paths.shared, ".env")
    env.write_text("BOT_TOKEN=first-token-value\n")
    redact = FreshRedactor(paths)
    assert redact(["using first-token-value", "a-later-secret"]) == ["using [BOT_TOKEN]", "a-later-secret"]
    env.write_text('BOT_TOKEN=first-token-value\nAPI_KEY=a-later-secret\nPEM="-----BEGIN KEY-----\n'
                   'MIIBVQIBADANBgkqhkiG9w0BAQEFAASCAT8wggE7AgEAAkEA\n-----END KEY-----"\n')
    assert redact(["a-later-secret", "  MIIBVQIBADANBgkqhkiG9w0BAQEFAASCAT8wggE7AgEAAkEA"]) == [
        "[API_KEY]", "  [PEM]"]
