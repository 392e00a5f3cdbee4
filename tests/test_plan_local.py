"""`invoke deploy` and `--plan` on this machine (connection: local): one venv for every deploy, the
space check on a real small filesystem, and .env key names only."""

import json
import os
import subprocess

import pytest
from dashproc import invoke, local_inventory, tmpfs


@pytest.fixture
def small_disk(tmp_path):
    """A 16 MB tmpfs: less than any release needs with room for a venv."""
    with tmpfs(tmp_path / "small", "16m") as where:
        yield where


def test_a_host_without_room_cannot_be_planned_and_is_told_why(tmp_path, small_disk):
    inventory = tmp_path / "inventory.yml"
    inventory.write_text("hosts:\n  local: {connection: local, app_dir: %s, dashboard_port: 5099}\n"
                         % (small_disk / "app"))
    out = invoke(inventory, "deploy", "--plan", "--host", "local")
    assert out.returncode == 1, out.stdout + out.stderr
    assert "local: running nothing yet (first deploy)" in out.stdout
    assert "MB free in %s, about" % small_disk in out.stdout and ": NOT ENOUGH" in out.stdout
    assert "local: FAILED: not enough disk space in %s/app" % small_disk in out.stdout
    assert os.listdir(small_disk) == []  # planned, and nothing written: not even app_dir


def test_only_variable_names_count_as_env_keys_never_a_piece_of_a_value(tmp_path):
    """A line of a multi-line value (a PEM key) or a typo has an = in it too: taken for a key, most of
    a secret would be shown as its "name"."""
    app = tmp_path / "app"
    (app / "shared").mkdir(parents=True)
    (app / "shared" / ".env").write_text('TOKEN=abc\nCERT="-----BEGIN KEY-----\nMIIEsecretpart==\n-----END KEY-----"\n'
                                          "SECRET abcd==\nexport OLD=1\n")
    new = tmp_path / "new.env"
    new.write_text("TOKEN=abd\nNEW=1\n")
    inventory = tmp_path / "inventory.yml"
    inventory.write_text("hosts:\n  local: {connection: local, app_dir: %s, dashboard_port: 5099}\n" % app)
    out = invoke(inventory, "deploy", "--plan", "--host", "local", "--json", "--env-file", str(new))
    env = json.loads(out.stdout)[0]["env"]
    assert env == {"added": ["NEW"], "changed": ["TOKEN"], "removed": ["CERT", "OLD"]}
    assert "secretpart" not in out.stdout and "abcd" not in out.stdout


def bot_source(where):
    """A bot's source that holds what must never ship: a token file, a key, a git-ignored file."""
    where.mkdir()
    (where / "requirements.txt").write_text("")
    (where / "bot.py").write_text("print('bot')\n")
    (where / ".gitignore").write_text("notes.txt\n")
    for name in ("bot.env", "key.pem", "notes.txt"):
        (where / name).write_text("TOKEN=never-sent\n")
    subprocess.run(["git", "init", "-q", str(where)], check=True)
    return where


def with_source(inventory, source):
    inventory.write_text(inventory.read_text().replace("connection: local,", "connection: local, source: %s," % source))
    return inventory


def test_the_plan_and_the_deploy_name_what_they_leave_out(tmp_path, small_disk):
    """The deploy packs, says what it left out, then stops at the space check: nothing written."""
    inventory = tmp_path / "inventory.yml"
    inventory.write_text("hosts:\n  local: {connection: local, app_dir: %s, dashboard_port: 5099}\n"
                         % (small_disk / "app"))
    with_source(inventory, bot_source(tmp_path / "bot"))
    said = "skipped 3 files that may hold secrets: bot.env, key.pem, notes.txt"
    plan = invoke(inventory, "deploy", "--plan", "--host", "local")
    assert "\n    %s\n" % said in plan.stdout, plan.stdout + plan.stderr
    docs = json.loads(invoke(inventory, "deploy", "--plan", "--host", "local", "--json").stdout)
    assert docs[0]["shipping"]["not_shipped"] == ["bot.env", "key.pem", "notes.txt"]
    deploy = invoke(inventory, "deploy", "--host", "local")
    assert deploy.returncode == 1 and deploy.stdout.startswith("packing: "), deploy.stdout + deploy.stderr
    assert deploy.stdout.splitlines()[1] == said and "never-sent" not in plan.stdout + deploy.stdout
    assert os.listdir(small_disk) == []


def test_a_local_hosts_deploys_share_one_venv_and_the_plan_says_so(tmp_path, port):
    """The first deploy of a local host has no release to run its ctl from: it must still use the
    inventory's interpreter (not this checkout's), or the second deploy builds a second venv. What may
    hold a secret never reaches the release, and what reaches it is the user's alone."""
    inventory = with_source(local_inventory(tmp_path / "inventory.yml", tmp_path / "app", port),
                            bot_source(tmp_path / "bot"))
    try:
        first = invoke(inventory, "deploy", "--host", "local", timeout=900)
        assert first.returncode == 0, first.stdout + first.stderr
        assert "skipped 3 files that may hold secrets: bot.env, key.pem, notes.txt\n" in first.stdout
        current = tmp_path / "app" / "current"
        assert (current / "bot.py").is_file() and not [n for n in ("bot.env", "key.pem", "notes.txt")
                                                       if os.path.lexists(current / n)]
        loose = [str(p) for p in current.resolve().rglob("*") if not p.is_symlink() and p.stat().st_mode & 0o077
                 and "__pycache__" not in p.parts]  # caches come later, from imports, inside the 700 release
        assert loose == [] and current.resolve().stat().st_mode & 0o777 == 0o700
        plan = invoke(inventory, "deploy", "--plan", "--host", "local", "--json")
        assert json.loads(plan.stdout)[0]["venv"]["reused"] is True, plan.stdout
        second = invoke(inventory, "deploy", "--host", "local", timeout=900)
        assert second.returncode == 0 and "reused venv" in second.stdout, second.stdout + second.stderr
        assert len(os.listdir(tmp_path / "app" / "venvs")) == 1
    finally:
        invoke(inventory, "stop", "--host", "local")
