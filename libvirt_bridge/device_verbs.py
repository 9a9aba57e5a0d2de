"""The device verbs: VDSM's "before" device events, then the change in libvirt.

``libvirt-bridge attach-device|detach-device|update-device`` run the event of the device's
element (before_nic_hotplug, before_disk_hotunplug, ...: the table's device verb rows) on
that element alone, with the device's custom properties then the VM's, as VDSM does; a
failing script stops the change. What the scripts of a hotplug or an update leave is what
is attached or applied. libvirt reports an added or a removed device (DEVICE_ADDED,
DEVICE_REMOVED), and the listener fires the after events from those, for these verbs and
for plain virsh alike; the verbs fire the events libvirt reports nothing for: a refused
attach or update (after_nic_hotplug_fail, after_update_device_fail), a done update
(after_update_device), and a NIC still there when the wait for its removal ends
(after_nic_hotunplug_fail).

``attach-device --prop NAME=VALUE`` keeps the device's custom properties in the metadata
(live and persistent), before the attach, so that its after event and every later one
get them; a refused attach puts the metadata back as it was.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import NamedTuple

import libvirt
from lxml import etree

from . import devices, domxml, mapping, props
from .connection import message
from .errors import UsageError
from .firing import Firing, fire
from .mapping import BEFORE, DONE, FAILED, NOT_REMOVED
from .runner import EventProperties
from .verbs import VerbError, Verbs, hook_process_environment

# How long detach-device waits for libvirt to report the device gone (VDSM waits too).
REMOVAL_WAIT = 30.0


class Device(NamedTuple):
    """A device of a running domain, as its events' scripts get it."""

    element: etree._Element
    props: EventProperties

    @property
    def xml(self) -> bytes:
        return devices.event_xml(self.element)


def _describe(row: mapping.Row, device: Device, domain: str) -> str:
    """What a device verb was asked, as a sentence's end: ``to attach the <disk> sdb to
    'vm1'``."""
    action = row.op.removesuffix("-device")
    where = {"attach": "to", "detach": "from"}.get(action, "of")
    key = devices.key_of(device.element)
    named = f" {key.value}" if key is not None else ""
    return f"to {action} the <{row.subop}>{named} {where} {domain!r}"


class DeviceVerbs:
    """The device verbs on one connection (a :class:`Verbs`')."""

    def __init__(self, verbs: Verbs) -> None:
        self.verbs = verbs
        self.config = verbs.config
        self.log = verbs.log

    # --- the verbs ---------------------------------------------------------------------

    def attach(
        self, ident: str, xml: bytes, new_props: Mapping[str, str], persistent: bool
    ) -> None:
        dom = self._running(ident)
        element = _parse(xml)
        row = self._row("attach-device", element.tag, BEFORE)
        try:
            props.check_against_schema(
                new_props, self.config.property_schema, str(element.tag), self.config.path
            )
        except props.PropsError as exc:
            raise UsageError(f"--prop: {exc}") from None
        key = devices.key_of(element)
        if new_props and key is None:
            raise VerbError(
                f"--prop needs the <{element.tag}> to have a MAC, a target or an alias to "
                "keep its properties under"
            )
        root = _live_root(dom)
        device = Device(element, devices.event_properties(root, element, new_props))
        element = self._before(row, dom, device)
        kept = self._keep_props(dom, element, new_props)
        flags = _flags(persistent)
        try:
            dom.attachDeviceFlags(etree.tostring(element).decode(), flags)
        except libvirt.libvirtError as exc:
            self._restore_metadata(dom, kept)
            self._after(dom, "attach-device", FAILED, Device(element, device.props))
            raise VerbError(f"attaching the <{element.tag}> failed: {message(exc)}") from None
        print(f"attached the <{element.tag}> to {dom.name()!r}{_also(persistent)}")

    def detach(self, ident: str, device_ident: str, persistent: bool, wait: float) -> None:
        dom = self._running(ident)
        root = _live_root(dom)
        element = _find(root, device_ident)
        row = self._row("detach-device", element.tag, BEFORE)
        device = Device(element, devices.event_properties(root, element))
        self._before(row, dom, device)
        alias = _alias(element)
        try:
            dom.detachDeviceFlags(etree.tostring(element).decode(), _flags(persistent))
        except libvirt.libvirtError as exc:
            self._after(dom, "detach-device", NOT_REMOVED, device)
            raise VerbError(f"detaching the <{element.tag}> failed: {message(exc)}") from None
        if alias and not _gone(dom, alias, wait):
            self._after(dom, "detach-device", NOT_REMOVED, device)
            raise VerbError(
                f"the <{element.tag}> {alias!r} is still there {wait:.0f} s after libvirt "
                "was asked to detach it (the guest has not released it)"
            )
        print(f"detached the <{element.tag}> from {dom.name()!r}{_also(persistent)}")

    def update(self, ident: str, xml: bytes, persistent: bool) -> None:
        dom = self._running(ident)
        element = _parse(xml)
        row = self._row("update-device", element.tag, BEFORE)
        root = _live_root(dom)
        key = devices.key_of(element)
        if key is None or key.kind != devices.NIC:
            raise VerbError("update-device takes a NIC: the <interface> needs its <mac>")
        _find(root, key.value)  # it must be there
        device = Device(element, devices.event_properties(root, element))
        element = self._before(row, dom, device)
        device = Device(element, device.props)
        try:
            dom.updateDeviceFlags(etree.tostring(element).decode(), _flags(persistent))
        except libvirt.libvirtError as exc:
            self._after(dom, "update-device", FAILED, device)
            raise VerbError(f"updating the <{element.tag}> failed: {message(exc)}") from None
        self._after(dom, "update-device", DONE, device)
        print(f"updated the <{element.tag}> of {dom.name()!r}{_also(persistent)}")

    # --- the events ----------------------------------------------------------------------

    def _running(self, ident: str) -> libvirt.virDomain:
        dom = self.verbs.domain(ident)
        if not dom.isActive():
            raise VerbError(
                f"domain {dom.name()!r} is not running: change its persistent definition "
                "with virsh (--config); no VDSM event fires for that"
            )
        return dom

    def _row(self, verb: str, tag: str, context: str) -> mapping.Row:
        row = mapping.find_row("verb", verb, tag, context)
        if row is None:
            tags = sorted({r.subop for r in mapping.HOOK_TABLE if r.op == verb})
            raise VerbError(
                f"{verb} takes a device VDSM has events for ({', '.join(f'<{t}>' for t in tags)}),"
                f" not a <{tag}>: use virsh {verb} for that"
            )
        return row

    def _before(self, row: mapping.Row, dom: libvirt.virDomain, device: Device) -> etree._Element:
        """Run the verb's before event; the element to apply (the scripts' if they changed it).

        Raises VerbError when a script refuses (its stderr is already printed).
        """
        name = dom.name()
        firing = Firing(row, name, dom.UUIDString(), device.xml, props=device.props)
        with hook_process_environment():
            fired = fire(firing, self.config, self.log)
        if not fired.scripts:
            return device.element
        print(f"{row.event}: {fired.scripts} script(s) ran")
        if fired.status:
            raise VerbError(f"{row.event} refused {_describe(row, device, name)}; nothing was done")
        if not fired.output:
            return device.element
        try:
            changed = devices.parse_element(fired.output)
        except (domxml.XMLError, devices.DeviceError) as exc:
            raise VerbError(
                f"{row.event} left no device element ({exc}); nothing was done"
            ) from None
        if changed.tag != device.element.tag:
            raise VerbError(
                f"{row.event} turned the <{device.element.tag}> into a <{changed.tag}>; "
                "nothing was done"
            )
        return changed

    def _after(self, dom: libvirt.virDomain, verb: str, context: str, device: Device) -> None:
        """Queue the verb's after event of this outcome, if the table has one."""
        row = mapping.find_row("verb", verb, device.element.tag, context)
        if row is None:
            return
        firing = Firing(row, dom.name(), dom.UUIDString(), device.xml, props=device.props)
        with hook_process_environment():
            fire(firing, self.config, self.log)

    # --- the device's properties ----------------------------------------------------------

    def _keep_props(
        self, dom: libvirt.virDomain, element: etree._Element, new_props: Mapping[str, str]
    ) -> list[tuple[int, str | None]]:
        """Write ``new_props`` as the device's; return each definition's metadata before."""
        ref = devices.ref_of(element)
        if not new_props or ref is None:
            return []
        kept = [(flag, props.read_element(dom, flag)) for _, flag in props.definitions(dom)]
        props.change(dom, new_props, [], ref)
        return kept

    def _restore_metadata(self, dom: libvirt.virDomain, kept: list[tuple[int, str | None]]) -> None:
        for flag, xml in kept:
            try:
                props.write_element(dom, flag, xml)
            except props.PropsError as exc:
                self.log.error(f"putting back the metadata of {dom.name()!r}: {exc}")


def _parse(xml: bytes) -> etree._Element:
    try:
        return devices.parse_element(xml)
    except domxml.XMLError as exc:
        raise VerbError(f"the device file is not well-formed XML: {exc}") from None
    except devices.DeviceError as exc:
        raise VerbError(f"the device file holds no device: {exc}") from None


def _live_root(dom: libvirt.virDomain) -> etree._Element:
    try:
        return domxml.parse(dom.XMLDesc(0).encode(), remove_blank_text=True)
    except libvirt.libvirtError as exc:
        raise VerbError(f"cannot read the XML of {dom.name()!r}: {message(exc)}") from None


def _find(root: etree._Element, ident: str) -> etree._Element:
    try:
        return devices.find(root, ident)
    except devices.DeviceError as exc:
        raise VerbError(str(exc)) from None


def _alias(element: etree._Element) -> str:
    alias = element.find("alias")
    return str(alias.get("name") or "") if alias is not None else ""


def _gone(dom: libvirt.virDomain, alias: str, wait: float) -> bool:
    """Whether the device ``alias`` leaves the live XML within ``wait`` seconds."""
    deadline = time.monotonic() + wait
    while True:
        if alias not in devices.by_alias(_live_root(dom)):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)


def _flags(persistent: bool) -> int:
    flags: int = libvirt.VIR_DOMAIN_AFFECT_LIVE
    return flags | libvirt.VIR_DOMAIN_AFFECT_CONFIG if persistent else flags


def _also(persistent: bool) -> str:
    return " (and its persistent definition)" if persistent else ""
