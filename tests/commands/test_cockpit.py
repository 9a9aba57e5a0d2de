"""install, uninstall and status with Cockpit's Hooks page (COCKPIT_DIR a temp dir)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from libvirt_bridge import cockpit, service
from testing.hosts import Host


@pytest.fixture
def host(tmp_path: Path) -> Host:
    host = Host(tmp_path)
    host.cockpit_dir.mkdir()  # Cockpit is installed
    return host


def test_the_page_files_are_in_the_source_tree_and_named_in_the_package_data() -> None:
    source = cockpit.page_dir()
    assert source is not None
    for name in (cockpit.MANIFEST, *cockpit.PAGE_FILES):
        assert os.path.isfile(os.path.join(source, name)), name
    manifest = cockpit.read_manifest(source)
    assert manifest is not None
    assert manifest["name"] == cockpit.PACKAGE_NAME
    assert manifest["menu"] == {
        "index": {
            "label": "Hooks",
            "order": 45,
            "keywords": [
                {"matches": ["hooks", "vdsm", "libvirt-bridge", "custom properties", "ovirt"]}
            ],
        }
    }
    # The Debian package ships the page as a symlink to the package data (its .links).
    links = (Path(__file__).resolve().parents[2] / "debian" / "libvirt-bridge.links").read_text()
    assert "usr/lib/python3/dist-packages/libvirt_bridge/cockpit_page usr/share/cockpit/" in links


def test_install_links_the_page_and_names_this_installation(host: Host) -> None:
    status, out, err = host.install()
    assert status == 0, err
    page = host.cockpit_dir / "libvirt-bridge"
    assert f"installed {page} (the Hooks page of Cockpit, for this installation)" in out
    source = cockpit.page_dir()
    assert source is not None
    for name in cockpit.PAGE_FILES:
        assert os.readlink(page / name) == os.path.join(source, name)
    manifest = json.loads((page / "manifest.json").read_text())
    assert manifest["menu"]["index"]["label"] == "Hooks"
    assert manifest["libvirt-bridge"] == {
        "command": service.bridge_command(),
        "options": ["--config", str(host.config), "--confdir", str(host.confdir)],
    }
    status, out, err = host.install()
    assert status == 0, err
    assert f"up to date: {page}\n" in out

    status, out, _ = host.cmd("status")
    assert f"ok: Cockpit's Hooks page is installed ({page})" in out

    status, out, err = host.cmd("uninstall")
    assert status == 0, err
    assert f"removed {page} (the Hooks page of Cockpit)" in out
    assert not page.exists()
    assert host.cockpit_dir.is_dir()


def test_without_cockpit_nothing_is_written_and_status_says_nothing(tmp_path: Path) -> None:
    host = Host(tmp_path)
    status, out, err = host.install()
    assert status == 0, err
    assert f"no {host.cockpit_dir}: no Cockpit on this host, so no Hooks page for it" in out
    assert not host.cockpit_dir.exists()
    status, out, _ = host.cmd("status")
    assert "Cockpit" not in out


def test_a_foreign_page_and_the_packaged_one_are_left_alone(host: Host) -> None:
    page = host.cockpit_dir / "libvirt-bridge"
    page.mkdir()
    (page / "manifest.json").write_text('{"menu": {}}\n')
    status, out, err = host.install()
    assert status == 0, err
    assert f"left {page} alone: it was not written by libvirt-bridge" in out
    assert host.cmd("uninstall")[0] == 0
    assert (page / "manifest.json").read_text() == '{"menu": {}}\n'
    status, out, _ = host.cmd("status")
    assert f"note: {page} is not libvirt-bridge's Hooks page; install leaves it alone" in out

    (page / "manifest.json").unlink()
    page.rmdir()
    page.symlink_to(cockpit.PACKAGED_TARGET)
    status, out, err = host.install()
    assert status == 0, err
    assert f"up to date: {page} (shipped by the libvirt-bridge package)" in out
    assert host.cmd("uninstall")[0] == 0
    assert os.readlink(page) == cockpit.PACKAGED_TARGET


def test_status_notes_a_missing_page_and_reports_a_broken_one(host: Host, tmp_path: Path) -> None:
    assert host.install()[0] == 0
    page = host.cockpit_dir / "libvirt-bridge"
    os.unlink(page / "hooks.js")
    status, out, _ = host.cmd("status")
    assert status == 1
    assert f"PROBLEM: Cockpit's Hooks page {page} names files that are gone\n  fix: " in out
    assert host.cmd("uninstall")[0] == 0
    status, out, _ = host.cmd("status")
    assert "note: Cockpit is installed and its Hooks page is not: libvirt-bridge install" in out


def test_status_finds_the_page_where_the_cockpit_running_it_reads_packages(
    host: Host, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Cockpit's bridge reads packages from $XDG_DATA_DIRS/cockpit and passes that on.
    data_dir = tmp_path / "share"
    other = data_dir / "cockpit"
    other.mkdir(parents=True)
    assert host.install("--cockpit-dir", str(other))[0] == 0
    monkeypatch.setenv("XDG_DATA_DIRS", f"{data_dir}:/nonexistent")
    _, out, _ = host.cmd("status")
    assert f"ok: Cockpit's Hooks page is installed ({other / 'libvirt-bridge'})" in out
