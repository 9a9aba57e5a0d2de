"""vfio: binding unmanaged PCI host devices to vfio-pci and back, on a fake sysfs.

There is no passthrough hardware here: :class:`FakePci` is a directory tree shaped like
``/sys/bus/pci`` whose ``bind``/``unbind``/``drivers_probe`` files are FIFOs served by a
thread that applies the kernel's binding rules.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from testing.harness import Bridge
from testing.hooks import (
    FakePci,
    Ran,
    install_wrapped,
    pci_hostdev,
    run_hook,
    shipped,
    uuid_of,
    vfio_xml,
)

NIC, DISK, GPU = "0000:0b:00.0", "0000:0c:00.0", "0000:41:00.1"
START, DESTROY = "before_vm_start", "after_vm_destroy"


@pytest.fixture
def pci(tmp_path: Path) -> Iterator[FakePci]:
    with FakePci(tmp_path / "host") as fake:
        fake.add_device(NIC, "e1000e", group=12)
        fake.add_device(DISK, "nvme", group=13)
        fake.add_device(GPU, None, group=40, bound=False)
        yield fake


def run(pci: FakePci, event: str, xml: bytes, tmp_path: Path, wait: float = 2.0) -> Ran:
    return run_hook(shipped(event, "vfio"), xml, tmp_path, env=pci.env(wait))


def test_start_binds_to_vfio_and_destroy_gives_back(pci: FakePci, tmp_path: Path) -> None:
    xml = vfio_xml("g1", pci_hostdev(NIC) + pci_hostdev(GPU))
    ran = run(pci, START, xml, tmp_path)
    assert ran.rc == 0, ran.stderr
    assert ran.xml == xml
    assert (pci.driver(NIC), pci.override(NIC)) == ("vfio-pci", "vfio-pci")
    assert (pci.driver(GPU), pci.override(GPU)) == ("vfio-pci", "vfio-pci")
    assert f"vfio: {NIC}: e1000e -> vfio-pci for 'g1'" in ran.stderr
    assert f"vfio: {GPU}: no driver -> vfio-pci for 'g1'" in ran.stderr
    records = pci.records()
    assert {a: (r["driver"], r["uuid"]) for a, r in records.items()} == {
        NIC: ("e1000e", uuid_of(xml)),
        GPU: (None, uuid_of(xml)),
    }
    assert pci.driver(DISK) == "nvme"  # not the guest's

    ran = run(pci, DESTROY, xml, tmp_path)
    assert ran.rc == 0, ran.stderr
    assert (pci.driver(NIC), pci.override(NIC)) == ("e1000e", "")
    assert (pci.driver(GPU), pci.override(GPU)) == (None, "")
    assert f"vfio: {NIC}: vfio-pci -> e1000e (from 'g1')" in ran.stderr
    assert pci.records() == {}
    # The kernel's interface, in order: override, unbind, probe; then unbind and bind.
    assert [w for w in pci.writes if w[1] == NIC] == [
        ("unbind e1000e", NIC),
        ("probe", NIC),
        ("unbind vfio-pci", NIC),
        ("bind e1000e", NIC),
    ]


@pytest.mark.parametrize("event", ["after_vm_hibernate", "after_vm_migrate_source"])
def test_other_stops_give_back_too(pci: FakePci, tmp_path: Path, event: str) -> None:
    xml = vfio_xml("g1", pci_hostdev(NIC))
    run(pci, START, xml, tmp_path)
    assert run(pci, event, xml, tmp_path).rc == 0
    assert pci.driver(NIC) == "e1000e"


@pytest.mark.parametrize(("managed", "bound"), [("yes", False), (None, True), ("no", True)])
def test_only_unmanaged_devices(
    pci: FakePci, tmp_path: Path, managed: str | None, bound: bool
) -> None:
    # libvirt binds managed='yes' devices itself; without the attribute it is managed='no'.
    ran = run(pci, START, vfio_xml("g1", pci_hostdev(NIC, managed)), tmp_path)
    assert ran.rc == 0
    assert (pci.driver(NIC) == "vfio-pci") == bound


def test_a_device_already_on_vfio_is_left_to_whoever_bound_it(pci: FakePci, tmp_path: Path) -> None:
    pci.add_device("0000:42:00.0", "vfio-pci", group=41)  # bound by the administrator
    xml = vfio_xml("g1", pci_hostdev("0000:42:00.0"))
    ran = run(pci, START, xml, tmp_path)
    assert ran.rc == 0
    assert "0000:42:00.0 is on vfio-pci already; left as it is" in ran.stderr
    assert pci.records() == {}
    assert run(pci, DESTROY, xml, tmp_path).rc == 0
    assert pci.driver("0000:42:00.0") == "vfio-pci"


def test_a_missing_device_fails_the_start_and_undoes_the_others(
    pci: FakePci, tmp_path: Path
) -> None:
    xml = vfio_xml("g1", pci_hostdev(NIC) + pci_hostdev("0000:99:00.0"))
    ran = run(pci, START, xml, tmp_path)
    assert ran.rc == 2
    assert ran.stderr.endswith("vfio: cannot start 'g1': the host has no PCI device 0000:99:00.0\n")
    assert (pci.driver(NIC), pci.override(NIC)) == ("e1000e", "")
    assert pci.records() == {}


def test_no_iommu_group_fails_the_start(pci: FakePci, tmp_path: Path) -> None:
    pci.add_device("0000:43:00.0", "nvme", group=None)
    ran = run(pci, START, vfio_xml("g1", pci_hostdev("0000:43:00.0")), tmp_path)
    assert ran.rc == 2
    assert ran.stderr == (
        "vfio: cannot start 'g1': 0000:43:00.0 is in no IOMMU group: enable the IOMMU "
        "(intel_iommu=on or amd_iommu=on on the kernel command line)\n"
    )
    assert pci.driver("0000:43:00.0") == "nvme"


def test_vfio_driver_not_loaded_fails_the_start(tmp_path: Path) -> None:
    with FakePci(tmp_path / "host", drivers=("e1000e",)) as pci:
        pci.add_device(NIC, "e1000e")
        ran = run(pci, START, vfio_xml("g1", pci_hostdev(NIC)), tmp_path)
        assert ran.rc == 2
        assert ran.stderr == "vfio: cannot start 'g1': the vfio-pci driver is not loaded\n"
        assert pci.driver(NIC) == "e1000e"


def test_a_device_vfio_will_not_take_goes_back_to_its_driver(pci: FakePci, tmp_path: Path) -> None:
    pci.refuse.add("vfio-pci")
    xml = vfio_xml("g1", pci_hostdev(DISK) + pci_hostdev(NIC))
    ran = run(pci, START, xml, tmp_path, wait=0.3)
    assert ran.rc == 2
    assert ran.stderr.endswith(
        f"vfio: cannot start 'g1': {DISK} did not bind to vfio-pci (its driver is now none)\n"
    )
    assert (pci.driver(DISK), pci.override(DISK)) == ("nvme", "")
    assert pci.driver(NIC) == "e1000e"  # never touched
    assert pci.records() == {}


def test_a_device_still_open_is_not_taken_from_its_user(pci: FakePci, tmp_path: Path) -> None:
    xml = vfio_xml("g1", pci_hostdev(NIC))
    run(pci, START, xml, tmp_path)
    pci.open_by(4242, "/dev/vfio/12")  # e.g. the QEMU of the guest's next start
    ran = run(pci, DESTROY, xml, tmp_path)
    assert ran.rc == 1
    assert f"vfio: {NIC} is still open by pid 4242; left on vfio-pci" in ran.stderr
    assert pci.driver(NIC) == "vfio-pci"
    assert list(pci.records()) == [NIC]
    pci.close_by(4242)
    assert run(pci, DESTROY, xml, tmp_path).rc == 0
    assert pci.driver(NIC) == "e1000e"


def test_restart_keeps_the_recorded_driver(pci: FakePci, tmp_path: Path) -> None:
    # A new start before the last run's (async) after_vm_destroy: the device is still on
    # vfio-pci for this guest; the original driver stays on record.
    xml = vfio_xml("g1", pci_hostdev(NIC))
    run(pci, START, xml, tmp_path)
    ran = run(pci, START, xml, tmp_path)
    assert ran.rc == 0
    assert f"{NIC} is still on vfio-pci for 'g1'" in ran.stderr
    assert pci.records()[NIC]["driver"] == "e1000e"
    run(pci, DESTROY, xml, tmp_path)
    assert pci.driver(NIC) == "e1000e"


def test_another_guest_never_gives_back_a_device(pci: FakePci, tmp_path: Path) -> None:
    g1 = vfio_xml("g1", pci_hostdev(NIC))
    run(pci, START, g1, tmp_path)
    assert run(pci, DESTROY, vfio_xml("g2", pci_hostdev(NIC)), tmp_path).rc == 0
    assert pci.driver(NIC) == "vfio-pci"


def test_through_the_bridge(bridge: Bridge, pci: FakePci) -> None:
    install_wrapped(bridge, "vfio", pci.env())
    xml = vfio_xml("vm1", pci_hostdev(NIC))
    assert bridge.qemu("vm1", "prepare", "begin", xml).returncode == 0
    assert pci.driver(NIC) == "vfio-pci"
    bridge.qemu("vm1", "stopped", "end", xml)
    bridge.qemu("vm1", "release", "end", xml, extra="destroyed")
    bridge.wait_async()
    assert pci.driver(NIC) == "e1000e"
    missing = vfio_xml("vm2", pci_hostdev("0000:99:00.0"))
    result = bridge.qemu("vm2", "prepare", "begin", missing)
    assert result.returncode == 1
    assert b"80_vfio" in result.stderr
    assert b"the host has no PCI device 0000:99:00.0" in result.stderr
