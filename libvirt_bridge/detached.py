"""A detached child process: forked, in a session of its own, stdio on /dev/null.

What the hook call (and anything else that must not wait) hands work to: the async runner
of a queue, the webhook's sender. The child never returns into its parent's code.
"""

from __future__ import annotations

import gc
import posix

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from .log import Log


def fork_detached(work: Callable[[], object], log: Log, what: str, meanwhile: str) -> None:
    """Run ``work`` in a detached child; return at once. ``what`` names it in the log;
    ``meanwhile`` says what waits when it cannot start."""
    try:
        pid = posix.fork()
    except OSError as exc:
        log.error(f"cannot start {what}: {exc.strerror}; {meanwhile}")
        return
    if pid:
        return
    # The hook's process runs without the cyclic garbage collector (hook.launch); the
    # child may run long, so it collects as usual.
    gc.enable()
    status = 0
    try:
        posix.setsid()
        devnull = posix.open("/dev/null", posix.O_RDWR)
        for fd in (0, 1, 2):
            posix.dup2(devnull, fd)
        posix.closerange(3, 65536)
        work()
    except BaseException as exc:
        log.error(f"{what} failed: {exc!r}")
        status = 1
    finally:
        posix._exit(status)
