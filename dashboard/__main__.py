"""`python -m dashboard`: get the listening socket, serve, say READY=1, drain on SIGTERM.

Exit status: 0 after a clean stop, 2 for bad settings or a bind error that waiting cannot cure,
3 when the port stayed in use through every retry.
"""

import logging
import sys
from typing import List, Optional

from .listener import BindError, get_listener, notify_ready
from .settings import SettingsError, parse

log = logging.getLogger("dashboard")


def _holder(port: int) -> Optional[str]:
    from remote.agent import describe_holder  # the agent's probe: ss, lsof, ..., /proc

    return describe_holder(port)


def main(argv: Optional[List[str]] = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s dashboard[%(process)d] %(message)s")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    try:
        settings = parse(argv)
        listener = get_listener(
            settings.host, settings.port, settings.reuse_port, settings.bind_retries,
            settings.bind_backoff, log=log.info, holder=_holder,
        )
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
    server = Server(board.app, listener.sock.fileno(), host, settings.drain_timeout)
    listener.sock.close()  # the server holds its own duplicate of the descriptor

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
