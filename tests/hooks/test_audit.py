"""audit: one JSON line per event, from the script's directory, safe under concurrent events."""

from __future__ import annotations

import datetime
import json
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from libvirt_bridge import catalogue, mapping
from testing.harness import Bridge
from testing.hooks import HOOKS_D, guest_xml, install_wrapped, run_hook, shipped, uuid_of


def records(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_installed_for_every_event() -> None:
    hook = catalogue.available(str(HOOKS_D))["audit"]
    assert set(hook.events) == set(mapping.EVENTS)
    assert {Path(p).name for p in hook.files.values()} == {"01_audit"}


def test_a_record(tmp_path: Path) -> None:
    log = tmp_path / "audit" / "audit.jsonl"
    xml = guest_xml("g1", properties={"pincpu": "1-2", "label": "ünï"})
    before = datetime.datetime.now(datetime.UTC)
    ran = run_hook(
        shipped("after_vm_start", "audit"), xml, tmp_path, {"LIBVIRT_BRIDGE_AUDIT_LOG": str(log)}
    )
    assert (ran.rc, ran.stderr, ran.xml) == (0, "", xml)
    [record] = records(log)
    assert list(record) == ["time", "event", "domain", "uuid", "properties"]
    assert record["event"] == "after_vm_start"
    assert (record["domain"], record["uuid"]) == ("g1", uuid_of(xml))
    assert record["properties"] == {"pincpu": "1-2", "label": "ünï"}
    when = datetime.datetime.fromisoformat(str(record["time"]))
    assert before <= when <= datetime.datetime.now(datetime.UTC)
    assert "ünï" in log.read_text(encoding="utf-8")


def test_daemon_events_have_no_domain(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    ran = run_hook(
        shipped("before_vdsm_start", "audit"), b"", tmp_path, {"LIBVIRT_BRIDGE_AUDIT_LOG": str(log)}
    )
    assert ran.rc == 0, ran.stderr
    [record] = records(log)
    assert (record["event"], record["domain"], record["uuid"], record["properties"]) == (
        "before_vdsm_start",
        None,
        None,
        {},
    )


@pytest.mark.parametrize(
    ("event", "xml", "device"),
    [
        (
            "after_nic_hotplug",
            b"<interface type='user'><mac address='52:54:00:00:00:01'/>"
            b"<alias name='ua-nic1'/></interface>",
            {"type": "interface", "alias": "ua-nic1", "mac": "52:54:00:00:00:01"},
        ),
        (
            "after_memory_hotplug",
            b"<devices><memory model='dimm'><alias name='dimm0'/></memory></devices>",
            {"type": "memory", "alias": "dimm0"},
        ),
        (
            "after_disk_hotunplug",
            b"<disk type='file'><target dev='sdb' bus='usb'/></disk>",
            {"type": "disk", "target": "sdb"},
        ),
    ],
)
def test_device_events_name_the_device(
    tmp_path: Path, event: str, xml: bytes, device: dict[str, str]
) -> None:
    log = tmp_path / "audit.jsonl"
    env = {"LIBVIRT_BRIDGE_AUDIT_LOG": str(log), "vmId": "0f0e0d0c-0000-0000-0000-000000000001"}
    ran = run_hook(shipped(event, "audit"), xml, tmp_path, env)
    assert ran.rc == 0, ran.stderr
    [record] = records(log)
    assert record["event"] == event
    assert (record["domain"], record["uuid"]) == (None, env["vmId"])
    assert record["device"] == device


def test_concurrent_events_write_whole_lines(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    big = "x" * 20000  # a line longer than any pipe buffer
    guests = [guest_xml(f"g{i}", properties={"blob": big}) for i in range(24)]
    script = shipped("after_vm_destroy", "audit")
    env = {"LIBVIRT_BRIDGE_AUDIT_LOG": str(log)}
    with ThreadPoolExecutor(12) as executor:
        runs = list(executor.map(lambda xml: run_hook(script, xml, tmp_path, env), guests))
    assert [r.rc for r in runs] == [0] * 24
    got = records(log)
    assert sorted(str(r["domain"]) for r in got) == sorted(f"g{i}" for i in range(24))
    assert all(r["properties"] == {"blob": big} for r in got)


@pytest.mark.parametrize(
    ("event", "rc"),
    [("before_vm_start", 0), ("before_vm_migrate_destination", 0), ("after_vm_start", 1)],
)
def test_a_log_it_cannot_write_never_refuses_an_operation(
    tmp_path: Path, event: str, rc: int
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    path = blocker / "audit.jsonl"  # under a regular file: cannot be created
    ran = run_hook(
        shipped(event, "audit"), guest_xml(), tmp_path, {"LIBVIRT_BRIDGE_AUDIT_LOG": str(path)}
    )
    assert ran.rc == rc
    assert ran.stderr.startswith(f"audit: cannot write {event} to {path}: ")


def test_every_event_that_can_veto_is_one_it_never_refuses() -> None:
    # The script cannot import the bridge: its list is checked against the table here.
    text = shipped("before_vm_start", "audit").read_text()
    listed = text[text.index("CAN_REFUSE = (") : text.index(")", text.index("CAN_REFUSE = ("))]
    names = set(re.findall(r'"([a-z_]+)"', listed))
    vetoing = {row.event for row in mapping.HOOK_TABLE if row.veto}
    vetoing |= {mapping.DEVICE_COMPANIONS[e] for e in vetoing if e in mapping.DEVICE_COMPANIONS}
    assert names == vetoing


def test_start_and_destroy_through_the_bridge(bridge: Bridge, tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    install_wrapped(bridge, "audit", {"LIBVIRT_BRIDGE_AUDIT_LOG": str(log)})
    xml = guest_xml("vm1", properties={"owner": "ops"})
    bridge.daemon("start", "start")
    for op, subop, extra in [
        ("prepare", "begin", "-"),
        ("started", "begin", "-"),
        ("stopped", "end", "-"),
        ("release", "end", "destroyed"),
    ]:
        assert bridge.qemu("vm1", op, subop, xml, extra=extra).returncode == 0
        bridge.wait_async()  # an async event may otherwise come after the next sync one
    got = records(log)
    assert [r["event"] for r in got] == [
        "before_vdsm_start",
        "before_vm_start",
        "after_vm_start",
        "before_vm_destroy",
        "after_vm_destroy",
    ]
    for record in got[1:]:
        assert (record["domain"], record["uuid"]) == ("vm1", uuid_of(xml))
        assert record["properties"] == {"owner": "ops"}
