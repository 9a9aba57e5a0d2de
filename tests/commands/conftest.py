"""Fixtures of the command tests: libvirt's test driver, in this process."""

from __future__ import annotations

from collections.abc import Iterator

import libvirt
import pytest

from libvirt_bridge import connection, domxml

URI = "test:///default"
# A domain of the test driver: its name, then what goes inside (metadata, devices).
TINY = (
    "<domain type='test'><name>{}</name><memory>1024</memory><os><type>hvm</type></os>{}</domain>"
)


@pytest.fixture
def testdrv() -> Iterator[libvirt.virConnect]:
    """The test driver's default node: one running persistent domain, ``test``.

    Its state outlives a test while any connection stays open (another module's may), so
    ``test`` starts without ovirt-vm metadata here.
    """
    connection.open_connection(URI).close()  # installs the quiet error handler
    conn = libvirt.open(URI)
    dom = conn.lookupByName("test")
    for flag in (libvirt.VIR_DOMAIN_AFFECT_LIVE, libvirt.VIR_DOMAIN_AFFECT_CONFIG):
        dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, None, None, domxml.OVIRT_VM_NS, flag)
    try:
        yield conn
    finally:
        conn.close()
