"""Work run in order per key, keys side by side: the listener's handlers and runners."""

from __future__ import annotations

import collections
import threading

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from .log import Log


class Serial:
    """Work given per key, run in order per key, keys side by side on threads.

    A thread takes a key with work, runs all of it, and takes the next; it ends when no
    key has work. At most ``limit`` threads run at once (None: one per key with work).
    """

    def __init__(self, log: Log, name: str, limit: int | None = None) -> None:
        self.log = log
        self.name = name
        self.limit = limit
        self.changed = threading.Condition()
        self.work: dict[str, list[Callable[[], None]]] = {}
        self.ready: collections.deque[str] = collections.deque()
        self.busy: set[str] = set()
        self.threads = 0

    def submit(self, key: str, work: Callable[[], None]) -> None:
        with self.changed:
            waiting = key in self.work
            self.work.setdefault(key, []).append(work)
            if waiting or key in self.busy:
                return
            self.ready.append(key)
            if self.limit is not None and self.threads >= self.limit:
                return
            self.threads += 1
        threading.Thread(target=self._serve, name=f"{self.name}s", daemon=True).start()

    def _serve(self) -> None:
        while True:
            with self.changed:
                if not self.ready:
                    self.threads -= 1
                    self.changed.notify_all()
                    return
                key = self.ready.popleft()
                self.busy.add(key)
                works = self.work.pop(key)
            for work in works:
                try:
                    work()
                except Exception as exc:
                    self.log.error(f"listener: {self.name} for {key} failed: {exc!r}")
            with self.changed:
                self.busy.discard(key)
                if key in self.work:
                    self.ready.append(key)
                self.changed.notify_all()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until no work is left nor running; False if ``timeout`` came first."""
        with self.changed:
            return self.changed.wait_for(lambda: not self.work and not self.busy, timeout)
