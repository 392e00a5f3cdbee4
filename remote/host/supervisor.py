"""`python -S -m remote.host.supervisor run CONFIG_JSON`: the host's supervisor, in the foreground.

The entry point that stack.py, autostart units and boot scripts run, and by whose module name in a
command line a running supervisor is recognised: both stay here whatever moves. The supervisor
itself is supervision/loop.py (and its policies beside it).
"""

import json
import os
import sys

from remote.host.supervision.loop import Supervisor


def main(argv=None):
    """supervisor run CONFIG_JSON: supervise in the foreground (detaching is the stack library's job)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] != "run":
        print("usage: python -m remote.host.supervisor run CONFIG_JSON", file=sys.stderr)
        return 2
    os.umask(0o077)
    with open(args[1]) as handle:
        config = json.load(handle)
    if config.get("app_dir") and os.path.isdir(config["app_dir"]):
        os.chdir(config["app_dir"])  # not the release it was started from: that one may be pruned
    try:
        Supervisor(config).run()
    except SystemExit as exc:
        if exc.code and not isinstance(exc.code, int):
            print(exc.code, file=sys.stderr)
            return 1
        raise
    except Exception as exc:  # BindError and friends: one line in the log, a failed start for the operator
        print("supervisor: %s" % exc, file=sys.stderr)
        return getattr(exc, "exit_code", 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
