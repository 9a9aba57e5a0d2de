"""The bridge's one error type and the commands' exit statuses.

Every module raises a ``BridgeError`` (or a subclass named for its concern) with a message
that says what is wrong and, where it can, what to do; ``cli.main`` alone prints it, as
``libvirt-bridge COMMAND: error: MESSAGE``, and exits with its status.
"""

from __future__ import annotations

OK, FAILED, USAGE = 0, 1, 2


class BridgeError(Exception):
    """Something the bridge cannot do; the message says why."""

    status = FAILED

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status


class UsageError(BridgeError):
    """The command line asks for something that cannot be: exit status 2."""

    status = USAGE
