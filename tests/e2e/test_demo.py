"""The README's first command: ``libvirt-bridge demo`` runs to its end and says so."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from libvirt_bridge import mapping
from libvirt_bridge_lab.sandbox import mounts_mentioning
from libvirt_bridge_lab.sandbox.cells import CELLS, Cell
from testing.harness import live_processes_mentioning

pytestmark = pytest.mark.libvirt

# Events plain virsh fires that the demo's guest cannot: it has no NUMA nodes nor memory
# slots, and its OS-less guest never refuses an unplug.
NOT_IN_THE_DEMO = ("after_memory_hotplug", "after_nic_hotunplug_fail")
# What the demo's actions fire; the verbs' before_* events need the verbs, not virsh.
FIRED_BY_VIRSH = tuple(
    row.event
    for row in mapping.HOOK_TABLE
    if row.driver in ("qemu", "daemon", "listener") and row.event not in NOT_IN_THE_DEMO
)


def demo(*args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "libvirt_bridge", "demo", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=600)


@pytest.fixture
def short_dir() -> Iterator[str]:
    # libvirt's socket path must fit in 107 bytes: pytest's tmp_path is too deep.
    path = tempfile.mkdtemp(prefix="lbdemo-", dir="/tmp")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_demo_shows_every_event_virsh_fires_and_leaves_nothing(
    short_dir: str, runnable_cell: Cell
) -> None:
    result = demo("--workdir", short_dir, "--libvirt", runnable_cell.name)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert f"private {runnable_cell.main_daemon} daemons ({runnable_cell})" in result.stdout
    missing = [event for event in FIRED_BY_VIRSH if event not in result.stdout]
    assert missing == [], result.stdout
    assert "every expected VDSM event fired" in result.stdout
    # A header, and on each line the libvirt call behind the VDSM event.
    assert "    host     mode   VDSM event" in result.stdout
    lines = result.stdout.splitlines()
    starts = [line for line in lines if " before_vm_start " in line]
    assert starts and all(line.endswith("qemu prepare begin (fresh)") for line in starts), starts
    pauses = [line for line in lines if " after_vm_pause " in line]
    assert pauses and all(line.endswith("event SUSPENDED/PAUSED") for line in pauses), pauses
    assert live_processes_mentioning((short_dir.encode(),)) == set()
    assert mounts_mentioning(short_dir) == []
    assert os.listdir(short_dir) == []


def test_demo_refuses_a_workdir_that_is_not_a_directory(tmp_path: Path) -> None:
    nowhere = str(tmp_path / "nowhere")
    result = demo("--workdir", nowhere)
    assert result.returncode == 2
    assert (
        result.stderr == f"libvirt-bridge demo: error: --workdir {nowhere!r} is not a directory\n"
    )


def test_demo_refuses_an_unknown_libvirt_and_names_the_known_ones() -> None:
    result = demo("--libvirt", "12.0-modular")
    assert result.returncode == 2
    assert result.stderr == (
        "libvirt-bridge demo: error: --libvirt: no such libvirt cell '12.0-modular' "
        f"(known: {', '.join(CELLS)})\n"
    )


def test_demo_help_names_every_libvirt_it_runs() -> None:
    result = demo("--help")
    assert result.returncode == 0
    help_text = " ".join(result.stdout.split())
    assert [cell for cell in CELLS if cell not in help_text] == []


@pytest.mark.usefixtures("libvirt_host")
def test_demo_says_why_a_workdir_is_too_deep(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60)
    deep.mkdir()
    result = demo("--workdir", str(deep))
    assert result.returncode == 1
    assert result.stderr.startswith("libvirt-bridge demo: error: sandbox root ")
    assert "exceeds 107 bytes" in result.stderr and "Traceback" not in result.stderr
    assert os.listdir(deep) == []
