"""``libvirt-bridge drain KEY``: the hidden command that runs one async queue."""

from __future__ import annotations

import subprocess
import sys

from bridge_harness import LIBVIRT_ENV, Bridge, domain_xml, uuid_of

from libvirt_bridge.asyncq import Job, enqueue


def queue_pause(bridge: Bridge) -> str:
    xml = domain_xml("vm1", properties={"pincpu": "1-4"})
    uuid = uuid_of(xml)
    enqueue(str(bridge.state), uuid, Job("after_vm_pause", "vm1", uuid, xml))
    return uuid


def drain(bridge: Bridge, key: str) -> subprocess.CompletedProcess[bytes]:
    env = dict(LIBVIRT_ENV, LIBVIRT_BRIDGE_CONFIG=str(bridge.config))
    argv = [sys.executable, "-m", "libvirt_bridge", "drain", key]
    return subprocess.run(argv, env=env, cwd="/", capture_output=True, timeout=60)


def test_drain_runs_the_queued_events_of_one_domain(bridge: Bridge) -> None:
    bridge.probe("after_vm_pause")
    uuid = queue_pause(bridge)
    result = drain(bridge, uuid)
    assert (result.returncode, result.stderr) == (0, b"")
    [record] = bridge.read_records()
    assert record["event"] == "after_vm_pause"
    env = record["env"]
    assert isinstance(env, dict)
    assert (env["vmId"], env["pincpu"]) == (uuid, "1-4")
    assert not list((bridge.state / "queue" / uuid).iterdir())


def test_drain_without_a_queue_directory_runs_nothing(bridge: Bridge) -> None:
    bridge.probe("after_vm_pause")
    uuid = uuid_of(domain_xml())
    assert not bridge.state.exists()
    result = drain(bridge, uuid)
    assert (result.returncode, result.stderr) == (0, b"")
    bridge.state.mkdir()
    result = drain(bridge, "daemon")
    assert (result.returncode, result.stderr) == (0, b"")
    assert bridge.read_records() == []
    assert bridge.log_text() == ""
    assert list(bridge.state.iterdir()) == []


def test_drain_refuses_a_key_that_names_no_queue(bridge: Bridge) -> None:
    result = drain(bridge, "../etc")
    assert result.returncode == 2
    assert b"'../etc' is neither a domain UUID nor 'daemon'" in result.stderr


def test_drain_reports_a_broken_config(bridge: Bridge) -> None:
    bridge.config.write_text("state_dir = 3\n")
    result = drain(bridge, "daemon")
    assert result.returncode == 1
    assert b"state_dir must be a non-empty string" in result.stderr
