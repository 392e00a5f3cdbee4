"""The agent's port probe alone: `port-status` sends these few modules, not the agent's whole set.

A one-host port-status is waited on by a person at a prompt, and the host's interpreter pays for every
module sent (decompress, compile, import): without doctor's etcd client and the log readers the probe
starts in about half the time. The answer is the agent's `probe` answer, the request the agent's.
"""

from remote.host.common import wire
from remote.host.common.errors import BadRequest
from remote.host.probes.holders import probe


def handle(request):
    """A probe request (wire.AgentRequest) -> the port's holders."""
    if request.get("command") != "probe":
        raise BadRequest("unknown lookout command %r (known: probe)" % request.get("command"))
    try:
        return probe(int(request["port"]), str(request.get("app_dir") or "~/sulfur"))
    except (KeyError, TypeError, ValueError) as exc:
        raise BadRequest("bad probe request: %s" % exc) from None


def main():
    """Read one request from stdin, answer one JSON document on stdout."""
    return wire.serve(handle, "agent")
