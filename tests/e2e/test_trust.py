"""The trust boundary on real libvirt: a domain's metadata never decides how root's hook
scripts run, whichever path fires them: libvirt's hook under plain virsh, the listener,
the verbs and ``run``.
"""

from __future__ import annotations

import pytest

from libvirt_bridge_lab.sandbox import Sandbox
from testing.e2e import Record, define_with_devices, env_of, events_of, listened, verb
from testing.harness import ovirt_vm

pytestmark = pytest.mark.libvirt

MAC = "52:54:00:cc:00:07"
NIC = f"<interface type='user'><mac address='{MAC}'/><model type='virtio'/></interface>"
VM_HOSTILE = {
    "LD_PRELOAD": "/nonexistent/evil.so",
    "PATH": "/nonexistent/evilbin",
    "BASH_ENV": "/nonexistent/evil.sh",
    "PYTHONSTARTUP": "/nonexistent/evil.py",
    "vmId": "forged",
}
NIC_HOSTILE = {"LD_LIBRARY_PATH": "/nonexistent/lib", "GCONV_PATH": "/nonexistent"}
EVENTS = (
    "before_vm_start",
    "before_device_create",
    "after_vm_pause",
    "after_vm_cont",
    "before_vm_pause",
)


def define_hostile(sandbox: Sandbox) -> str:
    metadata = ovirt_vm(
        {**VM_HOSTILE, "label": "web"}, nics={MAC: {**NIC_HOSTILE, "extnet": "br-test"}}
    )
    return define_with_devices(sandbox, "g1", NIC, metadata=metadata)


def screened(record: Record, uuid: str, device: bool = False) -> None:
    env = env_of(record)
    for name, value in {**VM_HOSTILE, **(NIC_HOSTILE if device else {})}.items():
        assert env.get(name) != value, f"{record['event']}: {name} reached the script"
    assert env["vmId"] == uuid
    assert env["label"] == "web", "an ordinary property arrives unchanged"
    if device:
        assert env["extnet"] == "br-test"


def test_hostile_metadata_reaches_no_script_on_any_path(sandbox: Sandbox) -> None:
    probe = listened(sandbox, EVENTS)
    uuid = define_hostile(sandbox)

    # libvirt's own hook, under plain virsh: the VM's event and its NIC's.
    sandbox.virsh("start", "g1")
    got = probe.new(2)
    assert events_of(got) == ["before_device_create", "before_vm_start"]
    screened(got[0], uuid, device=True)
    screened(got[1], uuid)

    # The listener.
    sandbox.virsh("suspend", "g1")
    [paused] = probe.new(1)
    assert paused["event"] == "after_vm_pause"
    screened(paused, uuid)
    sandbox.virsh("resume", "g1")
    assert probe.events(1) == ["after_vm_cont"]

    # A verb.
    result = verb(sandbox, "pause", "g1")
    assert result.returncode == 0, result.stderr
    paused_by_verb = [r for r in probe.new(2) if r["event"] == "before_vm_pause"]
    assert len(paused_by_verb) == 1
    screened(paused_by_verb[0], uuid)

    # run, the trial.
    result = verb(sandbox, "run", "before_vm_start", "g1")
    assert result.returncode == 0, result.stderr
    assert "left out: custom property LD_PRELOAD (of the VM) refused: changes what" in result.stdout
    assert "    label=web" in result.stdout
    assert "    PATH=" not in result.stdout
    [trial] = probe.new(1)
    screened(trial, uuid)

    log = probe.log()
    for event in ("before_vm_start", "before_device_create", "after_vm_pause", "before_vm_pause"):
        assert f"{event} domain='g1' uuid={uuid}: custom property LD_PRELOAD (of the VM)" in log
    assert "custom property LD_LIBRARY_PATH (of the <interface>) refused" in log

    # The operator's view: what the domain carries that scripts never get.
    result = verb(sandbox, "check-props", "g1")
    assert result.returncode == 1
    assert f"g1 NIC {MAC}: LD_LIBRARY_PATH=/nonexistent/lib (live and persistent)" in (
        result.stdout
    )
    # And the verbs will not write such a property.
    result = verb(sandbox, "props", "g1", "set", "ENV=/x")
    assert result.returncode == 2
    assert "property name 'ENV' is refused" in result.stderr
