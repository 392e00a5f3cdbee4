"""sulfur-ops host agent: probe, free, doctor and space, each answering one JSON document on stdout.

The operator sends this module (with the host-side modules it imports) inside the command itself,
`python -S -c <bootstrap>`, with the inventory's interpreter: one exec per host, nothing installed,
no reliance on #!/usr/bin/env, /bin/bash or python3. The request comes as one JSON line on stdin
(common/wire.py). This is the CLI only: what it does is probes/holders.py and probes/doctor.py.
"""

import os
import sys

from remote.host.common import names, wire
from remote.host.common.errors import BadRequest
from remote.host.common.files import Layout, log_lines
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
        if command == "logs":
            return logs(app_dir, request.get("options") or {})
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
    raise BadRequest("unknown agent command %r (known: probe, free, doctor, space, logs)" % command)


def logs(app_dir, options):
    """`invoke logs` on a host with no release (a first deploy that failed): the last lines, as ctl's
    logs prints them, so that why the bot would not start stays readable. Text, no answer document."""
    service, count = options.get("service", "dashboard"), options.get("lines", 50)
    if service not in names.LOGS or type(count) is not int or count < 0:
        raise BadRequest("logs: service must be one of %s and lines a count" % ", ".join(names.LOGS))
    if options.get("follow"):
        print("(no release on this host: the last lines only, no --follow)", file=sys.stderr, flush=True)
    paths = Layout(app_dir)
    if not os.path.exists(paths.log(service)):
        print("no release on this host and no %s log yet: run invoke deploy first" % service, file=sys.stderr)
    for line in log_lines(paths, service, count):
        print(line)
    sys.stdout.flush()


def main():
    """Read one request from stdin, answer one JSON document on stdout."""
    return wire.serve(handle, "agent")


if __name__ == "__main__":
    sys.exit(main())
