"""`python -m dashboard`: get the listening socket, serve, say READY=1, drain on SIGTERM.

Exit status: 0 after a clean stop, 2 for bad settings or a bind error that waiting cannot cure,
3 when the port stayed in use through every retry.
"""

import logging
import os
import signal
import sys
import time
from typing import List, Optional

from remote.host.supervision.listener import BindError, get_listener, notify, notify_ready

from .settings import SettingsError, parse

log = logging.getLogger("dashboard")


def _holder(port: int) -> Optional[str]:
    from remote.host.probes.holders import describe_holder  # the agent's probe: ss, lsof, ..., /proc

    return describe_holder(port)


def spare_mode() -> bool:
    """DASHBOARD_SPARE: the supervisor's warm spare. SIGUSR2 is blocked before anything slow is
    imported, and SPARE=1 tells the supervisor so: from then on its activation signal cannot kill us.

    A supervisor from a release before the word "spare" (one keeps running across deploys) asks with
    DASHBOARD_STANDBY only and listens for STANDBY=1: it is answered in its own words. A newer one
    sets both, for the older dashboards a rollback may bring, and hears either."""
    legacy = os.environ.pop("DASHBOARD_STANDBY", None)
    current = os.environ.pop("DASHBOARD_SPARE", None)
    if not (current or legacy):
        return False
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR2, signal.SIGTERM, signal.SIGINT})
    notify("SPARE=1" if current else "STANDBY=1")
    return True


def wait_for_activation() -> bool:
    """Imported and built, holding the socket without accepting: serve on SIGUSR2, exit on SIGTERM."""
    wanted = {signal.SIGUSR2, signal.SIGTERM, signal.SIGINT}
    received = signal.sigwait(wanted)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, wanted)
    return received == signal.SIGUSR2


def main(argv: Optional[List[str]] = None) -> int:
    spare = spare_mode()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s dashboard[%(process)d] %(message)s")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    try:
        settings = parse(argv)
        listener = get_listener(settings.host, settings.port, log=log.info, reuse_port=settings.reuse_port,
                                retries=settings.bind_retries, backoff=settings.bind_backoff, holder=_holder)
    except SettingsError as exc:
        print("dashboard: %s" % exc, file=sys.stderr)
        return 2
    except BindError as exc:
        print("dashboard: %s" % exc, file=sys.stderr)
        return exc.exit_code

    from .app import Dashboard  # Flask is imported only once the port is ours
    from .server import Server

    info = listener.describe()
    board = Dashboard(settings, info)
    host = listener.sock.getsockname()[0]
    server = Server(board.app, listener.sock.fileno(), host, settings.drain_timeout, settings.idle_timeout,
                    settings.max_connections, str(settings.app_dir))
    listener.sock.close()  # the server holds its own duplicate of the descriptor

    if spare:
        log.info("spare: ready to take over")
        if not wait_for_activation():
            log.info("spare: stopped before it was needed")
            return 0
        board.started = time.time()
        log.info("spare: activated")

    def ready() -> None:
        log.info("serving on http://%s (%s socket, reuseport %s, bind attempts %d)", info["address"],
                 info["how"], "on" if info["reuse_port"] else "off", info["bind_attempts"])
        notify_ready("serving on %s" % info["address"])

    def drain() -> None:
        log.info("stopping: no new connections; %d in flight", server.busy())
        board.close_clients()

    clean = server.serve(ready, drain)
    log.info("stopped%s", "" if clean else " with requests still running after the drain timeout")
    return 0


if __name__ == "__main__":
    sys.exit(main())
