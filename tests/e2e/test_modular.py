"""Modular daemons: virtqemud alone runs the qemu driver, and the bridge knows it.

On a modular host every daemon (virtqemud, virtnetworkd, virtstoraged, ...) calls the
``daemon`` hook; only the one that runs the qemu driver may fire before_vdsm_start and
after_vdsm_stop. ``install`` must SIGHUP virtqemud, ``status`` must recognise it, and the
listener must reach it. These tests run on the modular cells only; where one needs
another modular daemon, the sandbox starts ``virtnetworkd`` beside virtqemud.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from libvirt_bridge.daemons import process_name
from libvirt_bridge_lab.sandbox import Sandbox
from libvirt_bridge_lab.sandbox.cells import MODULAR
from testing.e2e import ListenedProbe, Probe, listened

pytestmark = [pytest.mark.libvirt, pytest.mark.libvirt_modes(MODULAR)]

DAEMON_EVENTS = ("before_vdsm_start", "after_vdsm_stop")


def daemon_log_since(sandbox: Sandbox, offset: int) -> str:
    with open(sandbox.daemon_log, "rb") as f:
        f.seek(offset)
        return f.read().decode("utf-8", "replace")


def daemon_record(sandbox: Sandbox, name: str) -> str | None:
    """What the bridge's daemon hook last recorded for daemon ``name`` (None: nothing)."""
    path = Path(sandbox.state_dir, "daemon", name)
    return path.read_text() if path.exists() else None


def test_virtqemud_runs_the_qemu_driver_alone(sandbox: Sandbox) -> None:
    names = sorted(process_name(pid) for pid in sandbox.pids())
    assert names == ["virtlogd", "virtqemud"]
    sockets = os.listdir(sandbox.run_dir)
    assert "virtqemud-sock" in sockets and "libvirt-sock" not in sockets
    version = sandbox.virsh("version", "--daemon").stdout
    assert re.search(r"Running against daemon: 11\.3\.\d+", version), version
    sandbox.define_guest("g1")
    sandbox.virsh("start", "g1")
    assert sandbox.domstate("g1") == "running"


def test_install_sends_sighup_to_virtqemud(sandbox: Sandbox) -> None:
    pid = sandbox.daemon_pid()
    network = sandbox.start_other_daemon("virtnetworkd")
    offset = sandbox.daemons.log_size()
    sandbox.install_bridge()
    output = Path(sandbox.bridge.install_output).read_text()
    assert f"sent SIGHUP to virtqemud (pid {pid})" in output, output
    assert "sent SIGHUP to libvirtd" not in output
    # Not to virtnetworkd: its driver runs no guest, the qemu hook is none of its business.
    assert "virtnetworkd" not in output
    assert "op=reload" not in Path(sandbox.log_dir, "virtnetworkd.log").read_text()
    assert sandbox.other_daemon_pid("virtnetworkd") == network
    # virtqemud looked for hook files again, found the daemon launcher and called it ...
    log = daemon_log_since(sandbox, offset)
    assert "Calling hook /etc/libvirt/hooks/daemon id=- op=reload" in log, log[-2000:]
    # ... and the bridge recorded that call as virtqemud's, by the same (not a new) process.
    assert sandbox.daemon_pid() == pid
    assert daemon_record(sandbox, "virtqemud") == f"pid={pid}\nop=reload\n"
    assert os.listdir(os.path.join(sandbox.state_dir, "daemon")) == ["virtqemud"]


def test_status_recognises_virtqemud(sandbox: Sandbox) -> None:
    sandbox.install_bridge()
    pid = sandbox.daemon_pid()
    argv = [*sandbox.bridge.command(), "status", "--confdir", "/etc/libvirt"]
    result = sandbox.run_in_namespace([*argv, "--config", sandbox.config_path], check=False)
    assert f"virtqemud (pid {pid}) has looked for hooks since the launchers were written" in (
        result.stdout
    ), result.stdout + result.stderr
    assert "libvirtd" not in re.sub(r"libvirtd/virtqemud", "", result.stdout)


def test_only_virtqemud_fires_the_daemon_events(sandbox: Sandbox) -> None:
    sandbox.install_bridge()
    probe = Probe(sandbox, DAEMON_EVENTS)
    # Another modular daemon calls the daemon hook too, at its start and its stop ...
    sandbox.start_other_daemon("virtnetworkd")
    sandbox.stop_other_daemon("virtnetworkd")
    sandbox.start_other_daemon("virtnetworkd")
    log = Path(sandbox.log_dir, "virtnetworkd.log").read_text()
    for op in ("start", "shutdown"):
        assert f"Calling hook /etc/libvirt/hooks/daemon id=- op={op}" in log, log[-2000:]
    # ... and fires nothing: the bridge saw who called.
    assert probe.settled() == []
    assert "called by 'virtnetworkd', not by a qemu daemon; no event" in probe.log()
    assert daemon_record(sandbox, "virtnetworkd") is None
    # virtqemud's own stop and start fire both events, once each.
    old = sandbox.daemon_pid()
    sandbox.restart_daemon()
    new = sandbox.daemon_pid()
    # after_vdsm_stop is async: its runner may finish after the new daemon's start hook.
    assert sorted(probe.events(2)) == ["after_vdsm_stop", "before_vdsm_start"]
    assert len(probe.settled()) == 2
    assert new != old
    assert daemon_record(sandbox, "virtqemud") == f"pid={new}\nop=start\n"


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        match = re.fullmatch(r"socket:\[(\d+)\]", target)
        if match:
            inodes.add(match.group(1))
    return inodes


def _accepted_by(inodes: set[str]) -> list[tuple[str, str]]:
    """(socket path, ss's process column) of the server ends of the connections whose client
    ends are ``inodes`` (``ss -xnp``: the kernel's view, whatever the namespaces)."""
    out = subprocess.run(
        [shutil.which("ss") or "ss", "-xnp"], capture_output=True, text=True, check=True
    ).stdout
    found = []
    for line in out.splitlines():
        fields = line.split()
        # Netid State Recv-Q Send-Q Local-Address Port Peer-Address Port Process
        if len(fields) >= 9 and fields[7] in inodes and fields[4] != "*":
            found.append((fields[4], fields[8]))
    return found


def test_listener_connects_to_virtqemud(make_sandbox: Callable[[str], Sandbox]) -> None:
    sandbox = make_sandbox("lbsb1")
    probe = listened(sandbox, ListenedProbe.SENTINEL_EVENTS)
    listener = sandbox.listener_pid()
    assert "listener: connected to qemu:///system" in probe.log()
    # Its connection is one virtqemud accepted, on its read-only socket: the listener only
    # watches (there is no libvirt-sock).
    connections = _accepted_by(_socket_inodes(listener))
    accepted = [(path, users.split(",fd=")[0]) for path, users in connections]
    pid = sandbox.daemon_pid()
    assert accepted == [("/run/libvirt/virtqemud-sock-ro", f'users:(("virtqemud",pid={pid}')]
    uuid = sandbox.define_guest("g1")
    sandbox.virsh("start", "g1")
    sandbox.virsh("suspend", "g1")
    records = probe.new(1)
    assert [(r["event"], r["vmId"]) for r in records] == [("after_vm_pause", uuid)]
