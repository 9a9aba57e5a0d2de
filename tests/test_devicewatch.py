"""devicewatch: which VDSM event a libvirt device event fires, with the element and the
properties its scripts get, kept while the device exists."""

from __future__ import annotations

from libvirt_bridge import mapping
from libvirt_bridge.devicewatch import DeviceWatch
from libvirt_bridge.runner import EventProperties
from libvirt_bridge.screening import screen

ADDED, REMOVED, FAILED = mapping.DEVICE_ADDED, mapping.DEVICE_REMOVED, mapping.REMOVAL_FAILED

UUID = "0f0e0d0c-0000-0000-0000-000000000001"


def usb_disk(image: str, target: str, alias: str) -> str:
    """A disk on the USB bus, laid out as in libvirt's live XML."""
    return (
        "    <disk type='file' device='disk'>\n"
        f"      <source file='/images/{image}'/>\n"
        f"      <target dev='{target}' bus='usb'/>\n"
        f"      <alias name='{alias}'/>\n"
        "    </disk>\n"
    )


NIC = """    <interface type='user'>
      <mac address='52:54:00:aa:00:01'/>
      <model type='usb-net'/>
      <alias name='net0'/>
    </interface>
"""
DIMM = """    <memory model='dimm'>
      <target><size unit='KiB'>131072</size><node>0</node></target>
      <alias name='dimm0'/>
    </memory>
"""
CONTROLLER = "    <controller type='usb' index='0'>\n      <alias name='usb'/>\n    </controller>\n"
LIVE = f"""<domain type='kvm'>
  <name>g1</name>
  <uuid>{UUID}</uuid>
  <metadata>
    <ovirt-vm:vm xmlns:ovirt-vm="http://ovirt.org/vm/1.0">
      <ovirt-vm:custom><ovirt-vm:extnet>vm-wins</ovirt-vm:extnet></ovirt-vm:custom>
      <ovirt-vm:device mac_address="52:54:00:AA:00:01">
        <ovirt-vm:custom>
          <ovirt-vm:extnet>br-ext</ovirt-vm:extnet><ovirt-vm:vlan>7</ovirt-vm:vlan>
        </ovirt-vm:custom>
      </ovirt-vm:device>
      <ovirt-vm:device devtype="disk" name="sdb">
        <ovirt-vm:custom><ovirt-vm:tier>fast</ovirt-vm:tier></ovirt-vm:custom>
      </ovirt-vm:device>
    </ovirt-vm:vm>
  </metadata>
  <devices>
{usb_disk("extra.img", "sdb", "ua-disk1")}{NIC}{DIMM}{CONTROLLER}  </devices>
</domain>
"""


def watching() -> DeviceWatch:
    watch = DeviceWatch()
    watch.remember(UUID, LIVE)
    return watch


def test_an_added_nic_fires_nic_hotplug_with_its_element_and_properties() -> None:
    fired = watching().fired(UUID, ADDED, "net0")
    assert fired is not None
    event, payload = fired
    assert event == "after_nic_hotplug"
    assert payload.xml.startswith(b'<interface type="user">\n  <mac address=')
    assert b"<domain" not in payload.xml and b"<disk" not in payload.xml
    # The device's properties, and the VM's, which win on a clash.
    assert payload.props == EventProperties(
        {"extnet": "vm-wins"}, {"extnet": "br-ext", "vlan": "7"}, "interface"
    )
    props = payload.props
    accepted = screen(props.vm, None, props.device, props.device_scope).accepted
    assert accepted == {"extnet": "vm-wins", "vlan": "7"}


def test_each_device_row_fires_its_event() -> None:
    cases = {
        (ADDED, "ua-disk1"): "after_disk_hotplug",
        (ADDED, "dimm0"): "after_memory_hotplug",
        (FAILED, "net0"): "after_nic_hotunplug_fail",
        (REMOVED, "net0"): "after_nic_hotunplug",
        (REMOVED, "ua-disk1"): "after_disk_hotunplug",
    }
    watch = watching()
    fired = {}
    for (op, alias), _ in cases.items():
        found = watch.fired(UUID, op, alias)
        fired[(op, alias)] = found[0] if found else None
    assert fired == cases


def test_a_memory_device_is_found_by_its_backends_alias_too() -> None:
    # libvirt's DEVICE_ADDED of a DIMM names its memory backend: "mem" + the alias.
    watch = watching()
    assert watch.knows(UUID, "memdimm0")
    fired = watch.fired(UUID, ADDED, "memdimm0")
    assert fired is not None and fired[0] == "after_memory_hotplug"
    assert not watch.knows(UUID, "memnet0"), "only a memory device's backend has that name"


def test_a_memory_device_comes_wrapped_in_devices() -> None:
    fired = watching().fired(UUID, ADDED, "dimm0")
    assert fired is not None
    assert fired[1].xml.startswith(b'<devices>\n  <memory model="dimm">')


def test_a_disk_gets_its_own_properties_and_the_vms() -> None:
    fired = watching().fired(UUID, REMOVED, "ua-disk1")
    assert fired is not None
    assert fired[1].props == EventProperties({"extnet": "vm-wins"}, {"tier": "fast"}, "disk")


def test_a_removed_device_is_forgotten_and_fires_once() -> None:
    watch = watching()
    assert watch.fired(UUID, REMOVED, "net0") is not None
    assert not watch.knows(UUID, "net0")
    assert watch.fired(UUID, REMOVED, "net0") is None
    assert watch.knows(UUID, "ua-disk1")


def test_devices_without_events_fire_nothing_but_are_known() -> None:
    watch = watching()
    assert watch.knows(UUID, "usb")
    assert watch.fired(UUID, ADDED, "usb") is None
    assert watch.fired(UUID, REMOVED, "usb") is None
    # A disk's failed removal has no VDSM event (VDSM has none for disks).
    assert watch.fired(UUID, FAILED, "ua-disk1") is None


def test_unknown_domains_and_aliases() -> None:
    watch = watching()
    assert not watch.knows("other") and not watch.knows(UUID, "nope")
    assert watch.fired("other", ADDED, "net0") is None
    watch.forget(UUID)
    assert not watch.knows(UUID)


def test_the_listeners_device_rows() -> None:
    device_events = {
        r.event
        for r in mapping.HOOK_TABLE
        if r.driver == "listener" and r.xml == mapping.XML_DEVICE
    }
    assert device_events == {
        "after_nic_hotplug",
        "after_disk_hotplug",
        "after_memory_hotplug",
        "after_nic_hotunplug",
        "after_disk_hotunplug",
        "after_nic_hotunplug_fail",
    }


# -- after a gap: what a resync finds missed ---------------------------------------------

RUNNING = LIVE.replace("<domain type='kvm'>", "<domain type='kvm' id='3'>")
DISK2 = usb_disk("more.img", "sdc", "ua-disk2")


def changed(xml: str = RUNNING, *, drop: str = "", add: str = "", run: str = "3") -> str:
    """``xml`` with the device element ``drop`` taken out, ``add`` put in, run ``run``."""
    assert drop in xml
    xml = xml.replace(drop, "").replace("  </devices>", add + "  </devices>")
    return xml.replace("id='3'", f"id='{run}'")


def resynced(xml: str = RUNNING) -> DeviceWatch:
    watch = DeviceWatch()
    assert watch.catch_up(UUID, xml) == []  # nothing kept: the first look fires nothing
    return watch


def test_a_resync_finds_a_removed_and_an_added_device_once() -> None:
    watch = resynced()
    nic = watch.fired(UUID, ADDED, "net0")
    assert nic is not None
    now = changed(drop=NIC, add=DISK2)
    missed = watch.catch_up(UUID, now)
    assert [(m.op, m.alias, m.event) for m in missed] == [
        (REMOVED, "net0", "after_nic_hotunplug"),
        (ADDED, "ua-disk2", "after_disk_hotplug"),
    ]
    # The removed NIC's element and properties are those it had; the disk's are its own now.
    assert missed[0].payload == nic[1]
    assert missed[1].payload.xml.startswith(b'<disk type="file" device="disk">')
    assert b"more.img" in missed[1].payload.xml
    assert missed[1].payload.props == EventProperties({"extnet": "vm-wins"}, {}, "disk")
    assert watch.catch_up(UUID, now) == []
    assert watch.knows(UUID, "ua-disk2") and not watch.knows(UUID, "net0")


def test_a_domain_started_again_meanwhile_came_with_its_devices() -> None:
    watch = resynced()
    assert watch.catch_up(UUID, changed(drop=NIC, add=DISK2, run="4")) == []
    assert watch.knows(UUID, "ua-disk2") and not watch.knows(UUID, "net0")
    # Kept from an inactive definition (no id): no run to compare with either.
    inactive = DeviceWatch()
    inactive.remember(UUID, LIVE)
    assert inactive.catch_up(UUID, changed(drop=NIC)) == []


def test_only_devices_with_events_are_found() -> None:
    watch = resynced()
    # A controller has no event; a memory device has one when added, none when removed.
    assert watch.catch_up(UUID, changed(drop=DIMM + CONTROLLER)) == []
    missed = watch.catch_up(UUID, changed(add=DIMM + CONTROLLER))
    assert [(m.op, m.alias, m.event) for m in missed] == [(ADDED, "dimm0", "after_memory_hotplug")]


def test_the_late_libvirt_event_of_a_device_a_resync_found_fires_nothing_more() -> None:
    # Changed after the listener subscribed, before the resync read the XML: the resync
    # fired it, and libvirt's own event comes after.
    watch = resynced()
    watch.catch_up(UUID, changed(drop=NIC, add=DISK2))
    assert watch.echo(UUID, ADDED, "ua-disk2")
    assert not watch.echo(UUID, ADDED, "ua-disk2"), "once"
    assert watch.echo(UUID, REMOVED, "net0")
    assert not watch.echo(UUID, REMOVED, "net0")
    assert not watch.echo(UUID, ADDED, "ua-disk1"), "a device no resync found"


def test_libvirts_later_events_of_a_device_a_resync_found_are_news() -> None:
    watch = resynced()
    watch.catch_up(UUID, changed(drop=NIC, add=DISK2))
    # Its event never came (it changed during the gap): its removal, then its return.
    assert not watch.echo(UUID, REMOVED, "ua-disk2")
    assert watch.fired(UUID, REMOVED, "ua-disk2") is not None
    watch.remember(UUID, changed(drop=NIC, add=DISK2))
    assert not watch.echo(UUID, ADDED, "ua-disk2")
    # The NIC is back: a removal that follows is a new one.
    watch.remember(UUID, RUNNING)
    assert not watch.echo(UUID, REMOVED, "net0")
    # The found memory device, by the name libvirt's event gives it.
    memory = RUNNING[RUNNING.index("    <memory model") : RUNNING.index("    <controller")]
    watch.catch_up(UUID, changed(drop=memory))
    watch.catch_up(UUID, RUNNING)
    assert watch.echo(UUID, ADDED, "memdimm0")


def test_the_kept_xml_loses_a_removed_device_so_a_later_listener_fires_it_once() -> None:
    watch = resynced()
    assert watch.xml[UUID] == RUNNING
    assert watch.fired(UUID, REMOVED, "net0") is not None
    # What a listener started later reads back: the domain as it is, the same run.
    later = DeviceWatch()
    later.remember(UUID, watch.xml[UUID])
    assert not later.knows(UUID, "net0") and later.knows(UUID, "ua-disk1")
    assert later.catch_up(UUID, changed(drop=NIC)) == []
    watch.forget(UUID)
    assert UUID not in watch.xml and not watch.knows(UUID)
