"""devices: which devices have custom properties, what they are, and one device's XML."""

from __future__ import annotations

import pytest
from lxml import etree

from libvirt_bridge import devices, domxml
from libvirt_bridge.devices import ALIAS, DISK, NIC, DeviceError, DeviceKey

DOMAIN = """<domain type='kvm'>
  <name>g1</name>
  <metadata>
    <ovirt-vm:vm xmlns:ovirt-vm="http://ovirt.org/vm/1.0">
      <ovirt-vm:custom><ovirt-vm:pincpu>0</ovirt-vm:pincpu></ovirt-vm:custom>
      {entries}
    </ovirt-vm:vm>
  </metadata>
  <devices>
    <disk type='file' device='disk'>
      <source file='/var/lib/libvirt/images/g1.qcow2'/>
      <target dev='vda' bus='virtio'/>
      <alias name='virtio-disk0'/>
    </disk>
    <interface type='bridge'>
      <mac address='52:54:00:12:34:56'/>
      <source bridge='br0'/>
      <model type='virtio'/>
      <alias name='ua-nic0'/>
    </interface>
    <interface type='network'>
      <mac address='52:54:00:ab:cd:ef'/>
      <source network='default'/>
    </interface>
    <hostdev mode='subsystem' type='usb'>
      <alias name='ua-usb1'/>
    </hostdev>
    <memballoon model='virtio'/>
  </devices>
</domain>
"""


def entry(attributes: str, **props: str) -> str:
    custom = "".join(f"<ovirt-vm:{k}>{v}</ovirt-vm:{k}>" for k, v in props.items())
    custom = f"<ovirt-vm:custom>{custom}</ovirt-vm:custom>"
    return f"<ovirt-vm:device {attributes}>{custom}</ovirt-vm:device>"


def domain(*entries: str) -> etree._Element:
    return domxml.parse(DOMAIN.format(entries="".join(entries)).encode())


def test_keys_of_a_nic_a_disk_and_other_devices() -> None:
    root = domain()
    keys = [devices.key_of(e) for e in devices.devices(root)]
    assert keys == [
        DeviceKey(DISK, "vda"),
        DeviceKey(NIC, "52:54:00:12:34:56"),
        DeviceKey(NIC, "52:54:00:ab:cd:ef"),
        DeviceKey(ALIAS, "ua-usb1"),
        None,  # the balloon has no alias here: it cannot have properties
    ]


def test_devices_with_properties_in_device_order_and_only_those() -> None:
    root = domain(
        entry("devtype='hostdev' alias='ua-usb1'", port="3"),
        entry("mac_address='52:54:00:12:34:56'", extnet="br-ext"),
        entry("devtype='disk' name='vda'", cache="none"),
        entry("mac_address='52:54:00:99:99:99'", orphan="1"),  # no such NIC: ignored
        entry("devtype='disk' name='vdb'"),  # no properties
    )
    found = [(e.tag, props) for e, props in devices.with_properties(root)]
    assert found == [
        ("disk", {"cache": "none"}),
        ("interface", {"extnet": "br-ext"}),
        ("hostdev", {"port": "3"}),
    ]


def test_a_mac_matches_whatever_its_case() -> None:
    root = domain(entry("mac_address='52:54:00:AB:CD:EF'", extnet="x"))
    [(element, props)] = devices.with_properties(root)
    assert element.find("mac").get("address") == "52:54:00:ab:cd:ef"  # type: ignore[union-attr]
    assert props == {"extnet": "x"}


def test_a_device_named_twice_merges_the_later_wins() -> None:
    root = domain(
        entry("mac_address='52:54:00:12:34:56'", a="1", b="1"),
        entry("mac_address='52:54:00:12:34:56'", b="2"),
    )
    assert devices.metadata_properties(root)[DeviceKey(NIC, "52:54:00:12:34:56")] == {
        "a": "1",
        "b": "2",
    }


def test_no_metadata_no_devices_with_properties() -> None:
    root = domxml.parse(b"<domain><name>x</name><devices><disk/></devices></domain>")
    assert devices.with_properties(root) == []
    assert devices.with_properties(domxml.parse(b"<domain/>")) == []


def test_entries_that_name_no_device_are_ignored() -> None:
    root = domain(
        "<ovirt-vm:device devtype='disk'><ovirt-vm:custom><ovirt-vm:a>1</ovirt-vm:a>"
        "</ovirt-vm:custom></ovirt-vm:device>"
    )
    assert devices.metadata_properties(root) == {}


@pytest.mark.parametrize(
    ("ident", "tag"),
    [
        ("52:54:00:12:34:56", "interface"),
        ("52:54:00:12:34:56".upper(), "interface"),
        ("ua-nic0", "interface"),
        ("vda", "disk"),
        ("virtio-disk0", "disk"),
        ("ua-usb1", "hostdev"),
    ],
)
def test_find_by_mac_target_or_alias(ident: str, tag: str) -> None:
    assert devices.find(domain(), ident).tag == tag


def test_find_says_when_nothing_or_more_than_one_answers() -> None:
    with pytest.raises(DeviceError, match=r"no device of this domain has .* 'vdz'"):
        devices.find(domain(), "vdz")
    twice = DOMAIN.replace("<alias name='ua-usb1'/>", "<alias name='vda'/>")
    with pytest.raises(
        DeviceError, match=r"'vda' names more than one device \(<disk>, <hostdev>\)"
    ):
        devices.find(domxml.parse(twice.format(entries="").encode()), "vda")


def test_element_xml_is_the_one_element_pretty_printed() -> None:
    nic = devices.find(domain(), "ua-nic0")
    xml = devices.element_xml(nic)
    assert xml == (
        b'<interface type="bridge">\n'
        b'  <mac address="52:54:00:12:34:56"/>\n'
        b'  <source bridge="br0"/>\n'
        b'  <model type="virtio"/>\n'
        b'  <alias name="ua-nic0"/>\n'
        b"</interface>\n"
    )
    # What VDSM's extnet does with it: exactly one <interface> in the document.
    from xml.dom import minidom

    (interface,) = minidom.parseString(xml).getElementsByTagName("interface")
    assert interface.getAttribute("type") == "bridge"


def test_element_xml_wraps_a_memory_device_in_devices() -> None:
    memory = etree.fromstring(
        b"<memory model='dimm'><target><size unit='KiB'>524288</size><node>0</node></target>"
        b"</memory>"
    )
    xml = devices.element_xml(memory, wrap="devices")
    assert xml.startswith(b'<devices>\n  <memory model="dimm">\n')
    assert etree.fromstring(xml)[0].tag == "memory"


@pytest.mark.parametrize(
    ("xml", "tag"),
    [
        (b"<interface type='network'><source network='default'/></interface>", "interface"),
        (b"<devices><disk type='file'/></devices>", "disk"),
    ],
)
def test_parse_element_takes_one_device_or_its_devices_wrapper(xml: bytes, tag: str) -> None:
    assert devices.parse_element(xml).tag == tag


@pytest.mark.parametrize(
    ("xml", "error", "message"),
    [
        (b"<devices><disk/><disk/></devices>", DeviceError, "holds 2 elements, not one device"),
        (b"<domain><name>x</name></domain>", DeviceError, "<domain> is not a device element"),
        (b"<interface", domxml.XMLError, "Couldn.t find end of Start Tag"),
        (b"", domxml.XMLError, "the XML is empty"),
    ],
)
def test_parse_element_refuses_what_is_not_one_device(
    xml: bytes, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        devices.parse_element(xml)
