"""Soak: many start/pause/resume/save/restore/destroy cycles leave nothing behind.

One guest goes through CYCLES cycles on a real libvirtd with a probe script in every
event and the listener running. Each cycle must fire every event exactly once; at the
end the state dir holds only the listener's own files and the domains' known states, no
process of the bridge is left but the listener and its drainer, and the listener's open
descriptors and memory stay flat once it has warmed up.

``.ci/run`` runs a short soak (``--soak-cycles``' default); a developer runs a long one:

    .venv/bin/pytest -m soak --soak-cycles 300 -s

With ``-s`` the figures are printed at the end.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from libvirt_bridge import history
from libvirt_bridge.daemons import process_name
from libvirt_bridge_lab.sandbox import Sandbox
from testing.e2e import GUEST_CYCLE, probed, wait_until

pytestmark = [pytest.mark.libvirt, pytest.mark.soak]

# What one cycle fires, each exactly once: the hook's events and the listener's.
CYCLE_EVENTS = Counter(GUEST_CYCLE)
# The listener's growth allowed from the end of the warm-up (a fifth of the cycles) to
# the end: no descriptor, and a little memory for the allocator's own slack.
FD_GROWTH = 0
RSS_GROWTH_KIB = 2048

DAEMONS = ("libvirtd", "virtlogd")


def listener_figures(pid: int) -> tuple[int, int]:
    """(open descriptors, RSS in KiB) of process ``pid``."""
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    with open(f"/proc/{pid}/status") as f:
        rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return fds, rss


def state_files(state_dir: str) -> list[str]:
    return sorted(
        os.path.relpath(os.path.join(directory, name), state_dir)
        for directory, _, names in os.walk(state_dir)
        for name in names
    )


def parent_of(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return 0  # gone meanwhile


def drainer_of(sandbox: Sandbox, listener: int) -> int:
    """The listener's drainer: its one child (the scripts are the drainer's children)."""
    [child] = [pid for pid in sandbox.pids() if parent_of(pid) == listener]
    with open(f"/proc/{child}/cmdline", "rb") as f:
        assert b"libvirt_bridge.drainer" in f.read()
    return child


def process_names(sandbox: Sandbox) -> list[str]:
    """The sandbox's processes: a daemon by its name, any other by its pid."""
    names = {pid: process_name(pid) for pid in sandbox.pids()}
    return [name if name in DAEMONS else str(pid) for pid, name in names.items() if name]


def test_cycles_fire_each_event_once_and_leave_nothing(
    make_sandbox: Callable[[str], Sandbox], tmp_path: Path, soak_cycles: int
) -> None:
    sandbox = make_sandbox("lbsb1")
    probe = probed(sandbox, listener=True)
    listener = sandbox.listener_pid()
    uuid = sandbox.define_guest("g1")
    image = str(tmp_path / "g1.save")
    per_cycle = sum(CYCLE_EVENTS.values())
    warm_up = max(1, soak_cycles // 5)
    figures: dict[str, tuple[int, int]] = {"start": listener_figures(listener)}
    started = time.monotonic()
    for cycle in range(soak_cycles):
        sandbox.virsh("start", "g1")
        sandbox.virsh("suspend", "g1")
        # The listener fires after_vm_pause once it sees the pause; resuming before that
        # is a pause it may rightly never report.
        probe.at_least(cycle * per_cycle + 3)
        sandbox.virsh("resume", "g1")
        probe.at_least(cycle * per_cycle + 4)
        sandbox.virsh("save", "g1", image)
        sandbox.virsh("restore", image)
        sandbox.virsh("destroy", "g1")
        records = probe.at_least((cycle + 1) * per_cycle)
        fired = Counter(str(r["event"]) for r in records[cycle * per_cycle :])
        assert fired == CYCLE_EVENTS, f"cycle {cycle}: {fired - CYCLE_EVENTS} extra, " + (
            f"{CYCLE_EVENTS - fired} missing"
        )
        if cycle + 1 == warm_up:
            figures["warm"] = listener_figures(listener)
    elapsed = time.monotonic() - started
    os.unlink(image)
    # No hook runner, script or guest is left: the daemons, the listener and its drainer.
    expected = sorted([*DAEMONS, str(listener), str(drainer_of(sandbox, listener))])
    wait_until(
        lambda: sorted(process_names(sandbox)) == expected,
        lambda: f"only {expected} left (left: {process_names(sandbox)})",
    )
    # Nothing late: no event fired twice.
    assert len(probe.settled()) == soak_cycles * per_cycle
    figures["end"] = listener_figures(listener)
    # What may stay, each bounded: the listener's pid and status files, its known state
    # of each domain, the record of each daemon that looked for hooks, one queue lock per
    # domain (and the daemon's), the inbox's lock, the history of runs (history_size KiB,
    # in two files). Anything else is residue.
    kept = state_files(sandbox.state_dir)
    bounded = {
        "listener.pid",
        "listener.status",
        f"listener/{uuid}",
        "daemon/libvirtd",
        f"queue/{uuid}.lock",
        "queue/daemon.lock",
        "inbox.lock",
        "history/runs.jsonl",
        "history/runs.jsonl.1",
    }
    assert set(kept) <= bounded, f"files left in the state dir: {set(kept) - bounded}"
    # One record per script run, none lost, none twice.
    runs = [r for r in history.read(sandbox.state_dir) if r["domain"] == "g1"]
    assert len(runs) == soak_cycles * per_cycle
    fds_warm, rss_warm = figures["warm"]
    fds_end, rss_end = figures["end"]
    print(
        f"\nsoak: {soak_cycles} cycles of {per_cycle} events in {elapsed:.0f} s "
        f"({elapsed / soak_cycles:.2f} s a cycle); listener fds {figures['start'][0]} -> "
        f"{fds_warm} (after {warm_up} cycles) -> {fds_end}; RSS {figures['start'][1]} -> "
        f"{rss_warm} -> {rss_end} KiB; state dir {state_files(sandbox.state_dir)}; "
        f"guest {uuid}"
    )
    assert fds_end - fds_warm <= FD_GROWTH
    assert rss_end - rss_warm <= RSS_GROWTH_KIB
