"""A domain's devices and their custom properties, for VDSM's device events.

oVirt 4.2 and later keep a device's custom properties in the domain's metadata, in the
same ``ovirt-vm`` element as the VM's, one ``device`` element per device::

    <ovirt-vm:vm xmlns:ovirt-vm="http://ovirt.org/vm/1.0">
      <ovirt-vm:device mac_address="52:54:00:12:34:56">          a NIC, by its MAC
        <ovirt-vm:custom><ovirt-vm:extnet>br-ext</ovirt-vm:extnet></ovirt-vm:custom>
      </ovirt-vm:device>
      <ovirt-vm:device devtype="disk" name="vda">...               a disk, by its target
      <ovirt-vm:device devtype="hostdev" alias="ua-gpu0">...       any other, by its alias
    </ovirt-vm:vm>

A MAC matches whatever its case; libvirt's user aliases (``ua-*``) are the stable ones.
A device event's script gets the device's element alone in ``$_hook_domxml``
(:func:`element_xml`), as VDSM gives it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

from lxml import etree

from .domxml import OVIRT_VM_NS, custom_properties
from .runner import EventProperties

NIC = "nic"
DISK = "disk"
ALIAS = "alias"
# The element a device event's scripts get a device wrapped in, by the device's tag (VDSM
# gives a memory device's scripts ``<devices><memory>...</memory></devices>``).
WRAPPED_IN: dict[str, str] = {"memory": "devices"}

_VM = f"{{{OVIRT_VM_NS}}}vm"
_DEVICE = f"{{{OVIRT_VM_NS}}}device"
_CUSTOM = f"{{{OVIRT_VM_NS}}}custom"


class DeviceError(ValueError):
    """No device, or more than one, answers to what was asked; says which."""


class DeviceKey(NamedTuple):
    """How the metadata names one device: ``kind`` (NIC, DISK or ALIAS) and its value."""

    kind: str
    value: str

    def attributes(self, tag: str) -> dict[str, str]:
        """The attributes of its ``ovirt-vm:device`` element; ``tag``: its XML element's."""
        if self.kind == NIC:
            return {"mac_address": self.value}
        if self.kind == DISK:
            return {"devtype": "disk", "name": self.value}
        return {"devtype": tag, "alias": self.value}

    def __str__(self) -> str:
        return {NIC: "NIC", DISK: "disk", ALIAS: "device"}[self.kind] + f" {self.value}"


def key_of(element: etree._Element) -> DeviceKey | None:
    """The metadata key of a device element of ``<devices>``; None when it has none.

    A device without a MAC, a target or an alias (libvirt gives every device of a
    running domain an alias; a defined one may have none) cannot have properties.
    """
    if element.tag == "interface":
        mac = element.find("mac")
        if mac is not None and mac.get("address"):
            return DeviceKey(NIC, str(mac.get("address")).lower())
    elif element.tag == "disk":
        target = element.find("target")
        if target is not None and target.get("dev"):
            return DeviceKey(DISK, str(target.get("dev")))
    alias = element.find("alias")
    if alias is not None and alias.get("name"):
        return DeviceKey(ALIAS, str(alias.get("name")))
    return None


def entry_key(entry: etree._Element) -> DeviceKey | None:
    """The key an ``ovirt-vm:device`` element of the metadata names (None: it names none)."""
    if entry.get("mac_address"):
        return DeviceKey(NIC, str(entry.get("mac_address")).lower())
    if entry.get("devtype") == "disk" and entry.get("name"):
        return DeviceKey(DISK, str(entry.get("name")))
    if entry.get("alias"):
        return DeviceKey(ALIAS, str(entry.get("alias")))
    return None


def devices(root: etree._Element) -> list[etree._Element]:
    """The device elements of the domain ``root``, in document order."""
    found = root.find("devices")
    if found is None:
        return []
    return [child for child in found if isinstance(child.tag, str)]


def metadata_properties(root: etree._Element) -> dict[DeviceKey, dict[str, str]]:
    """Every device's custom properties in the domain's metadata, by key.

    Read as the VM's are (leaf children of ``custom``, verbatim); where the metadata names
    a device twice, or a property twice, the later one wins.
    """
    found: dict[DeviceKey, dict[str, str]] = {}
    for entry in root.iterfind(f"metadata/{_VM}/{_DEVICE}"):
        key = entry_key(entry)
        if key is None:
            continue
        props = found.setdefault(key, {})
        for custom in entry.iterfind(_CUSTOM):
            for child in custom:
                if isinstance(child.tag, str) and not len(child):
                    props[etree.QName(child).localname] = child.text or ""
    return found


def with_properties(root: etree._Element) -> list[tuple[etree._Element, dict[str, str]]]:
    """The devices that have custom properties, with them, in ``<devices>`` order."""
    by_key = metadata_properties(root)
    found = []
    for element in devices(root):
        key = key_of(element)
        if key is not None and by_key.get(key):
            found.append((element, by_key[key]))
    return found


def by_alias(root: etree._Element) -> dict[str, etree._Element]:
    """The devices of the domain ``root`` that have an alias, by it."""
    found = {}
    for element in devices(root):
        alias = element.find("alias")
        if alias is not None and alias.get("name"):
            found[str(alias.get("name"))] = element
    return found


def event_properties(
    root: etree._Element, element: etree._Element, given: Mapping[str, str] | None = None
) -> EventProperties:
    """A device event's custom properties: the device's (its metadata's, then ``given``,
    properties not written yet), and the VM's (which win a clash, ``screening.screen``)."""
    key = key_of(element)
    props = dict(metadata_properties(root).get(key, {})) if key is not None else {}
    props.update(given or {})
    return EventProperties(custom_properties(root), props, str(element.tag))


def event_xml(element: etree._Element) -> bytes:
    """What a device event's scripts find in ``$_hook_domxml``: the element, as VDSM gives it."""
    return element_xml(element, WRAPPED_IN.get(element.tag))


def find(root: etree._Element, ident: str) -> etree._Element:
    """The device of the domain ``root`` that ``ident`` names: a MAC, a disk target or an alias."""
    wanted = ident.strip()
    matches = []
    for element in devices(root):
        names = set()
        key = key_of(element)
        if key is not None and key.kind != ALIAS:
            names.add(key.value)
        alias = element.find("alias")
        if alias is not None and alias.get("name"):
            names.add(str(alias.get("name")))
        if wanted in names or wanted.lower() in names:
            matches.append(element)
    if not matches:
        raise DeviceError(f"no device of this domain has the MAC, disk target or alias {ident!r}")
    if len(matches) > 1:
        tags = ", ".join(f"<{m.tag}>" for m in matches)
        raise DeviceError(f"{ident!r} names more than one device ({tags}): give its alias")
    return matches[0]


def element_xml(element: etree._Element, wrap: str | None = None) -> bytes:
    """One device element as a document of its own, pretty-printed (in ``<wrap>`` if given).

    VDSM gives a memory device's scripts ``<devices><memory>...</memory></devices>``.
    """
    copy = etree.fromstring(etree.tostring(element))
    copy.tail = None
    for node in copy.iter():
        if node.text is not None and not node.text.strip() and len(node):
            node.text = None
        if node is not copy and node.tail is not None and not node.tail.strip():
            node.tail = None
    if wrap is not None:
        outer = etree.Element(wrap)
        outer.append(copy)
        copy = outer
    etree.cleanup_namespaces(copy)
    return etree.tostring(copy, pretty_print=True)


def parse_element(xml: bytes) -> etree._Element:
    """A device element from a file (``attach-device``'s), or its ``<devices>`` wrapper's one.

    Raises XMLError when it is not XML, and DeviceError when it is not one device.
    """
    from .domxml import parse

    element = parse(xml, remove_blank_text=True)
    if element.tag == "devices":
        children = [child for child in element if isinstance(child.tag, str)]
        if len(children) != 1:
            raise DeviceError(f"<devices> holds {len(children)} elements, not one device")
        element = children[0]
    if not isinstance(element.tag, str) or element.tag in ("domain", "metadata"):
        raise DeviceError(f"<{element.tag}> is not a device element")
    return element
