"""What `virsh` actions fire, on real libvirt daemons in private sandboxes.

Every hook script here is a probe that appends what it saw (event, domain name, vmId, the
XML, custom properties) to a JSON-lines file, so each test asserts the exact ordered
sequence of VDSM events per action.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from libvirt_bridge_lab.sandbox import Sandbox
from libvirt_bridge_lab.sandbox.cells import SYSTEM, Cell
from testing.e2e import (
    DESTROYED,
    STARTED,
    Probe,
    env_of,
    events_of,
    wait_for_file,
)

pytestmark = pytest.mark.libvirt

OVIRT_METADATA = (
    '<ovirt-vm:vm xmlns:ovirt-vm="http://ovirt.org/vm/1.0"><ovirt-vm:custom>'
    "<ovirt-vm:pincpu>0</ovirt-vm:pincpu><ovirt-vm:label>ünï code</ovirt-vm:label>"
    "</ovirt-vm:custom></ovirt-vm:vm>"
)


def bridged(make: Callable[[str], Sandbox], name: str, **config: object) -> tuple[Sandbox, Probe]:
    """Sandbox ``name``, with the bridge (and ``config``) and a probe in every event."""
    sandbox = make(name)
    sandbox.install_bridge(config or None)
    return sandbox, Probe(sandbox)


def live_xml(sandbox: Sandbox, name: str) -> str:
    return sandbox.virsh("dumpxml", name).stdout


def test_start_and_destroy(make_sandbox: Callable[[str], Sandbox]) -> None:
    sandbox, probe = bridged(make_sandbox, "lbsb1")
    uuid = sandbox.define_guest("g1", metadata=OVIRT_METADATA)
    sandbox.virsh("start", "g1")
    records = probe.new(2)
    assert events_of(records) == list(STARTED)
    for record in records:
        assert record["vmId"] == uuid
        assert "<name>g1</name>" in str(record["xml"]) and uuid in str(record["xml"])
        env = env_of(record)
        assert (env["pincpu"], env["label"]) == ("0", "ünï code")
    sandbox.virsh("destroy", "g1")
    records = probe.new(2)
    assert events_of(records) == list(DESTROYED)
    assert all(r["vmId"] == uuid for r in records)


def test_qmp_quit_is_a_poweroff(make_sandbox: Callable[[str], Sandbox]) -> None:
    sandbox, probe = bridged(make_sandbox, "lbsb1")
    sandbox.define_guest("g1")
    sandbox.virsh("start", "g1")
    assert probe.events(2) == list(STARTED)
    sandbox.virsh("qemu-monitor-command", "g1", '{"execute":"quit"}', check=False)
    assert probe.events(2) == list(DESTROYED)
    assert sandbox.domstate("g1") == "shut off"


def test_save_restore_and_managedsave(
    make_sandbox: Callable[[str], Sandbox], tmp_path: Path
) -> None:
    sandbox, probe = bridged(make_sandbox, "lbsb1")
    sandbox.define_guest("g1")
    sandbox.virsh("start", "g1")
    assert probe.events(2) == list(STARTED)
    image = str(tmp_path / "g1.save")
    sandbox.virsh("save", "g1", image)
    assert probe.events(1) == ["after_vm_hibernate"]
    sandbox.virsh("restore", image)
    assert probe.events(2) == ["before_vm_dehibernate", "after_vm_dehibernate"]
    sandbox.virsh("managedsave", "g1")
    assert probe.events(1) == ["after_vm_hibernate"]
    sandbox.virsh("start", "g1")
    assert probe.events(2) == ["before_vm_dehibernate", "after_vm_dehibernate"]
    assert sandbox.domstate("g1") == "running"


def test_the_stop_kind_comes_from_releases_reason_where_libvirt_gives_one(
    make_sandbox: Callable[[str], Sandbox], tmp_path: Path, libvirt_cell: Cell
) -> None:
    # With no status file to read, `stopped end` takes a save for a destroy. libvirt >= 10.5
    # names the reason at `release end REASON`, and that decides the after_* event there;
    # libvirt 9.0 passes "-", and the bridge has only what `stopped end` saw.
    nowhere = str(tmp_path / "no-status-files")
    sandbox, probe = bridged(make_sandbox, "lbsb1", qemu_status_dir=nowhere)
    sandbox.define_guest("g1")
    sandbox.virsh("start", "g1")
    assert probe.events(2) == list(STARTED)
    sandbox.virsh("save", "g1", str(tmp_path / "g1.save"))
    says_why = libvirt_cell.libvirt != SYSTEM  # 11.3
    after = "after_vm_hibernate" if says_why else "after_vm_destroy"
    assert probe.events(2) == ["before_vm_destroy", after]


def test_started_alone_tells_a_restore_from_a_boot(
    make_sandbox: Callable[[str], Sandbox], tmp_path: Path
) -> None:
    # Scripts only where `started` fires: the launcher answers every other call without the
    # bridge, so no marker is left at `restore`; libvirt's status file tells the starts apart.
    sandbox = make_sandbox("lbsb1")
    sandbox.install_bridge()
    probe = Probe(sandbox, events=("after_vm_start", "after_vm_dehibernate"))
    sandbox.define_guest("g1")
    sandbox.virsh("start", "g1")
    assert probe.events(1) == ["after_vm_start"]
    image = str(tmp_path / "g1.save")
    sandbox.virsh("save", "g1", image)
    sandbox.virsh("restore", image)
    assert probe.events(1) == ["after_vm_dehibernate"]
    sandbox.virsh("managedsave", "g1")
    sandbox.virsh("start", "g1")
    assert probe.events(1) == ["after_vm_dehibernate"]
    sandbox.virsh("destroy", "g1")
    sandbox.virsh("start", "g1")
    assert probe.events(1) == ["after_vm_start"]
    markers = Path(sandbox.state_dir) / "markers"
    assert not markers.exists() or list(markers.iterdir()) == []


def test_live_migration_both_ways(make_sandbox: Callable[[str], Sandbox]) -> None:
    source, source_probe = bridged(make_sandbox, "lbsb1")
    destination, destination_probe = bridged(make_sandbox, "lbsb2")
    uuid = source.define_guest("g1")
    source.virsh("start", "g1")
    assert source_probe.events(2) == list(STARTED)
    result = source.migrate("g1", destination)
    assert result.returncode == 0, result.stderr
    assert destination_probe.events(1) == ["before_vm_migrate_destination"]
    assert source_probe.events(1) == ["after_vm_migrate_source"]
    assert destination.domstate("g1") == "running"
    back = destination.migrate("g1", source)
    assert back.returncode == 0, back.stderr
    assert source_probe.events(1) == ["before_vm_migrate_destination"]
    records = destination_probe.new(1)
    assert events_of(records) == ["after_vm_migrate_source"]
    assert records[0]["vmId"] == uuid
    assert source.domstate("g1") == "running"


def test_daemon_restart_keeps_guests_and_fires_no_vm_event(
    make_sandbox: Callable[[str], Sandbox],
) -> None:
    sandbox, probe = bridged(make_sandbox, "lbsb1")
    sandbox.define_guest("g1")
    sandbox.virsh("start", "g1")
    assert probe.events(2) == list(STARTED)
    sandbox.restart_daemon()
    # after_vdsm_stop is async: its runner may finish after the new daemon's start hook.
    assert sorted(probe.events(2)) == ["after_vdsm_stop", "before_vdsm_start"]
    assert sandbox.domstate("g1") == "running"


def test_before_vm_start_veto(make_sandbox: Callable[[str], Sandbox]) -> None:
    sandbox, probe = bridged(make_sandbox, "lbsb1")
    sandbox.add_hook_script(
        "before_vm_start", "60_veto", "#!/bin/sh\necho 'not on this host, sorry' >&2\nexit 1\n"
    )
    sandbox.define_guest("g1")
    result = sandbox.virsh("start", "g1", check=False)
    assert result.returncode != 0
    assert "not on this host, sorry" in result.stderr
    assert "60_veto" in result.stderr
    assert sandbox.domstate("g1") == "shut off"
    # VDSM's order: the vetoed start is cleaned up like a destroy.
    assert probe.events(3) == [
        "before_vm_start",
        "before_vm_destroy",
        "after_vm_destroy",
    ]


def test_migration_veto_at_destination(make_sandbox: Callable[[str], Sandbox]) -> None:
    source, source_probe = bridged(make_sandbox, "lbsb1")
    destination, destination_probe = bridged(make_sandbox, "lbsb2")
    destination.add_hook_script(
        "before_vm_migrate_destination", "60_no", "#!/bin/sh\necho 'no room here' >&2\nexit 1\n"
    )
    source.define_guest("g1")
    source.virsh("start", "g1")
    source_probe.new(2)
    result = source.migrate("g1", destination)
    assert result.returncode != 0
    assert "no room here" in result.stderr
    assert source.domstate("g1") == "running"
    assert source_probe.events(0) == []
    assert destination_probe.events(1) == ["before_vm_migrate_destination"]


DESCRIBE = """#!/bin/sh
# Idempotent: libvirt keeps a restore filter's output in the next save image.
grep -q '<description>' "$_hook_domxml" && exit 0
sed -i 's#</name>#</name><description>set by {event}</description>#' "$_hook_domxml"
"""


def test_xml_changed_at_restore_and_migrate_reaches_libvirt(
    make_sandbox: Callable[[str], Sandbox], tmp_path: Path
) -> None:
    source, _ = bridged(make_sandbox, "lbsb1")
    destination, _ = bridged(make_sandbox, "lbsb2")
    for sandbox in (source, destination):
        for event in ("before_vm_dehibernate", "before_vm_migrate_destination"):
            sandbox.add_hook_script(event, "70_describe", DESCRIBE.format(event=event))
    source.define_guest("g1")
    source.virsh("start", "g1")
    image = str(tmp_path / "g1.save")
    source.virsh("save", "g1", image)
    source.virsh("restore", image)
    assert "<description>set by before_vm_dehibernate</description>" in live_xml(source, "g1")
    source.virsh("desc", "g1", "--live", "--new-desc", "")
    assert "<description>" not in live_xml(source, "g1")
    result = source.migrate("g1", destination)
    assert result.returncode == 0, result.stderr
    assert "<description>set by before_vm_migrate_destination</description>" in live_xml(
        destination, "g1"
    )


def test_after_script_may_call_virsh_on_its_own_domain(
    make_sandbox: Callable[[str], Sandbox],
) -> None:
    sandbox, _ = bridged(make_sandbox, "lbsb1")
    out = Path(sandbox.bridge_dir) / "domstate.txt"
    sandbox.add_hook_script(
        "after_vm_start",
        "60_virsh",
        f"#!/bin/sh\nvirsh -c {sandbox.uri!r} domstate g1 > {out}.tmp 2>&1\nmv {out}.tmp {out}\n",
    )
    sandbox.define_guest("g1")
    sandbox.virsh("start", "g1")
    wait_for_file(out, "the after_vm_start script's virsh")
    assert out.read_text().strip() == "running"


def test_script_timeout(make_sandbox: Callable[[str], Sandbox]) -> None:
    sandbox, probe = bridged(make_sandbox, "lbsb1", script_timeout=2)
    sandbox.add_hook_script("before_vm_start", "60_hang", "#!/bin/sh\nsleep 60\n")
    sandbox.add_hook_script("after_vm_start", "60_hang", "#!/bin/sh\nsleep 60\n")
    sandbox.define_guest("g1")
    result = sandbox.virsh("start", "g1", check=False)
    assert result.returncode != 0
    assert "60_hang (killed after timeout" in result.stderr
    assert sandbox.domstate("g1") == "shut off"
    os.unlink(os.path.join(sandbox.hooks_root, "before_vm_start", "60_hang"))
    sandbox.virsh("start", "g1")
    # The second start's after_vm_start: once its job is done, 60_hang has been killed.
    probe.new(3)
    log = probe.log()
    assert "after_vm_start domain='g1'" in log
    assert f"{sandbox.hooks_root}/after_vm_start/60_hang killed after timeout" in log
    assert sandbox.domstate("g1") == "running"
