"""VDSM's per-device events beside a VM's event (``mapping.DEVICE_COMPANIONS``).

before_device_create, after_device_create, ..._destroy and ..._migrate_source and
_destination fire once per device of the domain that has custom properties in its
metadata (not disks for device_create), each with that device's element alone and its
properties then the VM's, as VDSM's do. A before_* one runs, per device in ``<devices>``
order, before the VM's event, and a failure of one that can veto refuses the operation
without running the VM's event; an after_* one is queued, per device, behind the VM's.

Only before_device_create's element is applied: where the VM's event's XML is (the
``start`` verb), the element its scripts leave replaces the device, and before_vm_start
gets the domain XML with it; under libvirt's ``prepare`` call, as for before_vm_start, a
change is logged (or refused, with ``start_xml_changes = "refuse"``).

Imported only when a companion event has scripts: it parses the XML with lxml.
"""

from __future__ import annotations

from lxml import etree

from . import devices, domxml, mapping
from .asyncq import Job, enqueue
from .sync import run_sync

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .config import Config
    from .log import Log


def companion(row: mapping.Row) -> mapping.Row | None:
    """The row of the per-device event that fires beside ``row``'s, or None."""
    event = mapping.DEVICE_COMPANIONS.get(row.event)
    if event is None:
        return None
    applied = event in mapping.APPLIED_COMPANIONS and row.xml == mapping.XML_WRITABLE
    xml = mapping.XML_DEVICE_WRITABLE if applied else mapping.XML_DEVICE
    return mapping.Row(row.driver, row.op, row.subop, row.context, event, row.mode, row.veto, xml)


def _devices(event: str, root: etree._Element) -> list[tuple[etree._Element, dict[str, str]]]:
    found = devices.with_properties(root)
    if event in mapping.NO_DISKS_COMPANIONS:
        found = [(element, props) for element, props in found if element.tag != "disk"]
    return [(element, devices.event_properties(root, element)) for element, _ in found]


def run_before(
    row: mapping.Row,
    config: Config,
    log: Log,
    name: str,
    uuid: str,
    xml: bytes,
    scripts: list[str],
) -> tuple[int, bytes]:
    """Run ``row``'s companion for each device; (status, the domain XML after them).

    The XML is ``xml`` unless an applied companion's scripts changed a device's element.
    """
    device_row = companion(row)
    assert device_row is not None, row
    try:
        root = domxml.parse(xml, remove_blank_text=True)
    except domxml.XMLError as exc:
        log.error(f"{device_row.event} domain={name!r}: the domain XML is not well-formed ({exc})")
        return (1 if row.veto else 0), xml
    changed = False
    for element, props in _devices(device_row.event, root):
        data = devices.event_xml(element)
        status, output = run_sync(device_row, config, log, name, uuid, data, scripts, props)
        if status:
            return status, xml
        if output:
            try:
                new = devices.parse_element(output)
            except devices.DeviceError as exc:
                log.error(f"{device_row.event} domain={name!r}: scripts left no device ({exc})")
                return (1 if row.veto else 0), xml
            parent = element.getparent()
            assert parent is not None  # a device of <devices>
            parent.replace(element, new)
            changed = True
    return 0, (etree.tostring(root) if changed else xml)


def queue_after(
    event: str, config: Config, log: Log, key: str, name: str, uuid: str, xml: bytes
) -> int:
    """Queue ``event``'s companion for each device, behind what is queued; how many."""
    device_event = mapping.DEVICE_COMPANIONS[event]
    try:
        root = domxml.parse(xml, remove_blank_text=True)
    except domxml.XMLError as exc:
        log.error(f"{device_event} domain={name!r}: the domain XML is not well-formed ({exc})")
        return 0
    queued = 0
    for element, props in _devices(device_event, root):
        job = Job(device_event, name, uuid, devices.event_xml(element), props=props)
        try:
            enqueue(config.state_dir, key, job)
        except OSError as exc:
            log.error(f"cannot queue {device_event} of {name!r}: {exc.strerror}; lost")
            continue
        queued += 1
    return queued
