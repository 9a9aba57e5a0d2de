"""What install and uninstall do for the Debian package: its logrotate entry is the
package's; without --config, install and uninstall keep to the launchers' config; and
``install --if-installed`` (the package's upgrade) updates only an installed bridge."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from libvirt_bridge import config, fastpath, logrotate
from testing.hosts import Host, run


@pytest.fixture
def host(tmp_path: Path) -> Host:
    return Host(tmp_path)


def test_the_packaged_logrotate_entry_is_left_to_the_package(host: Host, tmp_path: Path) -> None:
    # The default log file, whose entry has the package's name.
    cfg = tmp_path / "default-log.toml"
    cfg.write_text(f"hooks_dirs = {json.dumps([str(host.hooks_root)])}\n")
    entry = host.logrotate_dir / "libvirt-bridge"
    entry.write_text(logrotate.render_packaged())
    assert f'"{config.DEFAULTS["log_file"]}" {{' in entry.read_text()
    args = ["--confdir", str(host.confdir), "--config", str(cfg)]
    args += ["--logrotate-dir", str(host.logrotate_dir), "--cockpit-dir", str(host.cockpit_dir)]
    status, out, err = run("install", *args, "--no-listener")
    assert status == 0, err
    assert f"up to date: {entry} (shipped by the libvirt-bridge package)" in out
    assert entry.read_text() == logrotate.render_packaged()
    status, out, err = run("uninstall", *args)
    assert status == 0, err
    assert str(entry) not in out
    assert entry.read_text() == logrotate.render_packaged()
    assert not logrotate.is_ours(str(entry)) and logrotate.is_packaged(str(entry))


def test_an_entry_install_wrote_is_not_the_packages(tmp_path: Path) -> None:
    entry = tmp_path / "entry"
    entry.write_text(logrotate.render("/var/log/x.log"))
    assert logrotate.is_ours(str(entry)) and not logrotate.is_packaged(str(entry))


def test_uninstall_without_config_reads_the_launchers_config(
    host: Host, monkeypatch: pytest.MonkeyPatch
) -> None:
    status, out, err = host.install()
    assert status == 0, err
    fast = Path(fastpath.fastpath_path(str(host.config)))
    entries = list(host.logrotate_dir.iterdir())
    assert fast.exists() and len(entries) == 1
    monkeypatch.delenv(config.ENV_VAR, raising=False)
    args = ["--confdir", str(host.confdir), "--logrotate-dir", str(host.logrotate_dir)]
    args += ["--cockpit-dir", str(host.cockpit_dir)]
    status, out, err = run("uninstall", *args)
    assert status == 0, err
    assert f"the config {host.config};" in out
    assert f"removed {entries[0]}" in out and not entries[0].exists()
    assert f"removed {fast}" in out and not fast.exists()
    assert not (host.hooks / "qemu").exists() and not (host.hooks / "daemon").exists()


def test_uninstall_config_option_wins_over_the_launchers(host: Host, tmp_path: Path) -> None:
    status, _, err = host.install()
    assert status == 0, err
    other = tmp_path / "other.toml"
    args = ["--confdir", str(host.confdir), "--logrotate-dir", str(host.logrotate_dir)]
    args += ["--cockpit-dir", str(host.cockpit_dir)]
    status, out, err = run("uninstall", *args, "--config", str(other))
    assert status == 0, err
    assert f"the config {other};" in out


def test_install_again_without_config_keeps_the_launchers_config(
    host: Host, monkeypatch: pytest.MonkeyPatch
) -> None:
    status, _, err = host.install()
    assert status == 0, err
    launchers = {p.name: p.read_text() for p in host.hooks.iterdir()}
    monkeypatch.delenv(config.ENV_VAR, raising=False)
    args = ["--confdir", str(host.confdir), "--logrotate-dir", str(host.logrotate_dir)]
    args += ["--cockpit-dir", str(host.cockpit_dir)]
    status, out, err = run("install", *args, "--no-listener")
    assert status == 0, err
    assert f"up to date: {host.hooks / 'qemu'}" in out
    assert f"up to date: {host.hooks / 'daemon'}" in out
    assert {p.name: p.read_text() for p in host.hooks.iterdir()} == launchers


def test_if_installed_installs_nothing_where_no_launcher_is(host: Host) -> None:
    before = sorted(p for p in host.root.rglob("*"))
    status, out, err = host.install("--if-installed")
    assert status == 0, err
    assert out == f"nothing to update: no libvirt-bridge launcher in {host.hooks}\n"
    assert sorted(p for p in host.root.rglob("*")) == before


def test_if_installed_updates_what_an_earlier_version_wrote(
    host: Host, monkeypatch: pytest.MonkeyPatch
) -> None:
    status, _, err = host.install()
    assert status == 0, err
    qemu = host.hooks / "qemu"
    current = qemu.read_text()
    qemu.write_text(current.replace("\n", "\n# an earlier version\n", 1))
    fast = Path(fastpath.fastpath_path(str(host.config)))
    fast.unlink()
    monkeypatch.delenv(config.ENV_VAR, raising=False)
    args = ["--confdir", str(host.confdir), "--logrotate-dir", str(host.logrotate_dir)]
    args += ["--cockpit-dir", str(host.cockpit_dir)]
    status, out, err = run("install", *args, "--if-installed", "--no-listener")
    assert status == 0, err
    assert f"updated {qemu}" in out and f"up to date: {host.hooks / 'daemon'}" in out
    assert qemu.read_text() == current
    assert fast.exists()
