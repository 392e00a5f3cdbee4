"""The example discord.py bot (examples/bot) deployed to the linux and termux test hosts with --wheels,
with a fake token and no route to Discord: it cannot log in, so it is not healthy. The deploy fails
(and, over a good release, rolls back to it), the bot's last error line is in the deploy's output and
in `invoke logs` afterwards (also after a first deploy that leaves no release), and the token is in
none of it, nor in any file under the host's logs/ and run/."""

import os
from pathlib import Path

import pytest
import sshlab
from dashproc import ROOT, invoke

pytestmark = pytest.mark.skipif(sshlab.available() is not None, reason=str(sshlab.available()))
BOT = {"source": ROOT / "examples" / "bot", "bot_command": "python bot.py", "shared_paths": "[data]",
       "bot_notify": "true", "bot_ready_timeout": "40s"}


@pytest.fixture(scope="module")
def lab():
    with sshlab.lab_with("linux", "termux") as lab:
        text = lab.inventory_path.read_text()
        lab.inventory_path.write_text(text.replace("hosts:\n", "".join(
            "  %s: %s\n" % item for item in BOT.items()) + "hosts:\n", 1))
        yield lab


def token_for(name):
    """A token shaped like Discord's (three dot-separated parts), fake, one per host: one bot each."""
    return "MTE%s0NTY3ODkwMTIzNDU2Nzg.Gx%s.fake-token-for-the-tests-%s-0123456789" % (len(name), name, name)


def last_line(host):
    lines = [ln for ln in Path(host.app_dir, "logs", "bot.log").read_text().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def files_under(host, *parts):
    for part in parts:
        for path in Path(host.app_dir, part).rglob("*"):
            if path.is_file():
                yield path


def assert_nowhere(host, token, *outputs):
    for out in outputs:
        assert token not in out
    leaked = [str(p) for p in files_under(host, "logs", "run") if token.encode() in p.read_bytes()]
    assert leaked == []


@pytest.mark.parametrize("name", ["linux", "termux"])
def test_a_bot_that_cannot_log_in_fails_the_deploy_visibly_and_keeps_its_token_secret(lab, name, tmp_path):
    host, token = lab.hosts[name], token_for(name)
    env = tmp_path / "bot.env"
    env.write_text("BOT_TOKEN=%s\n" % token)
    first = invoke(lab.inventory_path, "deploy", "--wheels", "--host", name, "--env-file", str(env))
    said = first.stdout + first.stderr
    assert first.returncode == 1, said
    assert not os.path.lexists(Path(host.app_dir, "current"))  # a first deploy that failed leaves no release
    error = last_line(host)
    assert error and error in said, (error, said)  # why the bot failed: its last line, in the deploy's output
    logs = invoke(lab.inventory_path, "logs", "--service", "bot", "--host", name)
    assert logs.returncode == 0 and error in logs.stdout, logs.stdout + logs.stderr
    assert_nowhere(host, token, said, logs.stdout, logs.stderr)

    # a good release (the demo mode, no login), then the same token without it: back to the good one
    env.write_text("BOT_TOKEN=%s\nEXAMPLE_BOT_DEMO=1\n" % token)
    good = invoke(lab.inventory_path, "deploy", "--wheels", "--host", name, "--env-file", str(env))
    assert good.returncode == 0, good.stdout + good.stderr
    release = Path(host.app_dir, "current").resolve()
    env.write_text("BOT_TOKEN=%s\n" % token)
    bad = invoke(lab.inventory_path, "deploy", "--wheels", "--host", name, "--env-file", str(env))
    said = bad.stdout + bad.stderr
    assert bad.returncode == 1 and "rolled back" in said, said
    assert Path(host.app_dir, "current").resolve() == release
    error = [ln for ln in Path(host.app_dir, "logs", "bot.log").read_text().splitlines() if "Error" in ln]
    assert error and error[-1] in said, said
    status = invoke(lab.inventory_path, "status", "--host", name, "--json")
    assert status.returncode == 0 and '"running": true' in status.stdout.replace(": True", ": true"), status.stdout
    assert_nowhere(host, token, said, status.stdout)
