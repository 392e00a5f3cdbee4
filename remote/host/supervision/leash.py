"""The bot on a leash: with an etcd lease, the bot runs under this small process, which stops it when
the lease's renewals stop, whatever became of the supervisor.

The supervisor stops its bot when it cannot renew; but a supervisor that is killed (the OOM killer,
Android's phantom process killer) or frozen alone renews nothing and stops nothing, and its bot would
run on beside the one another host starts once the lease expires. So the election writes
run/lease-deadline (a CLOCK_BOOTTIME reading: the last renewal sent + lease_ttl/2) at every renewal,
and this process, the bot's parent, reads it every 0.2 s: past it (or gone) the bot gets TERM, then
KILL 1 s later with the rest of its process group, and this process exits.

It is started as ``python -S -m remote.host.supervision.leash DEADLINE_FILE`` with the bot's argv as
JSON in SULFUR_LEASH_ARGV (not on its own command line: what counts a host's bots by their command
line must not count this one), which it removes from the bot's environment. TERM, INT and HUP are
passed on to the bot; its exit code is this process's.
"""

import json
import os
import signal
import subprocess
import sys
import time

from remote.host.supervision.election import boottime, deadline

POLL = 0.2
KILL_AFTER = 1.0
ARGV_VARIABLE = "SULFUR_LEASH_ARGV"


def _stop(child, why):
    print("leash: %s: stopping the bot (pid %d)" % (why, child.pid), file=sys.stderr, flush=True)
    try:
        child.terminate()
    except OSError:
        pass
    end = time.monotonic() + KILL_AFTER
    while child.poll() is None and time.monotonic() < end:
        time.sleep(0.02)
    if os.getpgrp() == os.getpid():  # the leader of the bot's group: its helpers go too, and so does this
        os.killpg(os.getpid(), signal.SIGKILL)
    child.kill()


def main(argv):
    path = argv[0]
    try:
        command = json.loads(os.environ.pop(ARGV_VARIABLE))
    except (KeyError, ValueError):
        print("leash: no %s: nothing to run" % ARGV_VARIABLE, file=sys.stderr)
        return 2
    child = subprocess.Popen(command, stdin=subprocess.DEVNULL)
    for signo in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signo, lambda number, frame: child.send_signal(number))
    while child.poll() is None:
        due = deadline(path)
        if due is None or boottime() > due:
            _stop(child, "no lease renewal on record" if due is None else
                  "the lease's last renewal is %.1f s past its deadline" % (boottime() - due))
            return 1
        time.sleep(POLL)
    if child.returncode < 0:  # killed by a signal: so is this process, so that its supervisor sees the same
        signal.signal(-child.returncode, signal.SIG_DFL)
        os.kill(os.getpid(), -child.returncode)
    return child.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
