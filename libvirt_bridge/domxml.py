"""Domain XML: custom properties and semantic comparison.

lxml costs more to import than a whole hook call, so it is imported only where XML is
rewritten or compared; ``properties_of`` reads the custom properties of the XML libvirt
writes with the standard library's expat, for the paths that only read them (the hook's,
the async runner's).
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    import pyexpat

    from lxml import etree

OVIRT_VM_NS = "http://ovirt.org/vm/1.0"

# libxml2's limits without XML_PARSE_HUGE (lxml's huge_tree=False): nesting, the length
# of a name, of a text node (a document of at most that size cannot hold a longer one).
MAX_DEPTH = 256
MAX_NAME = 50000
MAX_TEXT = 10_000_000

# expat reports a namespaced name as "URI<sep>LOCAL"; a name never holds a space.
_NS_SEP = " "
# The element expected at each depth on the way to a property (depth 1, the root: any).
_PATH = (None, "metadata", f"{OVIRT_VM_NS}{_NS_SEP}vm", f"{OVIRT_VM_NS}{_NS_SEP}custom")
_PROPERTY_DEPTH = len(_PATH) + 1

_ALPHA = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_SCHEME = _ALPHA | frozenset("0123456789+-.")
_REG_NAME = _SCHEME | frozenset("_~!$&'()*,;=")  # RFC 3986 unreserved and sub-delims
_PATH_CHARS = _REG_NAME | frozenset(":@/")


class XMLError(ValueError):
    """The XML is not well-formed; the message says where."""


def _parser(remove_blank_text: bool = False) -> etree.XMLParser:
    from lxml import etree

    # Domain XML comes from libvirt or from hook scripts: never fetch or expand anything.
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        huge_tree=False,
        remove_blank_text=remove_blank_text,
    )


def parse(xml: bytes, remove_blank_text: bool = False) -> etree._Element:
    from lxml import etree

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
    from lxml import etree

    props: dict[str, str] = {}
    for custom in root.iterfind(f"metadata/{{{OVIRT_VM_NS}}}vm/{{{OVIRT_VM_NS}}}custom"):
        for child in custom:
            if not isinstance(child.tag, str) or len(child):
                continue
            name = etree.QName(child).localname
            props[name] = child.text or ""
    return props


def has_ovirt_metadata(xml: bytes) -> bool:
    """Whether ``xml`` may hold oVirt metadata: without it, no device has properties.

    libvirt writes a namespace's name as it is (never with character references), so its
    bytes tell without parsing: a hook call then skips the per-device events, whose
    parse with lxml would cost it more than an interpreter start.
    """
    return OVIRT_VM_NS.encode() in xml


def properties_of(xml: bytes) -> dict[str, str]:
    """``custom_properties(parse(xml))``, without lxml for the XML libvirt writes.

    expat reads a plain document: UTF-8, XML 1.0, no DTD, namespace names that are plainly
    URIs, within libxml2's limits. Anything else, and any document expat finds malformed,
    goes to lxml: the properties, and the XMLError (its message too), are lxml's.
    """
    if not xml.strip():
        raise XMLError("the XML is empty")
    if len(xml) > MAX_TEXT:
        return custom_properties(parse(xml))
    # expat's C module: ``xml.parsers.expat`` is a wrapper that imports the ``xml`` package.
    import pyexpat as expat

    parser = expat.ParserCreate(namespace_separator=_NS_SEP)
    # Past libxml2's limit on a name's length, lxml refuses what expat would read; only a
    # document longer than that limit can hold such a name.
    reader = (_LongDocumentReader if len(xml) > MAX_NAME else _PropertyReader)(parser)
    parser.buffer_text = True
    parser.StartElementHandler = reader.start
    parser.EndElementHandler = reader.end
    parser.XmlDeclHandler = _check_declaration
    parser.StartDoctypeDeclHandler = _doctype
    parser.StartNamespaceDeclHandler = _check_namespace
    try:
        parser.Parse(xml, True)
    except (expat.ExpatError, _Unusual):
        # Where expat and libxml2 may disagree (and for libxml2's error message).
        return custom_properties(parse(xml))
    return reader.props


class _Unusual(Exception):
    """Something libvirt does not write, where expat and libxml2 may judge differently."""


def _check_declaration(version: str | None, encoding: str | None, standalone: int) -> None:
    # libxml2 knows more encodings than expat, and takes any "1.<digits>" version.
    if version != "1.0" or (encoding is not None and encoding.lower() != "utf-8"):
        raise _Unusual


def _doctype(name: str, system_id: str | None, public_id: str | None, subset: int) -> None:
    # Entities, external subsets and their effects on well-formedness: lxml decides.
    raise _Unusual


def _check_namespace(prefix: str | None, uri: str | None) -> None:
    # libxml2 refuses a namespace name its URI parser rejects; the plain ones pass there.
    if uri and not _plain_uri(uri):
        raise _Unusual


def _plain_uri(uri: str) -> bool:
    """``scheme ":" [ "//" host ] path``, with no escape, port, user, query nor fragment.

    Every such string is a URI for libxml2's parser (RFC 3986); ``urn:...`` and
    ``http://host/path`` are all libvirt and oVirt use.
    """
    scheme, colon, rest = uri.partition(":")
    if not colon or scheme[:1] not in _ALPHA or not all(c in _SCHEME for c in scheme):
        return False
    if rest.startswith("//"):
        host, slash, path = rest[2:].partition("/")
        if not all(c in _REG_NAME for c in host):
            return False
        rest = slash + path
    return all(c in _PATH_CHARS for c in rest)


class _PropertyReader:
    """expat handlers that keep the leaf children of ``metadata/vm/custom``.

    ``matched`` is how deep the current element's ancestry follows ``_PATH``; a child of
    a matched ``custom`` is a candidate, kept unless an element, a comment or a
    processing instruction turns up inside it: lxml counts all of those as children.

    Text, comments and processing instructions matter only inside a candidate: their
    handlers are set while one is open, so the rest of a document costs one Python call
    per tag (the hook reads every domain XML it runs scripts for).
    """

    __slots__ = ("candidate", "chunks", "depth", "leaf", "matched", "parser", "props")

    def __init__(self, parser: pyexpat.XMLParserType) -> None:
        self.parser = parser
        self.depth = 0
        self.matched = 0
        self.candidate = ""
        self.chunks: list[str] = []
        self.leaf = False
        self.props: dict[str, str] = {}

    def start(self, name: str, attributes: dict[str, str]) -> None:
        depth = self.depth = self.depth + 1
        if depth > MAX_DEPTH:  # past libxml2's limit, lxml refuses what expat would read
            raise _Unusual
        if self.candidate:
            self.leaf = False
        elif self.matched == depth - 1:
            if depth == _PROPERTY_DEPTH:
                self.candidate = name.rpartition(_NS_SEP)[2]
                self.chunks = []
                self.leaf = True
                self._inside(True)
            elif depth == 1 or name == _PATH[depth - 1]:
                self.matched = depth

    def end(self, name: str) -> None:
        depth = self.depth
        if self.candidate and depth == _PROPERTY_DEPTH:
            if self.leaf:
                self.props[self.candidate] = "".join(self.chunks)
            self.candidate = ""
            self._inside(False)
        if self.matched == depth:
            self.matched = depth - 1
        self.depth = depth - 1

    def _inside(self, candidate: bool) -> None:
        parser = self.parser
        # Text of a candidate's own children is gathered too, but such a candidate is no
        # leaf: it is dropped.
        parser.CharacterDataHandler = self.chunks.append if candidate else None
        parser.CommentHandler = self.other if candidate else None
        parser.ProcessingInstructionHandler = self.pi if candidate else None

    def other(self, data: str) -> None:
        if self.depth == _PROPERTY_DEPTH:
            self.leaf = False

    def pi(self, target: str, data: str) -> None:
        self.other(data)


class _LongDocumentReader(_PropertyReader):
    """The reader for a document long enough to hold a name past libxml2's limit."""

    __slots__ = ()

    def __init__(self, parser: pyexpat.XMLParserType) -> None:
        super().__init__(parser)
        parser.ProcessingInstructionHandler = self.pi

    def start(self, name: str, attributes: dict[str, str]) -> None:
        if len(name) > MAX_NAME or any(len(key) > MAX_NAME for key in attributes):
            raise _Unusual
        super().start(name, attributes)

    def _inside(self, candidate: bool) -> None:
        super()._inside(candidate)
        self.parser.ProcessingInstructionHandler = self.pi

    def pi(self, target: str, data: str) -> None:
        if len(target) > MAX_NAME:
            raise _Unusual
        if self.candidate:
            self.other(data)


def canonical(xml: bytes) -> bytes:
    """C14N of the document with whitespace-only text dropped.

    Two documents with the same canonical form mean the same to libvirt: a script that
    only re-serialises (minidom's quoting, an XML declaration, indentation) changes nothing.
    """
    from lxml import etree

    return etree.tostring(parse(xml, remove_blank_text=True), method="c14n")


def normalised(xml: bytes) -> bytes:
    """The canonical form, indented one element a line: what a diff of two documents
    compares, so that a re-serialisation shows no change and a change shows alone."""
    from lxml import etree

    return etree.tostring(parse(canonical(xml), remove_blank_text=True), pretty_print=True)


def same_meaning(a: bytes, b: bytes) -> bool:
    """Whether two XML documents are semantically equal (raises XMLError if ``b`` is bad)."""
    return a == b or canonical(a) == canonical(b)
