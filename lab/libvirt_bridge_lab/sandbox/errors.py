"""What the sandbox raises, and the file tails its messages carry."""

from __future__ import annotations

import os


class SandboxError(Exception):
    """The sandbox could not do what was asked; the message says what and why."""


def tail(path: str, lines: int = 40) -> str:
    """The last ``lines`` lines of ``path`` (at most 16 KiB of it)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16384))
            data = f.read().decode("utf-8", "replace")
    except OSError as exc:
        return f"({path}: {exc.strerror})"
    return "\n".join(data.splitlines()[-lines:])


def tails(paths: list[str]) -> str:
    """The tails of the files in ``paths`` that are not empty, to append to a message."""
    parts = []
    for path in paths:
        if os.path.exists(path) and os.path.getsize(path):
            parts.append(f"\n--- tail of {path} ---\n{tail(path)}")
    return "".join(parts)
