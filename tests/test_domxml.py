"""Reading custom properties with expat (``domxml.properties_of``): lxml's answers, faster.

The reference is ``custom_properties(parse(xml))``, the lxml reading: for every document
``properties_of`` must give the same properties, or the same XMLError.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from libvirt_bridge import domxml
from libvirt_bridge.launcher import import_path
from testing.harness import domain_xml

NS = 'xmlns:o="http://ovirt.org/vm/1.0"'


def lxml_reading(xml: bytes) -> dict[str, str] | str:
    try:
        return domxml.custom_properties(domxml.parse(xml))
    except domxml.XMLError as exc:
        return f"XMLError: {exc}"


def expat_reading(xml: bytes) -> dict[str, str] | str:
    try:
        return domxml.properties_of(xml)
    except domxml.XMLError as exc:
        return f"XMLError: {exc}"


def custom(inner: str, vm: str = f"<o:vm {NS}>", prolog: str = "") -> bytes:
    metadata = f"<metadata>{vm}<o:custom>{inner}</o:custom></o:vm></metadata>"
    return f"{prolog}<domain>{metadata}</domain>".encode()


# What the reading is: leaf children of metadata/ovirt-vm:vm/ovirt-vm:custom, by local name.
SEMANTICS = [
    (custom("<o:a>1</o:a><o:b/><o:c><![CDATA[x<y]]></o:c>"), {"a": "1", "b": "", "c": "x<y"}),
    (custom("<o:a> &amp;&#65;\r\n </o:a>"), {"a": " &A\n "}),
    (custom("<o:a><o:x>1</o:x></o:a><o:d>3</o:d><o:d><i/></o:d>"), {"d": "3"}),
    (custom("<o:a>1<!--c-->2</o:a><o:b>t<?p x?></o:b><!--x--><?pi?><o:c>z</o:c>"), {"c": "z"}),
    (custom("<o:a>1</o:a><o:a>2</o:a>"), {"a": "2"}),
    (
        custom('<a>1</a><x:b xmlns:x="urn:other">2</x:b><o:c q="1">3</o:c>'),
        {"a": "1", "b": "2", "c": "3"},
    ),
    (
        b'<domain><metadata><vm xmlns="http://ovirt.org/vm/1.0"><custom><a>1</a></custom></vm>'
        b"</metadata></domain>",
        {"a": "1"},
    ),
    (
        f"<domain><metadata><o:vm {NS}><o:custom><o:a>1</o:a></o:custom><o:custom><o:b>2</o:b>"
        f"</o:custom></o:vm></metadata><metadata><o:vm {NS}><o:custom><o:c>3</o:c></o:custom>"
        "</o:vm></metadata></domain>".encode(),
        {"a": "1", "b": "2", "c": "3"},
    ),
    # Not on the path: a metadata below the root, the root itself, another namespace.
    (
        custom("<o:a>1</o:a>")
        .replace(b"<metadata>", b"<devices><metadata>")
        .replace(b"</metadata>", b"</metadata></devices>"),
        {},
    ),
    (f"<metadata><o:vm {NS}><o:custom><o:a>1</o:a></o:custom></o:vm></metadata>".encode(), {}),
    (custom("<o:a>1</o:a>", vm='<o:vm xmlns:o="urn:not-ovirt">'), {}),
    (
        b'<domain xmlns="urn:x"><metadata><vm xmlns="http://ovirt.org/vm/1.0"><custom><a>1</a></custom></vm></metadata></domain>',
        {},
    ),
    (domain_xml("vm1", properties={"pincpu": "1-4", "empty": ""}), {"pincpu": "1-4", "empty": ""}),
    (domain_xml("vm1"), {}),
]


@pytest.mark.parametrize(("xml", "expected"), SEMANTICS)
def test_the_reading_is_lxmls(xml: bytes, expected: dict[str, str]) -> None:
    assert domxml.properties_of(xml) == expected
    assert lxml_reading(xml) == expected


# Malformed documents, and what expat and libxml2 may judge differently (declarations,
# DTDs and entities, namespace names that are not URIs, limits): lxml's answer, word for word.
EDGES = [
    b"",
    b" \n",
    b"hello",
    b"<domain>",
    b"<domain/><x/>",
    b"<domain>\x00</domain>",
    b"<domain>\xff</domain>",
    b'<domain a="1" a="2"/>',
    b"\xef\xbb\xbf<domain/>",
    b' <?xml version="1.0"?><domain/>',
    b'<?xml version="1.1"?><domain/>',
    b'<?xml version="2.0"?><domain/>',
    b'<?xml version="1.0" encoding="bogus"?><domain/>',
    custom("<o:a>\xe9</o:a>", prolog='<?xml version="1.0" encoding="ISO-8859-1"?>').replace(
        b"\xc3\xa9", b"\xe9"
    ),
    '<?xml version="1.0" encoding="UTF-16"?><d/>'.encode("utf-16"),
    custom("<o:a>1</o:a>", vm="<o:vm>"),
    custom("<o:a>1</o:a>", vm=f'<o:vm {NS} xmlns:p="">'),
    custom("<o:a>1</o:a>", vm='<o:vm xmlns:o="http://ovirt.org/vm/1.0" xmlns:p="a b">'),
    custom(
        "<o:a>1</o:a>", vm='<o:vm xmlns:o="http://ovirt.org/vm/1.0" xmlns:p="http://a:99999999999">'
    ),
    custom("<o:a>1</o:a>", vm='<o:vm xmlns:o="http://ovirt.org/vm/1.0" xmlns:p="rel/a:b?q#f">'),
    custom("<o:a>&e;</o:a><o:b>2</o:b>"),
    custom("<o:a>1&e;</o:a><o:b>2</o:b>", prolog='<!DOCTYPE d [<!ENTITY e "x">]>'),
    custom("<o:a>&e;</o:a><o:b>2</o:b>", prolog='<!DOCTYPE d [<!ENTITY e "<b>">]>'),
    custom("<o:a>&e;</o:a><o:b>2</o:b>", prolog='<!DOCTYPE d SYSTEM "none.dtd">'),
    custom("<o:a>&e;</o:a>", prolog='<!DOCTYPE d [<!ENTITY e SYSTEM "file:///etc/hostname">]>'),
    b"<d>" + b"<e>" * 256 + b"</e>" * 256 + b"</d>",
    b"<d>" + b"<e>" * 255 + b"</e>" * 255 + b"</d>",
    b"<" + b"n" * 50001 + b"/>",
    b"<d>" + b"x" * 10_000_001 + b"</d>",
]


@pytest.mark.parametrize("xml", EDGES, ids=lambda xml: repr(xml[:60]))
def test_edge_cases_get_lxmls_answer(xml: bytes) -> None:
    assert expat_reading(xml) == lxml_reading(xml)


def test_an_empty_document_is_an_error() -> None:
    with pytest.raises(domxml.XMLError, match="the XML is empty"):
        domxml.properties_of(b"  ")


PIECES = [
    "<",
    ">",
    "/",
    "&",
    ";",
    "=",
    '"',
    "'",
    ":",
    "#",
    "%",
    "?",
    "[",
    "]",
    " ",
    "\n",
    "\x01",
    "\x00",
    "é",
    "\ufffe",
    "\U0001f600",
    "o:",
    "&amp;",
    "&#x41;",
    "&#0;",
    "&e;",
    "<!--",
    "-->",
    "<![CDATA[",
    "]]>",
    "<?p ",
    "?>",
    "<!DOCTYPE d>",
    'xmlns:o="urn:x"',
    'xmlns=""',
    "http://",
    "a b",
]


@st.composite
def documents(draw: st.DrawFn) -> bytes:
    """A domain XML with custom properties, then mangled here and there."""
    names = st.text("abcxyz_-.:é0", min_size=1, max_size=4)
    pieces = st.sampled_from(["a", "1", " ", "&amp;", "&lt;", "é", "<b/>", "<!--c-->"])
    values = st.lists(pieces, max_size=4).map("".join)
    props = draw(st.dictionaries(names, values, max_size=3))
    uri = draw(st.sampled_from(["http://ovirt.org/vm/1.0", "urn:x", "http://h:1/p?q#f", "a b", ""]))
    inner = "".join(f"<o:{k}>{v}</o:{k}>" for k, v in props.items())
    text = custom(inner, vm=f'<o:vm xmlns:o="{uri}">').decode()
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(text)))
        if draw(st.booleans()):
            text = text[:at] + draw(st.sampled_from(PIECES)) + text[at:]
        else:
            text = text[:at] + text[at + draw(st.integers(1, 6)) :]
    return text.encode("utf-8", "surrogatepass")


@settings(max_examples=1500, deadline=None)
@given(xml=documents())
def test_any_document_gets_lxmls_answer(xml: bytes) -> None:
    assert expat_reading(xml) == lxml_reading(xml)


@settings(max_examples=300, deadline=None)
@given(xml=st.binary(max_size=300))
def test_any_bytes_get_lxmls_answer(xml: bytes) -> None:
    assert expat_reading(xml) == lxml_reading(xml)


def test_libvirts_xml_is_read_without_lxml() -> None:
    # lxml costs more to import than a whole hook call: the runner must not pay it.
    qemu = '<qemu:commandline xmlns:qemu="http://libvirt.org/schemas/domain/qemu/1.0"/>'
    xml = domain_xml("vm1", properties={"pincpu": "1-4"}, extra=qemu)
    code = (
        "import sys\n"
        "sys.path[:0] = sys.argv[1:]\n"
        "from libvirt_bridge import domxml\n"
        f"print(domxml.properties_of({xml!r}), 'lxml' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-I", "-S", "-c", code, *import_path()],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out == "{'pincpu': '1-4'} False\n"
