"""A bot that floods its log (300 MB at about 20 MB/s, an SD card's speed) under a real supervisor:
bot.log never grows past twice its cap, sampled every 0.1 s; the supervisor's memory stays small (its
rotation copies in blocks); and the bot still outlives a supervisor killed with -9, since it writes
to the file itself, not through a pipe the supervisor holds."""

import os
import signal
import sys
import time
from pathlib import Path

from dashproc import alive, invoke, local_inventory, wait_for

from remote.host.common.files import LOG_CAP

FLOOD = ("import sys, time\n"
         "line = b'x' * 1023 + b'\\n'\n"
         "block = line * 1024\n"                      # 1 MiB
         "for i in range(300):\n"
         "    sys.stdout.buffer.write(block)\n"
         "    sys.stdout.buffer.flush()\n"
         "    time.sleep(0.05)\n"                      # about 20 MB/s
         "open(sys.argv[1], 'w').close()\n"           # the whole flood is written
         "time.sleep(600)\n")


def status_kb(pid, field):
    for line in Path("/proc/%d/status" % pid).read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(field)


def test_a_flooding_bot_never_makes_its_log_larger_than_twice_the_cap(tmp_path, port):
    app = tmp_path / "app"
    (app / "shared").mkdir(parents=True)
    flood = tmp_path / "flood.py"
    flood.write_text(FLOOD)
    inventory = local_inventory(tmp_path / "inventory.yml", app, port)
    inventory.write_text(inventory.read_text().replace(
        "connection: local,", "connection: local, bot_command: '%s %s %s'," % (
            sys.executable, flood, tmp_path / "done")))
    log = app / "logs" / "bot.log"
    try:
        assert invoke(inventory, "restart").returncode == 0
        supervisor = int((app / "run" / "supervisor.pid").read_text().split()[0])
        largest, samples, deadline = 0, 0, time.monotonic() + 120
        while not (tmp_path / "done").exists() and time.monotonic() < deadline:
            largest = max(largest, log.stat().st_size if log.exists() else 0)
            samples += 1
            time.sleep(0.1)
        assert (tmp_path / "done").exists(), "the bot did not write its 300 MB in time"
        assert samples > 50 and (app / "logs" / "bot.log.1").stat().st_size >= LOG_CAP  # it was rotated
        assert largest <= 2 * LOG_CAP, "bot.log reached %.1f MB (cap %.1f MB)" % (largest / 1e6, LOG_CAP / 1e6)
        peak = status_kb(supervisor, "VmHWM") / 1024
        assert peak < 50, "the supervisor's peak RSS was %.1f MB" % peak
        bot = int((app / "run" / "bot.pid").read_text().split()[0])
        os.kill(supervisor, signal.SIGKILL)  # the orphan case: the bot writes on, to its file
        wait_for(lambda: not alive(supervisor), 10, "the supervisor gone")
        time.sleep(1.0)
        assert alive(bot)
        # a new supervisor stops the orphaned bot and takes the orphaned dashboard over
        assert invoke(inventory, "restart").returncode == 0
        wait_for(lambda: not alive(bot), 20, "the orphaned bot stopped")
    finally:
        invoke(inventory, "stop")
