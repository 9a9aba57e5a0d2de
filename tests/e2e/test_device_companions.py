"""VDSM's per-device events beside a VM's, on real libvirt: device_create at a start (the
element before_device_create leaves is booted under ``libvirt-bridge start``),
device_destroy at a destroy, and device_migrate on both sides of a live migration.

The guest's NIC uses user-mode networking (``type='user'``: nothing on the host) on the
PCI bus: it is never unplugged here, so it needs no guest cooperation.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from lxml import etree

from libvirt_bridge_lab.sandbox import Sandbox
from testing.e2e import ListenedProbe, Probe, Record, bridge_cli, listened, probed
from testing.harness import ovirt_vm

pytestmark = pytest.mark.libvirt

MAC = "52:54:00:cc:00:01"
NIC = f"<interface type='user'><mac address='{MAC}'/><model type='virtio'/></interface>"
METADATA = ovirt_vm({"owner": "ops"}, nics={MAC: {"extnet": "br-test"}})
LINK_DOWN = """#!/bin/sh
sed -i "s|</interface>|<link state='down'/></interface>|" "$_hook_domxml"
"""
START = ("before_device_create", "before_vm_start", "after_vm_start", "after_device_create")
DESTROY = ("before_device_destroy", "before_vm_destroy", "after_vm_destroy", "after_device_destroy")
MIGRATE = (
    "before_vm_migrate_source",
    "before_device_migrate_source",
    "after_vm_migrate_source",
    "after_device_migrate_source",
    "before_vm_migrate_destination",
    "before_device_migrate_destination",
    "after_vm_migrate_destination",
    "after_device_migrate_destination",
)
SENTINEL = ("after_vm_pause", "after_vm_cont")
# A domain as oVirt exports it: each device's entry in VDSM's form. The host device is a
# USB one no host has (its start fails after the prepare hook call), the watchdog any
# other device with properties.
HOSTDEV = (
    "<hostdev mode='subsystem' type='usb' managed='no'><source><vendor id='0x1d6b'/>"
    "<product id='0x0bad'/></source><alias name='ua-hd0'/></hostdev>"
)
WATCHDOG = "<watchdog model='i6300esb' action='reset'><alias name='ua-wd0'/></watchdog>"
OVIRT_EXPORT = (
    '<ovirt-vm:vm xmlns:ovirt-vm="http://ovirt.org/vm/1.0">'
    "<ovirt-vm:custom><ovirt-vm:owner>ops</ovirt-vm:owner></ovirt-vm:custom>"
    f'<ovirt-vm:device mac_address="{MAC.upper()}"><ovirt-vm:custom>'
    "<ovirt-vm:extnet>br-test</ovirt-vm:extnet></ovirt-vm:custom></ovirt-vm:device>"
    '<ovirt-vm:device devtype="hostdev" name="ua-hd0"><ovirt-vm:custom>'
    "<ovirt-vm:usbkey>token-1</ovirt-vm:usbkey></ovirt-vm:custom></ovirt-vm:device>"
    '<ovirt-vm:device devtype="watchdog" name="ua-wd0"><ovirt-vm:custom>'
    "<ovirt-vm:wd>1</ovirt-vm:wd></ovirt-vm:custom></ovirt-vm:device>"
    "</ovirt-vm:vm>"
)


def define_with_nic(sandbox: Sandbox, tmp_path: Path, name: str = "g1") -> str:
    """Define ``name`` with the NIC and its properties; return its UUID."""
    xml = sandbox.domain_xml(name, metadata=METADATA).replace(
        "</devices>", f"    {NIC}\n  </devices>"
    )
    path = tmp_path / f"{name}.xml"
    path.write_text(xml)
    sandbox.virsh("define", str(path))
    root = etree.fromstring(xml.encode())
    return str(root.findtext("uuid"))


def nic_link(sandbox: Sandbox, *flags: str) -> str | None:
    root = etree.fromstring(sandbox.virsh("dumpxml", "g1", *flags).stdout.encode())
    link = root.find("devices/interface/link")
    return None if link is None else str(link.get("state"))


def device_record_ok(record: Record, uuid: str) -> None:
    """One device's element alone, with its property, the VM's and vmId."""
    element = etree.fromstring(str(record["xml"]).encode())
    assert element.tag == "interface" and element.find("mac").get("address") == MAC
    env = record["env"]
    assert isinstance(env, dict)
    assert (env.get("extnet"), env.get("owner"), env.get("vmId")) == ("br-test", "ops", uuid)


def test_the_start_verb_boots_what_before_device_create_left(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    probe = listened(sandbox, (*START, *DESTROY, *SENTINEL))
    sandbox.add_hook_script("before_device_create", "60_link_down", LINK_DOWN)
    uuid = define_with_nic(sandbox, tmp_path)
    result = bridge_cli(sandbox, "start", "--connect", sandbox.uri, "g1")
    assert result.returncode == 0, result.stderr
    got = probe.new(4)
    assert [r["event"] for r in got] == list(START)
    device_record_ok(got[0], uuid)
    device_record_ok(got[3], uuid)
    # before_vm_start got the domain with the NIC as before_device_create left it, and that
    # is what booted, for this boot only.
    booted = etree.fromstring(str(got[1]["xml"]).encode())
    assert booted.find("devices/interface/link").get("state") == "down"
    assert nic_link(sandbox) == "down"
    assert nic_link(sandbox, "--inactive") is None

    sandbox.virsh("destroy", "g1")
    got = probe.new(4)
    assert [r["event"] for r in got] == list(DESTROY)
    device_record_ok(got[0], uuid)
    device_record_ok(got[3], uuid)


def test_under_virsh_start_before_device_create_runs_and_its_change_is_logged(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    probe = probed(sandbox, events=START)
    sandbox.add_hook_script("before_device_create", "60_link_down", LINK_DOWN)
    uuid = define_with_nic(sandbox, tmp_path)
    sandbox.virsh("start", "g1")
    got = probe.new(4)
    assert [r["event"] for r in got] == list(START)
    device_record_ok(got[0], uuid)
    assert nic_link(sandbox) is None
    assert "changed the domain XML, but libvirt cannot take a changed XML" in probe.log()


def test_a_failing_before_device_create_refuses_virsh_start(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    probe = probed(sandbox, events=(*START, *DESTROY))
    sandbox.add_hook_script(
        "before_device_create", "60_refuse", "#!/bin/sh\necho 'br-test is down' >&2\nexit 1\n"
    )
    define_with_nic(sandbox, tmp_path)
    result = sandbox.virsh("start", "g1", check=False)
    assert result.returncode != 0
    assert "br-test is down" in result.stderr
    assert sandbox.domstate("g1") == "shut off"
    # libvirt follows a refused prepare with stopped and release, as for before_vm_start.
    events = [r["event"] for r in probe.settled()]
    assert events[0] == "before_device_create" and "before_vm_start" not in events


def test_a_domain_as_ovirt_exported_it_fires_device_create_for_nic_and_hostdev_only(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    probe = probed(sandbox, events=(*START, *DESTROY))
    xml = sandbox.domain_xml("g1", metadata=OVIRT_EXPORT).replace(
        "</devices>", f"    {NIC}\n    {HOSTDEV}\n    {WATCHDOG}\n  </devices>"
    )
    path = tmp_path / "g1.xml"
    path.write_text(xml)
    sandbox.virsh("define", str(path))
    uuid = str(etree.fromstring(xml.encode()).findtext("uuid"))
    result = sandbox.virsh("start", "g1", check=False)
    # libvirt finds no such USB device (or no USB bus), after its prepare call.
    assert result.returncode != 0 and "usb" in result.stderr.lower()
    assert sandbox.domstate("g1") == "shut off"
    records = probe.settled()
    creates = [r for r in records if r["event"] == "before_device_create"]
    elements = [etree.fromstring(str(r["xml"]).encode()) for r in creates]
    assert [e.tag for e in elements] == ["interface", "hostdev"]
    envs = [r["env"] for r in creates]
    assert isinstance(envs[0], dict) and isinstance(envs[1], dict)
    assert (envs[0].get("extnet"), envs[0].get("owner"), envs[0].get("vmId")) == (
        "br-test",
        "ops",
        uuid,
    )
    assert (envs[1].get("usbkey"), envs[1].get("owner"), envs[1].get("vmId")) == (
        "token-1",
        "ops",
        uuid,
    )
    assert "extnet" not in envs[1] and "wd" not in envs[0] and "wd" not in envs[1]
    assert elements[1].find("alias").get("name") == "ua-hd0"  # type: ignore[union-attr]
    assert [r["event"] for r in records].index("before_vm_start") > 1
    # What fires for the device at its end is for the NIC alone, as in VDSM.
    for record in records:
        if record["event"] in ("before_device_destroy", "after_device_destroy"):
            assert etree.fromstring(str(record["xml"]).encode()).tag == "interface"


def test_a_live_migration_fires_the_device_migrate_events_on_both_sides(
    make_sandbox: Callable[[str], Sandbox], tmp_path: Path
) -> None:
    source = listened(make_sandbox("lbsb1"), (*MIGRATE, *SENTINEL))
    destination = listened(make_sandbox("lbsb2"), (*MIGRATE, *SENTINEL))
    uuid = define_with_nic(source.sandbox, tmp_path)
    source.sandbox.virsh("start", "g1")
    result = bridge_cli(
        source.sandbox,
        "migrate",
        "--connect",
        source.sandbox.uri,
        "--live",
        "g1",
        destination.sandbox.uri,
        "--migrateuri",
        "tcp://127.0.0.1",
    )
    assert result.returncode == 0, result.stderr
    out = source_events(source, 4)
    assert out == [
        "before_device_migrate_source",
        "before_vm_migrate_source",
        "after_vm_migrate_source",
        "after_device_migrate_source",
    ]
    came = destination.new(4)
    assert [r["event"] for r in came] == [
        "before_device_migrate_destination",
        "before_vm_migrate_destination",
        "after_vm_migrate_destination",
        "after_device_migrate_destination",
    ]
    for record in came:
        if "device" in str(record["event"]):
            device_record_ok(record, uuid)


def source_events(probe: ListenedProbe | Probe, count: int) -> list[str]:
    return [str(r["event"]) for r in probe.new(count)]
