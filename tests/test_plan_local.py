"""`invoke deploy --plan` on this machine (connection: local): the space check, on a real small filesystem."""

import os
import subprocess

import pytest
from dashproc import invoke


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
