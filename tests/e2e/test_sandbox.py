"""The sandbox itself: private daemons, guests, migration, restart, teardown."""

from __future__ import annotations

import glob
import os
import socket
import stat
import subprocess
import sys
import textwrap
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest

from libvirt_bridge import config
from libvirt_bridge.daemons import process_name
from libvirt_bridge.hook import is_launcher
from libvirt_bridge_lab.sandbox import (
    OVIRT_VM_NS,
    Sandbox,
    SandboxError,
    kvm_usable,
    mounts_mentioning,
    process_alive,
)
from libvirt_bridge_lab.sandbox.cells import Cell
from testing.e2e import wait_until

pytestmark = pytest.mark.libvirt

HOST_LIBVIRT_DIRS = (
    "/etc/libvirt",
    "/run/libvirt",
    "/run/mount",  # libmount's utab: a sandbox's mounts must not be recorded there
    "/var/lib/libvirt",
    "/var/log/libvirt",
    "/var/cache/libvirt",
)


def host_libvirt_state() -> dict[str, object]:
    """What a sandbox must not change on the host: libvirt's dirs, utab, cgroups."""
    state: dict[str, object] = {}
    for top in HOST_LIBVIRT_DIRS:
        if not os.path.lexists(top):
            state[top] = None
            continue
        for dirpath, dirnames, filenames in os.walk(top):
            for name in dirnames + filenames:
                if name.startswith("libvirt-bridge"):
                    continue  # the bridge's default log: not the sandbox's business
                st = os.lstat(os.path.join(dirpath, name))
                state[os.path.join(dirpath, name)] = (st.st_mode, st.st_size, st.st_mtime_ns)
    state["cgroups"] = sorted(glob.glob("/sys/fs/cgroup/*/machine*"))
    return state


def qemu_pids(sandbox: Sandbox) -> list[int]:
    return [pid for pid in sandbox.pids() if process_name(pid).startswith("qemu-system")]


def test_guest_runs_and_host_libvirt_is_untouched(
    make_sandbox: Callable[[str], Sandbox],
) -> None:
    before = host_libvirt_state()
    sandbox = make_sandbox("lbsb1")
    guest_uuid = sandbox.define_guest("vm1")
    assert sandbox.virsh("domuuid", "vm1").stdout.strip() == guest_uuid
    sandbox.virsh("start", "vm1")
    assert sandbox.domstate("vm1") == "running"
    assert len(qemu_pids(sandbox)) == 1
    # The daemon writes its state into the sandbox's directories only.
    assert os.path.exists(os.path.join(sandbox.run_dir, "qemu", "vm1.xml"))
    assert os.path.exists(os.path.join(sandbox.log_dir, "qemu", "vm1.log"))
    sandbox.virsh("destroy", "vm1")
    assert sandbox.domstate("vm1") == "shut off"
    assert qemu_pids(sandbox) == []
    assert host_libvirt_state() == before


def test_guest_xml_carries_metadata_and_description(sandbox: Sandbox) -> None:
    metadata = (
        f'<ovirt-vm:vm xmlns:ovirt-vm="{OVIRT_VM_NS}"><ovirt-vm:custom>'
        "<ovirt-vm:pincpu>0</ovirt-vm:pincpu></ovirt-vm:custom></ovirt-vm:vm>"
    )
    sandbox.define_guest("vm2", metadata=metadata, description="a <small> & tidy guest")
    xml = sandbox.virsh("dumpxml", "vm2").stdout
    assert "<ovirt-vm:pincpu>0</ovirt-vm:pincpu>" in xml
    assert "<description>a &lt;small&gt; &amp; tidy guest</description>" in xml
    assert f"<domain type='{'kvm' if kvm_usable() else 'qemu'}'" in xml
    assert "<graphics" not in xml and "<disk" not in xml and "<interface" not in xml


def test_own_hostname_and_host_uuid(sandbox: Sandbox) -> None:
    assert sandbox.run_in_namespace(["hostname"]).stdout.strip() == "lbsb1"
    assert socket.gethostname() != "lbsb1"
    capabilities = sandbox.virsh("capabilities").stdout
    assert f"<uuid>{sandbox.host_uuid}</uuid>" in capabilities
    # Its /etc/libvirt is the copy, without the host's hooks.
    assert sandbox.run_in_namespace(["ls", "-A", "/etc/libvirt/hooks"]).stdout == ""
    listing = sandbox.run_in_namespace(["ls", "/run/libvirt"]).stdout.split()
    assert sandbox.cell.socket_name in listing and f"{sandbox.cell.main_daemon}.pid" in listing


def test_reload_makes_libvirt_see_a_new_hook(sandbox: Sandbox, tmp_path: Path) -> None:
    calls = tmp_path / "calls"
    hook = Path(sandbox.hooks_dir) / "qemu"
    hook.write_text(f'#!/bin/sh\necho "$*" >> {calls}\n')
    hook.chmod(0o755)
    sandbox.define_guest("vm3")
    sandbox.reload()
    sandbox.virsh("start", "vm3")
    assert calls.read_text().splitlines() == [
        "vm3 prepare begin -",
        "vm3 start begin -",
        "vm3 started begin -",
    ]
    # Hook calls are in the daemon's log, with their output.
    log = Path(sandbox.daemon_log).read_text()
    assert "Calling hook /etc/libvirt/hooks/qemu id=vm3 op=prepare" in log


def test_install_bridge_writes_config_and_launchers(sandbox: Sandbox) -> None:
    sandbox.install_bridge({"script_timeout": 5})
    with open(sandbox.config_path, "rb") as f:
        values = tomllib.load(f)
    assert values == {
        "hooks_dirs": [sandbox.hooks_root],
        "state_dir": sandbox.state_dir,
        "log_file": sandbox.log_file,
        "properties_dir": sandbox.properties_dir,
        "script_timeout": 5,
    }
    assert config.parse(sandbox.config_path)["hooks_dirs"] == [sandbox.hooks_root]
    assert sandbox.hooks_root == os.path.join(sandbox.root, "etc/libvirt/hooks/vdsm.d")
    assert os.path.isdir(sandbox.hooks_root)
    for driver in ("qemu", "daemon"):
        path = os.path.join(sandbox.hooks_dir, driver)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o755
        assert is_launcher(path)
        assert repr(sandbox.config_path) in Path(path).read_text()
    script = sandbox.add_hook_script("before_vm_start", "50_hello", "#!/bin/sh\nexit 0\n")
    assert script == os.path.join(sandbox.hooks_root, "before_vm_start", "50_hello")
    st = os.stat(script)
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o755, 0, 0)
    assert Path(script).read_text() == "#!/bin/sh\nexit 0\n"


def test_listener_runs_inside_the_sandbox(sandbox: Sandbox) -> None:
    sandbox.install_bridge()
    pid = sandbox.start_listener()
    assert sandbox.listener_pid() == pid
    assert sandbox.start_listener() == pid  # already running
    assert pid in sandbox.pids()  # so close() stops it with the daemons
    assert "listener: connected to qemu:///system" in Path(sandbox.log_file).read_text()


def test_restart_daemon_keeps_guest_running(sandbox: Sandbox) -> None:
    sandbox.define_guest("vm4")
    sandbox.virsh("start", "vm4")
    qemu = qemu_pids(sandbox)
    old = sandbox.daemon_pid()
    sandbox.restart_daemon()
    new = sandbox.daemon_pid()
    assert new != old and not process_alive(old)
    assert sandbox.domstate("vm4") == "running"
    assert qemu_pids(sandbox) == qemu
    assert sandbox.run_in_namespace(["hostname"]).stdout.strip() == "lbsb1"


def test_live_migration_there_and_back(sandbox_pair: tuple[Sandbox, Sandbox]) -> None:
    first, second = sandbox_pair
    assert first.host_uuid != second.host_uuid
    guest_uuid = first.define_guest("mig")
    first.virsh("start", "mig")

    result = first.migrate("mig", second)
    assert result.returncode == 0, result.stderr
    assert second.domstate("mig") == "running"
    assert second.virsh("domuuid", "mig").stdout.strip() == guest_uuid
    assert first.running_guests() == []
    assert first.domstate("mig") == "shut off"  # still defined there, no longer running
    assert qemu_pids(first) == [] and len(qemu_pids(second)) == 1

    result = second.migrate("mig", first)
    assert result.returncode == 0, result.stderr
    assert first.domstate("mig") == "running"
    assert second.running_guests() == []
    assert "mig" not in second.virsh("list", "--all", "--name").stdout.split()
    assert len(qemu_pids(first)) == 1 and qemu_pids(second) == []


def test_close_kills_everything_and_is_idempotent(tmp_path: Path, libvirt_cell: Cell) -> None:
    sandbox = Sandbox(tmp_path / "lbsb5", "lbsb5", cell=libvirt_cell)
    try:
        sandbox.start()
        sandbox.define_guest("vm5")
        sandbox.virsh("start", "vm5")
        recorded = [sandbox.daemon_pid(), sandbox.virtlogd_pid(), *qemu_pids(sandbox)]
        assert len(recorded) == 3
        assert sorted(recorded) == sandbox.pids()
    finally:
        sandbox.close()
    assert [pid for pid in recorded if process_alive(pid)] == []
    assert mounts_mentioning(sandbox.root) == []
    sandbox.close()
    with pytest.raises(SandboxError):
        sandbox.start()


def daemons_of(root: str) -> set[int]:
    """The running daemons (libvirtd, virtqemud, virtlogd) whose mounts show the sandbox
    ``root``."""
    found = set()
    for entry in os.listdir("/proc"):
        name = process_name(int(entry)) if entry.isdigit() else ""
        if name not in ("libvirtd", "virtqemud", "virtlogd"):
            continue
        try:
            with open(f"/proc/{entry}/mountinfo") as f:
                mine = root in f.read()
        except OSError:
            continue
        if mine and process_alive(int(entry)):
            found.add(int(entry))
    return found


def test_failed_start_cleans_up(tmp_path: Path, libvirt_cell: Cell) -> None:
    sandbox = Sandbox(tmp_path / "lbsb6", "lbsb6", cell=libvirt_cell)
    with open(os.path.join(sandbox.etc_dir, libvirt_cell.conf_name), "a") as f:
        f.write("max_clients = \n")
    with pytest.raises(SandboxError) as failure:
        sandbox.start()
    # The daemon's own complaint is shown.
    assert f"{libvirt_cell.main_daemon}.out" in str(failure.value)
    print(failure.value)
    assert daemons_of(sandbox.root) == set()  # virtlogd had started; it was killed
    assert sandbox.pids() == []
    sandbox.close()
    assert mounts_mentioning(sandbox.root) == []


def test_sandbox_dies_with_its_owner(tmp_path: Path, libvirt_cell: Cell) -> None:
    root = tmp_path / "lbsb7"
    code = textwrap.dedent(
        f"""
        import os, signal
        from libvirt_bridge_lab.sandbox import Sandbox
        sandbox = Sandbox({str(root)!r}, "lbsb7", cell={libvirt_cell.name!r}).start()
        print(*sandbox.pids(), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    owner = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert owner.returncode == -9, owner.stderr
    pids = [int(pid) for pid in owner.stdout.split()]
    # The daemon and virtlogd, and maybe a child of the daemon's for a moment (QEMU probed).
    assert len(pids) >= 2, pids

    def alive() -> list[int]:
        return [pid for pid in pids if process_alive(pid)]

    wait_until(
        lambda: alive() == [], lambda: f"the sandbox's processes gone (alive: {alive()})", 20
    )
    assert mounts_mentioning(str(root)) == []
