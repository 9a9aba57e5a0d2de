"""The bridge's log: plain lines appended to ``log_file``, or sent to systemd's journal.

Not the ``logging`` module: it imports ``re`` and costs more than the hook's whole budget.
Each line is written with one ``write`` on an ``O_APPEND`` descriptor, so lines from hook
calls running at the same time do not interleave. The config's ``log_target`` says where
lines go (``TARGETS``); a line the journal does not take goes to the file instead.
"""

from __future__ import annotations

import posix
import sys
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Protocol

    class Config(Protocol):  # config.Config, which imports this module
        log_file: str
        log_target: str


FILE, JOURNAL, BOTH = "file", "journal", "both"
TARGETS = (FILE, JOURNAL, BOTH)


class Log:
    """Appends timestamped lines to a file (stderr for a path of "") and/or sends them to
    the journal with ``fields``; never raises."""

    __slots__ = ("_warned", "path", "target")

    def __init__(self, path: str, target: str = FILE) -> None:
        self.path = path
        self.target = target
        self._warned = False

    @classmethod
    def of(cls, config: Config) -> Log:
        """The log the config names."""
        return cls(config.log_file, config.log_target)

    def line(self, level: str, message: str, fields: dict[str, str] | None = None) -> None:
        if self.target != FILE:
            from .journal import send

            if send(level, message, fields) and self.target == JOURNAL:
                return
        self._append(level, message)

    def _append(self, level: str, message: str) -> None:
        now = time.time()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(now))
        text = f"{stamp}.{int(now % 1 * 1000):03d} {posix.getpid()} {level} {message}"
        text = text.replace("\n", "\\n") + "\n"
        if not self.path:  # no config to name a log file
            _stderr(text)
            return
        try:
            fd = posix.open(
                self.path, posix.O_WRONLY | posix.O_APPEND | posix.O_CREAT | posix.O_CLOEXEC, 0o640
            )
        except OSError as exc:
            self._fallback(text, exc)
            return
        try:
            posix.write(fd, text.encode("utf-8", "backslashreplace"))
        except OSError as exc:
            self._fallback(text, exc)
        finally:
            posix.close(fd)

    def info(self, message: str, fields: dict[str, str] | None = None) -> None:
        self.line("INFO", message, fields)

    def warning(self, message: str, fields: dict[str, str] | None = None) -> None:
        self.line("WARNING", message, fields)

    def error(self, message: str, fields: dict[str, str] | None = None) -> None:
        self.line("ERROR", message, fields)

    def _fallback(self, text: str, exc: OSError) -> None:
        # Nothing is lost: the line goes to stderr, which libvirt keeps in its own log.
        if not self._warned:
            self._warned = True
            _stderr(f"libvirt-bridge: cannot write log {self.path}: {exc.strerror}\n")
        _stderr(text)


def say(message: str) -> None:
    """A message for libvirt's error (it keeps a failing hook's stderr) and for people."""
    _stderr(f"libvirt-bridge: {message}\n")


def _stderr(text: str) -> None:
    try:
        sys.stderr.write(text)
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


# -- reading the log back (the demo, the benchmarks, the tests) ---------------------------


class Entry:
    """One line of the log: ``TIME PID LEVEL MESSAGE``."""

    __slots__ = ("level", "message", "pid", "time")

    def __init__(self, time: float, pid: int, level: str, message: str) -> None:
        self.time, self.pid, self.level, self.message = time, pid, level, message

    def fields(self) -> dict[str, str]:
        """The message's ``key=value`` words; a quoted value (``domain='a b'``) unquoted."""
        found: dict[str, str] = {}
        rest = self.message
        while rest:
            word, _, rest = rest.partition(" ")
            key, sep, value = word.partition("=")
            if not sep or not key.isidentifier():
                continue
            if value[:1] in ("'", '"'):
                value, rest = _quoted(f"{value} {rest}" if rest else value)
            found.setdefault(key, value)
        return found

    def script_run(self) -> tuple[str, str, str, float] | None:
        """(event, script, result, seconds) when the line reports a script's run."""
        fields = self.fields()
        if "script" not in fields or "duration" not in fields:
            return None
        after = self.message.split(f" script={fields['script']} ", 1)[-1]
        result = after.split(" duration=", 1)[0]
        return (
            self.message.split(" ", 1)[0],
            fields["script"],
            result,
            float(fields["duration"].rstrip("s")),
        )


def _quoted(text: str) -> tuple[str, str]:
    """The Python string literal that starts ``text``, decoded, and what follows it."""
    import ast

    quote, i = text[0], 1
    while i < len(text) and text[i] != quote:
        i += 2 if text[i] == "\\" else 1
    literal, rest = text[: i + 1], text[i + 2 :]
    try:
        return str(ast.literal_eval(literal)), rest
    except (ValueError, SyntaxError):
        return literal, rest


def read(path: str, offset: int = 0) -> tuple[list[Entry], int]:
    """The log's entries from byte ``offset`` on, and the offset after the last whole line.

    A line being written (no newline yet) is left for the next read.
    """
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read()
    except FileNotFoundError:
        return [], offset
    whole = data[: data.rfind(b"\n") + 1]
    entries = []
    for line in whole.decode("utf-8", "replace").splitlines():
        stamp, _, rest = line.partition(" ")
        pid, _, rest = rest.partition(" ")
        level, _, message = rest.partition(" ")
        seconds, _, millis = stamp.partition(".")
        try:
            moment = time.mktime(time.strptime(seconds, "%Y-%m-%dT%H:%M:%S")) + int(millis) / 1e3
            entries.append(Entry(moment, int(pid), level, message))
        except ValueError:
            continue  # not a line of ours
    return entries, offset + len(whole)
