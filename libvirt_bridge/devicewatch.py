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

After a gap (the listener down, or its connection lost) a resync compares a domain's
devices with those it kept (``catch_up``): a device gone fires its removal with the
element it had, one that came fires its addition. Only within one run of the domain:
libvirt gives a domain a new ``id`` at each start, and a start brings its own devices. The
listener keeps the XML the devices were taken from (``xml``, less the devices removed
since) across its restarts. A device the resync found may still have its libvirt event
on the way (it changed after the listener subscribed, before the resync read the XML):
that event is known for one already fired (``echo``).

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


class Missed(NamedTuple):
    """A device event a resync found missed: libvirt's ``op`` of ``alias``, and what fires."""

    op: str
    alias: str
    event: str
    payload: Payload


class DeviceWatch:
    """What each running domain's devices would give their event's scripts, by alias."""

    def __init__(self) -> None:
        self.domains: dict[str, dict[str, Payload]] = {}
        # The XML the devices were taken from, for the listener to keep; the run's ``id``.
        self.xml: dict[str, str] = {}
        self.runs: dict[str, str | None] = {}
        # By domain, alias: the libvirt event (op) a resync fired for, whose own may follow.
        self.found_on_resync: dict[str, dict[str, str]] = {}

    def remember(self, uuid: str, xml: str) -> None:
        """Take the devices of the live domain ``xml`` as what the domain has now.

        Raises domxml.XMLError.
        """
        root = domxml.parse(xml.encode(), remove_blank_text=True)
        self.domains[uuid] = {
            alias: _payload(root, element) for alias, element in devices.by_alias(root).items()
        }
        self.xml[uuid] = xml
        self.runs[uuid] = root.get("id")
        self._drop_contradicted(uuid)

    def catch_up(self, uuid: str, xml: str) -> list[Missed]:
        """The device events missed since the domain's devices were taken; then take ``xml``.

        Nothing when they were never taken, or in another run of the domain (its devices came
        with its start). Each is found once: the next call compares with the devices now.
        """
        before, run = self.domains.get(uuid), self.runs.get(uuid)
        self.remember(uuid, xml)
        now = self.domains[uuid]
        if before is None or run is None or run != self.runs[uuid]:
            return []
        missed = _missed(mapping.DEVICE_REMOVED, before, now)
        missed += _missed(mapping.DEVICE_ADDED, now, before)
        marks = self.found_on_resync.setdefault(uuid, {})
        for change in missed:
            marks[change.alias] = change.op
        return missed

    def knows(self, uuid: str, alias: str | None = None) -> bool:
        """Whether the domain's devices (or its device ``alias``) were seen."""
        known = self.domains.get(uuid)
        return known is not None and (alias is None or _device_alias(known, alias) in known)

    def fired(self, uuid: str, op: str, alias: str) -> tuple[str, Payload] | None:
        """The event libvirt's device event ``op`` of ``alias`` fires, with its payload.

        None when the device is not one that has events, or was not seen (``knows``). A
        removed device is forgotten, and taken out of ``xml``.
        """
        known = self.domains.get(uuid, {})
        alias = _device_alias(known, alias)
        if op == mapping.DEVICE_REMOVED:
            payload = known.pop(alias, None)
            self.found_on_resync.get(uuid, {}).pop(alias, None)
            if payload is not None:
                self._drop_device(uuid, alias)
        else:
            payload = known.get(alias)
        if payload is None:
            return None
        event = _ROWS.get((op, payload.tag))
        return (event, payload) if event is not None else None

    def echo(self, uuid: str, op: str, alias: str) -> bool:
        """Whether libvirt's event ``op`` of ``alias`` is one a resync fired already.

        Answers True once.
        """
        marks = self.found_on_resync.get(uuid, {})
        alias = _device_alias(self.domains.get(uuid, {}), alias)
        if marks.get(alias) != op:
            return False
        del marks[alias]
        return True

    def forget(self, uuid: str) -> None:
        self.domains.pop(uuid, None)
        self.xml.pop(uuid, None)
        self.runs.pop(uuid, None)
        self.found_on_resync.pop(uuid, None)

    def _drop_contradicted(self, uuid: str) -> None:
        """Forget the resync's marks the devices now contradict (a device gone, or back):
        whatever libvirt says of those devices from now on is news."""
        marks = self.found_on_resync.get(uuid)
        if not marks:
            return
        present = self.domains[uuid]
        for alias, op in list(marks.items()):
            if (alias in present) != (op == mapping.DEVICE_ADDED):
                del marks[alias]

    def _drop_device(self, uuid: str, alias: str) -> None:
        """Take a removed device out of the kept XML, which a later listener reads back."""
        xml = self.xml.get(uuid)
        if xml is None:
            return
        root = domxml.parse(xml.encode(), remove_blank_text=True)
        element = devices.by_alias(root).get(alias)
        parent = element.getparent() if element is not None else None
        if element is not None and parent is not None:
            parent.remove(element)
            self.xml[uuid] = etree.tostring(root, encoding="unicode")


def _device_alias(known: dict[str, Payload], alias: str) -> str:
    """The device's own alias for the name a libvirt event gave (see the module doc)."""
    if alias not in known and alias.startswith(_MEMORY_BACKEND):
        device = alias[len(_MEMORY_BACKEND) :]
        if device in known and known[device].tag == "memory":
            return device
    return alias


def _missed(op: str, have: dict[str, Payload], lack: dict[str, Payload]) -> list[Missed]:
    """libvirt's event ``op`` for each device of ``have`` that ``lack`` has not (by alias),
    where it fires one."""
    missed = []
    for alias, payload in have.items():
        event = _ROWS.get((op, payload.tag))
        if alias not in lack and event is not None:
            missed.append(Missed(op, alias, event, payload))
    return missed


def _payload(root: etree._Element, element: etree._Element) -> Payload:
    if element.tag not in WATCHED_TAGS:
        return Payload(element.tag, b"", EventProperties())
    return Payload(element.tag, devices.event_xml(element), devices.event_properties(root, element))
