"""The one wait of the tests: on something they can observe, with a timeout.

A test never sleeps a fixed time to let things settle: it waits until a file, a record, a
log line or a process state says what it waits for, and fails, saying what it waited for,
when that does not come in time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

POLL_INTERVAL = 0.05


def wait_until(
    condition: Callable[[], bool],
    what: str | Callable[[], str],
    timeout: float = 30,
    *,
    interval: float = POLL_INTERVAL,
) -> None:
    """Return once ``condition()`` holds; else an AssertionError after ``timeout`` s.

    ``what`` names what was awaited; a callable is asked at the timeout, to say what is.
    ``condition`` is asked every ``interval`` s (more for one that costs a command).
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            said = what() if callable(what) else what
            raise AssertionError(f"timed out after {timeout} s waiting for {said}")
        time.sleep(interval)


def wait_for_file(path: Path, what: str, timeout: float = 30) -> None:
    """Return once ``path`` exists: a sentinel a script or a process leaves."""
    wait_until(path.exists, f"{what} ({path})", timeout)
