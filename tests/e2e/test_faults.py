"""Faults on real libvirt: no event lost, none fired twice, no guest harmed by the bridge."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from libvirt_bridge import launcher
from libvirt_bridge_lab.sandbox import Sandbox, process_alive
from testing.e2e import (
    DESTROYED,
    STARTED,
    Probe,
    events_of,
    kill_listener,
    probed,
    resynced,
    sentinel_script,
    wait_for_file,
    wait_until,
)

pytestmark = pytest.mark.libvirt


def test_killed_async_runner_does_not_block_the_next_event(sandbox: Sandbox) -> None:
    probe = probed(sandbox)
    ready = Path(sandbox.bridge_dir) / "ready"
    sandbox.add_hook_script("after_vm_start", "60_slow", sentinel_script(ready, "exec sleep 60"))
    uuid = sandbox.define_guest("g1")
    sandbox.virsh("start", "g1")
    wait_for_file(ready, "the slow after_vm_start script")
    runner = next(int(str(r["ppid"])) for r in probe.all() if r["event"] == "after_vm_start")
    os.kill(runner, signal.SIGKILL)
    sandbox.virsh("destroy", "g1")
    assert events_of(probe.at_least(4), uuid) == [*STARTED, *DESTROYED]
    assert "async event after_vm_start of 'g1'" in probe.log()
    assert "was interrupted" in probe.log()
    assert sandbox.domstate("g1") == "shut off"


def test_listener_killed_and_restarted_fires_what_it_can_see_once(sandbox: Sandbox) -> None:
    probe = probed(sandbox, listener=True)
    paused = sandbox.define_guest("paused")
    flipped = sandbox.define_guest("flipped")
    for name in ("paused", "flipped"):
        sandbox.virsh("start", name)
    probe.at_least(4)
    kill_listener(sandbox)
    sandbox.virsh("suspend", "paused")
    sandbox.virsh("suspend", "flipped")
    sandbox.virsh("resume", "flipped")  # nothing left to see of this one
    sandbox.start_listener()
    resynced(probe, "resynchronised 2 domain(s) after a gap, 1 missed event(s) fired")
    records = probe.at_least(5)
    assert events_of(records, paused)[2:] == ["after_vm_pause"]
    assert events_of(records, flipped)[2:] == []
    sandbox.virsh("resume", "paused")
    records = probe.at_least(6)
    assert events_of(records, paused)[2:] == ["after_vm_pause", "after_vm_cont"]


def test_full_read_only_or_deleted_state_dir(sandbox: Sandbox) -> None:
    probe = probed(sandbox)
    sandbox.add_hook_script(
        "before_vm_start",
        "40_veto",
        '#!/bin/sh\n[ "$vmId" = "$VETO" ] || exit 0\necho no >&2\nexit 1\n',
    )
    state = sandbox.state_dir
    uuid = sandbox.define_guest("g1")
    # A tiny tmpfs over the state dir, in the daemon's namespace only, filled up.
    sandbox.run_in_namespace(["mount", "-n", "-t", "tmpfs", "-o", "size=64k", "tmpfs", state])
    sandbox.run_in_namespace(["sh", "-c", f"cat /dev/zero > {state}/filler || true"])
    veto = Path(sandbox.hooks_root) / "before_vm_start" / "40_veto"

    def vetoed(why: str) -> None:
        veto.write_text(f'#!/bin/sh\n[ "$vmId" = "{uuid}" ] || exit 0\necho {why} >&2\nexit 1\n')
        result = sandbox.virsh("start", "g1", check=False)
        assert result.returncode != 0 and why in result.stderr
        assert sandbox.domstate("g1") == "shut off"
        veto.write_text("#!/bin/sh\nexit 0\n")

    vetoed("full-state-dir-veto")
    sandbox.virsh("start", "g1")
    assert sandbox.domstate("g1") == "running"
    log = probe.log()
    assert "No space left on device" in log
    sandbox.virsh("destroy", "g1")
    # Read-only: sync events still run and still veto.
    sandbox.run_in_namespace(["mount", "-n", "-o", "remount,ro", state])
    sandbox.install_bridge({"state_dir": state})
    vetoed("read-only-state-dir-veto")
    assert "Read-only file system" in probe.log()
    sandbox.run_in_namespace(["umount", "-n", state])
    # Deleted while running: recreated, a veto still vetoes, and events keep coming.
    shutil.rmtree(state)
    vetoed("deleted-state-dir-veto")
    shutil.rmtree(state, ignore_errors=True)
    seen = len(probe.settled())
    sandbox.virsh("start", "g1")
    probe.at_least(seen + 2)
    sandbox.virsh("destroy", "g1")
    assert events_of(probe.at_least(seen + 4))[seen:] == [*STARTED, *DESTROYED]


def test_thirty_guests_started_and_destroyed_at_once(sandbox: Sandbox) -> None:
    probe = probed(sandbox)
    names = [f"g{i:02d}" for i in range(30)]
    uuids = {name: sandbox.define_guest(name) for name in names}
    with ThreadPoolExecutor(max_workers=30) as pool:
        list(pool.map(lambda n: sandbox.virsh("start", n, timeout=120), names))
        probe.at_least(60, timeout=120)
        list(pool.map(lambda n: sandbox.virsh("destroy", n, timeout=120), names))
    records = probe.at_least(120, timeout=120)
    for name in names:
        assert events_of(records, uuids[name]) == [*STARTED, *DESTROYED], name


def migrate_and_kill(
    make_sandbox: Callable[[str], Sandbox], killed: str
) -> tuple[Probe, Probe, str, subprocess.CompletedProcess[str]]:
    """Migrate g1 from lbsb1 to lbsb2, killing the ``killed`` side's libvirtd while the
    destination's before_vm_migrate_destination runs; (source, destination, uuid, result)."""
    source = probed(make_sandbox("lbsb1"))
    destination = probed(make_sandbox("lbsb2"))
    inside = Path(destination.sandbox.bridge_dir) / "inside"
    destination.sandbox.add_hook_script(
        "before_vm_migrate_destination", "60_slow", sentinel_script(inside, "sleep 5")
    )
    uuid = source.sandbox.define_guest("g1")
    source.sandbox.virsh("start", "g1")
    source.at_least(2)
    victim = {"source": source, "destination": destination}[killed].sandbox
    with ThreadPoolExecutor(max_workers=1) as pool:
        killing = pool.submit(kill_daemon_once_inside, inside, victim)
        result = source.sandbox.migrate("g1", destination.sandbox)
        killing.result()  # its failure to kill is the test's
    return source, destination, uuid, result


def test_destination_daemon_killed_during_migration(make_sandbox: Callable[[str], Sandbox]) -> None:
    source, destination, uuid, result = migrate_and_kill(make_sandbox, "destination")
    assert result.returncode != 0
    assert source.sandbox.domstate("g1") == "running"
    destination.sandbox.start_daemon()
    os.unlink(
        os.path.join(destination.sandbox.hooks_root, "before_vm_migrate_destination", "60_slow")
    )
    assert "migrate" not in " ".join(events_of(source.settled(), uuid)[2:])
    markers = os.path.join(destination.sandbox.state_dir, "markers")
    assert not os.path.isdir(markers) or not os.listdir(markers)
    # The orphaned hook finishes its 5 s script, and then leaves no marker.
    wait_until(lambda: "went away during the hook" in destination.log(), "the orphaned hook")
    assert not os.path.isdir(markers) or not os.listdir(markers)
    # The next start of that guest there is a cold boot, with before_vm_start.
    destination.sandbox.virsh("define", os.path.join(source.sandbox.root, "domains", "g1.xml"))
    source.sandbox.virsh("destroy", "g1")
    destination.sandbox.virsh("start", "g1")
    records = destination.at_least(3)
    assert events_of(records, uuid)[-2:] == list(STARTED)
    assert "after_vm_migrate" not in " ".join(events_of(records, uuid))


def test_source_daemon_killed_during_migration(make_sandbox: Callable[[str], Sandbox]) -> None:
    source, destination, uuid, result = migrate_and_kill(make_sandbox, "source")
    assert result.returncode != 0
    source.sandbox.start_daemon()
    # The restarted daemon takes the guest back and resumes it.
    wait_until(lambda: source.sandbox.domstate("g1") == "running", "g1 running again")
    fired = events_of(source.settled(), uuid) + events_of(destination.settled(), uuid)
    assert "after_vm_migrate_source" not in fired
    assert "after_vm_migrate_destination" not in fired


def kill_daemon_once_inside(sentinel: Path, sandbox: Sandbox) -> None:
    """SIGKILL the daemon of ``sandbox`` once a hook script left ``sentinel``; return once
    it is gone."""
    wait_for_file(sentinel, "the slow hook script")
    pid = sandbox.libvirtd_pid()
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not process_alive(pid), f"the killed daemon {pid} gone")


def test_a_launcher_kept_as_the_earlier_hook_runs_nothing_twice_and_install_repairs_it(
    sandbox: Sandbox,
) -> None:
    """A half-finished reinstall: hooks/qemu.legacy is a launcher that names itself."""
    probe = probed(sandbox)
    qemu = Path(sandbox.hooks_dir) / "qemu"
    legacy = "/etc/libvirt/hooks/qemu.legacy"  # as the daemon sees it
    for path in (qemu, Path(f"{qemu}.legacy")):
        launcher.write(str(path), "qemu", sandbox.config_path, legacy)
    uuid = sandbox.define_guest("g1")
    sandbox.virsh("start", "g1")
    assert events_of(probe.at_least(2), uuid) == list(STARTED)
    assert f"the earlier hook {legacy} is itself a libvirt-bridge launcher: not run" in (
        probe.log()
    )
    sandbox.install_bridge()
    assert not Path(f"{qemu}.legacy").exists()
    assert (
        f"removed {legacy}: a libvirt-bridge launcher"
        in Path(sandbox.bridge_dir, "install.out").read_text()
    )
    sandbox.virsh("destroy", "g1")
    probe.at_least(4)  # after_vm_destroy is async: the next start does not wait for it
    sandbox.virsh("start", "g1")
    assert events_of(probe.at_least(6), uuid) == [*STARTED, *DESTROYED, *STARTED]
