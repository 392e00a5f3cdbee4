"""This sulfur-ops against a host that runs the release from before protocol ranges (commit f76ca61),
checked out from git: every command that release knows still works, a command it does not know is
"unknown" for that command alone and names the deploy that fixes it.

The old release runs for real on this machine (connection: local): its own ctl, its own supervisor,
a dashboard and a bot; what changes is only the operator talking to it.
"""

import json
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
from dashproc import ROOT, invoke, wait_for

from remote import ctlcalls
from remote.connections import LocalRunner
from remote.errors import UnknownCommand
from remote.inventory import load

PINNED = "f76ca61"  # the last release before protocol ranges: it speaks protocol 1 alone
STAMP = "20261201000000"


@pytest.fixture(scope="module")
def old_release(tmp_path_factory):
    """A host whose current release is the pinned commit's code, exactly as git has it."""
    have = subprocess.run(["git", "cat-file", "-e", PINNED + "^{commit}"], cwd=ROOT, capture_output=True)
    if have.returncode != 0:
        pytest.skip("commit %s is not in this clone (a shallow clone?): `git fetch --unshallow` to run this" % PINNED)
    app = tmp_path_factory.mktemp("old") / "app"
    target = app / "releases" / STAMP
    target.mkdir(parents=True)
    archive = app / "old.tar"
    subprocess.run(["git", "archive", "-o", str(archive), PINNED, "remote", "dashboard"], cwd=ROOT, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(target, filter="data") if hasattr(tarfile, "data_filter") else tar.extractall(target)
    archive.unlink()
    (app / "current").symlink_to(target)
    (app / "shared").mkdir()
    (app / "shared" / ".env").write_text("BOT_TOKEN=older-release-test-%s\n" % app)
    return app


def inventory(tmp_path, app, port):
    path = tmp_path / "inventory.yml"
    bot = "%s -c 'import time; time.sleep(600)'" % sys.executable
    path.write_text("hosts:\n  local: {connection: local, app_dir: %s, dashboard_port: %d, python: %s, "
                    "bot_command: \"%s\"}\n" % (app, port, sys.executable, bot))
    return path


def state(app):
    return json.loads((app / "run" / "state.json").read_text())


def test_the_older_release_serves_every_command_it_knows_and_refuses_one_it_does_not(old_release, tmp_path, port):
    path = inventory(tmp_path, old_release, port)
    try:
        out = invoke(path, "restart")
        assert out.returncode == 0, out.stdout + out.stderr
        assert Path(state(old_release)["supervisor"]["code_dir"]).resolve().name == STAMP  # the old code runs
        bot = wait_for(lambda: state(old_release)["services"]["bot"].get("pid"), 20, "the old release's bot")
        out = invoke(path, "status")
        assert out.returncode == 0 and "running" in out.stdout, out.stdout + out.stderr
        host = load(path).select()[0]
        with pytest.raises(UnknownCommand) as caught:  # a command of protocol 2: this release has none
            ctlcalls.call_ctl(LocalRunner(), host, "ping")
        assert str(caught.value) == ("local runs an older release, which has no `ping`: "
                                     "run `invoke deploy --host local` first")
        out = invoke(path, "stop", "--service", "bot")  # an old host can still be told to stop its bot
        assert out.returncode == 0, out.stdout + out.stderr
        wait_for(lambda: state(old_release)["services"]["bot"]["state"] == "stopped", 20, "the bot stopped")
        assert not Path("/proc/%d" % bot).exists() or "Z" in Path("/proc/%d/stat" % bot).read_text().split(") ")[1][:1]
    finally:
        invoke(path, "stop")
        deadline = time.monotonic() + 20
        while (old_release / "run" / "supervisor.pid").exists() and time.monotonic() < deadline:
            time.sleep(0.1)


def test_a_host_on_the_older_release_running_a_stale_bot_is_stood_down_by_its_role(old_release, tmp_path, port):
    """That release keeps no epoch (it reads as 0): when this machine knows a higher one held by
    another host, the first state-changing task stands it down through the command it knows (role)."""
    import hashlib

    from remote.botguard import cache_path

    path = inventory(tmp_path, old_release, port)
    path.write_text(path.read_text() + "  phone: {hostname: 192.0.2.1, connect_timeout: 1}\n")  # unreachable
    bot_id = hashlib.sha256(("older-release-test-%s" % old_release).encode()).hexdigest()[:12]
    try:
        assert invoke(path, "restart", "--host", "local", "--takeover").returncode == 0
        bot = wait_for(lambda: state(old_release)["services"]["bot"].get("pid"), 20, "the old release's bot")
        memory = tmp_path / "cache" / "sulfur-ops" / cache_path(path, "epochs").name
        memory.parent.mkdir(parents=True, exist_ok=True)
        memory.write_text(json.dumps({bot_id: {"epoch": 3, "bot_id": bot_id, "active_host": "phone",
                                               "since": time.time(), "by": "test"}}))
        out = invoke(path, "stop", "--service", "dashboard", "--host", "local")
        assert "local: fenced: epoch 3 belongs to phone since " in out.stderr, out.stdout + out.stderr
        assert "an older release: role standby" in out.stderr
        wait_for(lambda: not Path("/proc/%d" % bot).exists()
                 or "Z" in Path("/proc/%d/stat" % bot).read_text().split(") ")[1][:1], 20, "the stale bot stopped")
        assert (old_release / "run" / "bot-role").read_text().strip() == "standby"
    finally:
        invoke(path, "stop", "--host", "local")
        deadline = time.monotonic() + 20
        while (old_release / "run" / "supervisor.pid").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        (old_release / "run" / "bot-role").unlink(missing_ok=True)
