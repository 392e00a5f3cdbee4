"""sulfur-ops host agent: probe, free, doctor and space, each answering one JSON document on stdout.

The operator sends this module (with the host-side modules it imports) inside the command itself,
`python -S -c <bootstrap>`, with the inventory's interpreter: one exec per host, nothing installed,
no reliance on #!/usr/bin/env, /bin/bash or python3. The request comes as one JSON line on stdin
(common/wire.py). This is the CLI only: what it does is probes/holders.py and probes/doctor.py.
"""

import sys

from remote.host.common import wire
from remote.host.common.errors import BadRequest
from remote.host.probes.doctor import doctor, space
from remote.host.probes.holders import free, probe

# ------------------------------------------------------------------------------------------ main


def handle(request):
    """One agent request (wire.AgentRequest) -> its answer."""
    command = request.get("command")
    try:
        app_dir = str(request.get("app_dir") or "~/sulfur")
        if command == "space":
            return space(app_dir)
        port = int(request["port"])
        if command == "probe":
            return probe(port, app_dir)
        if command == "free":
            return free(port, app_dir, bool(request.get("force")), float(request.get("grace", 3.0)))
        if command == "doctor":
            coordination = request.get("coordination")
            return doctor(port, app_dir, coordination if isinstance(coordination, dict) else None)
    except (KeyError, TypeError, ValueError) as exc:
        raise BadRequest("bad agent request: %s" % exc) from None
    raise BadRequest("unknown agent command %r (known: probe, free, doctor, space)" % command)


def main():
    """Read one request from stdin, answer one JSON document on stdout."""
    return wire.serve(handle, "agent")


if __name__ == "__main__":
    sys.exit(main())
