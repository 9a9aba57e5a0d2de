"""run: a trial of one event's scripts on a domain XML file (no libvirt daemon needed)."""

from __future__ import annotations

import io
import os
import re
import sys
from pathlib import Path

import pytest

from libvirt_bridge.runner import COMPAT_DIR, LIBVIRT_PASSED_ENV
from testing.harness import Bridge, domain_xml, ovirt_vm, uuid_of
from testing.hosts import run

PROPS = {"pincpu": "1-4", "label": "web &amp; db"}
EDIT = """\
import os
path = os.environ["_hook_domxml"]
data = open(path).read()
open(path, "w").write(data.replace("<vcpu>1</vcpu>", "<vcpu>4</vcpu>"))
"""


@pytest.fixture
def trial(bridge: Bridge, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The bridge's config in force, and a domain XML file with custom properties."""
    monkeypatch.setenv("LIBVIRT_BRIDGE_CONFIG", str(bridge.config))
    monkeypatch.setenv("SHELL_ONLY_VARIABLE", "leaks?")
    path = tmp_path / "vm1.xml"
    path.write_bytes(domain_xml("vm1", properties=PROPS))
    return path


def test_shows_rc_duration_stderr_and_the_diff(bridge: Bridge, trial: Path) -> None:
    before = trial.read_bytes()
    bridge.probe("before_vm_start", "10_probe", tail="sys.stderr.write('probe says hi\\n')")
    bridge.probe("before_vm_start", "20_edit", tail=EDIT + "print('to stdout')")
    status, out, err = run("run", "before_vm_start", "vm1", "--xml", str(trial))
    assert (status, err) == (0, "")
    uuid = uuid_of(before)
    lines = out.splitlines()
    assert (
        lines[0]
        == f"trial of before_vm_start for domain vm1 (vmId {uuid}): nothing is applied to libvirt"
    )
    assert f"  XML: the file {trial}" in lines
    assert "    label=web & db" in lines and "    pincpu=1-4" in lines
    probe = bridge.hooks / "before_vm_start" / "10_probe"
    assert re.search(rf"^10_probe: rc=0, \d+\.\d{{3}}s \({re.escape(str(probe))}\)$", out, re.M)
    assert "  stderr:\n  | probe says hi\n" in out
    assert re.search(r"^20_edit: rc=0, \d+\.\d{3}s ", out, re.M)
    assert "  stderr: (empty)\n  stdout: 10 bytes (dropped, as in a real run)\n" in out
    assert "the XML the scripts produced (changed by 20_edit):" in lines
    diff = out[out.index("--- vm1.xml (before, normalised)") :]
    assert "+++ vm1.xml (after, normalised)\n" in diff
    assert "\n-  <vcpu>1</vcpu>\n+  <vcpu>4</vcpu>\n" in diff
    assert "result: all 2 script(s) succeeded" in lines
    assert f"log: {bridge.log} (lines marked [trial])" in lines
    # Nothing is applied anywhere: the file is as it was; the log says it was a trial.
    assert trial.read_bytes() == before
    log = bridge.log_text()
    assert "before_vm_start domain='vm1' uuid=" in log
    assert "[trial]: trial run by `libvirt-bridge run`, nothing is applied to libvirt" in log
    assert re.search(r"\[trial\] script=\S+/10_probe rc=0 duration=", log)


def test_the_environment_is_the_real_events(bridge: Bridge, trial: Path) -> None:
    bridge.probe("before_vm_start")
    assert run("run", "before_vm_start", "vm1", "--xml", str(trial))[0] == 0
    [record] = bridge.read_records()
    env = record["env"]
    assert isinstance(env, dict)
    assert env["pincpu"] == "1-4" and env["label"] == "web & db"
    assert env["vmId"] == uuid_of(trial.read_bytes())
    assert env["LC_ALL"] == "C"
    assert env["PYTHONPATH"] == COMPAT_DIR
    assert env["PATH"] == os.environ["PATH"]
    # Only what libvirt passes to a hook: nothing of the caller's shell.
    assert "SHELL_ONLY_VARIABLE" not in env and "LIBVIRT_BRIDGE_CONFIG" not in env
    allowed = {"LC_ALL", "PYTHONPATH", "vmId", "_hook_domxml", *PROPS}
    assert set(env) - allowed <= set(LIBVIRT_PASSED_ENV)
    assert record["xml"] == trial.read_text()
    assert record["cwd"] == "/" and record["argv"] == [
        str(bridge.hooks / "before_vm_start" / "50_probe")
    ]
    # The command's own environment is back as it was.
    assert os.environ["SHELL_ONLY_VARIABLE"] == "leaks?"


def test_a_failing_script_gives_exit_1(bridge: Bridge, trial: Path) -> None:
    bridge.script("before_vm_start", "10_ok", "#!/bin/sh\nexit 0\n")
    bridge.script("before_vm_start", "20_fail", "#!/bin/sh\necho 'no cpu 7' >&2\nexit 1\n")
    bridge.script("before_vm_start", "30_odd", "#!/bin/sh\nexit 3\n")
    bridge.script("before_vm_start", "40_stop", "#!/bin/sh\nexit 2\n")
    bridge.script("before_vm_start", "50_never", "#!/bin/sh\nexit 0\n")
    status, out, _ = run("run", "before_vm_start", "vm1", "--xml", str(trial))
    assert status == 1
    assert re.search(r"^20_fail: rc=1, failed, \d+\.\d{3}s ", out, re.M)
    assert "  stderr:\n  | no cpu 7\n" in out
    assert "30_odd: rc=3, failed (exit codes above 2 are reserved; treated as 1)" in out
    assert "40_stop: rc=2, failed (2: later scripts are skipped)" in out
    assert f"50_never: not run ({bridge.hooks / 'before_vm_start' / '50_never'})" in out
    assert "the scripts left the XML unchanged" in out
    assert "result: 3 of 4 script(s) failed: 20_fail, 30_odd, 40_stop" in out


def test_unknown_event_suggests_the_nearest(trial: Path) -> None:
    status, out, err = run("run", "before_vm_strat", "vm1", "--xml", str(trial))
    assert (status, out) == (2, "")
    assert err == (
        "libvirt-bridge run: error: unknown event 'before_vm_strat'; did you mean "
        "before_vm_start?\n"
    )
    assert "did you mean before_vm_migrate_source?" in run("run", "before_vm_migrate_src", "x")[2]
    status, _, err = run("run", "reboot", "vm1")
    assert status == 2
    assert "unknown event 'reboot'; the events are: before_vdsm_start, " in err


@pytest.mark.parametrize(
    "event",
    ["before_vm_pause", "before_vm_cont", "before_vm_hibernate", "before_vm_migrate_source"],
)
def test_the_verbs_events_are_accepted(bridge: Bridge, trial: Path, event: str) -> None:
    bridge.probe(event)
    status, out, _ = run("run", event, "vm1", "--xml", str(trial))
    assert status == 0, out
    assert [r["event"] for r in bridge.read_records()] == [event]


def test_no_script(bridge: Bridge, trial: Path) -> None:
    bridge.script("after_vm_start", "10_off", "#!/bin/sh\n", mode=0o644)
    status, out, _ = run("run", "after_vm_start", "vm1", "--xml", str(trial))
    assert status == 0
    assert "  note: after_vm_start: skipped " in out and "not executable" in out
    assert out.endswith(f"no script would run for after_vm_start (hooks roots: {bridge.hooks})\n")


def test_xml_from_stdin_and_a_mere_reserialisation(
    bridge: Bridge, trial: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reserialise = (
        "from xml.dom import minidom\n"
        "path = os.environ['_hook_domxml']\n"
        "doc = minidom.parse(path)\n"
        "open(path, 'w').write(doc.toxml())\n"
    )
    bridge.probe("before_vm_migrate_destination", tail=reserialise)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(trial.read_bytes())))
    status, out, err = run("run", "before_vm_migrate_destination", "other", "--xml", "-")
    assert status == 0
    assert "  XML: stdin" in out
    # The documents mean the same: no line of diff, and a note saying why.
    assert "--- other.xml" not in out
    assert "note: the bytes changed, not the meaning (only a re-serialisation)" in out
    assert err == "libvirt-bridge run: the XML names the domain 'vm1'; the trial calls it 'other'\n"


def test_a_script_that_rewrites_the_whole_document_shows_only_its_changes(
    bridge: Bridge, trial: Path
) -> None:
    # minidom's toprettyxml re-indents every line and rewrites the declaration; the script
    # changes two things.
    rewrite = (
        "from xml.dom import minidom\n"
        "path = os.environ['_hook_domxml']\n"
        "doc = minidom.parse(path)\n"
        "doc.getElementsByTagName('vcpu')[0].firstChild.data = '4'\n"
        "doc.getElementsByTagName('memory')[0].firstChild.data = '131072'\n"
        "open(path, 'w').write(doc.toprettyxml(indent='\\t'))\n"
    )
    bridge.probe("before_vm_start", tail=rewrite)
    status, out, _ = run("run", "before_vm_start", "vm1", "--xml", str(trial))
    assert status == 0
    diff = out[out.index("--- vm1.xml (before, normalised)") :].splitlines()
    changed = [line for line in diff if line[:1] in ("+", "-") and line[:3] not in ("---", "+++")]
    assert sorted(changed) == sorted(
        [
            "-  <vcpu>1</vcpu>",
            "+  <vcpu>4</vcpu>",
            '-  <memory unit="KiB">65536</memory>',
            '+  <memory unit="KiB">131072</memory>',
        ]
    ), "\n".join(diff)


def test_xml_left_broken_is_pointed_out(bridge: Bridge, trial: Path) -> None:
    bridge.script(
        "before_vm_dehibernate", "10_break", '#!/bin/sh\nprintf "<domain>" > "$_hook_domxml"\n'
    )
    status, out, _ = run("run", "before_vm_dehibernate", "vm1", "--xml", str(trial))
    assert status == 0
    assert "note: the XML the scripts left is not well-formed: " in out
    assert "+<domain>\n\\ No newline at end of file\n" in out


def test_daemon_event_has_no_domain(bridge: Bridge, trial: Path) -> None:
    bridge.probe("before_vdsm_start")
    status, out, err = run("run", "before_vdsm_start")
    assert (status, err) == (0, "")
    assert out.startswith("trial of before_vdsm_start for the daemon: nothing is applied")
    assert "custom properties" not in out and "the scripts got no XML" in out
    [record] = bridge.read_records()
    env = record["env"]
    assert isinstance(env, dict) and "vmId" not in env and record["xml"] == ""
    status, _, err = run("run", "after_vdsm_stop", "vm1", "--xml", str(trial))
    assert status == 0 and "DOMAIN and --xml are ignored" in err


def test_bad_usage(bridge: Bridge, trial: Path, tmp_path: Path) -> None:
    status, _, err = run("run", "before_vm_start")
    assert status == 2 and "before_vm_start needs a DOMAIN" in err
    status, _, err = run("run", "before_vm_start", "vm1", "--xml", str(tmp_path / "nope.xml"))
    assert status == 2 and f"cannot read {tmp_path / 'nope.xml'}: No such file or directory" in err
    broken = tmp_path / "broken.xml"
    broken.write_text("<domain><name>x</domain>")
    status, _, err = run("run", "before_vm_start", "vm1", "--xml", str(broken))
    assert status == 2 and f"the file {broken} is not well-formed XML: " in err
    broken.write_text("<network><name>x</name></network>")
    status, _, err = run("run", "before_vm_start", "vm1", "--xml", str(broken))
    assert status == 2 and "is not a domain XML (its root is <network>)" in err
    with pytest.raises(SystemExit) as exc:
        run("run")
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        run("run", "--help")
    assert exc.value.code == 0


def test_config_and_libvirt_problems_give_exit_1(bridge: Bridge, trial: Path) -> None:
    status, _, err = run("run", "before_vm_start", "vm1", "--connect", "nowhere:///x")
    assert status == 1 and "libvirt-bridge run: error: cannot connect to nowhere:///x: " in err
    status, _, err = run("run", "before_vm_start", "nosuchvm", "--connect", "test:///default")
    assert status == 1 and "no domain 'nosuchvm' on test:///default" in err
    bridge.config.write_text("hooks_dir = []\n")
    status, _, err = run("run", "before_vm_start", "vm1", "--xml", str(trial))
    assert status == 1 and "unknown key 'hooks_dir' (did you mean 'hooks_dirs'?)" in err


def test_current_xml_from_libvirt(bridge: Bridge, trial: Path) -> None:
    """libvirt's built-in test driver stands in for a daemon here."""
    bridge.probe("after_vm_start", tail=EDIT)
    status, out, _ = run("run", "after_vm_start", "test", "--connect", "test:///default")
    assert status == 0
    assert "  XML: the current XML of test on test:///default" in out
    [record] = bridge.read_records()
    assert "<name>test</name>" in str(record["xml"])
    assert isinstance(record["env"], dict) and record["env"]["vmId"] in str(record["xml"])


METADATA = ovirt_vm({"owner": "ops"}, nics={"52:54:00:12:34:56": {"extnet": "br-ext"}})
DEVICES = f"""
  <metadata>{METADATA}</metadata>
  <devices>
    <disk type='file' device='disk'><target dev='vda' bus='virtio'/></disk>
    <interface type='bridge'>
      <mac address='52:54:00:12:34:56'/><source bridge='br0'/><alias name='net0'/>
    </interface>
  </devices>"""


@pytest.fixture
def with_devices(bridge: Bridge, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LIBVIRT_BRIDGE_CONFIG", str(bridge.config))
    path = tmp_path / "vm1.xml"
    path.write_bytes(domain_xml("vm1", extra=DEVICES))
    return path


def test_a_device_event_gets_the_element_alone_and_the_devices_properties(
    bridge: Bridge, with_devices: Path
) -> None:
    bridge.probe("after_nic_hotplug")
    args = ["run", "after_nic_hotplug", "vm1", "--xml", str(with_devices)]
    status, out, err = run(*args, "--device", "52:54:00:12:34:56")
    assert (status, err) == (0, ""), out
    assert f"  XML: the <interface> 52:54:00:12:34:56 of the file {with_devices}" in out
    assert "    extnet=br-ext" in out and "    owner=ops" in out
    [record] = bridge.read_records()
    xml = str(record["xml"])
    assert xml.startswith('<interface type="bridge">') and "<disk" not in xml
    env = record["env"]
    assert isinstance(env, dict)
    assert (env["extnet"], env["owner"]) == ("br-ext", "ops")
    assert env["vmId"] == uuid_of(with_devices.read_bytes())


def test_a_device_event_needs_a_device_and_only_a_device_event_takes_one(
    bridge: Bridge, with_devices: Path
) -> None:
    status, _, err = run("run", "after_disk_hotplug", "vm1", "--xml", str(with_devices))
    assert status == 2
    assert "after_disk_hotplug is a device event: name the device with --device" in err
    args = ["run", "after_vm_start", "vm1", "--xml", str(with_devices), "--device", "vda"]
    status, _, err = run(*args)
    assert status == 2
    assert "--device is for a device event, and after_vm_start is none" in err


def test_a_device_that_is_not_there_is_an_error(bridge: Bridge, with_devices: Path) -> None:
    args = ["run", "after_disk_hotunplug", "vm1", "--xml", str(with_devices), "--device", "sdz"]
    status, _, err = run(*args)
    assert status == 1
    assert "no device of this domain has the MAC, disk target, UUID, key or alias 'sdz'" in err


def test_json_has_each_scripts_result_and_the_diff(bridge: Bridge, trial: Path) -> None:
    import json

    bridge.probe("before_vm_start", "10_probe", tail="sys.stderr.write('probe says hi\\n')")
    bridge.probe("before_vm_start", "20_edit", tail=EDIT + "sys.exit(1)")
    status, out, err = run("run", "before_vm_start", "vm1", "--xml", str(trial), "--json")
    assert (status, err) == (1, "")
    result = json.loads(out)
    assert result["event"] == "before_vm_start" and result["domain"] == "vm1"
    assert result["uuid"] == uuid_of(trial.read_bytes())
    assert result["properties"] == {"label": "web & db", "pincpu": "1-4"}
    probe, edit = result["scripts"]
    assert probe["name"] == "10_probe" and probe["rc"] == 0 and probe["outcome"] == "ok"
    assert probe["stderr"] == "probe says hi" and probe["script"].endswith("/10_probe")
    assert edit["outcome"] == "failed" and edit["rc"] == 1 and edit["status"] == "rc=1"
    assert result["xml_changed"] is True and result["changed_by"] == ["20_edit"]
    assert "\n-  <vcpu>1</vcpu>\n+  <vcpu>4</vcpu>\n" in result["diff"]
    assert result["diff"].startswith("--- vm1.xml (before, normalised)\n")
    assert (result["result"], result["failed"]) == ("failed", ["20_edit"])
    assert result["skipped"] == [] and result["xml_note"] is None


def test_json_without_scripts_says_so(bridge: Bridge, trial: Path) -> None:
    import json

    status, out, _ = run("run", "before_vm_start", "vm1", "--xml", str(trial), "--json")
    assert status == 0
    result = json.loads(out)
    assert (result["result"], result["scripts"], result["diff"]) == ("no script", [], "")
