"""VDSM's per-device events beside a VM's, on real libvirt: device_create at a start (the
element before_device_create leaves is booted under ``libvirt-bridge start``),
device_destroy at a destroy, and device_migrate on both sides of a live migration.

The guest's NIC uses user-mode networking (``type='user'``: nothing on the host) on the
PCI bus: it is never unplugged here, so it needs no guest cooperation.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from lxml import etree

from libvirt_bridge_lab.sandbox import Sandbox
from testing.e2e import (
    ListenedProbe,
    Record,
    define_with_devices,
    element_of,
    env_of,
    events_of,
    listened,
    migrate_verb,
    probed,
    verb,
)
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
# In the order they fire: the device's events around the VM's, as at a start and an end.
MIGRATE_SOURCE = (
    "before_device_migrate_source",
    "before_vm_migrate_source",
    "after_vm_migrate_source",
    "after_device_migrate_source",
)
MIGRATE_DESTINATION = tuple(event.replace("source", "destination") for event in MIGRATE_SOURCE)
SENTINEL = ListenedProbe.SENTINEL_EVENTS
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


def define_with_nic(sandbox: Sandbox) -> str:
    """Define g1 with the NIC and its properties; return its UUID."""
    return define_with_devices(sandbox, "g1", NIC, metadata=METADATA)


def nic_link(sandbox: Sandbox, *flags: str) -> str | None:
    root = etree.fromstring(sandbox.virsh("dumpxml", "g1", *flags).stdout.encode())
    link = root.find("devices/interface/link")
    return None if link is None else str(link.get("state"))


def device_record_ok(record: Record, uuid: str) -> None:
    """One device's element alone, with its property, the VM's and vmId."""
    element = element_of(record)
    assert element.tag == "interface" and element.find("mac").get("address") == MAC
    env = env_of(record)
    assert (env.get("extnet"), env.get("owner"), env.get("vmId")) == ("br-test", "ops", uuid)


def test_the_start_verb_boots_what_before_device_create_left(sandbox: Sandbox) -> None:
    probe = listened(sandbox, (*START, *DESTROY, *SENTINEL))
    sandbox.add_hook_script("before_device_create", "60_link_down", LINK_DOWN)
    uuid = define_with_nic(sandbox)
    result = verb(sandbox, "start", "g1")
    assert result.returncode == 0, result.stderr
    got = probe.new(4)
    assert events_of(got) == list(START)
    device_record_ok(got[0], uuid)
    device_record_ok(got[3], uuid)
    # before_vm_start got the domain with the NIC as before_device_create left it, and that
    # is what booted, for this boot only.
    assert element_of(got[1]).find("devices/interface/link").get("state") == "down"
    assert nic_link(sandbox) == "down"
    assert nic_link(sandbox, "--inactive") is None

    sandbox.virsh("destroy", "g1")
    got = probe.new(4)
    assert events_of(got) == list(DESTROY)
    device_record_ok(got[0], uuid)
    device_record_ok(got[3], uuid)


def test_under_virsh_start_before_device_create_runs_and_its_change_is_logged(
    sandbox: Sandbox,
) -> None:
    probe = probed(sandbox, events=START)
    sandbox.add_hook_script("before_device_create", "60_link_down", LINK_DOWN)
    uuid = define_with_nic(sandbox)
    sandbox.virsh("start", "g1")
    got = probe.new(4)
    assert events_of(got) == list(START)
    device_record_ok(got[0], uuid)
    assert nic_link(sandbox) is None
    assert "changed the domain XML, but libvirt cannot take a changed XML" in probe.log()


def test_a_failing_before_device_create_refuses_virsh_start(sandbox: Sandbox) -> None:
    probe = probed(sandbox, events=(*START, *DESTROY))
    sandbox.add_hook_script(
        "before_device_create", "60_refuse", "#!/bin/sh\necho 'br-test is down' >&2\nexit 1\n"
    )
    define_with_nic(sandbox)
    result = sandbox.virsh("start", "g1", check=False)
    assert result.returncode != 0
    assert "br-test is down" in result.stderr
    assert sandbox.domstate("g1") == "shut off"
    # libvirt follows a refused prepare with stopped and release, as for before_vm_start.
    events = events_of(probe.settled())
    assert events[0] == "before_device_create" and "before_vm_start" not in events


def test_a_domain_as_ovirt_exported_it_fires_device_create_for_nic_and_hostdev_only(
    sandbox: Sandbox,
) -> None:
    probe = probed(sandbox, events=(*START, *DESTROY))
    uuid = define_with_devices(sandbox, "g1", NIC, HOSTDEV, WATCHDOG, metadata=OVIRT_EXPORT)
    result = sandbox.virsh("start", "g1", check=False)
    # libvirt finds no such USB device (or no USB bus), after its prepare call.
    assert result.returncode != 0 and "usb" in result.stderr.lower()
    assert sandbox.domstate("g1") == "shut off"
    records = probe.settled()
    creates = [r for r in records if r["event"] == "before_device_create"]
    elements = [element_of(r) for r in creates]
    assert [e.tag for e in elements] == ["interface", "hostdev"]
    nic_env, hostdev_env = (env_of(r) for r in creates)
    assert (nic_env.get("extnet"), nic_env.get("owner"), nic_env.get("vmId")) == (
        "br-test",
        "ops",
        uuid,
    )
    assert (hostdev_env.get("usbkey"), hostdev_env.get("owner"), hostdev_env.get("vmId")) == (
        "token-1",
        "ops",
        uuid,
    )
    assert "extnet" not in hostdev_env and "wd" not in nic_env and "wd" not in hostdev_env
    assert elements[1].find("alias").get("name") == "ua-hd0"  # type: ignore[union-attr]
    assert events_of(records).index("before_vm_start") > 1
    # What fires for the device at its end is for the NIC alone, as in VDSM.
    for record in records:
        if record["event"] in ("before_device_destroy", "after_device_destroy"):
            assert element_of(record).tag == "interface"


def test_a_live_migration_fires_the_device_migrate_events_on_both_sides(
    make_sandbox: Callable[[str], Sandbox],
) -> None:
    listened_events = (*MIGRATE_SOURCE, *MIGRATE_DESTINATION, *SENTINEL)
    source = listened(make_sandbox("lbsb1"), listened_events)
    destination = listened(make_sandbox("lbsb2"), listened_events)
    uuid = define_with_nic(source.sandbox)
    source.sandbox.virsh("start", "g1")
    result = migrate_verb(source.sandbox, destination.sandbox)
    assert result.returncode == 0, result.stderr
    assert source.events(4) == list(MIGRATE_SOURCE)
    came = destination.new(4)
    assert events_of(came) == list(MIGRATE_DESTINATION)
    for record in came:
        if "device" in str(record["event"]):
            device_record_ok(record, uuid)
