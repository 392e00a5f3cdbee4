"""`invoke deploy` and `--plan` on this machine (connection: local): one venv for every deploy, the
space check on a real small filesystem, and .env key names only."""

import json
import os
import subprocess

import pytest
from dashproc import invoke, local_inventory


@pytest.fixture
def small_disk(tmp_path):
    """A 16 MB tmpfs: less than any release needs with room for a venv."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    where = tmp_path / "small"
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(where)], check=True)
    yield where
    subprocess.run(["umount", "-l", str(where)], check=False)


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


def test_a_local_hosts_deploys_share_one_venv_and_the_plan_says_so(tmp_path, port):
    """The first deploy of a local host has no release to run its ctl from: it must still use the
    inventory's interpreter (not this checkout's), or the second deploy builds a second venv."""
    inventory = local_inventory(tmp_path / "inventory.yml", tmp_path / "app", port)
    try:
        first = invoke(inventory, "deploy", "--host", "local", timeout=900)
        assert first.returncode == 0, first.stdout + first.stderr
        plan = invoke(inventory, "deploy", "--plan", "--host", "local", "--json")
        assert json.loads(plan.stdout)[0]["venv"]["reused"] is True, plan.stdout
        second = invoke(inventory, "deploy", "--host", "local", timeout=900)
        assert second.returncode == 0 and "reused venv" in second.stdout, second.stdout + second.stderr
        assert len(os.listdir(tmp_path / "app" / "venvs")) == 1
    finally:
        invoke(inventory, "stop", "--host", "local")
