"""The host side's exceptions, each with the exit status its command ends with."""


class Failure(Exception):
    """A command failed; the message is the one line the operator shows for this host."""

    exit_code = 1
    kind = "failed"

    def __init__(self, message, log_tail=None):
        super().__init__(message)
        self.log_tail = list(log_tail or [])


class BadRequest(Failure):
    """The request itself is wrong (unknown command or option, a missing value)."""

    exit_code = 2
    kind = "request"


class ProtocolMismatch(BadRequest):
    """The operator speaks another protocol version than this release: one of them must be updated."""

    kind = "protocol"


class UnknownCommand(BadRequest):
    """A command this release does not know: it is older than the operator, which says so for this one
    command (deploy first) while the others still work. Not an error of the command itself."""

    kind = "unknown_command"
