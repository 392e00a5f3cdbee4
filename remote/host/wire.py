"""The wire half of the contract (contract.py documents what travels): one JSON request line on stdin,
one JSON answer line on stdout, both with PROTOCOL; and the end of stdin that stops streaming commands.
"""

import json
import os
import select
import sys

from remote.host.errors import BadRequest, ProtocolMismatch

#: bump when a request or an answer changes in a way the other side must know about; the two sides
#: must speak the same number (the operator refuses any other answer, the host any other request)
PROTOCOL = 1
ETX = b"\x03"


def answer(doc, exit_code=None):
    """Print ``doc`` as the command's answer (one line, the host's protocol in it); the exit status."""
    doc = dict(doc, protocol=PROTOCOL)
    sys.stdout.write(json.dumps(doc) + "\n")
    sys.stdout.flush()
    return exit_code if exit_code is not None else (0 if doc.get("ok") else 1)


def failure(exc):
    """The answer for a Failure: its message, its kind, the log lines that explain it."""
    return {"ok": False, "error": str(exc), "kind": exc.kind, "log_tail": exc.log_tail}


def check_protocol(request):
    """Refuse a request from an operator whose protocol this release does not speak."""
    theirs = request.get("protocol")
    if not isinstance(theirs, int):
        raise BadRequest("the request has no protocol number: it was not sent by sulfur-ops")
    if theirs > PROTOCOL:
        raise ProtocolMismatch("the operator speaks protocol %d, this release %d: deploy a newer release"
                               % (theirs, PROTOCOL))
    if theirs < PROTOCOL:
        raise ProtocolMismatch("the operator speaks protocol %d, this release %d: update sulfur-ops on the "
                               "operator's machine" % (theirs, PROTOCOL))
    return request


class Stdin:
    """The command's stdin: one request line first, then watched for its end.

    Reads with os.read, not sys.stdin: a buffered reader could swallow the end of the stream, and a
    long-running command must see it to stop when the operator goes away.
    """

    def __init__(self, fd=0):
        self.fd, self.buffer, self.eof = fd, b"", False

    def _fill(self):
        data = os.read(self.fd, 65536)
        if data:
            self.buffer += data
        else:
            self.eof = True

    def request(self):
        """The first line, as a dict; BadRequest when there is none or it is not JSON."""
        while b"\n" not in self.buffer and not self.eof:
            self._fill()
        line, _, self.buffer = self.buffer.partition(b"\n")
        return parse_request(line)

    def closed(self, timeout):
        """True once stdin has ended (the SSH channel closed) or brought ETX (Ctrl+C); waits up to
        ``timeout`` seconds for either."""
        if self.eof or ETX in self.buffer:
            return True
        try:
            ready = select.select([self.fd], [], [], timeout)[0]
            if ready:
                self._fill()
        except (OSError, ValueError):
            self.eof = True
        return self.eof or ETX in self.buffer


def parse_request(raw):
    """One request document from bytes; BadRequest with the reason when it is not one."""
    if not raw.strip():
        raise BadRequest("no request on stdin: this command is run by sulfur-ops (invoke ...), not by hand")
    try:
        doc = json.loads(raw.decode("utf-8"))
    except ValueError as exc:
        raise BadRequest("the request is not JSON: %s" % exc) from None
    if not isinstance(doc, dict):
        raise BadRequest("the request is not a JSON object")
    return check_protocol(doc)


def read_request_file(path):
    """A request left in a file (mode 600) by the operator; the file is removed once read."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
        os.unlink(path)
    except OSError as exc:
        raise BadRequest("cannot read the request file %s: %s" % (path, exc.strerror)) from None
    return parse_request(raw)


def serve(handle, what):
    """A bundled module's main(): one request from stdin to ``handle``, its answer on stdout; a bad
    request or an odd host gives one line for the operator, never a traceback."""
    os.umask(0o077)
    try:
        return answer(handle(Stdin().request()))
    except BadRequest as exc:
        return answer(failure(exc), exc.exit_code)
    except Exception as exc:
        return answer({"ok": False, "error": "%s: %s: %s" % (what, type(exc).__name__, exc), "kind": "failed"})
