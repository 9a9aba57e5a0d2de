"""The listener's connection to libvirt, and what its callbacks report.

The connection is read-only and watched (close callback, keepalive). Its callbacks run on
libvirt's event-loop thread, which must never wait (keepalive replies go through it): they
only queue ``(uuid, name, domain, event, detail)`` or ``(uuid, name, domain, what,
alias)`` for the listener's worker, and call no libvirt (a domain's UUID and name are
known to the client, they cost no call).
"""

from __future__ import annotations

import queue
import threading

import libvirt

from . import mapping
from .connection import open_connection
from .deviceevents import METADATA_CHANGED

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .log import Log

KEEPALIVE_INTERVAL = 5
KEEPALIVE_COUNT = 3
# A lifecycle event as the callback queues it: (uuid, name, domain, event, detail).
Event = tuple[str, str, "libvirt.virDomain", int, int]
# A device or metadata event: (uuid, name, domain, what, alias).
DeviceEvent = tuple[str, str, "libvirt.virDomain", str, str]
# What the worker takes: an event, a word of the listener's own (a resync), None (stop).
Item = Event | DeviceEvent | str | None
# libvirt's device events (and the metadata's, which changes devices' properties), as the
# table's rows name them; an event this libvirt-python lacks is not registered.
LIBVIRT_DEVICE_EVENTS: dict[str, str] = {
    "VIR_DOMAIN_EVENT_ID_DEVICE_ADDED": mapping.DEVICE_ADDED,
    "VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED": mapping.DEVICE_REMOVED,
    "VIR_DOMAIN_EVENT_ID_DEVICE_REMOVAL_FAILED": mapping.REMOVAL_FAILED,
    "VIR_DOMAIN_EVENT_ID_METADATA_CHANGE": METADATA_CHANGED,
}


class EventConnection:
    """One connection at a time to ``uri``, its events put on ``events``; ``closed`` is
    set when it drops."""

    def __init__(self, uri: str, events: queue.Queue[Item], log: Log) -> None:
        self.uri = uri
        self.events = events
        self.log = log
        self.closed = threading.Event()
        self.conn: libvirt.virConnect | None = None

    def open(self) -> None:
        """Connect and register the callbacks (raises connection.LibvirtFailure)."""
        conn = open_connection(self.uri, readonly=True)
        self.closed.clear()
        try:
            conn.registerCloseCallback(self._on_close, None)
        except libvirt.libvirtError:
            pass  # drivers without a persistent connection (test://) have none
        try:
            conn.setKeepAlive(KEEPALIVE_INTERVAL, KEEPALIVE_COUNT)
        except libvirt.libvirtError:
            pass
        conn.domainEventRegisterAny(
            None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._on_lifecycle, None
        )
        for constant, what in LIBVIRT_DEVICE_EVENTS.items():
            if hasattr(libvirt, constant):
                callback = self._on_metadata if what == METADATA_CHANGED else self._on_device
                conn.domainEventRegisterAny(None, getattr(libvirt, constant), callback, what)
        self.conn = conn

    def close(self) -> bool:
        """Close the connection; whether one was open."""
        conn, self.conn = self.conn, None
        if conn is None:
            return False
        try:
            conn.unregisterCloseCallback()
        except libvirt.libvirtError:
            pass
        try:
            conn.close()
        except libvirt.libvirtError:
            pass
        return True

    def _on_close(self, conn: libvirt.virConnect, reason: int, opaque: object) -> None:
        self.closed.set()

    def _on_lifecycle(
        self, conn: libvirt.virConnect, dom: libvirt.virDomain, event: int, detail: int, _: object
    ) -> None:
        try:
            self.events.put((dom.UUIDString(), dom.name(), dom, event, detail))
        except Exception as exc:  # an escaping exception would only be printed by libvirt
            self.log.error(f"listener: dropped a lifecycle event: {exc!r}")

    def _on_device(
        self, conn: libvirt.virConnect, dom: libvirt.virDomain, alias: str, what: str
    ) -> None:
        try:
            self.events.put((dom.UUIDString(), dom.name(), dom, what, alias))
        except Exception as exc:
            self.log.error(f"listener: dropped a device event: {exc!r}")

    def _on_metadata(
        self, conn: libvirt.virConnect, dom: libvirt.virDomain, kind: int, uri: str, what: str
    ) -> None:
        self._on_device(conn, dom, "", what)
