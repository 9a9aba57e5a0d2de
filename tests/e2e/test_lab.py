"""``libvirt-bridge lab``: a private libvirt to try hooks on, kept across commands until down."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from libvirt_bridge_lab import lab as labmod
from testing.e2e import lab_probe
from testing.harness import live_processes_mentioning

from .conftest import require_libvirt_host

pytestmark = pytest.mark.libvirt


def bridge(*argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``libvirt-bridge ARGV`` as its own process, as an operator runs it."""
    return subprocess.run(
        [sys.executable, "-m", "libvirt_bridge", *argv],
        capture_output=True,
        text=True,
        timeout=360,
        env=dict(os.environ, **env),
    )


def virsh(uri: str, *argv: str) -> str:
    result = subprocess.run(["virsh", "-c", uri, *argv], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_a_lab_stays_until_down_and_fires_hooks_under_plain_virsh(tmp_path: Path) -> None:
    require_libvirt_host()
    directory = tmp_path / "lab"
    result = bridge("lab", "up", "--dir", str(directory))
    assert result.returncode == 0, result.stderr
    lab = labmod.read_lab(str(directory))
    assert lab is not None
    try:
        # The command has exited; the lab has not.
        assert labmod.keeper_alive(lab.keeper_pid, str(directory))
        assert f"lab started in {directory}" in result.stdout
        assert f"virsh -c '{lab.uri}'" in result.stdout
        assert f"hooks:    {lab.hooks_root}/<event>/<script>" in result.stdout
        assert f"config:   {lab.config_path}" in result.stdout
        assert virsh(lab.uri, "domstate", labmod.GUEST).strip() == "shut off"

        # A hook author's first try: a script, then plain virsh.
        probe = lab_probe(lab, tmp_path / "records.jsonl", ("before_vm_start", "after_vm_pause"))
        virsh(lab.uri, "start", labmod.GUEST)
        virsh(lab.uri, "suspend", labmod.GUEST)
        uuid = virsh(lab.uri, "domuuid", labmod.GUEST).strip()
        # after_vm_pause comes from the listener, a moment after virsh returns.
        fired = probe.at_least(2, timeout=20)
        assert [(r["event"], r["vmId"]) for r in fired] == [
            ("before_vm_start", uuid),
            ("after_vm_pause", uuid),
        ]

        # The bridge's commands reach the lab through its config, from the host.
        tried = bridge("run", "before_vm_start", labmod.GUEST, "--config", lab.config_path)
        assert tried.returncode == 0, tried.stderr
        assert "result: all 1 script(s) succeeded" in tried.stdout

        status = bridge("lab", "status", "--dir", str(directory))
        assert status.returncode == 0, status.stderr
        assert f"domain:   {labmod.GUEST} paused" in status.stdout
        assert "listener: pid " in status.stdout

        again = bridge("lab", "up", "--dir", str(directory))
        assert again.returncode == 0 and f"lab runs already in {directory}" in again.stdout
        assert labmod.read_lab(str(directory)) == lab
    finally:
        down = bridge("lab", "down", "--dir", str(directory))
    assert down.returncode == 0, down.stderr
    assert f"lab in {directory} stopped" in down.stdout
    assert not directory.exists()
    assert not labmod.keeper_alive(lab.keeper_pid, str(directory))
    assert live_processes_mentioning((os.fsencode(directory),)) == set()
    gone = bridge("lab", "status", "--dir", str(directory))
    assert gone.returncode == 1 and f"no lab runs in {directory}" in gone.stdout


def test_up_refuses_a_directory_that_holds_something_else(tmp_path: Path) -> None:
    directory = tmp_path / "lab"
    directory.mkdir()
    (directory / "notes.txt").write_text("mine\n")
    result = bridge("lab", "up", "--dir", str(directory))
    assert result.returncode == 1
    assert f"{directory} exists and holds no running lab" in result.stderr
    down = bridge("lab", "down", "--dir", str(directory))
    assert down.returncode == 1 and "is not a lab's directory" in down.stderr
    assert (directory / "notes.txt").read_text() == "mine\n"
