"""The verbs on libvirt's test driver: the scripts' environment and a refused start.

Each verb runs as ``python -m libvirt_bridge VERB --connect test://NODE.xml`` from a
caller's environment with variables of its own; the test driver reads the node file
afresh in every process and has no hooks, so every event recorded here was fired by the
verb itself. ``Bridge.call`` stands for libvirt's hook call, for comparison.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from libvirt_bridge.verbs import RUN_DIR_VARIABLE, hook_process_environment
from testing.harness import LIBVIRT_ENV, Bridge

UUID_OFF = "11111111-2222-3333-4444-555555555555"
UUID_ON = "66666666-7777-8888-9999-000000000000"
UUID_PAUSED = "abababab-7777-8888-9999-000000000000"
DOMAIN = """
  <domain type='test' xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>
    <name>{name}</name>
    <uuid>{uuid}</uuid>
    <metadata><ovirt-vm:vm xmlns:ovirt-vm="http://ovirt.org/vm/1.0"><ovirt-vm:custom>
      <ovirt-vm:pincpu>0</ovirt-vm:pincpu></ovirt-vm:custom></ovirt-vm:vm></metadata>
    <memory>65536</memory>
    <os><type>hvm</type></os>
    <test:runstate>{state}</test:runstate>
  </domain>
"""
# The caller's shell: what libvirt's hook environment has, and more that it has not.
CALLER_ENV = {**LIBVIRT_ENV, "FOO": "bar", "LC_ALL": "de_DE.UTF-8", "PYTHONPATH": "/caller"}
VETO = "#!/bin/sh\necho 'not enough hugepages for g1' >&2\nexit 1\n"


class Verbs:
    """A bridge, and a libvirt test node with g1 (shut off), g2 (running), g3 (paused)."""

    def __init__(self, root: Path) -> None:
        self.bridge = Bridge(root)
        node = root / "node.xml"
        off = DOMAIN.format(name="g1", uuid=UUID_OFF, state=5)
        on = DOMAIN.format(name="g2", uuid=UUID_ON, state=1)
        paused = DOMAIN.format(name="g3", uuid=UUID_PAUSED, state=3)
        node.write_text(f"<node>{off}{on}{paused}</node>\n")
        self.uri = f"test://{node}"

    def verb(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = dict(CALLER_ENV, LIBVIRT_BRIDGE_CONFIG=str(self.bridge.config))
        argv = [sys.executable, "-m", "libvirt_bridge", args[0], "--connect", self.uri, *args[1:]]
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)

    def envs(self) -> dict[str, dict[str, str]]:
        """Each recorded event's environment, without the per-run XML file's path."""
        envs: dict[str, dict[str, str]] = {}
        for record in self.bridge.read_records():
            env = dict(record["env"])  # type: ignore[call-overload]
            del env["_hook_domxml"]
            envs[str(record["event"])] = env
        return envs


@pytest.fixture
def verbs(tmp_path: Path) -> Verbs:
    return Verbs(tmp_path)


def hook_xml(name: str, uuid: str) -> bytes:
    return DOMAIN.format(name=name, uuid=uuid, state=1).encode()


def test_a_verbs_scripts_get_libvirts_hook_environment_not_the_callers(verbs: Verbs) -> None:
    verbs.bridge.probe("before_vm_pause")
    verbs.bridge.probe("before_vm_destroy")
    result = verbs.verb("pause", "g2")
    assert result.returncode == 0, result.stderr
    verbs.bridge.qemu("g2", "stopped", "end", hook_xml("g2", UUID_ON))
    envs = verbs.envs()
    under_verb, under_hook = envs["before_vm_pause"], envs["before_vm_destroy"]
    assert "FOO" not in under_verb and "LIBVIRT_BRIDGE_CONFIG" not in under_verb
    assert under_verb["LC_ALL"] == "C"
    assert (under_verb["PATH"], under_verb["HOME"]) == (LIBVIRT_ENV["PATH"], LIBVIRT_ENV["HOME"])
    assert (under_verb["vmId"], under_verb["pincpu"]) == (UUID_ON, "0")
    assert not under_verb["PYTHONPATH"].startswith("/caller")
    assert under_verb == under_hook


def test_start_scripts_also_get_the_run_dir_for_launch_flags(verbs: Verbs) -> None:
    verbs.bridge.probe("before_vm_start")
    # The hook first: the verb leaves a marker that makes the next prepare fire nothing.
    verbs.bridge.qemu("g1", "prepare", "begin", hook_xml("g1", UUID_OFF))
    assert verbs.verb("start", "g1").returncode == 0
    (under_hook, under_verb) = (r["env"] for r in verbs.bridge.read_records())
    assert isinstance(under_verb, dict) and isinstance(under_hook, dict)
    run_dir = under_verb.pop(RUN_DIR_VARIABLE)
    assert run_dir == str(verbs.bridge.state / "vdsm-run")
    for env in (under_verb, under_hook):
        del env["_hook_domxml"]
    assert under_verb == under_hook


def test_a_refused_start_fires_before_then_after_vm_destroy_with_the_same_xml(
    verbs: Verbs,
) -> None:
    bridge = verbs.bridge
    bridge.probe("before_vm_start")
    bridge.script("before_vm_start", "60_veto", VETO)
    # Slow enough that a queued after_vm_destroy overtaking it would show.
    bridge.probe("before_vm_destroy", tail="import time; time.sleep(0.5)")
    bridge.probe("after_vm_destroy")
    result = verbs.verb("start", "g1")
    assert result.returncode == 1
    assert "not enough hugepages for g1" in result.stderr
    assert "before_vm_start refused to start 'g1'" in result.stderr
    assert "started" not in result.stdout
    records = bridge.wait_async(3)
    assert [r["event"] for r in records] == [
        "before_vm_start",
        "before_vm_destroy",
        "after_vm_destroy",
    ]
    start, *destroys = records
    for record in destroys:
        assert record["xml"] == start["xml"]
        env = record["env"]
        assert isinstance(env, dict)
        assert (env["vmId"], env["pincpu"], env["LC_ALL"]) == (UUID_OFF, "0", "C")
        assert "FOO" not in env and RUN_DIR_VARIABLE not in env
    # The after_* event ran detached, as the hook's async events do.
    assert destroys[1]["ppid"] != destroys[0]["ppid"]
    assert "before_vm_destroy" in bridge.log_text() and "after_vm_destroy" in bridge.log_text()


def test_a_start_that_is_not_refused_fires_no_destroy_event(verbs: Verbs) -> None:
    bridge = verbs.bridge
    for event in ("before_vm_start", "before_vm_destroy", "after_vm_destroy"):
        bridge.probe(event)
    result = verbs.verb("start", "g1")
    assert result.returncode == 0, result.stderr
    assert "started 'g1'" in result.stdout
    assert [r["event"] for r in bridge.wait_async()] == ["before_vm_start"]


def test_a_per_device_event_that_fires_for_no_device_says_so(verbs: Verbs) -> None:
    # g1 has no device with custom properties: before_device_create has nothing to run for.
    verbs.bridge.probe("before_device_create")
    verbs.bridge.probe("before_vm_start")
    result = verbs.verb("start", "g1")
    assert result.returncode == 0, result.stderr
    assert (
        "before_device_create: no device it fires for has custom properties; "
        "its 1 script(s) did not run\n"
    ) in result.stdout
    assert "before_vm_start: 1 script(s) ran\n" in result.stdout
    assert [r["event"] for r in verbs.bridge.wait_async()] == ["before_vm_start"]


@pytest.mark.parametrize(
    ("verb", "domain", "problem"),
    [
        ("pause", "g1", "is not running"),
        ("pause", "g3", "is already paused"),
        ("resume", "g1", "is not running"),
        ("resume", "g2", "is already running"),
        ("save", "g1", "is not running"),
        ("destroy", "g1", "is not running"),
    ],
)
def test_a_verb_libvirt_would_refuse_runs_no_script(
    verbs: Verbs, verb: str, domain: str, problem: str
) -> None:
    for event in ("before_vm_pause", "before_vm_cont", "before_vm_hibernate", "before_vm_destroy"):
        verbs.bridge.probe(event)
    result = verbs.verb(verb, domain)
    assert result.returncode == 1
    assert f"domain {domain!r} {problem}: cannot {verb} it (no script ran)" in result.stderr
    assert verbs.bridge.wait_async() == []


def test_a_refused_pause_fires_nothing_else(verbs: Verbs) -> None:
    bridge = verbs.bridge
    bridge.script("before_vm_pause", "60_veto", VETO)
    for event in ("before_vm_destroy", "after_vm_destroy"):
        bridge.probe(event)
    result = verbs.verb("pause", "g2")
    assert result.returncode == 1
    assert "not enough hugepages for g1" in result.stderr
    assert "before_vm_pause refused to pause 'g2'; nothing was done" in result.stderr
    assert bridge.wait_async() == []


def test_the_hook_environment_lasts_only_while_scripts_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FOO", "bar")
    monkeypatch.setenv("HOME", "/home/caller")
    before = dict(os.environ)
    with pytest.raises(RuntimeError), hook_process_environment({"EXTRA": "1"}):
        assert "FOO" not in os.environ
        assert (os.environ["LC_ALL"], os.environ["HOME"]) == ("C", "/home/caller")
        assert os.environ["EXTRA"] == "1"
        # runner.script_environment adds the compat PYTHONPATH when the scripts run.
        assert "PYTHONPATH" not in os.environ
        raise RuntimeError
    assert dict(os.environ) == before


@pytest.mark.parametrize(
    ("verb", "name", "served", "not_served"),
    [
        ("start", "g1", "before_vm_start", "after_vm_start"),
        ("destroy", "g2", "after_vm_hibernate", "after_vm_start"),
    ],
)
def test_a_verb_leaves_a_marker_only_for_a_hook_call_that_will_take_it(
    verbs: Verbs, verb: str, name: str, served: str, not_served: str
) -> None:
    markers = verbs.bridge.state / "markers"
    # No script in any qemu event: the launcher answers libvirt without the hook.
    assert verbs.verb(verb, name).returncode == 0
    assert not markers.exists()
    # A script only where the call that takes the marker has no work: still none.
    verbs.bridge.probe(not_served)
    assert verbs.verb(verb, name).returncode == 0
    assert not markers.exists()
    # One in an event that call serves (mapping.served_events): it runs the hook (the
    # test driver makes no hook call: the marker stays).
    verbs.bridge.probe(served)
    assert verbs.verb(verb, name).returncode == 0
    kind = (markers / (UUID_OFF if verb == "start" else UUID_ON)).read_text().split()[0]
    assert kind == f"verb-{verb}"
