"""The logrotate entry for the bridge's log, ``/etc/logrotate.d/libvirt-bridge``.

Rotation renames the log and creates no new file (``nocreate``): every writer opens the
log for each line with ``O_APPEND | O_CREAT`` (``log.Log``), so a line written just before
the rename lands in the rotated file and the first line after it starts the new one.
Nothing is lost that way, where ``copytruncate`` loses the lines written between its copy
and its truncate. ``delaycompress`` leaves the newest rotated file uncompressed for a
writer that opened the log just before the rename.

The Debian package ships the same entry for the default log as a conffile, with its own
first line (:func:`render_packaged`): ``install`` takes it as up to date, and ``uninstall``
leaves it to the package, which removes it on purge.
"""

from __future__ import annotations

import hashlib
import os

from . import config as configmod
from .errors import BridgeError

ENTRY_DIR = "/etc/logrotate.d"
MARK = "# libvirt-bridge logrotate entry"
ENTRY_NAME = "libvirt-bridge"
# Above this size, ``status`` notes a log that nothing rotates.
LARGE_LOG = 64 * 1024 * 1024

ORIGIN = 'written by "libvirt-bridge install", removed by "libvirt-bridge uninstall".'
PACKAGED = "shipped by the libvirt-bridge package, removed when it is purged."
TEMPLATE = """\
{mark}: {origin}
# The bridge opens its log for every line, so renaming the file loses none: no
# copytruncate (it loses the lines written between its copy and its truncate), no create.
"{log_file}" {{
    weekly
    maxsize 20M
    rotate 8
    compress
    delaycompress
    missingok
    notifempty
    nocreate
    nocopytruncate
}}
"""


class EntryError(BridgeError):
    """The log file's path cannot be written in a logrotate entry."""


def entry_path(log_file: str, entry_dir: str) -> str:
    """The entry for ``log_file``: one per log, so that two bridges on a host keep theirs."""
    if log_file == configmod.DEFAULTS["log_file"]:
        return os.path.join(entry_dir, ENTRY_NAME)
    digest = hashlib.sha256(log_file.encode()).hexdigest()[:12]
    return os.path.join(entry_dir, f"{ENTRY_NAME}-{digest}")


def render(log_file: str) -> str:
    # logrotate reads a quoted path up to the next quote, and globs it.
    if any(c in log_file for c in '"\n*?['):
        raise EntryError(
            f"log_file {log_file!r} has a character logrotate cannot take in a path "
            '(", a newline, *, ? or [)'
        )
    return TEMPLATE.format(mark=MARK, origin=ORIGIN, log_file=log_file)


def render_packaged() -> str:
    """The entry the Debian package ships for the default log."""
    return TEMPLATE.format(mark=MARK, origin=PACKAGED, log_file=configmod.DEFAULTS["log_file"])


def _first_line(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.readline(4096).rstrip(b"\n")
    except OSError:
        return None


def is_ours(path: str) -> bool:
    """Whether ``install`` wrote the entry at ``path`` (so ``uninstall`` removes it)."""
    return _first_line(path) == f"{MARK}: {ORIGIN}".encode()


def is_packaged(path: str) -> bool:
    """Whether the entry at ``path`` is the one the Debian package ships."""
    return _first_line(path) == f"{MARK}: {PACKAGED}".encode()


def rotates(log_file: str, entry_dir: str) -> str | None:
    """The entry in ``entry_dir`` that names ``log_file``, or None."""
    try:
        names = sorted(os.listdir(entry_dir))
    except OSError:
        return None
    quoted = f'"{log_file}"'.encode()
    for name in names:
        path = os.path.join(entry_dir, name)
        try:
            with open(path, "rb") as f:
                text = f.read(1 << 20)
        except OSError:
            continue
        for line in text.splitlines():
            words = line.replace(b"{", b" ").split()
            if log_file.encode() in words or quoted in words:
                return path
    return None
