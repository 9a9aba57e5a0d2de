"""cantmigrate: VDSM's truth table, the veto on both sides, and the refusal through the bridge."""

from __future__ import annotations

from pathlib import Path

import pytest

from testing.harness import Bridge
from testing.hooks import guest_xml, run_hook, shipped

EVENTS = ("before_vm_migrate_source", "before_vm_migrate_destination")
TRUE = ["true", "True", "TRUE", "1", "2", "-1", " 1"]
FALSE = ["0", "", "false", "False", "yes", "on", "no", "1.5"]


@pytest.mark.parametrize("event", EVENTS)
@pytest.mark.parametrize("value", TRUE)
def test_true_values_refuse_the_migration(tmp_path: Path, event: str, value: str) -> None:
    ran = run_hook(
        shipped(event, "cantmigrate"), guest_xml("db1"), tmp_path, {"cantmigrate": value}
    )
    assert ran.rc == 1
    where = "to this host" if event.endswith("destination") else "away from this host"
    assert ran.stderr == (
        f"cantmigrate: guest 'db1' must not be migrated (custom property cantmigrate={value}); "
        f"migration {where} refused\n"
    )


@pytest.mark.parametrize("event", EVENTS)
@pytest.mark.parametrize("value", [*FALSE, None])
def test_other_values_let_it_go(tmp_path: Path, event: str, value: str | None) -> None:
    props = {} if value is None else {"cantmigrate": value}
    xml = guest_xml("db1")
    ran = run_hook(shipped(event, "cantmigrate"), xml, tmp_path, props)
    assert (ran.rc, ran.stderr, ran.xml) == (0, "", xml)


def test_both_events_run_the_same_script() -> None:
    source, destination = (shipped(event, "cantmigrate") for event in EVENTS)
    assert source.read_bytes() == destination.read_bytes()
    assert source.name == destination.name == "10_cantmigrate"


def test_incoming_migration_refused_through_the_bridge(bridge: Bridge) -> None:
    script = shipped("before_vm_migrate_destination", "cantmigrate")
    bridge.script("before_vm_migrate_destination", script.name, script.read_text())
    xml = guest_xml("db1", properties={"cantmigrate": "true"})
    result = bridge.qemu("db1", "migrate", "begin", xml)
    assert result.returncode == 1
    stderr = result.stderr.decode()
    assert "10_cantmigrate" in stderr
    assert "guest 'db1' must not be migrated (custom property cantmigrate=true)" in stderr
    # Another guest migrates in.
    other = guest_xml("web1", properties={"cantmigrate": "false"})
    assert bridge.qemu("web1", "migrate", "begin", other).returncode == 0
