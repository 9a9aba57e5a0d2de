"""VM custom properties in a domain's oVirt metadata, read and changed through libvirt.

oVirt keeps a VM's custom properties in the domain XML, and the bridge exports them to
every hook script as environment variables (``domxml.custom_properties``)::

    <metadata>
      <ovirt-vm:vm xmlns:ovirt-vm="http://ovirt.org/vm/1.0">
        <ovirt-vm:custom><ovirt-vm:pincpu>1-4</ovirt-vm:pincpu></ovirt-vm:custom>
      </ovirt-vm:vm>
    </metadata>

libvirt's metadata API hands out one element per namespace and takes it back whole, so a
change is a read, an edit of ``custom`` and a write, for each definition of the domain on
its own (the live one when it runs, the persistent one when it has one), leaving the rest
of ``ovirt-vm:vm`` as it was. Facts this relies on (libvirt 9.0, observed):

- ``virDomainGetMetadata`` returns the element with its namespace stripped
  (``<vm><custom><pincpu>...``); elements of other namespaces keep their ``xmlns``.
  ``VIR_DOMAIN_AFFECT_LIVE`` and ``VIR_DOMAIN_AFFECT_CONFIG`` are mutually exclusive there.
- ``virDomainSetMetadata`` wants the element without the prefix ("failed to create a new
  XML namespace" otherwise) and puts it, with its unqualified descendants, into the
  namespace under the given prefix. It moves the element to the end of ``<metadata>``.
- LIVE on an inactive domain and CONFIG on a transient one are errors.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import libvirt
from lxml import etree

from . import domxml
from .connection import message
from .devices import DeviceKey, DeviceRef, entry_key
from .errors import BridgeError
from .screening import VM, Refused, name_refusal, refusal

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .schema import Schema

OVIRT_VM_NS = domxml.OVIRT_VM_NS
OVIRT_VM_PREFIX = "ovirt-vm"
CUSTOM = "custom"

LIVE = "live"
PERSISTENT = "persistent"


class PropsError(BridgeError):
    """A property, a value, a domain or a connection that cannot be used; says why."""


# -- names and values --------------------------------------------------------------------


def check_name(name: str) -> None:
    """Raise PropsError unless ``name`` is a plain name (letters, digits, _) that is no
    environment variable the bridge keeps from scripts (``screening``)."""
    if not name:
        raise PropsError("empty property name")
    why = name_refusal(name)
    if why is None:
        return
    if name.isascii() and name.isidentifier():
        raise PropsError(
            f"property name {name!r} is refused: {why}, so a domain's metadata never sets "
            "it for root's scripts (docs/security.md)"
        )
    bad = next((c for c in name if not (c.isascii() and (c.isalnum() or c == "_"))), "")
    what = f"it contains {bad!r}" if bad else "it starts with a digit"
    raise PropsError(
        f"invalid property name {name!r}: {what}; a name is made of ASCII letters, "
        "digits and _ and does not start with a digit (scripts get it as an "
        "environment variable)"
    )


def check_removable(name: str) -> None:
    """Raise PropsError unless ``name`` could name a property to remove: any name of the
    metadata can, a refused one too (``unset`` is how it goes)."""
    if not name:
        raise PropsError("empty property name")


def check_against_schema(
    changes: Mapping[str, str], schema: Schema | None, scope: str, config_path: str
) -> None:
    """Raise PropsError for the first of ``changes`` the property schema refuses."""
    if schema is None:
        return
    for name, value in changes.items():
        why = schema.refusal(scope, name, value)
        if why is not None:
            raise PropsError(
                f"{name}={value!r} is refused: {why} (the schema is [properties] in "
                f"{config_path}, and the files of its properties_dir)"
            )


def _xml_char(code: int) -> bool:
    return (
        code in (0x9, 0xA, 0xD)
        or 0x20 <= code <= 0xD7FF
        or 0xE000 <= code <= 0xFFFD
        or 0x10000 <= code <= 0x10FFFF
    )


def check_value(name: str, value: str) -> None:
    """Raise PropsError if ``value`` cannot be kept in XML (nor in an environment)."""
    for index, char in enumerate(value):
        if not _xml_char(ord(char)):
            if 0xDC80 <= ord(char) <= 0xDCFF:
                what = "bytes that are not valid UTF-8"
            else:
                what = f"the character U+{ord(char):04X}"
            raise PropsError(
                f"the value of {name} contains {what} (at offset {index}), which XML cannot "
                "hold; control characters other than tab, newline and carriage return are "
                "not allowed"
            )


def parse_assignments(args: Iterable[str]) -> dict[str, str]:
    """``["a=1", "b=x=y"]`` -> ``{"a": "1", "b": "x=y"}``, every name and value checked."""
    result: dict[str, str] = {}
    for arg in args:
        name, sep, value = arg.partition("=")
        if not sep:
            raise PropsError(f"expected NAME=VALUE, got {arg!r} (use NAME= for an empty value)")
        check_name(name)
        check_value(name, value)
        if name in result and result[name] != value:
            raise PropsError(f"property {name} is given twice, with different values")
        result[name] = value
    return result


# -- the ovirt-vm:vm element ---------------------------------------------------------------


def _parse_element(xml: str) -> etree._Element:
    try:
        return domxml.parse(xml.encode("utf-8"), remove_blank_text=True)
    except domxml.XMLError as exc:
        raise PropsError(f"libvirt returned ovirt-vm metadata that is not XML: {exc}") from None


def _is_ours(element: etree._Element, local: str) -> bool:
    """Whether ``element`` is ``local`` of the ovirt-vm namespace (or unqualified)."""
    if not isinstance(element.tag, str):
        return False
    qname = etree.QName(element)
    return qname.localname == local and qname.namespace in (None, OVIRT_VM_NS)


def _customs(root: etree._Element) -> list[etree._Element]:
    return [child for child in root if _is_ours(child, CUSTOM)]


def _holders(root: etree._Element, device: DeviceRef | None) -> list[etree._Element]:
    """Where the properties live: the element itself, or its ``device`` entries for ``device``."""
    if device is None:
        return [root]
    return [child for child in root if _is_ours(child, "device") and _names(child, device)]


def _names(entry: etree._Element, device: DeviceRef) -> bool:
    key = entry_key(entry)
    return key is not None and device.matches(key)


def element_properties(xml: str | None, device: DeviceRef | None = None) -> dict[str, str]:
    """The custom properties in an ``ovirt-vm:vm`` element as libvirt's metadata API gives it.

    The VM's, or with ``device`` that device's. The same reading as the hook's (leaf
    children of ``custom``, the last of equal names wins), so what ``get`` shows is what
    scripts get.
    """
    if not xml:
        return {}
    props: dict[str, str] = {}
    for holder in _holders(_parse_element(xml), device):
        for custom in _customs(holder):
            for child in custom:
                if isinstance(child.tag, str) and not len(child) and _in_ovirt_ns(child):
                    props[etree.QName(child).localname] = child.text or ""
    return props


def _in_ovirt_ns(element: etree._Element) -> bool:
    return etree.QName(element).namespace in (None, OVIRT_VM_NS)


def updated_element(
    xml: str | None,
    changes: Mapping[str, str],
    removals: Iterable[str],
    device: DeviceRef | None = None,
) -> str | None:
    """The ``ovirt-vm:vm`` element ``xml`` with properties set and removed, for setMetadata.

    The VM's properties, or with ``device`` that device's. Everything else in the element
    stays as it was. The result is unprefixed (what ``virDomainSetMetadata`` wants); None
    means the element is left with nothing in it and should be removed. A new element,
    device entry or ``custom`` is created when needed, in VDSM's form; a device entry left
    empty goes; an entry in the bridge's earlier form (``alias=``) is rewritten in VDSM's.
    """
    root = _parse_element(xml) if xml else etree.Element("vm")
    if not _is_ours(root, "vm"):
        raise PropsError(f"the ovirt-vm metadata element is <{root.tag}>, not <vm>")
    _unqualify(root)
    holders = _holders(root, device)
    if device is not None:
        for holder in holders:
            _in_vdsm_form(holder, device.key)
    customs = [custom for holder in holders for custom in _customs(holder)]
    custom = customs[0] if customs else None
    for name in removals:
        for element in customs:
            for child in _property_elements(element, name):
                element.remove(child)
    for name, value in changes.items():
        if custom is None:
            if not holders:
                assert device is not None
                holders.append(etree.SubElement(root, "device", device.key.attributes()))
            custom = etree.SubElement(holders[-1], CUSTOM)
        existing = [c for element in customs for c in _property_elements(element, name)]
        if existing and len(existing[-1]):
            raise PropsError(
                f"{name} in the domain's ovirt-vm custom metadata has child elements, so it "
                "is not a property; not changed"
            )
        if existing:
            # Duplicates: keep the last (the one scripts see), drop the others.
            for child in existing[:-1]:
                parent = child.getparent()
                assert parent is not None
                parent.remove(child)
            target = existing[-1]
        else:
            target = etree.SubElement(custom, name)
        target.text = value
    for holder in holders:
        for element in _customs(holder):
            if not len(element) and not (element.text or "").strip() and not element.attrib:
                holder.remove(element)
        if holder is not root and not len(holder) and not (holder.text or "").strip():
            root.remove(holder)
    if not len(root) and not (root.text or "").strip() and not root.attrib:
        return None
    return etree.tostring(root, encoding="unicode")


def _in_vdsm_form(entry: etree._Element, key: DeviceKey) -> None:
    """Rewrite a device entry the bridge wrote before it wrote VDSM's form."""
    legacy = entry.get("alias") is not None and entry.get("mac_address") is None
    if legacy and not entry.get("name"):
        for name in list(entry.attrib):
            del entry.attrib[name]
        for name, value in key.attributes().items():
            entry.set(name, value)


def _property_elements(custom: etree._Element, name: str) -> list[etree._Element]:
    return [
        child
        for child in custom
        if isinstance(child.tag, str)
        and _in_ovirt_ns(child)
        and etree.QName(child).localname == name
    ]


def _unqualify(root: etree._Element) -> None:
    """Move elements of the ovirt-vm namespace to no namespace (libvirt puts them back)."""
    for element in root.iter():
        if isinstance(element.tag, str) and etree.QName(element).namespace == OVIRT_VM_NS:
            element.tag = etree.QName(element).localname
    etree.cleanup_namespaces(root)


# -- libvirt -------------------------------------------------------------------------------


def definitions(dom: libvirt.virDomain) -> list[tuple[str, int]]:
    """The domain's definitions with their metadata flag: live if it runs, persistent if any."""
    try:
        active, persistent = dom.isActive(), dom.isPersistent()
    except libvirt.libvirtError as exc:
        raise PropsError(f"domain {dom.name()}: {message(exc)}") from None
    found: list[tuple[str, int]] = []
    if active:
        found.append((LIVE, libvirt.VIR_DOMAIN_AFFECT_LIVE))
    if persistent:
        found.append((PERSISTENT, libvirt.VIR_DOMAIN_AFFECT_CONFIG))
    return found


def read_element(dom: libvirt.virDomain, flag: int) -> str | None:
    """The ``ovirt-vm:vm`` element of one definition (as libvirt gives it), or None."""
    try:
        xml: str = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, OVIRT_VM_NS, flag)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN_METADATA:
            return None
        raise PropsError(
            f"cannot read the metadata of domain {dom.name()}: {message(exc)}"
        ) from None
    return xml


def write_element(dom: libvirt.virDomain, flag: int, xml: str | None) -> None:
    """Replace (or, for None, remove) the ``ovirt-vm:vm`` element of one definition."""
    try:
        dom.setMetadata(
            libvirt.VIR_DOMAIN_METADATA_ELEMENT, xml, OVIRT_VM_PREFIX, OVIRT_VM_NS, flag
        )
    except libvirt.libvirtError as exc:
        raise PropsError(
            f"cannot change the metadata of domain {dom.name()}: {message(exc)}"
        ) from None


def resolve_device(dom: libvirt.virDomain, ident: str) -> DeviceRef:
    """The device ``ident`` names (MAC, target, UUID, key, alias or DEVTYPE:NAME).

    Looked for in the domain's current definition, then in its persistent one (a device
    added for the next start only), then among its metadata's device entries (a device
    detached since, or named before it is plugged); then, when ``ident`` is a MAC or
    DEVTYPE:NAME, it names a device that is not there (``present`` False).
    """
    from . import devices

    problem = ""
    metadata: list[str | None] = []
    for which, flags in ((0, 0), (1, libvirt.VIR_DOMAIN_XML_INACTIVE)):
        try:
            root = domxml.parse(dom.XMLDesc(flags).encode("utf-8"))
        except libvirt.libvirtError as exc:
            raise PropsError(f"domain {dom.name()}: {message(exc)}") from None
        try:
            element = devices.find(root, ident)
        except devices.DeviceError as exc:
            problem = problem or str(exc)
            continue
        ref = devices.ref_of(element)
        if ref is None:
            raise PropsError(
                f"domain {dom.name()}: the <{element.tag}> {ident!r} has no MAC, target, UUID, "
                "key or alias to keep its properties under"
            )
        return _in_team(root, ref) if which == 0 else ref
    for _, flag in definitions(dom):
        metadata.append(read_element(dom, flag))
    absent = _named_by_metadata(metadata, ident) or devices.parse_ident(ident)
    if absent is None:
        raise PropsError(
            f"domain {dom.name()}: {problem}; a device that is not plugged is named by its MAC "
            "or as DEVTYPE:NAME (disk:vdb, hostdev:ua-hd0, mdev:UUID, lease:KEY)"
        )
    tag = {devices.NIC: "interface", devices.MDEV: "hostdev"}.get(absent.kind, absent.kind)
    return DeviceRef((absent,), tag, absent.alias, present=False)


def _in_team(root: etree._Element, ref: DeviceRef) -> DeviceRef:
    """A NIC that shares its MAC with another (a team) is written with its alias too."""
    from . import devices

    key = ref.key
    if key.kind != devices.NIC or not ref.alias:
        return ref
    same_mac = [e for e in devices.devices(root) if devices.key_of(e) == key]
    if len(same_mac) < 2:
        return ref
    return ref._replace(keys=(key._replace(alias=ref.alias), *ref.keys[1:]))


def _named_by_metadata(elements: list[str | None], ident: str) -> DeviceKey | None:
    """The key of a device entry of the metadata ``ident`` names, if one does."""
    from . import devices

    wanted = ident.strip()
    named = devices.parse_ident(wanted)
    for xml in elements:
        if not xml:
            continue
        for entry in _parse_element(xml):
            key = entry_key(entry) if _is_ours(entry, "device") else None
            if key is None:
                continue
            if named is not None and (key.kind, key.value) == (named.kind, named.value):
                return key
            if wanted in (key.value, key.alias) or wanted.lower() == key.value:
                return key
    return None


def device_entries(dom: libvirt.virDomain) -> list[DeviceEntry]:
    """Every device entry of the domain's metadata (each definition's), with its
    properties and whether its device is in the domain."""
    from . import devices

    found: dict[DeviceKey, DeviceEntry] = {}
    for which, flag in definitions(dom):
        xml = read_element(dom, flag)
        xml_flags = libvirt.VIR_DOMAIN_XML_INACTIVE if which == PERSISTENT else 0
        try:
            root = domxml.parse(dom.XMLDesc(xml_flags).encode("utf-8"))
        except libvirt.libvirtError as exc:
            raise PropsError(f"domain {dom.name()}: {message(exc)}") from None
        refs = [ref for ref in map(devices.ref_of, devices.devices(root)) if ref is not None]
        for entry in _parse_element(xml) if xml else []:
            key = entry_key(entry) if _is_ours(entry, "device") else None
            if key is None:
                continue
            slot = found.setdefault(key, DeviceEntry(key))
            slot.properties[which] = element_properties(xml, DeviceRef((key,), "", key.alias))
            element = next((ref for ref in refs if ref.matches(key)), None)
            if element is not None:
                slot.present[which] = element.tag
    return list(found.values())


class DeviceEntry:
    """One device entry of a domain's metadata: per definition (live, persistent), its
    properties and the element of the device it names, if that device is there."""

    __slots__ = ("key", "present", "properties")

    def __init__(self, key: DeviceKey) -> None:
        self.key = key
        self.properties: dict[str, dict[str, str]] = {}
        self.present: dict[str, str] = {}


def read(dom: libvirt.virDomain, device: DeviceRef | None = None) -> dict[str, dict[str, str]]:
    """``{"live": {...}, "persistent": {...}}``: the properties of each definition.

    The VM's, or with ``device`` that device's.
    """
    return {
        which: element_properties(read_element(dom, flag), device)
        for which, flag in definitions(dom)
    }


def change(
    dom: libvirt.virDomain,
    changes: Mapping[str, str],
    removals: Iterable[str],
    device: DeviceRef | None = None,
) -> dict[str, tuple[dict[str, str], dict[str, str]]]:
    """Set ``changes`` and remove ``removals`` in every definition of ``dom``.

    The VM's properties, or with ``device`` that device's (see :func:`updated_element`).
    Returns, per definition, its properties before and after; a definition whose
    properties do not change is not written.
    """
    removals = list(removals)
    outcome: dict[str, tuple[dict[str, str], dict[str, str]]] = {}
    for which, flag in definitions(dom):
        current = read_element(dom, flag)
        before = element_properties(current, device)
        new = updated_element(current, changes, removals, device)
        after = element_properties(new, device)
        if after != before:
            write_element(dom, flag, new)
        outcome[which] = (before, after)
    return outcome


# -- what never reaches scripts ----------------------------------------------------------


class RefusedProperty:
    """A property of a domain's metadata that never reaches a script, and where it is."""

    __slots__ = ("definitions", "device", "domain", "refused")

    def __init__(
        self, domain: str, device: DeviceKey | None, refused: Refused, definitions: list[str]
    ) -> None:
        self.domain = domain
        self.device = device  # None for the VM's own
        self.refused = refused
        self.definitions = definitions

    def describe(self) -> str:
        whose = "" if not self.device else f" {self.device}"
        where = " and ".join(self.definitions)
        value = self.refused.value
        return (
            f"{self.domain}{whose}: {self.refused.name}={value} ({where}) is refused: "
            f"{self.refused.why}"
        )

    def fix(self) -> str:
        import shlex

        device = f" --device {shlex.quote(self.device.ident())}" if self.device else ""
        return (
            f"libvirt-bridge props {shlex.quote(self.domain)}{device} unset {self.refused.name}"
            "  (or declare it in the schema, if it is meant for scripts)"
        )

    def to_json(self) -> dict[str, object]:
        return {
            "domain": self.domain,
            "device": str(self.device) if self.device else None,
            "scope": self.refused.scope,
            "name": self.refused.name,
            "value": self.refused.value,
            "why": self.refused.why,
            "definitions": self.definitions,
        }


def refused_in(dom: libvirt.virDomain, schema: Schema | None) -> list[RefusedProperty]:
    """The properties of ``dom`` (the VM's and its devices', in each of its definitions)
    that ``screening`` refuses; one entry for what both definitions hold alike."""
    found: dict[tuple[DeviceKey | None, str, str, str], tuple[Refused, list[str]]] = {}
    for which, flag in definitions(dom):
        xml = read_element(dom, flag)
        if not xml:
            continue
        root = _parse_element(xml)
        holders: list[tuple[DeviceKey | None, str, etree._Element]] = [(None, VM, root)]
        for entry in root:
            if _is_ours(entry, "device"):
                key = entry_key(entry)
                scope = "interface" if entry.get("mac_address") else str(entry.get("devtype", ""))
                if key is not None:
                    holders.append((key, scope, entry))
        for device, scope, holder in holders:
            for custom in _customs(holder):
                for child in custom:
                    if isinstance(child.tag, str) and not len(child) and _in_ovirt_ns(child):
                        name, value = etree.QName(child).localname, child.text or ""
                        why = refusal(scope, name, value, schema)
                        if why is not None:
                            slot = found.setdefault(
                                (device, name, value, why),
                                (Refused(scope, name, value, why), []),
                            )
                            slot[1].append(which)
    return [
        RefusedProperty(dom.name(), device, refused, wheres)
        for (device, _, _, _), (refused, wheres) in found.items()
    ]
