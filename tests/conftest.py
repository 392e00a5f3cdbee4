import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from dashproc import Dashboard, free_port  # noqa: E402


@pytest.fixture
def dashboards(tmp_path):
    """Factory of dashboard processes; every one is stopped when the test ends."""
    started = []

    def start(port=None, **kwargs):
        board = Dashboard(tmp_path / "app", port or free_port(), **kwargs)
        started.append(board)
        return board

    yield start
    for board in started:
        board.stop()


@pytest.fixture
def port():
    return free_port()
