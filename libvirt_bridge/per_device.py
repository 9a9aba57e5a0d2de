"""VDSM's per-device events beside a VM's event (``mapping.DEVICE_COMPANIONS``).

before_device_create, after_device_create, ..._destroy and ..._migrate_source and
_destination fire once per device of the domain that has custom properties in its
metadata, of the classes VDSM fires each for (``mapping.COMPANION_TAGS``: NICs, and host
devices and leases for before_device_create), each with that device's element alone and its
properties then the VM's, as VDSM's do. A before_* one runs, per device in ``<devices>``
order, before the VM's event, and a failure of one that can veto refuses the operation
without running the VM's event; an after_* one is queued as one job behind the VM's
(``firing.fire``), and the runner that drains it runs it per device.

Only before_device_create's element is applied: where the VM's event's XML is (the
``start`` verb), the element its scripts leave replaces the device, and before_vm_start
gets the domain XML with it; under libvirt's ``prepare`` call, as for before_vm_start, a
change is logged (or refused, with ``start_xml_changes = "refuse"``).

Imported only when a companion event has scripts. Finding the devices parses the XML with
lxml, which costs a hook call more than an interpreter start: queueing an after_* one
parses nothing.
"""

from __future__ import annotations

from . import domxml, mapping
from .sync import run_sync

TYPE_CHECKING = False
if TYPE_CHECKING:
    from lxml import etree

    from .config import Config
    from .jobs import Job
    from .log import Log
    from .runner import EventProperties


def companion(row: mapping.Row) -> mapping.Row | None:
    """The row of the per-device event that fires beside ``row``'s, or None."""
    event = mapping.DEVICE_COMPANIONS.get(row.event)
    if event is None:
        return None
    applied = event in mapping.APPLIED_COMPANIONS and row.xml == mapping.XML_WRITABLE
    xml = mapping.XML_DEVICE_WRITABLE if applied else mapping.XML_DEVICE
    return mapping.Row(row.driver, row.op, row.subop, row.context, event, row.mode, row.veto, xml)


def _devices(event: str, root: etree._Element) -> list[tuple[etree._Element, EventProperties]]:
    from . import devices

    tags = mapping.COMPANION_TAGS[event]
    found = [(element, _) for element, _ in devices.with_properties(root) if element.tag in tags]
    return [(element, devices.event_properties(root, element)) for element, _ in found]


def run_before(
    row: mapping.Row,
    config: Config,
    log: Log,
    name: str,
    uuid: str,
    xml: bytes,
    scripts: list[str],
) -> tuple[int, bytes, int]:
    """Run ``row``'s companion for each device; (status, the domain XML after them, how
    many devices it ran for).

    The XML is ``xml`` unless an applied companion's scripts changed a device's element.
    """
    from lxml import etree

    from . import devices

    device_row = companion(row)
    assert device_row is not None, row
    try:
        root = domxml.parse(xml, remove_blank_text=True)
    except domxml.XMLError as exc:
        log.error(f"{device_row.event} domain={name!r}: the domain XML is not well-formed ({exc})")
        return (1 if row.veto else 0), xml, 0
    changed = False
    ran = 0
    for element, props in _devices(device_row.event, root):
        data = devices.event_xml(element)
        ran += 1
        status, output = run_sync(device_row, config, log, name, uuid, data, scripts, props)
        if status:
            return status, xml, ran
        if output:
            try:
                new = devices.parse_element(output)
            except devices.DeviceError as exc:
                log.error(f"{device_row.event} domain={name!r}: scripts left no device ({exc})")
                return (1 if row.veto else 0), xml, ran
            parent = element.getparent()
            assert parent is not None  # a device of <devices>
            parent.replace(element, new)
            changed = True
    return 0, (etree.tostring(root) if changed else xml), ran


def run_after(config: Config, log: Log, job: Job, scripts: list[str], tmp_prefix: str) -> None:
    """Run a queued companion's ``job`` (``firing``) on each device of its domain's XML
    that has custom properties, in order."""
    from . import devices
    from .events import run_scripts_for

    try:
        root = domxml.parse(job.xml, remove_blank_text=True)
    except domxml.XMLError as exc:
        log.error(f"{job.event} domain={job.name!r}: the domain XML is not well-formed ({exc})")
        return
    for element, props in _devices(job.event, root):
        data = devices.event_xml(element)
        run_scripts_for(
            config, log, job.event, job.name, job.uuid, data, scripts, tmp_prefix, props, job.source
        )
