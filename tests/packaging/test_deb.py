"""The Debian package: built by scripts/build-deb.sh, installed on this machine, used on a
private libvirtd, removed and purged.

dpkg runs in a :class:`PackageWorld`: the package's files really land in this machine's
/usr and its dpkg database, while /etc and /run are private overlays and /etc/libvirt is a
sandbox's, so the maintainer scripts meet the sandbox's libvirtd, never the host's. Every
``libvirt-bridge install`` here names the sandbox's confdir, config and logrotate dir.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from libvirt_bridge import cockpit, fastpath, launcher, service
from libvirt_bridge_lab.sandbox import Sandbox
from testing import packaging
from testing.e2e import Probe, Record, read_records
from testing.packaging import BRIDGE, PYTHON, SITE, PackageWorld

pytestmark = [pytest.mark.libvirt, pytest.mark.packaging]

EVENTS = ("before_vm_start", "after_vm_start", "before_vm_destroy", "after_vm_destroy")
# Run after the record is written: what runs this script, the launcher's Python process.
PARENT = """
parent = {"exe": os.readlink(f"/proc/{os.getppid()}/exe"),
          "cmdline": open(f"/proc/{os.getppid()}/cmdline").read().split("\\0")}
with open(%r, "a") as f:
    f.write(json.dumps(parent) + "\\n")
"""
FOREIGN_HOOK = """#!/bin/sh
# A hook that was there before the bridge.
echo "$1 $2 $3" >> {marker}
"""


class PackagedProbe(Probe):
    """Probes run by the distribution's python3 that also record their parent process."""

    def __init__(self, sandbox: Sandbox, events: tuple[str, ...]) -> None:
        self.parents_path = Path(sandbox.bridge_dir) / "parents.jsonl"
        tail = PARENT % str(self.parents_path)
        super().__init__(sandbox, events, tail=tail, python=PYTHON)

    def parents(self) -> list[Record]:
        return read_records(self.parents_path)


def tree(directory: str) -> dict[str, str]:
    """Every file under ``directory``: its sha256 (a symlink: its target)."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(directory):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            if os.path.islink(path):
                found[path] = "-> " + os.readlink(path)
            elif os.path.isfile(path):
                found[path] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
            else:
                found[path] = "dir"
    return found


def write_config(sandbox: Sandbox) -> None:
    values = {
        "hooks_dirs": [sandbox.hooks_root],
        "state_dir": sandbox.state_dir,
        "log_file": sandbox.log_file,
    }
    os.makedirs(sandbox.state_dir, exist_ok=True)
    Path(sandbox.config_path).write_text(
        "".join(f"{key} = {json.dumps(value)}\n" for key, value in values.items())
    )


def install_bridge(sandbox: Sandbox) -> str:
    """The package's ``libvirt-bridge install`` into the sandbox, from the host."""
    offset = sandbox.daemons.log_size()
    out = packaging.run(
        [
            BRIDGE,
            "install",
            "--confdir",
            sandbox.etc_dir,
            "--config",
            sandbox.config_path,
            "--logrotate-dir",
            sandbox.logrotate_dir,
            "--no-listener",
        ]
    ).stdout
    assert f"sent SIGHUP to libvirtd (pid {sandbox.libvirtd_pid()})" in out, out
    sandbox.daemons.wait_reloaded(offset)
    return out


def test_the_deb_holds_what_the_wheel_holds(deb: Path, tmp_path: Path) -> None:
    """The package's Python files are the wheel's (debian/install-python reads pyproject.toml
    as setuptools does), and its other files are the ones it is meant to ship."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), "."],
        cwd=packaging.REPO,
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("libvirt_bridge-*.whl")
    with zipfile.ZipFile(wheel) as z:
        wheel_files = {name for name in z.namelist() if not name.startswith("libvirt_bridge-")}
    listing = subprocess.run(
        ["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True, check=True
    ).stdout
    contents = subprocess.run(
        ["tar", "-t"], input=listing, capture_output=True, check=True
    ).stdout.decode()
    files = {line[1:] for line in contents.splitlines() if not line.endswith("/")}
    prefix = SITE + "/"
    packaged = {f[len(prefix) :] for f in files if f.startswith(prefix + "libvirt_bridge/")}
    assert packaged == wheel_files
    others = {f for f in files if not f.startswith(prefix)}
    assert {
        BRIDGE,
        "/lib/systemd/system/libvirt-bridge-listener.service",
        "/etc/logrotate.d/libvirt-bridge",
        "/usr/share/man/man8/libvirt-bridge.8.gz",
        "/usr/share/doc/libvirt-bridge/copyright",
    } <= others
    extra = {f for f in others if not f.startswith("/usr/share/doc/libvirt-bridge/")}
    assert extra == {
        BRIDGE,
        "/lib/systemd/system/libvirt-bridge-listener.service",
        "/etc/logrotate.d/libvirt-bridge",
        "/usr/share/man/man8/libvirt-bridge.8.gz",
        "/usr/share/lintian/overrides/libvirt-bridge",
        # Cockpit's Hooks page: a symlink to the package data (docs/cockpit.md).
        "/usr/share/cockpit/libvirt-bridge",
    }
    # The bench (the sandbox, the roots it builds with mmdebstrap, the demo and the lab) is
    # not a host's: the package carries none of it.
    assert [f for f in files if "libvirt_bridge_lab" in f or "/sandbox/" in f] == []
    unpacked = tmp_path / "unpacked"
    subprocess.run(["dpkg-deb", "-x", str(deb), str(unpacked)], check=True)
    assert [p for p in unpacked.rglob("*.py") if b"mmdebstrap" in p.read_bytes()] == []


def test_lintian_is_clean(deb: Path) -> None:
    """No tag but the overridden ones, each justified in debian/libvirt-bridge.lintian-overrides."""
    result = packaging.run(["lintian", "--fail-on", "info,pedantic", "--pedantic", str(deb)])
    tags = [line for line in result.stdout.splitlines() if line[:2] in ("E:", "W:", "I:", "P:")]
    assert tags == [], result.stdout


def test_install_use_remove_purge(deb: Path, world: PackageWorld) -> None:
    sandbox = world.sandbox
    marker = Path(sandbox.bridge_dir) / "foreign.calls"
    foreign = FOREIGN_HOOK.format(marker=marker)
    qemu_hook = Path(sandbox.hooks_dir) / "qemu"
    qemu_hook.write_text(foreign)
    qemu_hook.chmod(0o755)
    before = tree(sandbox.etc_dir)

    # Installing the package changes nothing of libvirt's, and starts nothing (there is
    # no systemd in the world, whether or not one runs on this machine).
    assert world.run(["test", "-e", "/run/systemd/system"], check=False).returncode == 1
    world.run(["dpkg", "--install", str(deb)])
    assert packaging.installed()
    assert tree(sandbox.etc_dir) == before
    default = Path(SITE, "libvirt_bridge", "assets", "libvirt-bridge.toml").read_bytes()
    assert world.upper("/etc/libvirt-bridge.toml").read_bytes() == default
    assert not any("systemd" in path for path in world.own_files()), world.own_files()
    packaged_entry = Path(sandbox.logrotate_dir) / "libvirt-bridge"
    assert packaged_entry.read_text().startswith("# libvirt-bridge logrotate entry: shipped")
    # The unit shipped is the one install would write with the default config.
    rendered = packaging.run(
        [
            PYTHON,
            "-c",
            "from libvirt_bridge import service; "
            "print(service.render_unit('/etc/libvirt-bridge.toml'), end='')",
        ]
    ).stdout
    assert Path("/lib/systemd/system", service.UNIT_NAME).read_text() == rendered
    assert "ExecStart=/usr/bin/libvirt-bridge listen" in rendered

    # libvirt-bridge install, from the package, into the sandbox: the launchers name the
    # distribution's interpreter and the package's directory.
    write_config(sandbox)
    out = install_bridge(sandbox)
    assert f"kept the earlier hook as {qemu_hook}.legacy; it runs first" in out
    # Cockpit's Hooks page is the package's, which install leaves as it is.
    page = Path("/usr/share/cockpit/libvirt-bridge")
    assert os.readlink(page) == cockpit.PACKAGED_TARGET
    assert (page / "manifest.json").is_file() and (page / "hooks.js").is_file()
    assert f"up to date: {page} (shipped by the libvirt-bridge package)" in out
    text = qemu_hook.read_text()
    call = launcher.read_call(text)
    assert call is not None and call.interpreter == PYTHON
    assert call.config_path == sandbox.config_path
    assert f"import_path='{SITE}:" in text and ".venv" not in text

    probe = PackagedProbe(sandbox, EVENTS)
    sandbox.define_guest("g1")
    sandbox.virsh("start", "g1")
    assert probe.events(2) == ["before_vm_start", "after_vm_start"]
    sync_parent = probe.parents()[0]
    assert os.path.realpath(str(sync_parent["exe"])) == os.path.realpath(PYTHON)
    cmdline = sync_parent["cmdline"]
    assert isinstance(cmdline, list) and cmdline[cmdline.index("-c") + 2].startswith(SITE + ":")
    assert "g1 prepare begin" in marker.read_text(), "the kept earlier hook did not run"
    listed = json.loads(
        packaging.run(
            [
                BRIDGE,
                "list",
                "--json",
                "--confdir",
                sandbox.etc_dir,
                "--config",
                sandbox.config_path,
            ]
        ).stdout
    )
    assert set(listed) == set(EVENTS)
    sandbox.virsh("destroy", "g1")
    assert probe.events(2) == ["before_vm_destroy", "after_vm_destroy"]

    # Removing the package uninstalls the bridge from the libvirt the world sees (the
    # sandbox's), with the config its launchers name: the earlier hook is back.
    offset = sandbox.daemons.log_size()
    out = world.run(["dpkg", "--remove", packaging.PACKAGE]).stdout
    hooks = "/etc/libvirt/hooks"
    assert f"restored the earlier hook {hooks}/qemu from {hooks}/qemu.legacy" in out
    assert f"removed {hooks}/daemon" in out
    sandbox.daemons.wait_reloaded(offset)
    assert qemu_hook.read_text() == foreign
    assert not (Path(sandbox.hooks_dir) / "daemon").exists()
    assert not os.path.lexists(f"{qemu_hook}.legacy")
    # The launchers' config was the one uninstall read: its files go too.
    assert not os.path.lexists(fastpath.fastpath_path(sandbox.config_path))
    assert [p.name for p in Path(sandbox.logrotate_dir).iterdir()] == ["libvirt-bridge"]
    assert not Path(SITE, "libvirt_bridge").exists()
    assert packaging.status() == "deinstall ok config-files"
    calls = marker.read_text().count("prepare begin")
    sandbox.virsh("start", "g1")
    assert marker.read_text().count("prepare begin") == calls + 1
    assert probe.events(0) == [], "a script ran after the package was removed"
    sandbox.virsh("destroy", "g1")

    # Purge: the unchanged default config goes, and so do the conffile and dpkg's records.
    world.run(["dpkg", "--purge", packaging.PACKAGE])
    assert packaging.status() == ""
    assert packaging.run(["dpkg", "-L", packaging.PACKAGE], check=False).returncode != 0
    assert packaging.host_leftovers() == []
    assert world.own_files() == []
    assert list(Path(sandbox.logrotate_dir).iterdir()) == []


def test_an_upgrade_updates_the_installed_launchers(deb: Path, world: PackageWorld) -> None:
    sandbox = world.sandbox
    world.run(["dpkg", "--install", str(deb)])
    write_config(sandbox)
    install_bridge(sandbox)
    qemu_hook = Path(sandbox.hooks_dir) / "qemu"
    current = qemu_hook.read_text()
    fast = Path(fastpath.fastpath_path(sandbox.config_path))
    current_fast = fast.read_text()
    # What an earlier version left: a launcher it wrote differently, no fast-path file.
    qemu_hook.write_text(current.replace("\n", "\n# an earlier version\n", 1))
    fast.unlink()

    # dpkg runs postinst "configure <old version>" for an upgrade and a reinstall alike.
    offset = sandbox.daemons.log_size()
    out = world.run(["dpkg", "--install", str(deb)]).stdout
    assert "updated /etc/libvirt/hooks/qemu" in out, out
    assert "up to date: /etc/libvirt/hooks/daemon" in out, out
    assert f"sent SIGHUP to libvirtd (pid {sandbox.libvirtd_pid()})" in out, out
    sandbox.daemons.wait_reloaded(offset)
    # With the config the launchers name (the fast-path file is beside it), not the default.
    assert qemu_hook.read_text() == current
    assert fast.read_text() == current_fast
    probe = PackagedProbe(sandbox, EVENTS[:2])
    sandbox.define_guest("g1")
    sandbox.virsh("start", "g1")
    assert probe.events(2) == ["before_vm_start", "after_vm_start"]
    sandbox.virsh("destroy", "g1")

    # Where no launcher is installed, an upgrade installs none.
    world.run(["dpkg", "--remove", packaging.PACKAGE])
    world.run(["dpkg", "--install", str(deb)])
    out = world.run(["dpkg", "--install", str(deb)]).stdout
    assert "nothing to update: no libvirt-bridge launcher in /etc/libvirt/hooks" in out, out
    assert not (Path(sandbox.hooks_dir) / "qemu").exists()
    world.run(["dpkg", "--purge", packaging.PACKAGE])
    assert packaging.host_leftovers() == []


def test_purge_keeps_a_changed_config(deb: Path, world: PackageWorld) -> None:
    world.run(["dpkg", "--install", str(deb)])
    world.run(["sh", "-c", "echo 'script_timeout = 60' >> /etc/libvirt-bridge.toml"])
    out = world.run(["dpkg", "--purge", packaging.PACKAGE]).stdout
    assert "kept /etc/libvirt-bridge.toml: it is not the default config" in out
    assert world.own_files() == ["/etc/libvirt-bridge.toml"]
    assert world.upper("/etc/libvirt-bridge.toml").read_text().endswith("script_timeout = 60\n")
    assert packaging.host_leftovers() == []
