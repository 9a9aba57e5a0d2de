"""The earlier hook kept as ``.legacy``: a launcher of ours kept there never runs the bridge again.

A self-naming copy used to recurse without end (hundreds of processes in seconds while
libvirt held the domain's lock); an older launcher kept there ran every script twice. The
harness runs each call in its own process group, killed whole if it does not end, so that
a regression fails the test instead of filling the machine.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from libvirt_bridge import hook, launcher
from testing.harness import Bridge, domain_xml

ENDS_WITHIN = 30.0


def contained_call(
    bridge: Bridge, op: str, subop: str, xml: bytes
) -> subprocess.CompletedProcess[bytes]:
    """The qemu launcher called as libvirt calls it; killed whole if it does not end."""
    return bridge.call("qemu", "vm1", op, subop, "-", xml, timeout=ENDS_WITHIN)


def keep_as_legacy(bridge: Bridge, text: str) -> Path:
    """``text`` kept as qemu.legacy, and the qemu launcher rewritten to run it first."""
    legacy = bridge.launchers / "qemu.legacy"
    legacy.write_text(text)
    legacy.chmod(0o755)
    launcher.write(str(bridge.launchers / "qemu"), "qemu", str(bridge.config), str(legacy))
    return legacy


def test_a_copy_of_the_launcher_kept_as_legacy_ends_at_once(bridge: Bridge) -> None:
    bridge.probe("before_vm_start")
    qemu = bridge.launchers / "qemu"
    # The copy names itself as its earlier hook: run, it would call itself without end.
    launcher.write(str(qemu), "qemu", str(bridge.config), f"{qemu}.legacy")
    legacy = keep_as_legacy(bridge, qemu.read_text())
    result = contained_call(bridge, "prepare", "begin", domain_xml())
    assert result.returncode == 0, result.stderr
    assert bridge.events() == ["before_vm_start"]
    assert (
        f"the earlier hook {legacy} is itself a libvirt-bridge launcher: not run"
        in bridge.log_text()
    )


def test_an_older_launcher_kept_as_legacy_runs_no_script_twice(bridge: Bridge) -> None:
    for event in ("before_vm_start", "after_vm_destroy"):
        bridge.probe(event)
    keep_as_legacy(bridge, launcher.render("qemu", str(bridge.config)))
    xml = domain_xml()
    assert contained_call(bridge, "prepare", "begin", xml).returncode == 0
    assert contained_call(bridge, "stopped", "end", xml).returncode == 0
    assert contained_call(bridge, "release", "end", xml).returncode == 0
    bridge.wait_async()
    assert sorted(bridge.events()) == ["after_vm_destroy", "before_vm_start"]


def test_a_foreign_hook_that_calls_a_launcher_gets_nothing_run(bridge: Bridge) -> None:
    """A wrapper kept as the earlier hook that execs a launcher: the environment mark."""
    bridge.probe("before_vm_start")
    other = bridge.root / "qemu.backup"
    other.write_text(launcher.render("qemu", str(bridge.config)))
    other.chmod(0o755)
    legacy = keep_as_legacy(bridge, f'#!/bin/sh\nexec {other} "$@"\n')
    result = contained_call(bridge, "prepare", "begin", domain_xml())
    assert result.returncode == 0, result.stderr
    assert bridge.events() == ["before_vm_start"]
    assert f"called as the earlier hook {legacy} of a libvirt-bridge launcher" in (
        bridge.log_text()
    )


def test_a_foreign_legacy_still_runs_first_and_does_not_see_the_mark_after(
    bridge: Bridge,
) -> None:
    bridge.probe("before_vm_start")
    seen = bridge.root / "seen"
    keep_as_legacy(bridge, f'#!/bin/sh\necho "${{{hook.RUNNING_LEGACY}}}" > {seen}\n')
    assert contained_call(bridge, "prepare", "begin", domain_xml()).returncode == 0
    assert seen.read_text() == f"{bridge.launchers / 'qemu.legacy'}\n"
    (record,) = bridge.read_records()
    env = record["env"]
    assert isinstance(env, dict) and hook.RUNNING_LEGACY not in env


def test_the_mark_is_written_into_the_launcher() -> None:
    text = launcher.render("qemu", "/etc/libvirt-bridge.toml")
    assert f'[ -z "${{{hook.RUNNING_LEGACY}-}}" ]' in text
    assert not re.search("@[A-Z_]+@", text), "a placeholder of launcher.in is left"
