"""The operator's verbs and install/uninstall, on real libvirt daemons."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from libvirt_bridge.runner import LIBVIRT_PASSED_ENV
from libvirt_bridge_lab.sandbox import Sandbox
from testing.e2e import (
    DESTROYED,
    STARTED,
    ListenedProbe,
    Probe,
    env_of,
    listened,
    migrate_verb,
    probed,
    verb,
)

pytestmark = pytest.mark.libvirt

# VDSM's documented example, reduced: pin the vCPUs to the CPUs in $pincpu.
PINCPU = """#!/bin/sh
[ -n "$pincpu" ] || exit 0
sed -i "s#<vcpu placement='static'>#<vcpu placement='static' cpuset='$pincpu'>#" "$_hook_domxml"
"""
PINCPU_METADATA = (
    '<ovirt-vm:vm xmlns:ovirt-vm="http://ovirt.org/vm/1.0"><ovirt-vm:custom>'
    "<ovirt-vm:pincpu>0</ovirt-vm:pincpu></ovirt-vm:custom></ovirt-vm:vm>"
)


@pytest.fixture
def bridged(sandbox: Sandbox) -> ListenedProbe:
    """The bridge, probes for every event and the listener, in ``sandbox``."""
    return listened(sandbox)


def test_pause_vetoed_leaves_the_guest_running(bridged: ListenedProbe) -> None:
    sandbox = bridged.sandbox
    sandbox.define_guest("g1")
    sandbox.virsh("start", "g1")
    bridged.events(2)
    sandbox.add_hook_script(
        "before_vm_pause", "60_veto", "#!/bin/sh\necho 'backup running, not now' >&2\nexit 1\n"
    )
    result = verb(sandbox, "pause", "g1")
    assert result.returncode == 1
    assert "backup running, not now" in result.stderr
    assert sandbox.domstate("g1") == "running"
    assert bridged.events(1) == ["before_vm_pause"]


def test_pause_resume_save_and_destroy_fire_each_event_once(bridged: ListenedProbe) -> None:
    sandbox = bridged.sandbox
    sandbox.define_guest("g1")
    assert verb(sandbox, "start", "g1").returncode == 0
    assert bridged.events(2) == list(STARTED)
    assert verb(sandbox, "pause", "g1").returncode == 0
    assert bridged.events(2) == ["before_vm_pause", "after_vm_pause"]
    assert verb(sandbox, "resume", "g1").returncode == 0
    assert bridged.events(2) == ["before_vm_cont", "after_vm_cont"]
    assert verb(sandbox, "save", "g1").returncode == 0
    assert bridged.events(2) == ["before_vm_hibernate", "after_vm_hibernate"]
    result = verb(sandbox, "start", "g1")
    assert result.returncode == 0, result.stderr
    assert "managed save" in result.stdout
    assert bridged.events(2) == ["before_vm_dehibernate", "after_vm_dehibernate"]
    assert verb(sandbox, "destroy", "g1").returncode == 0
    assert bridged.events(2) == list(DESTROYED)


def test_migrate_verb_runs_the_source_event(make_sandbox: Callable[[str], Sandbox]) -> None:
    source = probed(make_sandbox("lbsb1"))
    destination = probed(make_sandbox("lbsb2"))
    source.sandbox.define_guest("g1")
    source.sandbox.virsh("start", "g1")
    source.events(2)
    result = migrate_verb(source.sandbox, destination.sandbox)
    assert result.returncode == 0, result.stderr
    assert source.events(2) == ["before_vm_migrate_source", "after_vm_migrate_source"]
    assert destination.events(1) == ["before_vm_migrate_destination"]
    assert destination.sandbox.domstate("g1") == "running"


def test_start_boots_the_changed_xml_once_and_keeps_the_definition(bridged: ListenedProbe) -> None:
    sandbox = bridged.sandbox
    sandbox.add_hook_script("before_vm_start", "40_pincpu", PINCPU)
    sandbox.define_guest("g1", metadata=PINCPU_METADATA)
    result = verb(sandbox, "start", "g1")
    assert result.returncode == 0, result.stderr
    assert "with the XML its before_vm_start scripts changed" in result.stdout
    assert "cpuset='0'" in sandbox.virsh("dumpxml", "g1").stdout
    assert "cpuset" not in sandbox.virsh("dumpxml", "--inactive", "g1").stdout
    # before_vm_start ran in the verb, not a second time at libvirt's prepare.
    assert bridged.events(2) == list(STARTED)


def test_plain_virsh_start_warns_or_refuses_an_xml_change(bridged: ListenedProbe) -> None:
    sandbox = bridged.sandbox
    sandbox.add_hook_script("before_vm_start", "40_pincpu", PINCPU)
    sandbox.define_guest("g1", metadata=PINCPU_METADATA)
    sandbox.virsh("start", "g1")
    assert "cpuset" not in sandbox.virsh("dumpxml", "g1").stdout
    assert "40_pincpu changed the domain XML" in bridged.log()
    sandbox.virsh("destroy", "g1")
    sandbox.install_bridge({"start_xml_changes": "refuse"})
    result = sandbox.virsh("start", "g1", check=False)
    assert result.returncode != 0
    assert "libvirt-bridge start g1" in result.stderr
    assert sandbox.domstate("g1") == "shut off"


VETO = "#!/bin/sh\necho 'not enough hugepages for g1' >&2\nexit 1\n"


def test_verb_scripts_get_libvirts_hook_environment_not_the_callers(bridged: ListenedProbe) -> None:
    sandbox = bridged.sandbox
    uuid = sandbox.define_guest("g1", metadata=PINCPU_METADATA)
    sandbox.virsh("start", "g1")
    bridged.events(2)
    caller = dict(os.environ, FOO="bar", LC_ALL="C.UTF-8")
    result = verb(sandbox, "pause", "g1", env=caller)
    assert result.returncode == 0, result.stderr
    record = bridged.new(2)[0]
    env = env_of(record)
    assert record["event"] == "before_vm_pause"
    assert "FOO" not in env and "LIBVIRT_BRIDGE_CONFIG" not in env
    # Of the caller's variables, only those libvirt passes to a hook; then the bridge's.
    assert set(env) - set(LIBVIRT_PASSED_ENV) == {
        "LC_ALL",
        "_hook_domxml",
        "vmId",
        "PYTHONPATH",
        "pincpu",
    }
    assert (env["PATH"], env["HOME"]) == (os.environ["PATH"], os.environ["HOME"])
    assert (env["LC_ALL"], env["vmId"], env["pincpu"]) == ("C", uuid, "0")


def test_a_refused_verb_start_fires_the_events_of_a_refused_virsh_start(
    bridged: ListenedProbe,
) -> None:
    sandbox = bridged.sandbox
    sandbox.define_guest("g1")
    veto = sandbox.add_hook_script("before_vm_start", "60_veto", VETO)
    refused = ["before_vm_start", "before_vm_destroy", "after_vm_destroy"]
    by_virsh = sandbox.virsh("start", "g1", check=False)
    assert by_virsh.returncode != 0
    assert "not enough hugepages for g1" in by_virsh.stderr
    assert bridged.events(3) == refused
    result = verb(sandbox, "start", "g1")
    assert result.returncode == 1
    assert "not enough hugepages for g1" in result.stderr
    assert "before_vm_start refused to start 'g1'" in result.stderr
    assert bridged.events(3) == refused
    assert sandbox.domstate("g1") == "shut off"
    # Without the veto the verb starts it, and fires no destroy event.
    os.unlink(veto)
    started = verb(sandbox, "start", "g1")
    assert started.returncode == 0, started.stderr
    assert bridged.events(2) == list(STARTED)
    assert sandbox.domstate("g1") == "running"


LAUNCH_PAUSED = """#!{python}
import os
import hooking
hooking.dump_vm_launch_flags_to_file(os.environ["vmId"], 1)  # VIR_DOMAIN_START_PAUSED
"""


def test_start_boots_with_the_launch_flags_a_script_leaves(bridged: ListenedProbe) -> None:
    sandbox = bridged.sandbox
    sandbox.add_hook_script(
        "before_vm_start", "60_paused", LAUNCH_PAUSED.format(python=sys.executable)
    )
    sandbox.define_guest("g1")
    result = verb(sandbox, "start", "g1")
    assert result.returncode == 0, result.stderr
    assert "started 'g1' as defined (paused)" in result.stdout
    assert sandbox.domstate("g1") == "paused"
    # The flags file lived for this start only.
    assert os.listdir(os.path.join(sandbox.state_dir, "vdsm-run")) == []


FOREIGN = b"""#!/bin/sh
# a home-made hook, as found on many hosts
echo "$1 $2 $3" >> %s
"""


def test_install_over_a_foreign_hook_and_uninstall(sandbox: Sandbox) -> None:
    foreign_log = Path(sandbox.bridge_dir) / "foreign.log"
    qemu = Path(sandbox.hooks_dir) / "qemu"
    original = FOREIGN % str(foreign_log).encode()
    qemu.write_bytes(original)
    qemu.chmod(0o750)
    sandbox.reload()
    config = Path(sandbox.bridge_dir) / "installed.toml"
    config.write_text(
        f'hooks_dirs = ["{sandbox.hooks_root}"]\nstate_dir = "{sandbox.state_dir}"\n'
        f'log_file = "{sandbox.log_file}"\n'
    )
    logrotate_dir = Path(sandbox.bridge_dir) / "logrotate.d"
    logrotate_dir.mkdir()
    args = ["--confdir", sandbox.etc_dir, "--config", str(config)]
    args += ["--logrotate-dir", str(logrotate_dir), "--no-listener"]
    args += ["--cockpit-dir", str(Path(sandbox.bridge_dir) / "no-cockpit")]
    env = dict(os.environ)
    run = [sys.executable, "-m", "libvirt_bridge"]
    first = subprocess.run([*run, "install", *args], capture_output=True, text=True, env=env)
    assert first.returncode == 0, first.stderr
    assert "kept the earlier hook" in first.stdout and "sent SIGHUP to libvirtd" in first.stdout
    second = subprocess.run([*run, "install", *args], capture_output=True, text=True, env=env)
    assert second.returncode == 0
    assert "installed" not in second.stdout.replace("up to date", "")
    probe = Probe(sandbox, ("before_vm_start",))
    sandbox.define_guest("g1")
    sandbox.virsh("start", "g1")
    assert "g1 prepare begin" in foreign_log.read_text()
    assert probe.events(1) == ["before_vm_start"]
    status = subprocess.run(
        [*run, "status", "--confdir", sandbox.etc_dir, "--config", str(config)],
        capture_output=True,
        text=True,
    )
    assert "has looked for hooks since the launchers were written" in status.stdout, status.stdout
    undo = subprocess.run([*run, "uninstall", *args[:6]], capture_output=True, text=True)
    assert undo.returncode == 0, undo.stderr
    assert qemu.read_bytes() == original
    assert oct(qemu.stat().st_mode & 0o777) == "0o750"
    assert hashlib.sha256(qemu.read_bytes()).digest() == hashlib.sha256(original).digest()
