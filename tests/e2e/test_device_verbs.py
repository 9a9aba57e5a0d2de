"""The device verbs on real libvirt: attach-device, detach-device and update-device.

USB devices, as in test_device_events.py (the guests have no operating system to release
a PCI device): a disk on the USB bus and a usb-net NIC with user-mode networking.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from lxml import etree

from libvirt_bridge_lab.sandbox import Sandbox
from testing.e2e import ListenedProbe, define_xml, element_of, env_of, events_of, listened, verb
from testing.harness import ovirt_vm

from .test_device_events import DISK, MAC, NIC, make_image

pytestmark = pytest.mark.libvirt

EVENTS = (
    "before_nic_hotplug",
    "after_nic_hotplug",
    "after_nic_hotplug_fail",
    "before_disk_hotplug",
    "after_disk_hotplug",
    "before_nic_hotunplug",
    "after_nic_hotunplug",
    "after_nic_hotunplug_fail",
    "before_disk_hotunplug",
    "after_disk_hotunplug",
    "before_update_device",
    "after_update_device",
    "after_update_device_fail",
)
SENTINEL = ListenedProbe.SENTINEL_EVENTS
VM_METADATA = ovirt_vm({"owner": "ops"})
# A before_* script that turns the NIC's link down: what gets attached or applied is what
# the scripts leave.
LINK_DOWN = """#!/bin/sh
sed -i "s|</interface>|<link state='down'/></interface>|" "$_hook_domxml"
"""
REFUSE = """#!/bin/sh
echo "not on this host" >&2
exit 1
"""


def live_device(sandbox: Sandbox, alias: str) -> etree._Element | None:
    root = etree.fromstring(sandbox.virsh("dumpxml", "g1").stdout.encode())
    for element in root.iterfind("devices/*"):
        found = element.find("alias")
        if found is not None and found.get("name") == alias:
            return element
    return None


@dataclass
class Running:
    """g1 running in ``sandbox`` with the bridge, probes and the listener; the device
    files (nic.xml, disk.xml) in ``files``."""

    sandbox: Sandbox
    probe: ListenedProbe
    uuid: str
    files: Path

    def verb(self, name: str, *args: str) -> subprocess.CompletedProcess[str]:
        """``libvirt-bridge NAME --connect URI g1 ARGS``."""
        return verb(self.sandbox, name, "g1", *args)


@pytest.fixture
def g1(sandbox: Sandbox, tmp_path: Path) -> Running:
    probe = listened(sandbox, (*EVENTS, *SENTINEL))
    make_image(sandbox)
    uuid = sandbox.define_guest("g1", metadata=VM_METADATA)
    sandbox.virsh("start", "g1")
    (tmp_path / "nic.xml").write_text(NIC)
    (tmp_path / "disk.xml").write_text(DISK)
    return Running(sandbox, probe, uuid, tmp_path)


def test_attach_runs_before_nic_hotplug_attaches_what_it_left_and_keeps_the_props(
    g1: Running,
) -> None:
    g1.sandbox.add_hook_script("before_nic_hotplug", "60_link_down", LINK_DOWN)
    result = g1.verb("attach-device", str(g1.files / "nic.xml"), "--prop", "extnet=br-x")
    assert result.returncode == 0, result.stderr
    assert "attached the <interface> to 'g1'" in result.stdout
    before, after = g1.probe.new(2)
    assert events_of([before, after]) == ["before_nic_hotplug", "after_nic_hotplug"]
    # The element alone, the device's property (given with --prop), the VM's, and vmId.
    for record in (before, after):
        assert element_of(record).tag == "interface"
        env = env_of(record)
        assert (env.get("extnet"), env.get("owner"), env.get("vmId")) == ("br-x", "ops", g1.uuid)
    # What the scripts left is what libvirt attached.
    nic = live_device(g1.sandbox, "ua-nic1")
    assert nic is not None and nic.find("link").get("state") == "down"
    props = g1.verb("props", "--device", MAC, "get")
    assert "extnet=br-x" in props.stdout, props.stdout + props.stderr


def test_a_failing_before_disk_hotplug_attaches_nothing(g1: Running) -> None:
    g1.sandbox.add_hook_script("before_disk_hotplug", "60_refuse", REFUSE)
    result = g1.verb("attach-device", str(g1.files / "disk.xml"), "--prop", "tier=x")
    assert result.returncode == 1
    assert (
        "before_disk_hotplug refused to attach the <disk> sdb to 'g1'; nothing was done"
    ) in result.stderr
    assert "not on this host" in result.stderr
    assert g1.probe.events(1) == ["before_disk_hotplug"]
    assert live_device(g1.sandbox, "ua-disk1") is None
    # Nor were the properties kept.
    assert "tier" not in g1.verb("props", "get").stdout
    assert g1.probe.caught_up()[g1.probe.seen :] == []


def test_a_nic_libvirt_refuses_fires_after_nic_hotplug_fail(g1: Running) -> None:
    # No such network in the sandbox: libvirt refuses the attach.
    bad = g1.files / "bad-nic.xml"
    bad.write_text(
        f"<interface type='network'><mac address='{MAC}'/><source network='nowhere'/>"
        "<model type='usb-net'/></interface>"
    )
    result = g1.verb("attach-device", str(bad), "--prop", "extnet=br-y")
    assert result.returncode == 1
    assert "attaching the <interface> failed:" in result.stderr
    got = g1.probe.new(2)
    assert events_of(got) == ["before_nic_hotplug", "after_nic_hotplug_fail"]
    assert env_of(got[1]).get("extnet") == "br-y"
    props = g1.verb("props", "--device", MAC, "get")
    assert "extnet" not in props.stdout, "a refused attach kept its properties"


def test_detach_runs_before_disk_hotunplug_or_is_refused_by_it(g1: Running) -> None:
    g1.sandbox.virsh("attach-device", "g1", str(g1.files / "disk.xml"), "--live")
    assert g1.probe.events(1) == ["after_disk_hotplug"]

    refuse = g1.sandbox.add_hook_script("before_disk_hotunplug", "60_refuse", REFUSE)
    result = g1.verb("detach-device", "--device", "sdb")
    assert result.returncode == 1
    assert "before_disk_hotunplug refused" in result.stderr
    assert g1.probe.events(1) == ["before_disk_hotunplug"]
    assert live_device(g1.sandbox, "ua-disk1") is not None

    Path(refuse).unlink()
    result = g1.verb("detach-device", str(g1.files / "disk.xml"))
    assert result.returncode == 0, result.stderr
    assert "detached the <disk> from 'g1'" in result.stdout
    got = g1.probe.new(2)
    assert events_of(got) == ["before_disk_hotunplug", "after_disk_hotunplug"]
    assert element_of(got[0]).find("target").get("dev") == "sdb"
    assert live_device(g1.sandbox, "ua-disk1") is None


def test_update_applies_what_before_update_device_left(g1: Running) -> None:
    g1.sandbox.virsh("attach-device", "g1", str(g1.files / "nic.xml"), "--live")
    assert g1.probe.events(1) == ["after_nic_hotplug"]
    g1.sandbox.add_hook_script("before_update_device", "60_link_down", LINK_DOWN)
    result = g1.verb("update-device", str(g1.files / "nic.xml"))
    assert result.returncode == 0, result.stderr
    got = g1.probe.new(2)
    assert events_of(got) == ["before_update_device", "after_update_device"]
    assert env_of(got[1]).get("vmId") == g1.uuid
    nic = live_device(g1.sandbox, "ua-nic1")
    assert nic is not None and nic.find("link").get("state") == "down"

    # A change libvirt cannot make live (the NIC's model) fires after_update_device_fail.
    other = g1.files / "other-model.xml"
    other.write_text(NIC.replace("usb-net", "e1000"))
    result = g1.verb("update-device", str(other))
    assert result.returncode == 1
    assert "updating the <interface> failed:" in result.stderr
    assert g1.probe.events(2) == ["before_update_device", "after_update_device_fail"]


def test_the_verbs_refuse_what_they_cannot_do(g1: Running) -> None:
    controller = g1.files / "controller.xml"
    controller.write_text("<controller type='usb' index='1' model='qemu-xhci'/>")
    result = g1.verb("attach-device", str(controller))
    assert result.returncode == 1
    assert "attach-device takes a device VDSM has events for" in result.stderr
    assert "not a <controller>: use virsh attach-device for that" in result.stderr
    result = g1.verb("detach-device")
    assert result.returncode == 2
    assert "detach-device takes the device's FILE or --device ID, one of them" in result.stderr
    result = g1.verb("detach-device", "--device", "sdz")
    assert result.returncode == 1
    assert (
        "no device of this domain has the MAC, disk target, UUID, key or alias 'sdz'"
        in result.stderr
    )
    g1.sandbox.virsh("destroy", "g1")
    result = g1.verb("attach-device", str(g1.files / "nic.xml"))
    assert result.returncode == 1
    assert "domain 'g1' is not running" in result.stderr
    fired = events_of(g1.probe.caught_up())
    assert [e for e in fired if "device" in e or "hotplug" in e] == []


# A DIMM needs memory slots, a NUMA node and ACPI in the guest; QEMU adds it on its own.
DIMM = "<memory model='dimm'><target><size unit='MiB'>128</size><node>0</node></target></memory>"


def define_with_memory_slots(sandbox: Sandbox) -> str:
    xml = sandbox.domain_xml("g2")
    xml = xml.replace(
        "<memory unit='MiB'>64</memory>",
        "<maxMemory slots='2' unit='MiB'>512</maxMemory>\n  <memory unit='MiB'>64</memory>",
    )
    xml = xml.replace(
        "<vcpu>1</vcpu>",
        "<vcpu>1</vcpu>\n  <features><acpi/></features>\n"
        "  <cpu><numa><cell id='0' cpus='0' memory='64' unit='MiB'/></numa></cpu>",
    )
    return define_xml(sandbox, xml)


def test_memory_hotplug_through_the_verb_and_under_virsh(sandbox: Sandbox, tmp_path: Path) -> None:
    probe = listened(sandbox, ("before_memory_hotplug", "after_memory_hotplug", *SENTINEL))
    uuid = define_with_memory_slots(sandbox)
    sandbox.virsh("start", "g2")
    dimm = tmp_path / "dimm.xml"
    dimm.write_text(DIMM)
    result = verb(sandbox, "attach-device", "g2", str(dimm))
    assert result.returncode == 0, result.stderr
    before, after = probe.new(2)
    assert events_of([before, after]) == ["before_memory_hotplug", "after_memory_hotplug"]
    # VDSM's shape: the <memory> in a <devices> wrapper; libvirt's live element after.
    for record in (before, after):
        root = element_of(record)
        assert [root.tag, [child.tag for child in root]] == ["devices", ["memory"]]
        assert env_of(record).get("vmId") == uuid
    assert element_of(after).find("memory/alias") is not None
    sandbox.virsh("attach-device", "g2", str(dimm), "--live")
    assert probe.events(1) == ["after_memory_hotplug"]
