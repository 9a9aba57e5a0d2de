"""Which VDSM device event a libvirt device event fires, and what its scripts get.

libvirt's ``DEVICE_ADDED``, ``DEVICE_REMOVED`` and ``DEVICE_REMOVAL_FAILED`` events carry
the device's alias alone. The element and the properties come from the domain's live XML:
read after the event for an added device; for a removed one, the device is gone from it
by then, so the listener keeps, per running domain, what each device's event would give
its scripts, from the XML it read last (at the domain's start, a resync, an added device
or a change of its metadata).

libvirt names a hotplugged memory device in DEVICE_ADDED by its memory backend's alias,
``mem`` and the device's (``memdimm0`` for the ``<memory>`` whose alias is ``dimm0``; seen
on libvirt 9.0 and 11.3): that name is taken for the device's.

Pure logic, no libvirt: the listener reads the XML and hands it here.
"""

from __future__ import annotations

from typing import NamedTuple

from lxml import etree

from . import devices, domxml, mapping
from .runner import EventProperties

# The device elements that have events, by libvirt event: the listener's device rows.
_ROWS: dict[tuple[str, str], str] = {
    (row.op, row.subop): row.event
    for row in mapping.HOOK_TABLE
    if row.driver == "listener" and row.xml == mapping.XML_DEVICE
}
WATCHED_TAGS = frozenset(tag for _, tag in _ROWS)
_MEMORY_BACKEND = "mem"


class Payload(NamedTuple):
    """What one device event's scripts get: the element alone, and custom properties."""

    tag: str
    xml: bytes
    props: EventProperties


class DeviceWatch:
    """What each running domain's devices would give their event's scripts, by alias."""

    def __init__(self) -> None:
        self.domains: dict[str, dict[str, Payload]] = {}

    def remember(self, uuid: str, xml: str) -> None:
        """Take the devices of the live domain ``xml`` as what the domain has now."""
        root = domxml.parse(xml.encode(), remove_blank_text=True)
        self.domains[uuid] = {
            alias: _payload(root, element) for alias, element in devices.by_alias(root).items()
        }

    def forget(self, uuid: str) -> None:
        self.domains.pop(uuid, None)

    def knows(self, uuid: str, alias: str | None = None) -> bool:
        """Whether the domain's devices (or its device ``alias``) were seen."""
        known = self.domains.get(uuid)
        return known is not None and (alias is None or _device_alias(known, alias) in known)

    def fired(self, uuid: str, op: str, alias: str) -> tuple[str, Payload] | None:
        """The event libvirt's device event ``op`` of ``alias`` fires, with its payload.

        None when the device is not one that has events, or was not seen (``knows``). A
        removed device is forgotten.
        """
        known = self.domains.get(uuid, {})
        alias = _device_alias(known, alias)
        payload = known.pop(alias, None) if op == mapping.DEVICE_REMOVED else known.get(alias)
        if payload is None:
            return None
        event = _ROWS.get((op, payload.tag))
        return (event, payload) if event is not None else None


def _device_alias(known: dict[str, Payload], alias: str) -> str:
    """The device's own alias for the name a libvirt event gave (see the module doc)."""
    if alias not in known and alias.startswith(_MEMORY_BACKEND):
        device = alias[len(_MEMORY_BACKEND) :]
        if device in known and known[device].tag == "memory":
            return device
    return alias


def _payload(root: etree._Element, element: etree._Element) -> Payload:
    if element.tag not in WATCHED_TAGS:
        return Payload(element.tag, b"", EventProperties())
    return Payload(element.tag, devices.event_xml(element), devices.event_properties(root, element))
