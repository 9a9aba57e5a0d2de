"""Lines for systemd's journal, sent with its native protocol (no python3-systemd needed).

One datagram per line to journald's socket, as ``sd_journal_send`` does: ``KEY=value``
fields, a value holding a newline in the binary form (``KEY``, newline, its length as
64-bit little-endian, the bytes, newline). ``MESSAGE``, ``PRIORITY`` (syslog's numbers) and
``SYSLOG_IDENTIFIER`` go with every line; callers add their own fields (``DOMAIN``,
``EVENT``, ``SCRIPT``, ``RC``, ...), which ``journalctl DOMAIN=vm1`` filters on.

``_socket`` rather than ``socket``: the hook may log here, and the wrapper module's imports
cost more than the whole send.
"""

from __future__ import annotations

import _socket

SOCKET = "/run/systemd/journal/socket"
IDENTIFIER = "libvirt-bridge"
# The log's levels as syslog priorities (journalctl -p).
PRIORITIES = {"ERROR": 3, "WARNING": 4, "INFO": 6}


def field(key: str, value: str) -> bytes:
    """One field of a journal datagram."""
    data = value.encode("utf-8", "backslashreplace")
    if b"\n" in data:
        return key.encode() + b"\n" + len(data).to_bytes(8, "little") + data + b"\n"
    return key.encode() + b"=" + data + b"\n"


def datagram(level: str, message: str, fields: dict[str, str] | None = None) -> bytes:
    parts = [
        field("MESSAGE", message),
        field("PRIORITY", str(PRIORITIES.get(level, 6))),
        field("SYSLOG_IDENTIFIER", IDENTIFIER),
    ]
    parts += [field(key, value) for key, value in (fields or {}).items()]
    return b"".join(parts)


def send(level: str, message: str, fields: dict[str, str] | None = None) -> bool:
    """Send one line to the journal; False when it could not (no journald, too big, ...)."""
    try:
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_DGRAM | _socket.SOCK_CLOEXEC)
    except OSError:
        return False
    try:
        sock.sendto(datagram(level, message, fields), SOCKET)
    except OSError:
        return False
    finally:
        sock.close()
    return True
