"""props: a VM's custom properties in its ovirt-vm metadata (no libvirt daemon needed).

The XML logic is tested directly; the command runs against libvirt's built-in test driver
(``test:///default``, inside this process), whose state lives as long as one connection to
it is open: the ``testdrv`` fixture (conftest.py) holds one.
"""

from __future__ import annotations

import json
from pathlib import Path

import libvirt
import pytest
from lxml import etree

from libvirt_bridge import devices, domxml, props
from libvirt_bridge.devices import DeviceKey, DeviceRef
from testing.hosts import run

from .conftest import TINY, URI

NS = props.OVIRT_VM_NS
RICH = (
    '<ovirt-vm:vm xmlns:ovirt-vm="http://ovirt.org/vm/1.0">'
    "<ovirt-vm:clusterVersion>4.4</ovirt-vm:clusterVersion>"
    "<ovirt-vm:custom><ovirt-vm:keep>k</ovirt-vm:keep><ovirt-vm:old>o</ovirt-vm:old>"
    "</ovirt-vm:custom>"
    '<ovirt-vm:device devtype="disk" name="sda"><ovirt-vm:poolID>p1</ovirt-vm:poolID>'
    '<other xmlns="urn:other"><x a="1"/></other></ovirt-vm:device>'
    "</ovirt-vm:vm>"
)


def cmd(*argv: str) -> tuple[int, str, str]:
    return run("props", "--connect", URI, *argv)


def element(dom: libvirt.virDomain, flag: int) -> etree._Element:
    xml = props.read_element(dom, flag)
    assert xml is not None
    return etree.fromstring(xml)


def custom_of(xml: str) -> dict[str, str]:
    return domxml.custom_properties(domxml.parse(xml.encode()))


# -- names and values ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["set", "1abc=x"], "invalid property name '1abc': it starts with a digit"),
        (["set", "a-b=x"], "invalid property name 'a-b': it contains '-'"),
        (["set", "ovirt-vm:x=1"], "it contains '-'"),
        (["set", "naïve=1"], "it contains 'ï'"),
        (["set", "a b=1"], "it contains ' '"),
        (["set", "=1"], "empty property name"),
        (["set", "pincpu"], "expected NAME=VALUE, got 'pincpu' (use NAME= for an empty value)"),
        (["set", "vmId=x"], "property name 'vmId' is refused: set by libvirt-bridge"),
        (["set", "_hook_domxml=/x"], "property name '_hook_domxml' is refused: set by"),
        (["set", "PATH=/tmp/evil"], "property name 'PATH' is refused: changes where programs"),
        (["set", "LD_PRELOAD=/x.so"], "property name 'LD_PRELOAD' is refused: changes what"),
        (["set", "BASH_ENV=/x"], "property name 'BASH_ENV' is refused: changes how a shell"),
        (["set", "a=\x01"], "the value of a contains the character U+0001"),
        (["set", "a=x\udcff"], "the value of a contains bytes that are not valid UTF-8"),
        (["set", "a=1", "a=2"], "property a is given twice, with different values"),
        (["unset", ""], "empty property name"),
    ],
)
def test_bad_names_and_values_are_usage_errors(argv: list[str], message: str) -> None:
    # Checked before connecting: the URI does not even exist.
    status, out, err = run("props", "--connect", "nowhere:///x", "vm1", *argv)
    assert status == 2
    assert out == ""
    assert err.startswith("libvirt-bridge props: error: ")
    assert message in err


@pytest.mark.parametrize("name", ["a", "_", "A_1", "pincpu", "sap_agent", "path", "x" * 200])
def test_good_names(name: str) -> None:
    props.check_name(name)
    assert etree.Element(name).tag == name  # an XML name too


def test_values_may_be_any_text() -> None:
    parsed = props.parse_assignments(["a=x=y", "b=", "c= <&>'\"\n\t\r ", "d=ünï €"])
    assert parsed == {"a": "x=y", "b": "", "c": " <&>'\"\n\t\r ", "d": "ünï €"}


def test_missing_action_and_help() -> None:
    with pytest.raises(SystemExit) as exc:
        run("props", "vm1")
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        run("props", "vm1", "frob")
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        run("props", "vm1", "set")
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        run("props", "--help")
    assert exc.value.code == 0


# -- the element ---------------------------------------------------------------------------


def test_update_keeps_everything_else() -> None:
    new = props.updated_element(RICH, {"pincpu": "1-4", "keep": "k"}, ["old"])
    assert new is not None
    root = etree.fromstring(new)
    # Unprefixed, as virDomainSetMetadata wants it; the foreign namespace stays.
    assert root.tag == "vm" and "ovirt-vm" not in new
    assert [child.tag for child in root] == ["clusterVersion", "custom", "device"]
    assert root.findtext("clusterVersion") == "4.4"
    device = root.find("device")
    assert device is not None and dict(device.attrib) == {"devtype": "disk", "name": "sda"}
    assert device.findtext("poolID") == "p1"
    assert device.find("{urn:other}other/{urn:other}x") is not None
    assert props.element_properties(new) == {"keep": "k", "pincpu": "1-4"}
    assert [c.tag for c in root.find("custom")] == ["keep", "pincpu"]  # type: ignore[union-attr]


def test_update_of_libvirts_unqualified_form() -> None:
    got = "<vm>\n  <custom>\n    <a>1</a>\n  </custom>\n  <other>x</other>\n</vm>"
    new = props.updated_element(got, {"b": "2"}, [])
    assert new == "<vm><custom><a>1</a><b>2</b></custom><other>x</other></vm>"


def test_new_element_and_escaping() -> None:
    value = "a & <b> \"c\" 'd'\nline two\r\n ünï "
    new = props.updated_element(None, {"label": value, "empty": ""}, [])
    assert new is not None
    assert props.element_properties(new) == {"label": value, "empty": ""}
    # What the bridge reads from the domain XML once libvirt has put the prefix back.
    qualified = new.replace("<", "<ovirt-vm:").replace("<ovirt-vm:/", "</ovirt-vm:")
    qualified = qualified.replace(
        "<ovirt-vm:vm>", '<ovirt-vm:vm xmlns:ovirt-vm="http://ovirt.org/vm/1.0">', 1
    )
    xml = f"<domain><metadata>{qualified}</metadata></domain>"
    assert custom_of(xml) == {"label": value, "empty": ""}


def test_removing_the_last_property() -> None:
    assert props.updated_element("<vm><custom><a>1</a></custom></vm>", {}, ["a"]) is None
    kept = props.updated_element("<vm><custom><a>1</a></custom><x/></vm>", {}, ["a"])
    assert kept == "<vm><x/></vm>"
    assert props.updated_element("<vm><x/></vm>", {}, ["nothing"]) == "<vm><x/></vm>"


def test_duplicates_collapse_to_the_one_scripts_see() -> None:
    xml = "<vm><custom><a>1</a><b>x</b><a>2</a></custom></vm>"
    assert props.element_properties(xml) == {"a": "2", "b": "x"}
    assert (
        props.updated_element(xml, {"a": "3"}, []) == "<vm><custom><b>x</b><a>3</a></custom></vm>"
    )
    assert props.updated_element(xml, {}, ["a"]) == "<vm><custom><b>x</b></custom></vm>"


def test_a_structured_entry_is_not_overwritten() -> None:
    xml = "<vm><custom><a><deep/></a></custom></vm>"
    assert props.element_properties(xml) == {}
    with pytest.raises(props.PropsError, match="has child elements"):
        props.updated_element(xml, {"a": "1"}, [])


# -- a device's properties -----------------------------------------------------------------

NIC = DeviceRef((DeviceKey(devices.NIC, "52:54:00:12:34:56"),), "interface")
SDA = DeviceRef((DeviceKey(devices.DISK, "sda"),), "disk")


def test_a_device_property_goes_into_its_own_entry() -> None:
    new = props.updated_element(RICH, {"extnet": "br-ext"}, [], NIC)
    assert new is not None
    root = etree.fromstring(new)
    assert [child.tag for child in root] == ["clusterVersion", "custom", "device", "device"]
    nic = root.findall("device")[1]
    assert dict(nic.attrib) == {"mac_address": "52:54:00:12:34:56"}
    assert props.element_properties(new, NIC) == {"extnet": "br-ext"}
    # The VM's properties and the other device's entry are untouched.
    assert props.element_properties(new) == {"keep": "k", "old": "o"}
    assert root.find("device/poolID") is not None


def test_a_device_entry_keeps_what_else_it_holds_and_goes_when_empty() -> None:
    new = props.updated_element(RICH, {"cache": "none"}, [], SDA)
    assert new is not None
    [disk] = etree.fromstring(new).findall("device")
    assert [child.tag for child in disk] == ["poolID", "{urn:other}other", "custom"]
    assert props.element_properties(new, SDA) == {"cache": "none"}
    # Its last property gone, the entry stays for what else it holds.
    kept = props.updated_element(new, {}, ["cache"], SDA)
    assert kept is not None and props.element_properties(kept, SDA) == {}
    assert etree.fromstring(kept).find("device/poolID") is not None
    # An entry that held only the properties goes with the last of them.
    alone = props.updated_element(None, {"a": "1"}, [], NIC)
    assert props.updated_element(alone, {}, ["a"], NIC) is None


def test_a_device_named_by_alias_is_written_as_vdsm_names_it() -> None:
    usb = DeviceRef((DeviceKey("hostdev", "ua-usb1"),), "hostdev", "ua-usb1")
    new = props.updated_element(None, {"port": "3"}, [], usb)
    assert new == (
        '<vm><device devtype="hostdev" name="ua-usb1"><custom><port>3</port></custom></device></vm>'
    )


def test_an_entry_in_the_bridges_earlier_form_is_rewritten_when_changed() -> None:
    old = (
        '<vm><device devtype="hostdev" alias="ua-usb1"><custom><port>3</port></custom>'
        "</device></vm>"
    )
    usb = DeviceRef((DeviceKey("hostdev", "ua-usb1"),), "hostdev", "ua-usb1")
    assert props.element_properties(old, usb) == {"port": "3"}
    new = props.updated_element(old, {"speed": "high"}, [], usb)
    assert new == (
        '<vm><device devtype="hostdev" name="ua-usb1"><custom><port>3</port>'
        "<speed>high</speed></custom></device></vm>"
    )


# -- against the test driver ---------------------------------------------------------------


def test_set_get_unset_on_a_running_domain(testdrv: libvirt.virConnect) -> None:
    status, out, err = cmd("test", "set", "pincpu=1-4", "label=web server")
    assert (status, err) == (0, "")
    assert out.splitlines() == [
        "test: set pincpu=1-4 in the live and persistent definitions",
        "test: set label=web server in the live and persistent definitions",
    ]
    assert cmd("test", "get") == (0, "label=web server\npincpu=1-4\n", "")
    status, out, _ = cmd("test", "get", "--json")
    assert json.loads(out) == {"label": "web server", "pincpu": "1-4"}
    dom = testdrv.lookupByName("test")
    for flag in (libvirt.VIR_DOMAIN_AFFECT_LIVE, libvirt.VIR_DOMAIN_AFFECT_CONFIG):
        assert custom_of(dom.XMLDesc(0 if flag == 1 else libvirt.VIR_DOMAIN_XML_INACTIVE)) == {
            "pincpu": "1-4",
            "label": "web server",
        }
    assert cmd("test", "set", "pincpu=1-4")[1] == "test: pincpu=1-4 was set already\n"
    status, out, err = cmd("test", "unset", "label", "nope")
    assert status == 0
    assert out == "test: unset label in the live and persistent definitions\n"
    assert err == "libvirt-bridge props: domain test: nope was not set; nothing to remove\n"
    assert cmd("test", "get") == (0, "pincpu=1-4\n", "")
    assert cmd("test", "unset", "pincpu")[0] == 0
    assert cmd("test", "get") == (
        0,
        "",
        "libvirt-bridge props: domain test has no custom properties\n",
    )
    assert cmd("test", "get", "--json")[1] == "{}\n"


def test_inactive_and_transient_domains(testdrv: libvirt.virConnect) -> None:
    testdrv.defineXML(TINY.format("off", ""))
    testdrv.createXML(TINY.format("trans", ""), 0)
    assert cmd("off", "set", "a=1")[1] == (
        "off: set a=1 in the persistent definition (the domain is not running)\n"
    )
    assert cmd("trans", "set", "a=1")[1] == (
        "trans: set a=1 in the live definition (the domain is transient: it has no "
        "persistent one)\n"
    )
    assert cmd("off", "get") == (0, "a=1\n", "")
    assert cmd("trans", "get") == (0, "a=1\n", "")
    status, _, err = cmd("trans", "get", "--inactive")
    assert status == 1 and "domain trans is transient" in err
    off = testdrv.lookupByName("off")
    assert custom_of(off.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)) == {"a": "1"}


def test_other_ovirt_content_is_kept(testdrv: libvirt.virConnect) -> None:
    testdrv.defineXML(TINY.format("rich", f"<metadata>{RICH}<x xmlns='urn:x'/></metadata>"))
    assert cmd("rich", "set", "pincpu=0", "keep=k2")[0] == 0
    assert cmd("rich", "unset", "old")[0] == 0
    dom = testdrv.lookupByName("rich")
    root = etree.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE).encode())
    vm = root.find(f"metadata/{{{NS}}}vm")
    assert vm is not None
    assert vm.findtext(f"{{{NS}}}clusterVersion") == "4.4"
    assert vm.findtext(f"{{{NS}}}device/{{{NS}}}poolID") == "p1"
    assert vm.find(f"{{{NS}}}device/{{urn:other}}other/{{urn:other}}x") is not None
    assert root.find("metadata/{urn:x}x") is not None
    assert domxml.custom_properties(root) == {"keep": "k2", "pincpu": "0"}


def test_live_and_persistent_differ(testdrv: libvirt.virConnect) -> None:
    dom = testdrv.lookupByName("test")
    props.write_element(
        dom, libvirt.VIR_DOMAIN_AFFECT_LIVE, "<vm><custom><a>1</a><b>x</b></custom></vm>"
    )
    props.write_element(
        dom, libvirt.VIR_DOMAIN_AFFECT_CONFIG, "<vm><custom><a>2</a><c>y</c></custom></vm>"
    )
    status, out, err = cmd("test", "get")
    assert (status, out) == (0, "a=1\nb=x\n")
    assert err.splitlines() == [
        "libvirt-bridge props: domain test: the persistent definition (used from the next "
        "start) differs from the live one shown:",
        "  a=2  (live: '1')",
        "  b not set  (live: 'x')",
        "  c=y  (live: not set)",
    ]
    assert cmd("test", "get", "--inactive")[1] == "a=2\nc=y\n"
    # A change goes into each definition on its own; the rest of each stays.
    status, out, _ = cmd("test", "set", "a=2")
    assert out == "test: set a=2 in the live definition only (the persistent one was so already)\n"
    assert props.read(dom) == {"live": {"a": "2", "b": "x"}, "persistent": {"a": "2", "c": "y"}}


def test_domain_by_uuid_and_errors(testdrv: libvirt.virConnect) -> None:
    uuid = testdrv.lookupByName("test").UUIDString()
    assert cmd(uuid, "set", "a=1")[1].startswith("test: set a=1")
    status, out, err = cmd("nosuchvm", "get")
    assert (status, out) == (1, "")
    assert err == (
        "libvirt-bridge props: error: no domain 'nosuchvm' on test:///default "
        "(see: virsh list --all)\n"
    )
    status, _, err = run("props", "--connect", "nowhere:///x", "vm1", "get")
    assert status == 1
    assert err.startswith("libvirt-bridge props: error: cannot connect to nowhere:///x: ")


def test_connect_after_the_action_and_from_the_config(
    testdrv: libvirt.virConnect, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert run("props", "test", "set", "--connect", URI, "z=1")[0] == 0
    config = tmp_path / "bridge.toml"
    config.write_text(f'libvirt_uri = "{URI}"\n')
    monkeypatch.setenv("LIBVIRT_BRIDGE_CONFIG", str(config))
    assert run("props", "test", "get") == (0, "z=1\n", "")
    # --config after the action too, and before it, as every command takes it.
    monkeypatch.delenv("LIBVIRT_BRIDGE_CONFIG")
    assert run("props", "test", "get", "--config", str(config)) == (0, "z=1\n", "")
    assert run("props", "--config", str(config), "test", "get") == (0, "z=1\n", "")
    monkeypatch.setenv("LIBVIRT_BRIDGE_CONFIG", str(config))
    config.write_text("libvirt_uri = 1\n")
    status, _, err = run("props", "test", "get")
    assert status == 1
    assert "libvirt_uri must be a non-empty string" in err and "--connect" in err


def test_device_properties_of_a_nic_and_a_disk(testdrv: libvirt.virConnect) -> None:
    # The test driver's domain has a disk vda and a NIC aa:bb:cc:dd:ee:ff.
    assert cmd("test", "set", "pincpu=0")[0] == 0
    status, out, err = cmd("test", "--device", "AA:BB:CC:DD:EE:FF", "set", "extnet=br-ext")
    assert (status, err) == (0, "")
    assert out == (
        "test NIC aa:bb:cc:dd:ee:ff: set extnet=br-ext in the live and persistent definitions\n"
    )
    assert cmd("test", "get", "--device", "vda")[0] == 0
    assert cmd("test", "--device", "vda", "set", "cache=none")[0] == 0
    assert cmd("test", "--device", "aa:bb:cc:dd:ee:ff", "get") == (0, "extnet=br-ext\n", "")
    assert cmd("test", "--device", "vda", "get", "--json")[1] == '{\n  "cache": "none"\n}\n'
    assert cmd("test", "get") == (0, "pincpu=0\n", "")  # the VM's own, unchanged
    dom = testdrv.lookupByName("test")
    root = domxml.parse(dom.XMLDesc(0).encode())
    assert devices.metadata_entries(root) == [
        (DeviceKey(devices.NIC, "aa:bb:cc:dd:ee:ff"), {"extnet": "br-ext"}),
        (DeviceKey(devices.DISK, "vda"), {"cache": "none"}),
    ]
    assert cmd("test", "--device", "vda", "unset", "cache")[0] == 0
    root = domxml.parse(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE).encode())
    assert [key for key, _ in devices.metadata_entries(root)] == [
        DeviceKey(devices.NIC, "aa:bb:cc:dd:ee:ff")
    ]


def test_properties_of_a_device_not_plugged_yet_or_any_more(testdrv: libvirt.virConnect) -> None:
    status, out, err = cmd("test", "--device", "52:54:00:00:00:99", "set", "extnet=lab")
    assert status == 0
    assert err == (
        "libvirt-bridge props: no device of test is the NIC 52:54:00:00:00:99: its properties "
        "are in the metadata for when it is plugged (after_nic_hotplug, a start, ...)\n"
    )
    assert "test NIC 52:54:00:00:00:99: set extnet=lab" in out
    assert cmd("test", "--device", "disk:vdz", "set", "tier=slow")[0] == 0
    assert cmd("test", "--device", "hostdev:ua-hd0", "set", "port=3")[0] == 0
    # get and unset find an entry of a device that is not there, by what names it.
    assert cmd("test", "--device", "52:54:00:00:00:99", "get")[:2] == (0, "extnet=lab\n")
    assert cmd("test", "--device", "vdz", "get")[:2] == (0, "tier=slow\n")
    assert cmd("test", "--device", "ua-hd0", "get")[:2] == (0, "port=3\n")
    assert cmd("test", "--device", "aa:bb:cc:dd:ee:ff", "set", "extnet=br-ext")[0] == 0
    status, out, err = cmd("test", "devices")
    assert (status, err) == (0, "")
    assert out == (
        "NIC 52:54:00:00:00:99 (--device 52:54:00:00:00:99): no such device\n"
        "  extnet=lab\n"
        "disk vdz (--device disk:vdz): no such device\n"
        "  tier=slow\n"
        "hostdev ua-hd0 (--device hostdev:ua-hd0): no such device\n"
        "  port=3\n"
        "NIC aa:bb:cc:dd:ee:ff (--device aa:bb:cc:dd:ee:ff): <interface> in the live, "
        "<interface> in the persistent\n"
        "  extnet=br-ext\n"
    )
    listed = json.loads(cmd("test", "devices", "--json")[1])
    assert listed[0] == {
        "device": "NIC 52:54:00:00:00:99",
        "id": "52:54:00:00:00:99",
        "present": {},
        "properties": {"live": {"extnet": "lab"}, "persistent": {"extnet": "lab"}},
    }
    assert listed[3]["present"] == {"live": "interface", "persistent": "interface"}
    # Entries in VDSM's form.
    root = element(testdrv.lookupByName("test"), libvirt.VIR_DOMAIN_AFFECT_CONFIG)
    assert [dict(e.attrib) for e in root.findall("device")] == [
        {"mac_address": "52:54:00:00:00:99"},
        {"devtype": "disk", "name": "vdz"},
        {"devtype": "hostdev", "name": "ua-hd0"},
        {"mac_address": "aa:bb:cc:dd:ee:ff"},
    ]
    assert cmd("test", "--device", "vdz", "unset", "tier")[0] == 0
    assert "disk vdz" not in cmd("test", "devices")[1]
    assert cmd("test", "--device", "vda", "devices")[0] == 2


def test_a_device_that_is_not_there(testdrv: libvirt.virConnect) -> None:
    status, out, err = cmd("test", "--device", "vdz", "get")
    assert (status, out) == (1, "")
    assert err == (
        "libvirt-bridge props: error: domain test: no device of this domain has the MAC, "
        "disk target, UUID, key or alias 'vdz'; a device that is not plugged is named by its "
        "MAC or as DEVTYPE:NAME (disk:vdb, hostdev:ua-hd0, mdev:UUID, lease:KEY)\n"
    )
