"""Domain XML: custom properties and semantic comparison (lxml; only when scripts run)."""

from __future__ import annotations

from lxml import etree

OVIRT_VM_NS = "http://ovirt.org/vm/1.0"


class XMLError(ValueError):
    """The XML is not well-formed; the message says where."""


def _parser(remove_blank_text: bool = False) -> etree.XMLParser:
    # Domain XML comes from libvirt or from hook scripts: never fetch or expand anything.
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        huge_tree=False,
        remove_blank_text=remove_blank_text,
    )


def parse(xml: bytes, remove_blank_text: bool = False) -> etree._Element:
    if not xml.strip():
        raise XMLError("the XML is empty")
    try:
        return etree.fromstring(xml, _parser(remove_blank_text))
    except etree.XMLSyntaxError as exc:
        raise XMLError(str(exc)) from None


def custom_properties(root: etree._Element) -> dict[str, str]:
    """The VM's custom properties, as oVirt writes them into the domain's metadata.

    ``<metadata><ovirt-vm:vm><ovirt-vm:custom><ovirt-vm:NAME>VALUE</ovirt-vm:NAME>``,
    leaf children only, exported verbatim (an empty element gives an empty string).
    """
    props: dict[str, str] = {}
    for custom in root.iterfind(f"metadata/{{{OVIRT_VM_NS}}}vm/{{{OVIRT_VM_NS}}}custom"):
        for child in custom:
            if not isinstance(child.tag, str) or len(child):
                continue
            name = etree.QName(child).localname
            props[name] = child.text or ""
    return props


def canonical(xml: bytes) -> bytes:
    """C14N of the document with whitespace-only text dropped.

    Two documents with the same canonical form mean the same to libvirt: a script that
    only re-serialises (minidom's quoting, an XML declaration, indentation) changes nothing.
    """
    return etree.tostring(parse(xml, remove_blank_text=True), method="c14n")


def same_meaning(a: bytes, b: bytes) -> bool:
    """Whether two XML documents are semantically equal (raises XMLError if ``b`` is bad)."""
    return a == b or canonical(a) == canonical(b)
