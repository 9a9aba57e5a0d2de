"""props and run on a real libvirt daemon in a private sandbox.

``props`` writes custom properties through libvirt's metadata API, into the persistent
and the live definition; the point of it is that a property set there reaches the next
real event's scripts. ``run`` tries an event's scripts on a domain's current XML and
leaves libvirt alone.
"""

from __future__ import annotations

import json
import os
import pwd
import subprocess
from pathlib import Path

import pytest
from lxml import etree

from libvirt_bridge import domxml
from libvirt_bridge_lab.sandbox import Sandbox
from testing.e2e import ListenedProbe, Probe, env_of, listened, verb

pytestmark = pytest.mark.libvirt

NS = domxml.OVIRT_VM_NS
RICH_METADATA = (
    '<ovirt-vm:vm xmlns:ovirt-vm="http://ovirt.org/vm/1.0">'
    "<ovirt-vm:clusterVersion>4.4</ovirt-vm:clusterVersion>"
    "<ovirt-vm:custom><ovirt-vm:old>o</ovirt-vm:old><ovirt-vm:keep>k</ovirt-vm:keep>"
    "</ovirt-vm:custom>"
    '<ovirt-vm:device devtype="disk" name="sda"><ovirt-vm:poolID>p1</ovirt-vm:poolID>'
    '<other xmlns="urn:other"><x a="1"/></other></ovirt-vm:device>'
    "</ovirt-vm:vm><foreign xmlns='urn:foreign'><y/></foreign>"
)
# After the probe's record: edits the XML, and says so on stderr.
EDIT = """
open(path, "w").write(xml.replace("<vcpu placement='static'>1<", "<vcpu placement='static'>2<"))
sys.stderr.write("probe saw pincpu=%s\\n" % os.environ.get("pincpu"))
"""


class Bridged(Probe):
    """A sandbox with the bridge installed and a probe for before_vm_start."""

    def __init__(self, sandbox: Sandbox) -> None:
        sandbox.install_bridge()
        super().__init__(sandbox, ("before_vm_start",), tail=EDIT)

    def verb(self, name: str, *args: str) -> subprocess.CompletedProcess[str]:
        """``libvirt-bridge NAME --connect URI ARGS`` with an environment of a shell (and one
        odd variable)."""
        shell = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": pwd.getpwuid(os.geteuid()).pw_dir,
            "SHELL_ONLY_VARIABLE": "not for hooks",
        }
        return verb(self.sandbox, name, *args, env=shell)

    def props(self, domain: str, *args: str) -> subprocess.CompletedProcess[str]:
        return self.verb("props", domain, *args)


@pytest.fixture
def bridged(sandbox: Sandbox) -> Bridged:
    return Bridged(sandbox)


def custom(sandbox: Sandbox, name: str, inactive: bool) -> dict[str, str]:
    args = ["dumpxml", "--inactive", name] if inactive else ["dumpxml", name]
    return domxml.custom_properties(domxml.parse(sandbox.virsh(*args).stdout.encode()))


def test_set_get_unset_on_an_inactive_guest(bridged: Bridged) -> None:
    sandbox = bridged.sandbox
    sandbox.define_guest("g1")
    result = bridged.props("g1", "set", "pincpu=0", 'label=web & <db> "x"')
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "g1: set pincpu=0 in the persistent definition (the domain is not running)",
        'g1: set label=web & <db> "x" in the persistent definition (the domain is not running)',
    ]
    dumped = sandbox.virsh("dumpxml", "--inactive", "g1").stdout
    assert "<ovirt-vm:pincpu>0</ovirt-vm:pincpu>" in dumped
    assert '<ovirt-vm:label>web &amp; &lt;db&gt; "x"</ovirt-vm:label>' in dumped
    assert custom(sandbox, "g1", inactive=True) == {"pincpu": "0", "label": 'web & <db> "x"'}
    got = bridged.props("g1", "get")
    assert (got.returncode, got.stdout) == (0, 'label=web & <db> "x"\npincpu=0\n')
    assert json.loads(bridged.props("g1", "get", "--json").stdout) == {
        "label": 'web & <db> "x"',
        "pincpu": "0",
    }
    unset = bridged.props("g1", "unset", "label")
    assert unset.returncode == 0, unset.stderr
    assert custom(sandbox, "g1", inactive=True) == {"pincpu": "0"}
    assert bridged.props("g1", "unset", "pincpu").returncode == 0
    assert "ovirt-vm" not in sandbox.virsh("dumpxml", "--inactive", "g1").stdout
    missing = bridged.props("nosuchvm", "get")
    assert missing.returncode == 1
    assert "error: no domain 'nosuchvm' on qemu+unix:///system?socket=" in missing.stderr


def test_set_and_unset_on_a_running_guest(bridged: Bridged) -> None:
    sandbox = bridged.sandbox
    sandbox.define_guest("g1")
    sandbox.virsh("start", "g1")
    result = bridged.props("g1", "set", "pincpu=0", "mode=fast")
    assert result.returncode == 0, result.stderr
    assert "g1: set pincpu=0 in the live and persistent definitions" in result.stdout
    for inactive in (False, True):
        assert custom(sandbox, "g1", inactive) == {"pincpu": "0", "mode": "fast"}
    assert bridged.props("g1", "get").stdout == "mode=fast\npincpu=0\n"
    assert bridged.props("g1", "unset", "mode").returncode == 0
    for inactive in (False, True):
        assert custom(sandbox, "g1", inactive) == {"pincpu": "0"}
    # The two definitions differ when one is changed behind our back: get says so.
    sandbox.virsh(
        "metadata", "g1", "--config", "--uri", NS, "--key", "ovirt-vm", "--set",
        "<vm><custom><pincpu>1</pincpu></custom></vm>",
    )  # fmt: skip
    got = bridged.props("g1", "get")
    assert got.stdout == "pincpu=0\n"
    assert "the persistent definition (used from the next start) differs" in got.stderr
    assert "  pincpu=1  (live: '0')" in got.stderr
    assert bridged.props("g1", "get", "--inactive").stdout == "pincpu=1\n"
    sandbox.virsh("destroy", "g1")


def test_other_metadata_is_kept(bridged: Bridged) -> None:
    sandbox = bridged.sandbox
    sandbox.define_guest("g1", metadata=RICH_METADATA)
    sandbox.virsh("start", "g1")
    assert bridged.props("g1", "set", "pincpu=0", "keep=k2").returncode == 0
    assert bridged.props("g1", "unset", "old").returncode == 0
    for args in (["dumpxml", "g1"], ["dumpxml", "--inactive", "g1"]):
        root = etree.fromstring(sandbox.virsh(*args).stdout.encode())
        vm = root.find(f"metadata/{{{NS}}}vm")
        assert vm is not None, args
        assert vm.findtext(f"{{{NS}}}clusterVersion") == "4.4"
        device = vm.find(f"{{{NS}}}device")
        assert device is not None and dict(device.attrib) == {"devtype": "disk", "name": "sda"}
        assert device.findtext(f"{{{NS}}}poolID") == "p1"
        other = device.find("{urn:other}other/{urn:other}x")
        assert other is not None and other.get("a") == "1"
        assert root.find("metadata/{urn:foreign}foreign/{urn:foreign}y") is not None
        assert domxml.custom_properties(root) == {"keep": "k2", "pincpu": "0"}
    sandbox.virsh("destroy", "g1")


def test_a_property_set_reaches_the_next_start(bridged: Bridged) -> None:
    sandbox = bridged.sandbox
    uuid = sandbox.define_guest("g1")
    result = bridged.props("g1", "set", "pincpu=0", "label=ünï code")
    assert result.returncode == 0, result.stderr
    sandbox.virsh("start", "g1")
    [record] = bridged.new(1)
    env = env_of(record)
    assert (env["pincpu"], env["label"], env["vmId"]) == ("0", "ünï code", uuid)
    # Changed while it runs, seen at the start after the next.
    assert bridged.props("g1", "set", "pincpu=1").returncode == 0
    sandbox.virsh("destroy", "g1")
    sandbox.virsh("start", "g1")
    [record] = bridged.new(1)
    assert env_of(record)["pincpu"] == "1"
    sandbox.virsh("destroy", "g1")


def test_run_tries_the_scripts_and_changes_nothing(bridged: Bridged) -> None:
    sandbox = bridged.sandbox
    uuid = sandbox.define_guest("g1")
    assert bridged.props("g1", "set", "pincpu=0").returncode == 0
    before = sandbox.virsh("dumpxml", "g1").stdout
    before_inactive = sandbox.virsh("dumpxml", "--inactive", "g1").stdout
    result = bridged.verb("run", "before_vm_start", "g1")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert out.startswith(f"trial of before_vm_start for domain g1 (vmId {uuid}): nothing is")
    assert "    pincpu=0\n" in out
    assert "50_probe: rc=0, " in out and "  | probe saw pincpu=0\n" in out
    assert '-  <vcpu placement="static">1</vcpu>\n+  <vcpu placement="static">2</vcpu>\n' in out
    assert "result: all 1 script(s) succeeded" in out
    # Nothing reached libvirt.
    assert sandbox.virsh("dumpxml", "g1").stdout == before
    assert sandbox.virsh("dumpxml", "--inactive", "g1").stdout == before_inactive
    assert sandbox.domstate("g1") == "shut off"
    assert "[trial]" in bridged.log()
    # The scripts saw what the real event gives them: compare with a real start.
    sandbox.virsh("start", "g1")
    trial, real = bridged.new(2)
    assert trial["event"] == real["event"] == "before_vm_start"
    trial_env, real_env = env_of(trial), env_of(real)
    assert sorted(trial_env) == sorted(real_env)
    for key in ("pincpu", "vmId", "LC_ALL", "HOME"):
        assert trial_env[key] == real_env[key], key
    # The same hooking module; in a chrooted cell the daemon's bridge is the sandbox's venv.
    for env in (trial_env, real_env):
        assert str(env["PYTHONPATH"]).endswith("/libvirt_bridge/compat"), env["PYTHONPATH"]
    sandbox.virsh("destroy", "g1")


def test_run_with_a_failing_script(bridged: Bridged) -> None:
    sandbox = bridged.sandbox
    sandbox.define_guest("g1")
    sandbox.add_hook_script(
        "before_vm_start", "60_veto", "#!/bin/sh\necho 'no, not now' >&2\nexit 1\n"
    )
    result = bridged.verb("run", "before_vm_start", "g1")
    assert result.returncode == 1
    assert "60_veto: rc=1, failed, " in result.stdout and "  | no, not now\n" in result.stdout
    assert "result: 1 of 2 script(s) failed: 60_veto" in result.stdout
    assert sandbox.domstate("g1") == "shut off"


PLANNED_MAC = "52:54:00:aa:00:07"
PLANNED_NIC = f"""<interface type='user'>
  <mac address='{PLANNED_MAC}'/>
  <model type='usb-net'/>
  <alias name='ua-nic7'/>
</interface>
"""


def test_a_nic_named_before_it_is_plugged_gets_its_properties_under_plain_virsh(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    probe = listened(
        sandbox, ("after_nic_hotplug", "after_nic_hotunplug", *ListenedProbe.SENTINEL_EVENTS)
    )
    sandbox.define_guest("g1")
    sandbox.virsh("start", "g1")

    def props(*args: str) -> subprocess.CompletedProcess[str]:
        return verb(sandbox, "props", "g1", *args)

    planned = props("--device", PLANNED_MAC, "set", "extnet=lab")
    assert planned.returncode == 0, planned.stderr
    assert f"no device of g1 is the NIC {PLANNED_MAC}" in planned.stderr
    nic = tmp_path / "nic.xml"
    nic.write_text(PLANNED_NIC)
    sandbox.virsh("attach-device", "g1", str(nic), "--live")
    [plugged] = probe.new(1)
    assert plugged["event"] == "after_nic_hotplug"
    assert env_of(plugged).get("extnet") == "lab"
    listed = props("devices")
    assert f"NIC {PLANNED_MAC} (--device {PLANNED_MAC}): <interface> in the live" in listed.stdout

    sandbox.virsh("detach-device", "g1", str(nic), "--live")
    [unplugged] = probe.new(1)
    assert unplugged["event"] == "after_nic_hotunplug"
    # The entry of the detached NIC can still be seen and removed with the tool.
    assert props("--device", PLANNED_MAC, "get").stdout == "extnet=lab\n"
    listed = props("devices")
    assert f"NIC {PLANNED_MAC} (--device {PLANNED_MAC}): no such device" in listed.stdout
    gone = props("--device", PLANNED_MAC, "unset", "extnet")
    assert gone.returncode == 0, gone.stderr
    assert props("devices").stdout == "g1: no device entry in its metadata\n"
