"""devices: which devices have custom properties, what they are, and one device's XML."""

from __future__ import annotations

import pytest
from lxml import etree

from libvirt_bridge import devices, domxml
from libvirt_bridge.devices import DISK, LEASE, MDEV, NIC, DeviceError, DeviceKey, DeviceRef

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
    <hostdev mode='subsystem' type='mdev' model='vfio-pci'>
      <source><address uuid='C2177883-F1BB-47F0-914D-32A22E3A8804'/></source>
      <alias name='ua-mdev0'/>
    </hostdev>
    <lease>
      <lockspace>sd-1</lockspace>
      <key>lease-key-1</key>
      <target path='/dev/sd-1/xleases' offset='3145728'/>
    </lease>
    <watchdog model='i6300esb' action='reset'>
      <alias name='ua-wd0'/>
    </watchdog>
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


MDEV_UUID = "c2177883-f1bb-47f0-914d-32a22e3a8804"


def test_keys_of_each_device_class_as_vdsm_names_it() -> None:
    root = domain()
    keys = [devices.key_of(e) for e in devices.devices(root)]
    assert keys == [
        DeviceKey(DISK, "vda"),
        DeviceKey(NIC, "52:54:00:12:34:56"),
        DeviceKey(NIC, "52:54:00:ab:cd:ef"),
        DeviceKey("hostdev", "ua-usb1"),
        DeviceKey(MDEV, MDEV_UUID),
        DeviceKey(LEASE, "lease-key-1"),
        DeviceKey("watchdog", "ua-wd0"),
        None,  # the balloon has no alias here: it cannot have properties
    ]
    assert [k.attributes() for k in keys if k is not None] == [
        {"devtype": "disk", "name": "vda"},
        {"mac_address": "52:54:00:12:34:56"},
        {"mac_address": "52:54:00:ab:cd:ef"},
        {"devtype": "hostdev", "name": "ua-usb1"},
        {"devtype": "hostdev", "uuid": MDEV_UUID},
        {"devtype": "lease", "name": "lease-key-1"},
        {"devtype": "watchdog", "name": "ua-wd0"},
    ]


def test_devices_with_properties_in_device_order_and_only_those() -> None:
    root = domain(
        entry("devtype='hostdev' name='ua-usb1'", port="3"),
        entry("mac_address='52:54:00:12:34:56'", extnet="br-ext"),
        entry("devtype='disk' name='vda'", cache="none"),
        entry("mac_address='52:54:00:99:99:99'", orphan="1"),  # no such NIC: ignored
        entry("devtype='disk' name='vdb'"),  # no properties
        entry(f"devtype='hostdev' uuid='{MDEV_UUID.upper()}'", mdev_type="nvidia-11"),
        entry("devtype='lease' name='lease-key-1'", lease="1"),
        entry("devtype='watchdog' name='ua-wd0'", wd="1"),
    )
    found = [(e.tag, props) for e, props in devices.with_properties(root)]
    assert found == [
        ("disk", {"cache": "none"}),
        ("interface", {"extnet": "br-ext"}),
        ("hostdev", {"port": "3"}),
        ("hostdev", {"mdev_type": "nvidia-11"}),
        ("lease", {"lease": "1"}),
        ("watchdog", {"wd": "1"}),
    ]


def test_entries_the_bridge_wrote_by_alias_are_still_read() -> None:
    root = domain(
        entry("devtype='hostdev' alias='ua-usb1'", port="3"),
        entry("devtype='hostdev' alias='ua-mdev0'", old="1"),
    )
    found = [props for _, props in devices.with_properties(root)]
    assert found == [{"port": "3"}, {"old": "1"}]


def test_a_nic_entry_with_an_alias_names_that_nic_of_a_team_only() -> None:
    team = DOMAIN.replace("52:54:00:ab:cd:ef", "52:54:00:12:34:56").replace(
        "<source network='default'/>", "<source network='default'/><alias name='ua-nic1'/>"
    )
    root = domxml.parse(
        team.format(
            entries=entry("mac_address='52:54:00:12:34:56' alias='ua-nic1'", teamed="1")
        ).encode()
    )
    [(element, props)] = devices.with_properties(root)
    assert element.find("alias").get("name") == "ua-nic1"  # type: ignore[union-attr]
    assert props == {"teamed": "1"}


def test_a_ref_matches_an_entry_by_any_of_its_keys() -> None:
    mdev = devices.find(domain(), MDEV_UUID)
    ref = devices.ref_of(mdev)
    assert ref == DeviceRef(
        (DeviceKey(MDEV, MDEV_UUID), DeviceKey("hostdev", "ua-mdev0")), "hostdev", "ua-mdev0"
    )
    assert ref.matches(DeviceKey(MDEV, MDEV_UUID))
    assert ref.matches(DeviceKey("hostdev", "ua-mdev0"))
    assert not ref.matches(DeviceKey("watchdog", "ua-mdev0"))


@pytest.mark.parametrize(
    ("ident", "key"),
    [
        ("52:54:00:AA:bb:cc", DeviceKey(NIC, "52:54:00:aa:bb:cc")),
        ("disk:vdb", DeviceKey(DISK, "vdb")),
        ("hostdev:ua-hd0", DeviceKey("hostdev", "ua-hd0")),
        (f"mdev:{MDEV_UUID.upper()}", DeviceKey(MDEV, MDEV_UUID)),
        ("lease:lease-key-1", DeviceKey(LEASE, "lease-key-1")),
        ("interface:52:54:00:aa:bb:cc", DeviceKey(NIC, "52:54:00:aa:bb:cc")),
        ("vdb", None),
        ("ua-hd0", None),
        (":x", None),
        ("a b:c", None),
    ],
)
def test_parse_ident_names_a_device_without_looking_at_one(ident: str, key: DeviceKey) -> None:
    assert devices.parse_ident(ident) == key


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
    nic = devices.find(root, "ua-nic0")
    assert devices.properties_of(devices.metadata_entries(root), devices.ref_of(nic)) == {
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
    assert devices.metadata_entries(root) == []


@pytest.mark.parametrize(
    ("ident", "tag"),
    [
        ("52:54:00:12:34:56", "interface"),
        ("52:54:00:12:34:56".upper(), "interface"),
        ("ua-nic0", "interface"),
        ("vda", "disk"),
        ("virtio-disk0", "disk"),
        ("ua-usb1", "hostdev"),
        ("hostdev:ua-usb1", "hostdev"),
        ("disk:vda", "disk"),
        (MDEV_UUID.upper(), "hostdev"),
        ("lease-key-1", "lease"),
        ("lease:lease-key-1", "lease"),
    ],
)
def test_find_by_mac_target_alias_uuid_key_or_devtype_name(ident: str, tag: str) -> None:
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
