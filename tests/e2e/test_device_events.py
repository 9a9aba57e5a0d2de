"""VDSM's device events under plain ``virsh attach-device`` and ``detach-device``.

The listener fires them from libvirt's DEVICE_ADDED and DEVICE_REMOVED events. The
guests have no operating system, and a PCI device is only unplugged when the guest
agrees, so the devices here are USB ones, which QEMU adds and removes on its own: a disk
on the USB bus (``bus='usb'``) and a NIC of model ``usb-net`` with user-mode networking
(``type='user'``: no bridge or tap on the host). Both use the USB controller libvirt gives
every ``pc`` guest.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from lxml import etree

from libvirt_bridge_lab.sandbox import Sandbox
from testing.e2e import ListenedProbe, Record, element_of, env_of, listened
from testing.harness import ovirt_vm

pytestmark = pytest.mark.libvirt

MAC = "52:54:00:aa:00:01"
# The image as the daemons see it: the sandbox's /var/lib/libvirt, which QEMU (its own
# user) can reach, unlike a test's tmp_path.
IMAGE = "/var/lib/libvirt/images/extra.img"
DISK = f"""<disk type='file' device='disk'>
  <driver name='qemu' type='raw'/>
  <source file='{IMAGE}'/>
  <target dev='sdb' bus='usb'/>
  <alias name='ua-disk1'/>
</disk>
"""
NIC = f"""<interface type='user'>
  <mac address='{MAC}'/>
  <model type='usb-net'/>
  <alias name='ua-nic1'/>
</interface>
"""
# The VM's property, and each device's, oVirt's way (the NIC's MAC in upper case).
METADATA = ovirt_vm(
    {"owner": "ops"}, nics={MAC.upper(): {"extnet": "br-test"}}, disks={"sdb": {"tier": "fast"}}
)
DEVICE_EVENTS = (
    "after_disk_hotplug",
    "after_disk_hotunplug",
    "after_nic_hotplug",
    "after_nic_hotunplug",
)
LISTENED = (*DEVICE_EVENTS, *ListenedProbe.SENTINEL_EVENTS)


def device_file(directory: Path, name: str, xml: str) -> str:
    """The path of a new file ``name``.xml holding ``xml``, for virsh."""
    path = directory / f"{name}.xml"
    path.write_text(xml)
    return str(path)


def the_element(record: Record) -> etree._Element:
    """The element the script got: exactly one device, not a domain."""
    root = element_of(record)
    assert root.tag in ("disk", "interface"), record["xml"]
    return root


def make_image(sandbox: Sandbox) -> None:
    images = Path(sandbox.lib_dir) / "images"
    images.mkdir(exist_ok=True)
    with open(images / os.path.basename(IMAGE), "wb") as f:
        f.truncate(1 << 20)


@pytest.fixture
def guest(sandbox: Sandbox) -> tuple[ListenedProbe, str]:
    probe = listened(sandbox, LISTENED)
    make_image(sandbox)
    uuid = sandbox.define_guest("g1", metadata=METADATA)
    sandbox.virsh("start", "g1")
    return probe, uuid


@pytest.mark.parametrize(
    ("xml", "added", "removed", "properties"),
    [
        (DISK, "after_disk_hotplug", "after_disk_hotunplug", {"tier": "fast"}),
        (NIC, "after_nic_hotplug", "after_nic_hotunplug", {"extnet": "br-test"}),
    ],
    ids=["disk", "nic"],
)
def test_attach_and_detach_fire_once_each_with_the_element_and_its_properties(
    sandbox: Sandbox,
    guest: tuple[ListenedProbe, str],
    tmp_path: Path,
    xml: str,
    added: str,
    removed: str,
    properties: dict[str, str],
) -> None:
    probe, uuid = guest
    path = device_file(tmp_path, "device", xml)
    wanted = etree.fromstring(xml.encode())

    sandbox.virsh("attach-device", "g1", path, "--live")
    [plugged] = probe.new(1)
    sandbox.virsh("detach-device", "g1", path, "--live")
    [unplugged] = probe.new(1)

    assert [plugged["event"], unplugged["event"]] == [added, removed]
    for record in (plugged, unplugged):
        element = the_element(record)
        assert element.tag == wanted.tag
        assert element.find("alias").get("name") == wanted.find("alias").get("name")
        env = env_of(record)
        # The device's properties, the VM's, and vmId, as VDSM gives them.
        assert {k: env.get(k) for k in properties} == properties
        assert (env.get("owner"), env.get("vmId"), record["vmId"]) == ("ops", uuid, uuid)
    # The removed device's element is the one it had while it was there (libvirt's live
    # XML), kept by the listener: libvirt's event names the alias only.
    assert plugged["xml"] == unplugged["xml"]
    assert probe.caught_up() == [plugged, unplugged]


def test_a_device_attached_to_the_persistent_definition_only_fires_nothing(
    sandbox: Sandbox, guest: tuple[ListenedProbe, str], tmp_path: Path
) -> None:
    probe, _ = guest
    path = device_file(tmp_path, "disk", DISK)
    sandbox.virsh("attach-device", "g1", path, "--config")
    sandbox.virsh("detach-device", "g1", path, "--config")
    assert probe.caught_up() == []


def test_a_device_of_a_guest_started_before_the_listener_is_known_at_removal(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """A disk the guest booted with, seen by the listener's first look (its resync).

    (In the persistent definition, libvirt 9.0 wants a PCI slot for a usb-net NIC too.)
    """
    make_image(sandbox)
    sandbox.install_bridge()
    uuid = sandbox.define_guest("g1", metadata=METADATA)
    path = device_file(tmp_path, "disk", DISK)
    sandbox.virsh("attach-device", "g1", path, "--config")
    sandbox.virsh("start", "g1")
    sandbox.start_listener()
    probe = ListenedProbe(sandbox, LISTENED)
    sandbox.virsh("detach-device", "g1", path, "--live")
    [record] = probe.new(1)
    assert record["event"] == "after_disk_hotunplug"
    env = env_of(record)
    assert (env.get("tier"), env.get("vmId")) == ("fast", uuid)
    assert the_element(record).find("target").get("dev") == "sdb"
