"""The example bot's own parts that need no Discord: when the gateway counts as alive (the WATCHDOG=1
signal, since discord.py has no public heartbeat hook), and the /count counter kept in SQLite under
data/ across processes."""

import importlib.util
import subprocess
import sys

from dashproc import ROOT

spec = importlib.util.spec_from_file_location("example_bot", ROOT / "examples" / "bot" / "bot.py")
bot = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bot)


def test_the_gateway_is_alive_only_while_its_latency_is_measured_anew():
    now = [1000.0]
    gateway = bot.Gateway(clock=lambda: now[0])
    gateway.observe(float("nan"))  # discord.py's latency before a first heartbeat
    assert not gateway.alive()
    gateway.observe(0.042)
    assert gateway.alive()
    now[0] += bot.GATEWAY_SILENCE - 1
    gateway.observe(0.042)  # the same value again: no heartbeat was acknowledged since
    assert gateway.alive()
    now[0] += 2
    gateway.observe(0.042)
    assert not gateway.alive()  # silent for longer than two heartbeats: no more WATCHDOG=1
    gateway.observe(float("inf"))
    assert not gateway.alive()
    gateway.observe(0.051)  # acknowledged again
    assert gateway.alive()


def test_count_is_kept_in_sqlite_under_data_across_processes(tmp_path):
    path = str(tmp_path / "data" / "count.sqlite")
    assert [bot.bump(path), bot.bump(path)] == [1, 2]
    code = ("import importlib.util as u, sys; s = u.spec_from_file_location('b', sys.argv[1]); "
            "m = u.module_from_spec(s); s.loader.exec_module(m); print(m.bump(sys.argv[2]))")
    out = subprocess.run([sys.executable, "-c", code, str(ROOT / "examples" / "bot" / "bot.py"), path],
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "3", out.stderr
    assert bot.bump(path, "other") == 1 and bot.bump(path) == 4
