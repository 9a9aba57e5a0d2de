"""The bridge's log: plain lines appended to ``log_file``.

Not the ``logging`` module: it imports ``re`` and costs more than the hook's whole budget.
Each line is written with one ``write`` on an ``O_APPEND`` descriptor, so lines from hook
calls running at the same time do not interleave.
"""

from __future__ import annotations

import os
import sys
import time


class Log:
    """Appends timestamped lines to a file (stderr for a path of ""); never raises."""

    __slots__ = ("_warned", "path")

    def __init__(self, path: str) -> None:
        self.path = path
        self._warned = False

    def line(self, level: str, message: str) -> None:
        now = time.time()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(now))
        text = f"{stamp}.{int(now % 1 * 1000):03d} {os.getpid()} {level} {message}"
        text = text.replace("\n", "\\n") + "\n"
        if not self.path:  # no config to name a log file
            _stderr(text)
            return
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        except OSError as exc:
            self._fallback(text, exc)
            return
        try:
            os.write(fd, text.encode("utf-8", "backslashreplace"))
        except OSError as exc:
            self._fallback(text, exc)
        finally:
            os.close(fd)

    def info(self, message: str) -> None:
        self.line("INFO", message)

    def warning(self, message: str) -> None:
        self.line("WARNING", message)

    def error(self, message: str) -> None:
        self.line("ERROR", message)

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
