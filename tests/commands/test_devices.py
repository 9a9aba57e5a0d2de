"""attach-device, detach-device, update-device: what they refuse before asking libvirt.

What they do on a real daemon: tests/e2e/test_device_verbs.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from libvirt_bridge import mapping
from testing.hosts import run


@pytest.fixture(autouse=True)
def no_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Nothing here may reach libvirt: the URI goes nowhere.
    monkeypatch.setenv("LIBVIRT_BRIDGE_CONFIG", str(tmp_path / "absent.toml"))


def test_detach_takes_a_file_or_a_device_not_both_nor_neither(tmp_path: Path) -> None:
    nic = tmp_path / "nic.xml"
    nic.write_text("<interface type='user'><mac address='52:54:00:00:00:01'/></interface>")
    for args in ([], [str(nic), "--device", "vda"]):
        status, _, err = run("detach-device", "vm1", *args)
        assert status == 2
        assert "detach-device takes the device's FILE or --device ID, one of them" in err


def test_a_negative_wait_is_refused() -> None:
    status, _, err = run("detach-device", "vm1", "--device", "vda", "--wait", "-1")
    assert (status, err.splitlines()[-1]) == (
        2,
        "libvirt-bridge detach-device: error: --wait -1: a wait cannot be negative",
    )


def test_an_unreadable_device_file_is_refused(tmp_path: Path) -> None:
    missing = tmp_path / "missing.xml"
    status, _, err = run("attach-device", "vm1", str(missing))
    assert status == 2
    assert f"cannot read {missing}: No such file or directory" in err


def test_a_bad_prop_is_refused(tmp_path: Path) -> None:
    nic = tmp_path / "nic.xml"
    nic.write_text("<interface type='user'/>")
    status, _, err = run("attach-device", "vm1", str(nic), "--prop", "novalue")
    assert status != 0
    assert "expected NAME=VALUE, got 'novalue'" in err


def test_every_device_verb_row_is_a_device_event_and_the_before_ones_veto() -> None:
    rows = [r for r in mapping.HOOK_TABLE if r.driver == "verb" and r.subop != "-"]
    assert {r.op for r in rows} == {"attach-device", "detach-device", "update-device"}
    for row in rows:
        assert row.event in mapping.DEVICE_EVENTS
        assert (row.context == mapping.BEFORE) == (row.mode == mapping.SYNC) == row.veto
    # VDSM applies what the scripts of a hotplug or an update leave, not of an unplug.
    writable = {r.event for r in rows if r.xml == mapping.XML_DEVICE_WRITABLE}
    assert writable == {
        "before_nic_hotplug",
        "before_disk_hotplug",
        "before_memory_hotplug",
        "before_update_device",
    }
