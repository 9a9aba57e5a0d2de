"""The history of script runs: one JSON line per run, in the state dir, bounded.

Every process that runs scripts appends an event's records to
``<state_dir>/history/runs.jsonl`` with one ``write`` on an ``O_APPEND`` descriptor, so
records of processes running at the same time never interleave. When the file passes
half of ``history_size`` (KiB) it becomes ``runs.jsonl.1``, replacing the one before: the
store holds between half of it and all of it, the oldest records dropped first. The
process that rotates holds a lock on the file it rotates and renames it only if it is
still the current one, so two processes never rotate twice. A line a crash cut short is
skipped by the reader.
"""

from __future__ import annotations

import posix

from .plainos import join, makedirs

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator

    from .config import Config
    from .records import RunRecord

DIRECTORY = "history"
CURRENT = "runs.jsonl"
PREVIOUS = "runs.jsonl.1"
_FLAGS = posix.O_WRONLY | posix.O_APPEND | posix.O_CREAT | posix.O_CLOEXEC | posix.O_NOFOLLOW


def directory(state_dir: str) -> str:
    return join(state_dir, DIRECTORY)


def append(config: Config, records: list[RunRecord]) -> None:
    """Append ``records`` to the store (the ``history`` sink). Raises OSError."""
    if config.history_size <= 0 or not records:
        return
    where = directory(config.state_dir)
    path = join(where, CURRENT)
    data = "".join(record.to_json() + "\n" for record in records).encode("utf-8", "surrogateescape")
    try:
        fd = posix.open(path, _FLAGS, 0o600)
    except FileNotFoundError:
        makedirs(where, 0o700)
        fd = posix.open(path, _FLAGS, 0o600)
    try:
        posix.write(fd, data)
        if posix.fstat(fd).st_size > config.history_size * 1024 // 2:
            _rotate(fd, path, join(where, PREVIOUS))
    finally:
        posix.close(fd)


def _rotate(fd: int, path: str, previous: str) -> None:
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return  # another process rotates it
    try:
        if posix.stat(path).st_ino == posix.fstat(fd).st_ino:
            posix.rename(path, previous)
    except FileNotFoundError:
        pass


# -- reading (the CLI) -------------------------------------------------------------------------


def read(state_dir: str) -> Iterator[dict[str, object]]:
    """Every record in the store, oldest first."""
    for name in (PREVIOUS, CURRENT):
        yield from _records(join(directory(state_dir), name))


def _records(path: str) -> Iterator[dict[str, object]]:
    try:
        with open(path, "rb") as f:
            for line in f:
                record = parse_line(line)
                if record is not None:
                    yield record
    except FileNotFoundError:
        return


def parse_line(line: bytes) -> dict[str, object] | None:
    """The record on ``line``; None for one that is not a whole record."""
    import json

    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) and "event" in record else None


class Follower:
    """The records appended to the store after it was opened, as they come (rotation
    included): what ``history --follow`` prints."""

    def __init__(self, state_dir: str) -> None:
        self.path = join(directory(state_dir), CURRENT)
        self.previous = join(directory(state_dir), PREVIOUS)
        self.inode, self.offset = _position(self.path)

    def new(self) -> list[dict[str, object]]:
        """What was appended since the last call (whole lines only)."""
        records: list[dict[str, object]] = []
        inode, size = _position(self.path)
        if inode != self.inode:
            # Rotated: the rest of the file followed so far, now the previous one, first.
            old_inode, old_size = _position(self.previous)
            if old_inode == self.inode and self.inode:
                records += self._read(self.previous, old_size)
            self.inode, self.offset = inode, 0
        return records + self._read(self.path, size)

    def _read(self, path: str, size: int) -> list[dict[str, object]]:
        if size <= self.offset:
            return []
        with open(path, "rb") as f:
            f.seek(self.offset)
            data = f.read(size - self.offset)
        complete = data.rfind(b"\n") + 1
        self.offset += complete
        lines = data[:complete].splitlines()
        return [r for r in map(parse_line, lines) if r is not None]


def _position(path: str) -> tuple[int, int]:
    """The file's inode and size; (0, 0) when there is none."""
    try:
        st = posix.stat(path)
    except FileNotFoundError:
        return 0, 0
    return st.st_ino, st.st_size
