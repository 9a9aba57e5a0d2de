"""Device events missed while the listener was away fire once it is back.

The listener keeps each running domain's live XML (in its state dir, across its
restarts); its resync after a gap compares the devices with those now and fires each
missed after_*_hotplug and after_*_hotunplug once, a removed device's with the element it
had. The devices are USB ones, which QEMU plugs and unplugs without a guest OS (see
``test_device_events.py``), each on a port of its own: libvirt 9.0 gives a disk the port
a hotplugged usb-net NIC already has.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from libvirt_bridge_lab.sandbox import Sandbox
from testing.e2e import (
    ListenedProbe,
    Record,
    env_of,
    kill_listener,
    listened,
    resynced,
    wait_until,
)

from .test_device_events import DISK, LISTENED, METADATA, NIC, device_file, make_image, the_element

pytestmark = pytest.mark.libvirt


def on_port(xml: str, port: int) -> str:
    """The device ``xml`` on USB port ``port`` of the guest's controller."""
    cut = xml.rindex("</")
    return xml[:cut] + f"  <address type='usb' bus='0' port='{port}'/>\n" + xml[cut:]


@pytest.fixture
def devices(sandbox: Sandbox, tmp_path: Path) -> tuple[ListenedProbe, str, str]:
    """The listened sandbox, and the files of the NIC and of the disk."""
    probe = listened(sandbox, LISTENED)
    make_image(sandbox)
    nic = device_file(tmp_path, "nic", on_port(NIC, 1))
    return probe, nic, device_file(tmp_path, "disk", on_port(DISK, 2))


def guest(sandbox: Sandbox, name: str) -> str:
    """Guest ``name``, running; its UUID."""
    uuid = sandbox.define_guest(name, metadata=METADATA)
    sandbox.virsh("start", name)
    return uuid


def plug(sandbox: Sandbox, name: str, path: str) -> None:
    sandbox.virsh("attach-device", name, path, "--live")


def unplug(sandbox: Sandbox, name: str, path: str, alias: str) -> None:
    sandbox.virsh("detach-device", name, path, "--live")
    wait_until(
        lambda: f"'{alias}'" not in sandbox.virsh("dumpxml", name).stdout,
        f"{alias} gone from {name}",
    )


def fired(records: list[Record]) -> list[tuple[str, str]]:
    """Each record's event and device alias, sorted."""
    return sorted((str(r["event"]), the_element(r).find("alias").get("name")) for r in records)


def test_a_device_attached_and_another_detached_while_the_listener_was_down_fire_once(
    sandbox: Sandbox, devices: tuple[ListenedProbe, str, str]
) -> None:
    probe, nic, disk = devices
    uuid = guest(sandbox, "g1")
    plug(sandbox, "g1", nic)
    [plugged] = probe.new(1)
    assert plugged["event"] == "after_nic_hotplug"

    sandbox.bridge.stop_listener()
    plug(sandbox, "g1", disk)
    unplug(sandbox, "g1", nic, "ua-nic1")
    assert probe.settled() == [plugged]  # no listener: nothing more came
    sandbox.start_listener()

    records = probe.new(2)
    assert fired(records) == [
        ("after_disk_hotplug", "ua-disk1"),
        ("after_nic_hotunplug", "ua-nic1"),
    ]
    by_event = {str(r["event"]): r for r in records}
    unplugged, added = by_event["after_nic_hotunplug"], by_event["after_disk_hotplug"]
    # The removed NIC's element is the one it had (kept across the restart), as a live
    # unplug gives it; the disk's, the one it has now; each with its own properties.
    assert unplugged["xml"] == plugged["xml"]
    assert the_element(added).find("target").get("dev") == "sdb"
    for record, props in ((unplugged, {"extnet": "br-test"}), (added, {"tier": "fast"})):
        env = env_of(record)
        assert {k: env.get(k) for k in props} == props
        assert (env.get("owner"), env.get("vmId")) == ("ops", uuid)
    log = probe.log()
    assert "(DEVICE_ADDED of 'ua-disk1' found on resync)" in log
    assert "(DEVICE_REMOVED of 'ua-nic1' found on resync)" in log
    # g1 and the sentinel guest.
    assert "resynchronised 2 domain(s) after a gap, 2 missed event(s) fired" in log

    # A listener killed and started again finds nothing more to fire.
    kill_listener(sandbox)
    sandbox.start_listener()
    resynced(probe, "resynchronised 2 domain(s) after a gap, 0 missed event(s) fired")
    assert probe.new(0) == []
    # The disk the resync found is known: its removal fires, with its element.
    unplug(sandbox, "g1", disk, "ua-disk1")
    [removed] = probe.new(1)
    assert removed["event"] == "after_disk_hotunplug"
    assert removed["xml"] == added["xml"]


def test_a_domain_started_again_during_the_gap_fires_nothing_for_its_devices(
    sandbox: Sandbox, devices: tuple[ListenedProbe, str, str]
) -> None:
    probe, nic, disk = devices
    restarted, through = guest(sandbox, "g1"), guest(sandbox, "g2")
    for name in ("g1", "g2"):
        plug(sandbox, name, nic)
    assert probe.events(2) == ["after_nic_hotplug"] * 2

    kill_listener(sandbox)
    # g1 runs again, with another set of devices: they came with its start.
    sandbox.virsh("destroy", "g1")
    sandbox.virsh("start", "g1")
    plug(sandbox, "g1", disk)
    # g2 ran throughout: its NIC's removal was missed.
    unplug(sandbox, "g2", nic, "ua-nic1")
    sandbox.start_listener()

    [record] = probe.new(1)
    assert (record["event"], record["vmId"]) == ("after_nic_hotunplug", through)
    assert "resynchronised 3 domain(s) after a gap, 1 missed event(s) fired" in probe.log()
    # The listener took the devices of g1's new run.
    unplug(sandbox, "g1", disk, "ua-disk1")
    [removed] = probe.new(1)
    assert (removed["event"], removed["vmId"]) == ("after_disk_hotunplug", restarted)


def test_device_changes_while_the_connection_was_lost_fire_once_it_is_back(
    sandbox: Sandbox, devices: tuple[ListenedProbe, str, str]
) -> None:
    probe, nic, disk = devices
    guest(sandbox, "g1")
    # (Not the NIC: libvirt 9.0 cannot load the status of a guest with a hotplugged
    # usb-net NIC when it restarts, and loses the guest.)
    plug(sandbox, "g1", disk)
    [plugged] = probe.new(1)
    listener = sandbox.listener_pid()

    # Held still, the listener cannot reconnect to the restarted daemon before the changes
    # are made: it finds its connection lost once it runs on.
    os.kill(listener, signal.SIGSTOP)
    try:
        sandbox.restart_daemon()
        plug(sandbox, "g1", nic)
        unplug(sandbox, "g1", disk, "ua-disk1")
    finally:
        os.kill(listener, signal.SIGCONT)
    resynced(probe, "resynchronised 2 domain(s) after a gap, 2 missed event(s) fired")

    records = probe.new(2)
    assert fired(records) == [
        ("after_disk_hotunplug", "ua-disk1"),
        ("after_nic_hotplug", "ua-nic1"),
    ]
    assert [r["xml"] for r in records if r["event"] == "after_disk_hotunplug"] == [plugged["xml"]]
    assert sandbox.listener_pid() == listener  # the same process reconnected
    assert "listener: lost " in probe.log()
