"""The operator side's exceptions, each carrying the exit status a task ends with.

Exit status: 0 every host succeeded, 1 some host failed, 2 bad inventory, bad arguments or bad input
found before anything ran on a host.
"""


class SulfurError(Exception):
    """A problem the user can act on; the message is one line: what, where, what to do."""

    exit_code = 1


class InventoryError(SulfurError):
    """inventory.yml or a --host value is wrong: file, line, key, what is wrong."""

    exit_code = 2


class UsageError(SulfurError):
    """A task's flags do not fit together or name something that is not there."""

    exit_code = 2


class ReleaseError(SulfurError):
    """Bad deploy input found before anything was sent (a missing source, no requirements)."""

    exit_code = 2


class HostError(SulfurError):
    """Something went wrong with one host; the message is the one line shown for it."""

    exit_code = 1


class UnknownHostKey(HostError):
    """A host key that known_hosts does not have, under the strict policy."""


class ContractError(HostError):
    """The host's release and this sulfur-ops speak different protocol versions."""


class UnknownCommand(ContractError):
    """The host's release is older and does not know this one command (the others still work): deploy it."""


class BotConflict(SulfurError):
    """Two hosts would run the same bot (same token, a shard in common): refused before anything starts."""

    exit_code = 1
