"""The listener on real libvirt: pause, continue and the end of an incoming migration."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from libvirt_bridge.sandbox import Sandbox

pytestmark = pytest.mark.libvirt

LISTENED = ("after_vm_pause", "after_vm_cont", "after_vm_migrate_destination")
ALL = (
    "before_vm_start",
    "after_vm_start",
    "after_vm_hibernate",
    "before_vm_dehibernate",
    "after_vm_dehibernate",
    *LISTENED,
)

PROBE = """#!{python}
import json, os, sys
from xml.dom import minidom
event = os.path.basename(os.path.dirname(os.path.abspath(sys.argv[0])))
doc = minidom.parse(os.environ["_hook_domxml"])
name = doc.getElementsByTagName("name")[0].firstChild.data
with open({records!r}, "a") as f:
    f.write(json.dumps({{"event": event, "name": name, "vmId": os.environ.get("vmId")}}) + "\\n")
"""


def listening(make: Callable[[str], Sandbox], name: str) -> tuple[Sandbox, Path]:
    sandbox = make(name)
    sandbox.install_bridge()
    records = Path(sandbox.bridge_dir) / "records.jsonl"
    for event in ALL:
        sandbox.add_hook_script(
            event, "50_probe", PROBE.format(python=sys.executable, records=str(records))
        )
    sandbox.start_listener()
    return sandbox, records


def read(records: Path) -> list[dict[str, str]]:
    if not records.exists():
        return []
    return [json.loads(line) for line in records.read_text().splitlines()]


def wait_for(
    records: Path, count: int, settle: float = 1.5, timeout: float = 30
) -> list[dict[str, str]]:
    deadline = time.monotonic() + timeout
    while len(read(records)) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(settle)  # and nothing more comes
    return read(records)


def two_hosts(make: Callable[[str], Sandbox]) -> tuple[Sandbox, Path, Sandbox, Path]:
    """Two listening sandboxes; guest g1 runs on the first."""
    source, source_records = listening(make, "lbsb1")
    destination, destination_records = listening(make, "lbsb2")
    source.define_guest("g1")
    source.virsh("start", "g1")
    wait_for(source_records, 2)
    return source, source_records, destination, destination_records


def listened(records: list[dict[str, str]]) -> list[str]:
    return [r["event"] for r in records if r["event"] in LISTENED]


def test_suspend_and_resume_fire_once_each(make_sandbox: Callable[[str], Sandbox]) -> None:
    sandbox, records = listening(make_sandbox, "lbsb1")
    uuid = sandbox.define_guest("g1")
    sandbox.virsh("start", "g1")
    wait_for(records, 2)
    sandbox.virsh("suspend", "g1")
    sandbox.virsh("resume", "g1")
    got = wait_for(records, 4)
    assert [r["event"] for r in got] == [
        "before_vm_start",
        "after_vm_start",
        "after_vm_pause",
        "after_vm_cont",
    ]
    assert all(r["vmId"] == uuid and r["name"] == "g1" for r in got)


def test_save_start_restore_fire_no_pause_or_continue(
    make_sandbox: Callable[[str], Sandbox], tmp_path: Path
) -> None:
    sandbox, records = listening(make_sandbox, "lbsb1")
    sandbox.define_guest("g1")
    sandbox.virsh("start", "g1")
    image = str(tmp_path / "g1.save")
    sandbox.virsh("save", "g1", image)
    sandbox.virsh("restore", image)
    sandbox.virsh("managedsave", "g1")
    sandbox.virsh("start", "g1")
    got = wait_for(records, 8)
    assert [r["event"] for r in got] == [
        "before_vm_start",
        "after_vm_start",
        "after_vm_hibernate",
        "before_vm_dehibernate",
        "after_vm_dehibernate",
        "after_vm_hibernate",
        "before_vm_dehibernate",
        "after_vm_dehibernate",
    ]


def test_incoming_migration_fires_on_the_destination_only(
    make_sandbox: Callable[[str], Sandbox],
) -> None:
    source, source_records, destination, destination_records = two_hosts(make_sandbox)
    result = source.migrate("g1", destination)
    assert result.returncode == 0, result.stderr
    assert listened(wait_for(destination_records, 1)) == ["after_vm_migrate_destination"]
    assert listened(read(source_records)) == []
    back = destination.migrate("g1", source)
    assert back.returncode == 0, back.stderr
    assert listened(wait_for(source_records, 3)) == ["after_vm_migrate_destination"]
    assert listened(read(destination_records)) == ["after_vm_migrate_destination"]


def test_a_migration_that_came_in_while_the_listener_was_down_fires_once_it_is_back(
    make_sandbox: Callable[[str], Sandbox],
) -> None:
    source, _, destination, destination_records = two_hosts(make_sandbox)
    os.kill(destination.listener_pid(), signal.SIGKILL)
    result = source.migrate("g1", destination)
    assert result.returncode == 0, result.stderr
    assert listened(wait_for(destination_records, 0)) == []
    destination.start_listener()
    assert listened(wait_for(destination_records, 1)) == ["after_vm_migrate_destination"]
    log = Path(destination.log_file).read_text()
    assert "resynchronised 1 domain(s) after a gap, 1 missed event(s) fired" in log
    # A later restart has nothing new to fire.
    os.kill(destination.listener_pid(), signal.SIGKILL)
    destination.start_listener()
    assert listened(wait_for(destination_records, 2, timeout=3)) == ["after_vm_migrate_destination"]


def test_listener_survives_a_killed_libvirtd(make_sandbox: Callable[[str], Sandbox]) -> None:
    sandbox, records = listening(make_sandbox, "lbsb1")
    sandbox.define_guest("g1")
    sandbox.virsh("start", "g1")
    wait_for(records, 2)
    listener = sandbox.listener_pid()
    pid = sandbox.libvirtd_pid()
    import os

    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while sandbox.running() and time.monotonic() < deadline:
        time.sleep(0.05)
    sandbox.start_daemon()
    sandbox.virsh("suspend", "g1")
    assert listened(wait_for(records, 3, settle=2.0)) == ["after_vm_pause"]
    assert sandbox.listener_pid() == listener  # the same process reconnected


def test_twenty_guests_paused_and_resumed_at_once(make_sandbox: Callable[[str], Sandbox]) -> None:
    sandbox, records = listening(make_sandbox, "lbsb1")
    names = [f"g{i:02d}" for i in range(20)]
    for name in names:
        sandbox.define_guest(name)
        sandbox.virsh("start", name)
    wait_for(records, 40, settle=0.5, timeout=60)
    with ThreadPoolExecutor(max_workers=20) as pool:
        list(pool.map(lambda n: sandbox.virsh("suspend", n), names))
        list(pool.map(lambda n: sandbox.virsh("resume", n), names))
    got = wait_for(records, 80, settle=2.0, timeout=90)
    for name in names:
        assert listened([r for r in got if r["name"] == name]) == [
            "after_vm_pause",
            "after_vm_cont",
        ]
