"""VDSM's per-device events beside a VM's (before/after_device_create, _destroy, _migrate_*),
fired through the installed launchers, as libvirt calls them."""

from __future__ import annotations

from libvirt_bridge import mapping
from testing.harness import Bridge, domain_xml, ovirt_vm, uuid_of
from testing.probes import STARTED, Record, element_of, env_of, events_of

METADATA = ovirt_vm(
    {"owner": "ops"},
    nics={"52:54:00:00:00:01": {"extnet": "br-a"}, "52:54:00:00:00:02": {"extnet": "br-b"}},
    disks={"vda": {"tier": "fast"}},
)
DEVICES = f"""
  <metadata>{METADATA}</metadata>
  <devices>
    <disk type='file' device='disk'><target dev='vda' bus='virtio'/></disk>
    <interface type='bridge'><mac address='52:54:00:00:00:01'/><source bridge='br0'/></interface>
    <interface type='bridge'><mac address='52:54:00:00:00:02'/><source bridge='br0'/></interface>
    <interface type='bridge'><mac address='52:54:00:00:00:03'/><source bridge='br0'/></interface>
  </devices>"""
REFUSE = "import sys; sys.stderr.write('no such bridge\\n'); sys.exit(1)"


def domain() -> bytes:
    return domain_xml("vm1", extra=DEVICES)


def macs(records: list[Record]) -> list[str]:
    """The MAC of the NIC each record's script got."""
    return [str(element_of(record).find("mac").get("address")) for record in records]


def test_a_cold_boot_fires_device_create_per_nic_with_properties(bridge: Bridge) -> None:
    for event in (
        "before_vm_start",
        "after_vm_start",
        "before_device_create",
        "after_device_create",
    ):
        bridge.probe(event)
    xml = domain()
    for op in ("prepare", "start", "started"):
        assert bridge.qemu("vm1", op, "begin", xml).returncode == 0
    records = bridge.wait_async(6)
    # Each NIC's event around the VM's.
    nics = 2
    expected = ["before_device_create"] * nics + [*STARTED] + ["after_device_create"] * nics
    assert events_of(records) == expected
    # The NICs with properties, one each, in <devices> order; not the disk (VDSM keeps a
    # disk's properties elsewhere), not the NIC without.
    device_records = [r for r in records if "device" in str(r["event"])]
    assert macs(device_records) == ["52:54:00:00:00:01", "52:54:00:00:00:02"] * 2
    for record, extnet in zip(device_records, ["br-a", "br-b"] * 2, strict=True):
        env = env_of(record)
        assert (env["extnet"], env["owner"], env["vmId"]) == (extnet, "ops", uuid_of(xml))


def test_a_failing_before_device_create_refuses_the_start(bridge: Bridge) -> None:
    bridge.probe("before_vm_start")
    bridge.probe("before_device_create", "60_refuse", tail=REFUSE)
    result = bridge.qemu("vm1", "prepare", "begin", domain())
    assert result.returncode == 1
    assert b"before_device_create refused by" in result.stderr
    assert b"no such bridge" in result.stderr
    # The first NIC's scripts refused: neither the second NIC nor the VM's event ran.
    assert bridge.events() == ["before_device_create"]


def test_under_prepare_a_changed_element_is_only_logged(bridge: Bridge) -> None:
    edit = (
        "import os; p = os.environ['_hook_domxml']; d = open(p).read(); "
        "open(p, 'w').write(d.replace('br0', 'br-changed'))"
    )
    bridge.probe("before_device_create", tail=edit)
    bridge.probe("before_vm_start")
    xml = domain()
    result = bridge.qemu("vm1", "prepare", "begin", xml)
    assert result.returncode == 0 and result.stdout == b""
    assert bridge.events()[-1] == "before_vm_start"
    # before_vm_start got the XML libvirt gave, unchanged.
    assert bridge.read_records()[-1]["xml"] == xml.decode()
    assert "changed the domain XML, but libvirt cannot take a changed XML" in bridge.log_text()


def test_destroy_and_migration_fire_their_device_companions(bridge: Bridge) -> None:
    for event in mapping.DEVICE_COMPANIONS.values():
        bridge.probe(event)
    xml = domain()
    assert bridge.qemu("vm1", "migrate", "begin", xml).returncode == 0
    # NICs only, as VDSM's (its model gives only NICs custom properties): not the disk.
    assert bridge.events() == ["before_device_migrate_destination"] * 2
    assert bridge.qemu("vm1", "stopped", "end", xml).returncode == 0
    assert bridge.qemu("vm1", "release", "end", xml).returncode == 0
    records = bridge.wait_async(6)
    assert events_of(records[2:]) == ["before_device_destroy"] * 2 + ["after_device_destroy"] * 2
    assert macs(records[2:4]) == ["52:54:00:00:00:01", "52:54:00:00:00:02"]


def test_no_companion_script_no_xml_parse_and_nothing_queued(bridge: Bridge) -> None:
    bridge.probe("after_vm_start")
    xml = domain()
    for op in ("prepare", "start", "started"):
        assert bridge.qemu("vm1", op, "begin", xml).returncode == 0
    assert events_of(bridge.wait_async(1)) == ["after_vm_start"]


def test_the_fast_path_serves_the_companions_too() -> None:
    assert "before_device_create" in mapping.served_events("prepare", "begin")
    assert "after_device_create" in mapping.served_events("started", "begin")
    assert "after_device_migrate_source" in mapping.served_events("stopped", "end")
    assert set(mapping.DEVICE_COMPANIONS.values()) <= set(mapping.EVENTS)
    assert not set(mapping.DEVICE_COMPANIONS.values()) & set(mapping.VDSM_ONLY_EVENTS)
