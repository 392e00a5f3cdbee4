"""The wire half of the contract (contract.py documents what travels): one JSON request line on stdin,
one JSON answer line on stdout, both with PROTOCOL; and the end of stdin that stops streaming commands.
"""

import json
import os
import select
import sys

from remote.host.common.errors import BadRequest, ProtocolMismatch

#: the newest protocol this side speaks: bump it when a request or an answer changes in a way the
#: other side must know about (a new command, option or field meaning), and name the new commands in SINCE
PROTOCOL = 6
#: the oldest protocol this side still speaks: raise it only to drop old counterparts on purpose
OLDEST = 1
#: commands newer than OLDEST, with the protocol that brought them; a host that speaks less answers
#: "unknown command" and the operator says which host to deploy, while every other command still works
SINCE = {"ping": 2, "epoch": 3, "snapshot": 4, "restore": 4, "backups": 4, "backup-read": 4, "replica-put": 4, "env": 4,
         "lease": 5, "run": 6}
ETX = b"\x03"
READ_IDLE = 120  # s: the longest silence of the operator within a stream it sends
#: the protocol agreed with the request being served (the highest both sides speak), for its answer
_agreed = [OLDEST]


def speaks(doc):
    """(oldest, newest) protocol of the side that sent ``doc``: its ``protocols`` pair, else its one
    ``protocol`` number (sides from before ranges sent only that); None when it names neither."""
    pair = doc.get("protocols")
    if (isinstance(pair, list) and len(pair) == 2 and all(type(n) is int for n in pair)
            and 0 < pair[0] <= pair[1]):
        return pair[0], pair[1]
    number = doc.get("protocol")
    return (number, number) if type(number) is int else None


def header(command):
    """What a request carries of the protocol: ``protocol`` is the lowest that knows ``command`` (a host
    from before ranges accepts only its own number), ``protocols`` the range this side speaks."""
    return {"protocol": max(OLDEST, SINCE.get(command, OLDEST)), "protocols": [OLDEST, PROTOCOL]}


def agreed():
    """The protocol of the request being served: the highest both sides speak (OLDEST before any)."""
    return _agreed[0]


def answer(doc, exit_code=None):
    """Print ``doc`` as the command's answer (one line, with the agreed protocol and this side's range);
    the exit status."""
    doc = dict(doc, protocol=_agreed[0], protocols=[OLDEST, PROTOCOL])
    sys.stdout.write(json.dumps(doc) + "\n")
    sys.stdout.flush()
    return exit_code if exit_code is not None else (0 if doc.get("ok") else 1)


def failure(exc):
    """The answer for a Failure: its message, its kind, the log lines that explain it."""
    return {"ok": False, "error": str(exc), "kind": exc.kind, "log_tail": exc.log_tail}


def check_protocol(request):
    """Agree on the highest protocol both sides speak; refuse a request when they share none."""
    theirs = speaks(request)
    if theirs is None:
        raise BadRequest("the request has no protocol number: it was not sent by sulfur-ops")
    if theirs[0] > PROTOCOL:
        raise ProtocolMismatch("the operator speaks protocol %s, this release %s: deploy a newer release"
                               % (span(*theirs), span(OLDEST, PROTOCOL)))
    if theirs[1] < OLDEST:
        raise ProtocolMismatch("the operator speaks protocol %s, this release %s: update sulfur-ops on the "
                               "operator's machine" % (span(*theirs), span(OLDEST, PROTOCOL)))
    _agreed[0] = min(theirs[1], PROTOCOL)
    return request


def span(oldest, newest):
    return str(oldest) if oldest == newest else "%d-%d" % (oldest, newest)


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

    def read(self, size=-1):
        """Bytes after the request line (a restore's archive): what is buffered first, then the pipe;
        b"" at its end. A file object for tarfile's stream mode. An operator silent for READ_IDLE
        seconds is given up (BadRequest): a restore holds the host's lock with the bot stopped."""
        if not self.buffer and not self.eof:
            try:
                ready = select.select([self.fd], [], [], READ_IDLE)[0]
            except (OSError, ValueError):
                ready = [self.fd]
            if not ready:
                raise BadRequest("the operator sent nothing for %d s: given up, nothing changed" % READ_IDLE)
            self._fill()
        if size is None or size < 0:
            while not self.eof:
                self._fill()
            size = len(self.buffer)
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

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
    """A request left in a file (mode 600) by the operator. Read only: the ctl removes it once it knows
    the request's app_dir, and only from there (a command line must not delete a file elsewhere)."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except OSError as exc:
        raise BadRequest("cannot read the request file %s: %s" % (path, exc.strerror)) from None
    return parse_request(raw)


def serve(handle, what):
    """A bundled module's main(): one request from stdin to ``handle``, its answer on stdout; a bad
    request or an odd host gives one line for the operator, never a traceback."""
    os.umask(0o077)
    try:
        doc = handle(Stdin().request())
        return 0 if doc is None else answer(doc)  # None: the output was the answer (the agent's logs)
    except BadRequest as exc:
        return answer(failure(exc), exc.exit_code)
    except Exception as exc:
        return answer({"ok": False, "error": "%s: %s: %s" % (what, type(exc).__name__, exc), "kind": "failed"})
