"""Async hook calls the qemu launcher deferred, waiting to be queued (the inbox).

An async call (``started begin``, ``release end``: ``mapping.DEFERRED_CALLS``) only queues
jobs, yet starting Python to do so costs libvirt about an interpreter start inside its
call. So when such a call has work, the launcher (``fastpath.render``'s ``lb_defer``)
saves it here in plain sh and returns, and a Python process it starts in the background
queues it (``firing.take_deferred``). One call is three files in ``<state_dir>/inbox/``,
named by the domain and a number that grows with each call of that domain:

- ``NAME#SEQ.xml``: the XML libvirt gave on stdin;
- ``NAME#SEQ.status``: libvirt's status file of the domain at the call, for the calls that
  read it (``mapping.READS_STATUS_FILE``);
- ``NAME#SEQ.call``: ``op``, ``subop`` and ``extra``, one per line, written last: a call
  without it is still being written.

Order: libvirt makes one domain's hook calls one at a time, so the launcher numbers them
from what the inbox holds of that domain, and ``take`` hands them over in that order. The
bridge's queues order jobs by the time they were queued, so whatever queues a job of a
domain (the hook, the listener, a verb) first queues what the inbox holds of it: a
deferred call then runs before anything that happened after it. ``take`` holds
``<state_dir>/inbox.lock`` while it hands over, and renames a ``.call`` to ``.taken`` first:
a ``.taken`` found later was being queued by a process that died, and is dropped, like a
job whose runner died.
"""

from __future__ import annotations

import posix
import time

from .plainos import exists, join, makedirs

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator

    from .log import Log

INBOX = "inbox"
XML = ".xml"
STATUS = ".status"
CALL = ".call"
TAKEN = ".taken"
# The first number a domain's calls get; always ten digits, so that sh compares them as
# numbers and Python sorts them as text alike.
FIRST_SEQ = 1000000001
# Files of a call its writer never finished (it was killed) are removed after this long.
ABANDONED_AFTER = 60.0


class Deferred:
    """One deferred hook call, as its files give it."""

    __slots__ = ("extra", "name", "op", "seq", "status", "subop", "xml")

    def __init__(
        self, name: str, seq: int, op: str, subop: str, extra: str, xml: bytes, status: bytes | None
    ) -> None:
        self.name, self.seq = name, seq
        self.op, self.subop, self.extra = op, subop, extra
        self.xml = xml
        self.status = status

    def __repr__(self) -> str:
        return f"Deferred({self.name!r} #{self.seq}: {self.op} {self.subop} {self.extra})"


def inbox_dir(state_dir: str) -> str:
    return join(state_dir, INBOX)


def has_calls(state_dir: str) -> bool:
    """Whether the inbox holds anything (the cheap check every hook call makes).

    Creates a missing inbox (the launcher defers calls only into one that exists).
    """
    directory = inbox_dir(state_dir)
    try:
        return bool(posix.listdir(directory))
    except FileNotFoundError:
        pass
    except OSError:
        return False
    try:
        makedirs(directory, 0o700)
    except OSError:
        pass
    return False


def take(state_dir: str, log: Log, name: str | None = None) -> Iterator[Deferred]:
    """Every complete deferred call (of domain ``name`` only, if given), each domain's in
    order, each removed once handed over.

    The caller queues each one before asking for the next. Raises OSError when the inbox
    cannot be listed or locked.
    """
    import fcntl

    directory = inbox_dir(state_dir)
    lock_fd = posix.open(directory + ".lock", posix.O_RDWR | posix.O_CREAT | posix.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        for domain, stems in _calls_by_domain(directory, log).items():
            if name is not None and domain != name:
                continue
            for stem in stems:
                call = _read_call(directory, stem, log)
                if call is None:
                    break  # still being written: it and what follows wait for the next take
                deferred = _take_one(directory, stem, call, log)
                if deferred is not None:
                    yield deferred
                _remove(directory, stem)
    finally:
        posix.close(lock_fd)


def _calls_by_domain(directory: str, log: Log) -> dict[str, list[str]]:
    """The stems (``NAME#SEQ``) of the calls each domain has here, in order.

    Drops what a process that died left: a ``.taken``, and the files of a call never
    written whole.
    """
    calls: dict[str, list[tuple[int, str]]] = {}
    unfinished: set[str] = set()
    now = time.time()
    for file_name in posix.listdir(directory):
        name, seq, ext = _split(file_name)
        if not name:
            continue
        stem = f"{name}#{seq}"
        if ext == TAKEN:
            log.error(
                f"deferred hook call {_call_label(join(directory, file_name))} of {name!r} was "
                "interrupted while it was being queued: not queued again"
            )
            _remove(directory, stem)
        elif ext == CALL:
            calls.setdefault(name, []).append((seq, stem))
        elif _older_than(join(directory, file_name), now):
            unfinished.add(stem)
    for stem in sorted(unfinished):
        if not exists(join(directory, stem + CALL)):
            log.error(f"deferred hook call {stem} was never written whole (its writer died): lost")
            _remove(directory, stem)
    return {name: [stem for _, stem in sorted(calls[name])] for name in sorted(calls)}


def _read_call(directory: str, stem: str, log: Log) -> list[str] | None:
    """The call file's three lines; None while it is being written."""
    path = join(directory, stem + CALL)
    try:
        with open(path, "rb") as f:
            lines = f.read().split(b"\n")
    except OSError:
        return None
    if len(lines) == 4 and not lines[3]:
        return [line.decode("utf-8", "replace") for line in lines[:3]]
    if _older_than(path, time.time()):
        log.error(f"deferred hook call {stem}: its call file is damaged: lost")
        _remove(directory, stem)
    return None


def _take_one(directory: str, stem: str, call: list[str], log: Log) -> Deferred | None:
    name, _, number = stem.rpartition("#")
    try:
        posix.rename(join(directory, stem + CALL), join(directory, stem + TAKEN))
        with open(join(directory, stem + XML), "rb") as f:
            xml = f.read()
    except OSError as exc:
        log.error(f"deferred hook call {stem}: {exc}: lost")
        return None
    try:
        with open(join(directory, stem + STATUS), "rb") as f:
            status: bytes | None = f.read(65536)
    except OSError:
        status = None
    op, subop, extra = call
    return Deferred(name, int(number), op, subop, extra, xml, status)


def _split(file_name: str) -> tuple[str, int, str]:
    """``NAME#SEQ.EXT`` as (NAME, SEQ, .EXT); ("", 0, "") for anything else."""
    name, sep, rest = file_name.rpartition("#")
    number, dot, ext = rest.partition(".")
    if not sep or not name or not dot or len(number) != 10 or not number.isdigit():
        return "", 0, ""
    return name, int(number), "." + ext


def _call_label(path: str) -> str:
    try:
        with open(path, "rb") as f:
            return " ".join(f.read().decode("utf-8", "replace").split())
    except OSError:
        return path


def _older_than(path: str, now: float) -> bool:
    try:
        return now - posix.stat(path).st_mtime > ABANDONED_AFTER
    except OSError:
        return False


def _remove(directory: str, stem: str) -> None:
    # The launcher numbers a call after the files it sees: while one of these is left, it
    # will not reuse the number, so the last one removed must be the last one touched.
    for ext in (CALL, XML, STATUS, TAKEN):
        try:
            posix.unlink(join(directory, stem + ext))
        except FileNotFoundError:
            pass
