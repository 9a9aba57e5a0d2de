"""The listener on real libvirt: pause, continue and the end of an incoming migration."""

from __future__ import annotations

import json
import os
import signal
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from libvirt_bridge_lab.sandbox import Sandbox
from testing.e2e import (
    STARTED,
    ListenedProbe,
    Record,
    bridge_cli,
    events_of,
    kill_listener,
    listened,
    wait_until,
)

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


def two_hosts(
    make: Callable[[str], Sandbox],
) -> tuple[Sandbox, ListenedProbe, Sandbox, ListenedProbe]:
    """Two listening sandboxes; guest g1 runs on the first."""
    source, destination = make("lbsb1"), make("lbsb2")
    source_probe, destination_probe = listened(source, ALL), listened(destination, ALL)
    source.define_guest("g1")
    source.virsh("start", "g1")
    source_probe.new(2)
    return source, source_probe, destination, destination_probe


def listener_fired(records: list[Record]) -> list[str]:
    """The events in ``records`` that only the listener fires."""
    return [event for event in events_of(records) if event in LISTENED]


def test_suspend_and_resume_fire_once_each(sandbox: Sandbox) -> None:
    probe = listened(sandbox, ALL)
    uuid = sandbox.define_guest("g1")
    sandbox.virsh("start", "g1")
    sandbox.virsh("suspend", "g1")
    sandbox.virsh("resume", "g1")
    got = probe.at_least(4)
    assert events_of(got) == [*STARTED, "after_vm_pause", "after_vm_cont"]
    assert all(r["vmId"] == uuid and r["name"] == "g1" for r in got)
    # Each run on record, with what fired it.
    history = bridge_cli(sandbox, "history", "g1", "--json")
    sources = [json.loads(line)["source"] for line in history.stdout.splitlines()]
    assert sources == [
        "qemu prepare begin (fresh)",
        "qemu started begin (fresh)",
        "listener: SUSPENDED/PAUSED, state paused/user",
        "listener: RESUMED/UNPAUSED, state running/unpaused",
    ]


def test_save_start_restore_fire_no_pause_or_continue(sandbox: Sandbox, tmp_path: Path) -> None:
    # libvirt pauses a guest to save it and resumes it after a restore; its events say why.
    probe = listened(sandbox, ALL)
    sandbox.define_guest("g1")
    image = str(tmp_path / "g1.save")
    for action in (
        ("start", "g1"),
        ("save", "g1", image),
        ("restore", image),
        ("managedsave", "g1"),
        ("start", "g1"),
    ):
        sandbox.virsh(*action)
    fired = events_of(probe.caught_up())
    assert listener_fired(probe.all()) == []
    assert Counter(fired) == Counter(
        [*STARTED] + 2 * ["after_vm_hibernate", "before_vm_dehibernate", "after_vm_dehibernate"]
    )


def test_incoming_migration_fires_on_the_destination_only(
    make_sandbox: Callable[[str], Sandbox],
) -> None:
    source, source_probe, destination, destination_probe = two_hosts(make_sandbox)
    result = source.migrate("g1", destination)
    assert result.returncode == 0, result.stderr
    assert listener_fired(destination_probe.at_least(1)) == ["after_vm_migrate_destination"]
    assert listener_fired(source_probe.caught_up()) == []
    back = destination.migrate("g1", source)
    assert back.returncode == 0, back.stderr
    assert listener_fired(source_probe.at_least(3)) == ["after_vm_migrate_destination"]
    assert listener_fired(destination_probe.caught_up()) == ["after_vm_migrate_destination"]


def test_a_migration_that_came_in_while_the_listener_was_down_fires_once_it_is_back(
    make_sandbox: Callable[[str], Sandbox],
) -> None:
    source, _, destination, destination_probe = two_hosts(make_sandbox)
    kill_listener(destination)
    result = source.migrate("g1", destination)
    assert result.returncode == 0, result.stderr
    assert listener_fired(destination_probe.settled()) == []  # no listener: nothing more comes
    destination.start_listener()
    assert listener_fired(destination_probe.at_least(1)) == ["after_vm_migrate_destination"]
    log = destination_probe.log()
    # Two domains: g1 and the sentinel guest.
    assert "resynchronised 2 domain(s) after a gap, 1 missed event(s) fired" in log
    # A later restart has nothing new to fire.
    kill_listener(destination)
    destination.start_listener()
    assert listener_fired(destination_probe.caught_up()) == ["after_vm_migrate_destination"]


def test_listener_survives_a_killed_libvirtd(sandbox: Sandbox) -> None:
    probe = listened(sandbox, ALL)
    sandbox.define_guest("g1")
    sandbox.virsh("start", "g1")
    probe.new(2)
    listener = sandbox.listener_pid()
    pid = sandbox.libvirtd_pid()
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not sandbox.running(), "libvirtd gone", timeout=10)
    sandbox.start_daemon()
    sandbox.virsh("suspend", "g1")
    assert listener_fired(probe.at_least(3)) == ["after_vm_pause"]
    assert sandbox.listener_pid() == listener  # the same process reconnected


def test_twenty_guests_paused_and_resumed_at_once(sandbox: Sandbox) -> None:
    probe = listened(sandbox, ALL)
    names = [f"g{i:02d}" for i in range(20)]
    for name in names:
        sandbox.define_guest(name)
        sandbox.virsh("start", name)
    probe.new(40, timeout=60)
    with ThreadPoolExecutor(max_workers=20) as pool:
        list(pool.map(lambda n: sandbox.virsh("suspend", n), names))
        list(pool.map(lambda n: sandbox.virsh("resume", n), names))
    got = probe.at_least(80, timeout=90)
    for name in names:
        assert listener_fired([r for r in got if r["name"] == name]) == [
            "after_vm_pause",
            "after_vm_cont",
        ]
