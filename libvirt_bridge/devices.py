"""A domain's devices and their custom properties, for VDSM's device events.

oVirt 4.2 and later keep a device's custom properties in the domain's metadata, in the
same ``ovirt-vm`` element as the VM's, one ``device`` element per device, named the way
VDSM names it (``get_identifying_attrs`` of its device classes)::

    <ovirt-vm:vm xmlns:ovirt-vm="http://ovirt.org/vm/1.0">
      <ovirt-vm:device mac_address="52:54:00:12:34:56">          a NIC, by its MAC
        <ovirt-vm:custom><ovirt-vm:extnet>br-ext</ovirt-vm:extnet></ovirt-vm:custom>
      </ovirt-vm:device>
      <ovirt-vm:device devtype="disk" name="vda">...               a disk, by its target
      <ovirt-vm:device devtype="hostdev" uuid="c2177883-...">...   an mdev, by its UUID
      <ovirt-vm:device devtype="lease" name="lease-key">...        a lease, by its key
      <ovirt-vm:device devtype="hostdev" name="ua-gpu0">...        any other, by its alias
    </ovirt-vm:vm>

A NIC's entry may carry ``alias`` too (two NICs of a team share a MAC): it then names the
NIC with that alias only. A MAC and an mdev's UUID match whatever their case; libvirt's
user aliases (``ua-*``) are the stable ones. Entries written by earlier versions of the
bridge (``devtype="hostdev" alias="ua-gpu0"``) are read too. A device event's script gets
the device's element alone in ``$_hook_domxml`` (:func:`element_xml`), as VDSM gives it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import NamedTuple

from lxml import etree

from .domxml import OVIRT_VM_NS, custom_properties
from .runner import EventProperties

NIC = "nic"
DISK = "disk"
MDEV = "mdev"
LEASE = "lease"
# The element a device event's scripts get a device wrapped in, by the device's tag (VDSM
# gives a memory device's scripts ``<devices><memory>...</memory></devices>``).
WRAPPED_IN: dict[str, str] = {"memory": "devices"}

_VM = f"{{{OVIRT_VM_NS}}}vm"
_DEVICE = f"{{{OVIRT_VM_NS}}}device"
_CUSTOM = f"{{{OVIRT_VM_NS}}}custom"
_MAC = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")


class DeviceError(ValueError):
    """No device, or more than one, answers to what was asked; says which."""


class DeviceKey(NamedTuple):
    """How the metadata names one device.

    ``kind`` is NIC (``value``: its MAC), DISK (its target), MDEV (its UUID), LEASE (its
    key), or any other device's element name, ``devtype`` (``value``: its alias). ``alias``
    is a NIC entry's own, naming one NIC of a team; empty otherwise.
    """

    kind: str
    value: str
    alias: str = ""

    def attributes(self) -> dict[str, str]:
        """The attributes of its ``ovirt-vm:device`` element, as VDSM writes them."""
        if self.kind == NIC:
            return {"mac_address": self.value, **({"alias": self.alias} if self.alias else {})}
        if self.kind == MDEV:
            return {"devtype": "hostdev", "uuid": self.value}
        return {"devtype": self.kind, "name": self.value}

    def ident(self) -> str:
        """What ``--device`` takes to name it: the MAC (a team's NIC: its alias), else
        DEVTYPE:NAME."""
        if self.kind == NIC:
            return self.alias or self.value
        return f"{self.kind}:{self.value}"

    def __str__(self) -> str:
        if self.kind == NIC:
            return f"NIC {self.value}" + (f" ({self.alias})" if self.alias else "")
        return f"{self.kind} {self.value}"


class DeviceRef(NamedTuple):
    """One device, present in the domain or only named by its metadata: the keys it answers
    to (the first is how it is written), its element's name and alias."""

    keys: tuple[DeviceKey, ...]
    tag: str
    alias: str = ""
    present: bool = True

    @property
    def key(self) -> DeviceKey:
        return self.keys[0]

    def matches(self, entry: DeviceKey) -> bool:
        """Whether the metadata entry named ``entry`` is this device's."""
        if entry.alias and entry.alias != self.alias:
            return False
        return any((k.kind, k.value) == (entry.kind, entry.value) for k in self.keys)

    def __str__(self) -> str:
        return str(self.key)


def _alias(element: etree._Element) -> str:
    alias = element.find("alias")
    return str(alias.get("name")) if alias is not None and alias.get("name") else ""


def keys_of(element: etree._Element) -> tuple[DeviceKey, ...]:
    """The metadata keys a device element of ``<devices>`` answers to, VDSM's first.

    None for a device without a MAC, a target, a UUID, a key or an alias (libvirt gives
    every device of a running domain an alias; a defined one may have none): it cannot
    have properties.
    """
    keys: list[DeviceKey] = []
    alias = _alias(element)
    if element.tag == "interface":
        mac = element.find("mac")
        if mac is not None and mac.get("address"):
            keys.append(DeviceKey(NIC, str(mac.get("address")).lower()))
    elif element.tag == "disk":
        target = element.find("target")
        if target is not None and target.get("dev"):
            return (DeviceKey(DISK, str(target.get("dev"))),)
    elif element.tag == "hostdev" and element.get("type") == "mdev":
        address = element.find("source/address")
        if address is not None and address.get("uuid"):
            keys.append(DeviceKey(MDEV, str(address.get("uuid")).lower()))
    elif element.tag == "lease":
        key = (element.findtext("key") or "").strip()
        if key:
            keys.append(DeviceKey(LEASE, key))
    if alias:
        keys.append(DeviceKey(str(element.tag), alias))
    return tuple(keys)


def ref_of(element: etree._Element) -> DeviceRef | None:
    """The device ``element`` as a :class:`DeviceRef`; None when it has no key."""
    keys = keys_of(element)
    if not keys:
        return None
    return DeviceRef(keys, str(element.tag), _alias(element))


def key_of(element: etree._Element) -> DeviceKey | None:
    """How the metadata names the device ``element`` (VDSM's form); None: it cannot be."""
    keys = keys_of(element)
    return keys[0] if keys else None


def entry_key(entry: etree._Element) -> DeviceKey | None:
    """The key an ``ovirt-vm:device`` element of the metadata names (None: it names none)."""
    if entry.get("mac_address"):
        return DeviceKey(NIC, str(entry.get("mac_address")).lower(), entry.get("alias") or "")
    if entry.get("uuid"):
        return DeviceKey(MDEV, str(entry.get("uuid")).lower())
    devtype = entry.get("devtype")
    # ``alias``: how the bridge wrote a device's name before it wrote VDSM's ``name``.
    name = entry.get("name") or entry.get("alias")
    if devtype and name:
        return DeviceKey(str(devtype), str(name))
    return None


def parse_ident(ident: str) -> DeviceKey | None:
    """The key ``--device`` names in a form that needs no device to look at: a MAC, or
    DEVTYPE:NAME (``disk:vdb``, ``hostdev:ua-hd0``, ``mdev:UUID``, ``lease:KEY``)."""
    text = ident.strip()
    if _MAC.match(text):
        return DeviceKey(NIC, text.lower())
    devtype, colon, name = text.partition(":")
    if not colon or not devtype or not name or not devtype.replace("-", "").isalnum():
        return None
    if devtype == "interface" and _MAC.match(name):
        return DeviceKey(NIC, name.lower())
    return DeviceKey(devtype, name.lower() if devtype == MDEV else name)


def devices(root: etree._Element) -> list[etree._Element]:
    """The device elements of the domain ``root``, in document order."""
    found = root.find("devices")
    if found is None:
        return []
    return [child for child in found if isinstance(child.tag, str)]


def metadata_entries(root: etree._Element) -> list[tuple[DeviceKey, dict[str, str]]]:
    """Every device entry of the domain's metadata with its custom properties, in order.

    Read as the VM's are (leaf children of ``custom``, verbatim).
    """
    found = []
    for entry in root.iterfind(f"metadata/{_VM}/{_DEVICE}"):
        key = entry_key(entry)
        if key is None:
            continue
        props: dict[str, str] = {}
        for custom in entry.iterfind(_CUSTOM):
            for child in custom:
                if isinstance(child.tag, str) and not len(child):
                    props[etree.QName(child).localname] = child.text or ""
        found.append((key, props))
    return found


def properties_of(
    entries: list[tuple[DeviceKey, dict[str, str]]], ref: DeviceRef | None
) -> dict[str, str]:
    """The custom properties of the device ``ref`` among ``entries``: where the metadata
    names a device twice, or a property twice, the later one wins."""
    props: dict[str, str] = {}
    if ref is not None:
        for key, found in entries:
            if ref.matches(key):
                props.update(found)
    return props


def with_properties(root: etree._Element) -> list[tuple[etree._Element, dict[str, str]]]:
    """The devices that have custom properties, with them, in ``<devices>`` order."""
    entries = metadata_entries(root)
    found = []
    for element in devices(root):
        props = properties_of(entries, ref_of(element))
        if props:
            found.append((element, props))
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
    props = properties_of(metadata_entries(root), ref_of(element))
    props.update(given or {})
    return EventProperties(custom_properties(root), props, str(element.tag))


def event_xml(element: etree._Element) -> bytes:
    """What a device event's scripts find in ``$_hook_domxml``: the element, as VDSM gives it."""
    return element_xml(element, WRAPPED_IN.get(element.tag))


def find(root: etree._Element, ident: str) -> etree._Element:
    """The device of the domain ``root`` that ``ident`` names: a MAC, a disk target, an
    mdev's UUID, a lease's key, an alias, or DEVTYPE:NAME (see :func:`parse_ident`)."""
    wanted = ident.strip()
    named = parse_ident(wanted)
    matches = []
    for element in devices(root):
        ref = ref_of(element)
        if ref is None:
            continue
        names = {key.value for key in ref.keys} | {ref.alias}
        if (named is not None and ref.matches(named)) or wanted in names or wanted.lower() in names:
            matches.append(element)
    if not matches:
        raise DeviceError(
            f"no device of this domain has the MAC, disk target, UUID, key or alias {ident!r}"
        )
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
