"""install and uninstall: launchers, kept foreign hooks, event dirs, default config, SIGHUP."""

from __future__ import annotations

import os
import stat
import time
import tomllib
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import pytest

from libvirt_bridge import (
    cli,
    config,
    confinement,
    daemons,
    fastpath,
    installation,
    launcher,
    logrotate,
    mapping,
    service,
)
from libvirt_bridge.hook import is_launcher
from testing.harness import domain_xml
from testing.hosts import FakeDaemon, Host, namespaces_usable, run, tree


@pytest.fixture
def host(tmp_path: Path) -> Host:
    return Host(tmp_path)


def test_default_config_asset_is_exactly_the_defaults(tmp_path: Path) -> None:
    text = installation.default_config_text()
    assert list(tomllib.loads(text)) == list(config.DEFAULTS)
    path = tmp_path / "c.toml"
    path.write_text(text)
    assert config.parse(str(path)) == config.DEFAULTS
    lines = text.splitlines()
    for key in config.DEFAULTS:
        index = next(i for i, line in enumerate(lines) if line.startswith(f"{key} = "))
        assert lines[index - 1].startswith("#"), f"{key} has no comment"


def test_default_config_is_a_package_asset() -> None:
    assets = resources.files("libvirt_bridge.assets")
    assert assets.joinpath("libvirt-bridge.toml").is_file()
    assert assets.joinpath("install.sh").is_file()


def test_install_into_empty_confdir(host: Host) -> None:
    status, out, err = host.install()
    assert status == 0, err
    for driver in launcher.DRIVERS:
        path = host.hooks / driver
        assert is_launcher(str(path))
        assert stat.S_IMODE(path.stat().st_mode) == 0o755
        assert f"installed {path}\n" in out
        assert not (host.hooks / f"{driver}.legacy").exists()
    for event in mapping.EVENTS:
        assert (host.hooks_root / event).is_dir()
        assert f"created {host.hooks_root / event}\n" in out
    assert f"no running libvirtd/virtqemud uses {host.confdir}" in out
    call = installation.launcher_call(str(host.hooks / "qemu"))
    assert call is not None
    assert (call.config_path, call.legacy) == (str(host.config), "")


def test_installed_launcher_runs_the_scripts(host: Host) -> None:
    host.install()
    host.bridge.probe("before_vm_start")
    result = host.bridge.qemu("vm1", "prepare", "begin", domain_xml())
    assert result.returncode == 0, result.stderr
    assert host.bridge.events() == ["before_vm_start"]


def test_missing_config_gets_the_default_one(tmp_path: Path) -> None:
    confdir = tmp_path / "etc-libvirt"
    confdir.mkdir()
    path = tmp_path / "conf" / "libvirt-bridge.toml"
    logrotate_dir = tmp_path / "logrotate.d"
    logrotate_dir.mkdir()
    args = ["--confdir", str(confdir), "--config", str(path), "--logrotate-dir", str(logrotate_dir)]
    args += ["--cockpit-dir", str(tmp_path / "cockpit")]
    # The default hooks root is /etc/libvirt/hooks/vdsm.d as the daemon sees it: under the
    # confdir. Check on a dry run that nothing would land outside the temp dir.
    status, out, _ = run("install", *args, "--dry-run")
    assert status == 0
    for line in out.splitlines():
        if line.startswith("[dry run] created "):
            assert line.removeprefix("[dry run] created ").startswith(str(tmp_path))
    status, out, err = run("install", *args, "--no-listener")
    assert status == 0, err
    assert f"wrote default config {path}\n" in out
    assert path.read_text() == installation.default_config_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert (confdir / "hooks" / "vdsm.d" / "before_vm_start").is_dir()


def test_existing_config_is_never_modified(host: Host) -> None:
    before = host.config.read_bytes()
    host.install()
    assert host.config.read_bytes() == before


def test_install_twice_changes_nothing(host: Host) -> None:
    host.install()
    before = tree(host.root)
    status, out, _ = host.install()
    assert status == 0
    assert tree(host.root) == before
    assert "created" not in out and "installed" not in out
    assert f"up to date: {host.hooks / 'qemu'}\n" in out
    assert f"up to date: hooks root {host.hooks_root}\n" in out


def test_a_changed_launcher_is_updated_keeping_its_legacy(host: Host) -> None:
    host.foreign("qemu", b"#!/bin/sh\nexit 0\n")
    host.install()
    qemu = host.hooks / "qemu"
    qemu.write_text(qemu.read_text() + "# edited\n")
    status, out, _ = host.install()
    assert status == 0
    assert f"updated {qemu}; it runs the earlier hook {qemu}.legacy first\n" in out
    call = installation.launcher_call(str(qemu))
    assert call is not None and call.legacy == f"{qemu}.legacy"
    assert "# edited" not in qemu.read_text()
    qemu.chmod(0o644)
    assert f"updated {qemu}" in host.install()[1]
    assert stat.S_IMODE(qemu.stat().st_mode) == 0o755


LEGACY = """#!/bin/sh
printf '{{"event": "legacy", "op": "%s"}}\\n' "$2" >> {records}
{body}
"""


def legacy_install(host: Host, body: str) -> tuple[int, str, str]:
    text = LEGACY.format(records=host.bridge.records, body=body)
    host.foreign("qemu", text.encode())
    return host.install()


def test_foreign_hook_is_kept_as_legacy_and_runs_first(host: Host) -> None:
    status, out, _ = legacy_install(host, "cat > /dev/null\nexit 0")
    assert status == 0
    qemu = host.hooks / "qemu"
    assert f"kept the earlier hook as {qemu}.legacy; it runs first\n" in out
    assert is_launcher(str(qemu))
    host.bridge.probe("before_vm_start")
    result = host.bridge.qemu("vm1", "prepare", "begin", domain_xml())
    assert result.returncode == 0, result.stderr
    assert host.bridge.events() == ["legacy", "before_vm_start"]


def test_legacy_failing_at_prepare_refuses_and_no_script_runs(host: Host) -> None:
    legacy_install(host, 'echo "legacy refuses $1" >&2\nexit 1')
    host.bridge.probe("before_vm_start")
    result = host.bridge.qemu("vm1", "prepare", "begin", domain_xml())
    assert result.returncode == 1
    assert b"legacy refuses vm1" in result.stderr
    assert host.bridge.events() == ["legacy"]


def test_legacy_xml_at_restore_reaches_the_scripts_and_libvirt(host: Host) -> None:
    xml = domain_xml(name="vm1")
    changed = xml.replace(b"</domain>", b"<description>from legacy</description></domain>")
    (host.root / "legacy.xml").write_bytes(changed)
    legacy_install(host, f"cat > /dev/null\ncat {host.root / 'legacy.xml'}")
    host.bridge.probe("before_vm_dehibernate")
    result = host.bridge.qemu("vm1", "restore", "begin", xml)
    assert result.returncode == 0, result.stderr
    assert result.stdout == changed
    records = host.bridge.read_records()
    assert [r["event"] for r in records] == ["legacy", "before_vm_dehibernate"]
    assert "from legacy" in str(records[1]["xml"])


def test_non_executable_foreign_hook_is_kept_but_not_run(host: Host) -> None:
    host.foreign("qemu", b"#!/bin/sh\nexit 1\n", mode=0o644)
    status, out, _ = host.install()
    assert status == 0
    assert "not executable, it does not run" in out
    call = installation.launcher_call(str(host.hooks / "qemu"))
    assert call is not None and call.legacy == ""
    result = host.bridge.qemu("vm1", "prepare", "begin", domain_xml())
    assert result.returncode == 0, result.stderr


def test_uninstall_restores_the_foreign_hook_byte_for_byte(host: Host) -> None:
    body = b"#!/bin/sh\n# \x00\xff\xfe\r\n binary-ish \x80\nexit 0\n"
    qemu = host.foreign("qemu", body, mode=0o750)
    inode = qemu.stat().st_ino
    daemon = host.foreign("daemon", b"#!/bin/sh\nexit 0\n", mode=0o700)
    host.install()
    assert is_launcher(str(qemu)) and is_launcher(str(daemon))
    host.bridge.script("before_vm_start", "50_x", "#!/bin/sh\nexit 0\n")
    status, out, _ = host.cmd("uninstall")
    assert status == 0
    assert qemu.read_bytes() == body
    assert stat.S_IMODE(qemu.stat().st_mode) == 0o750
    assert qemu.stat().st_ino == inode
    assert daemon.read_bytes() == b"#!/bin/sh\nexit 0\n"
    assert stat.S_IMODE(daemon.stat().st_mode) == 0o700
    assert not (host.hooks / "qemu.legacy").exists()
    assert f"restored the earlier hook {qemu} from {qemu}.legacy\n" in out
    # The hooks root, its scripts and the config stay, and uninstall says so.
    assert (host.hooks_root / "before_vm_start" / "50_x").exists()
    assert host.config.exists()
    assert f"left alone: the hooks roots ({host.hooks_root})" in out


def test_uninstall_removes_only_our_launchers(host: Host) -> None:
    host.install()
    status, out, _ = host.cmd("uninstall")
    assert status == 0
    assert sorted(os.listdir(host.hooks)) == []
    assert f"removed {host.hooks / 'qemu'}\n" in out
    before = tree(host.root)
    status, out, _ = host.cmd("uninstall")
    assert status == 0
    assert f"not installed: {host.hooks / 'qemu'}\n" in out
    assert tree(host.root) == before
    foreign = host.foreign("qemu", b"#!/bin/sh\n")
    status, out, _ = host.cmd("uninstall")
    assert f"left {foreign} alone: it is not a libvirt-bridge launcher\n" in out
    assert foreign.read_bytes() == b"#!/bin/sh\n"


def test_install_writes_the_fast_path_file_and_uninstall_removes_it(host: Host) -> None:
    fast = Path(fastpath.fastpath_path(str(host.config)))
    status, out, _ = host.install()
    assert status == 0 and f"wrote {fast} " in out
    assert fastpath.is_current(config.load(str(host.config)))
    # No script in any qemu event: libvirt's calls are answered without Python.
    assert "lb_nothing_to_run" in fast.read_text()
    _, again, _ = host.install()
    assert f"wrote {fast}" not in again
    status, out, _ = host.cmd("uninstall")
    assert status == 0 and f"removed {fast}\n" in out
    assert not fast.exists()


def test_dry_run_changes_nothing(host: Host, tmp_path: Path) -> None:
    host.foreign("qemu", b"#!/bin/sh\nexit 0\n")
    before = tree(tmp_path)
    status, out, _ = host.install("--dry-run")
    assert status == 0
    assert f"[dry run] kept the earlier hook as {host.hooks / 'qemu'}.legacy" in out
    assert f"[dry run] installed {host.hooks / 'qemu'}\n" in out
    assert f"[dry run] created {host.hooks_root / 'before_vm_start'}\n" in out
    assert "dry run: nothing was changed" in out
    assert tree(tmp_path) == before
    absent = tmp_path / "absent" / "libvirt-bridge.toml"
    status, out, _ = run(
        "install", *host.command_args("install"), "--config", str(absent), "--dry-run"
    )
    assert status == 0
    assert f"[dry run] wrote default config {absent}\n" in out
    assert tree(tmp_path) == before
    host.install()
    before = tree(tmp_path)
    status, out, _ = host.cmd("uninstall", "--dry-run")
    assert status == 0
    assert f"[dry run] restored the earlier hook {host.hooks / 'qemu'}" in out
    assert tree(tmp_path) == before


def test_foreign_hook_with_existing_legacy_is_refused(host: Host) -> None:
    host.foreign("qemu", b"#!/bin/sh\necho new\n")
    (host.hooks / "qemu.legacy").write_bytes(b"#!/bin/sh\necho old\n")
    before = tree(host.root)
    status, out, err = host.install()
    assert status == 1
    assert f"{host.hooks / 'qemu'} is not a libvirt-bridge launcher, and" in err
    assert "exists already" in err
    assert out == ""
    assert tree(host.root) == before


def test_invalid_existing_config_is_refused(host: Host) -> None:
    host.config.write_text("hooks_dirs = 3\n")
    before = tree(host.root)
    status, _, err = host.install()
    assert status == 1
    assert f"config {host.config}: hooks_dirs must be a list of strings" in err
    assert tree(host.root) == before


def test_missing_confdir_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    for command in ("install", "uninstall"):
        status, _, err = run(command, "--confdir", str(missing), "--config", str(tmp_path / "c"))
        assert status == 1
        assert f"confdir {missing} does not exist" in err
    assert not missing.exists()


def test_apparmor_host_warns_about_roots_outside_etc_libvirt_hooks(
    host: Host, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    profiles = tmp_path / "profiles"
    monkeypatch.setattr(confinement, "APPARMOR_PROFILES", str(profiles))
    profiles.write_text("libvirtd (complain)\n/usr/sbin/dnsmasq (enforce)\n")
    assert "AppArmor" not in host.install()[2]
    profiles.write_text("virt-aa-helper (enforce)\nvirtqemud (enforce)\n")
    _, _, err = host.install()
    assert f"warning: hooks root {host.hooks_root} is outside /etc/libvirt/hooks" in err
    assert confinement.outside_apparmor_dir("/opt/hooks")
    assert not confinement.outside_apparmor_dir("/etc/libvirt/hooks/vdsm.d")
    assert confinement.outside_apparmor_dir("/etc/libvirt/hooksx")


def test_host_path_maps_etc_libvirt_into_the_confdir() -> None:
    assert installation.host_path("/etc/libvirt/hooks/vdsm.d", "/s/etc") == "/s/etc/hooks/vdsm.d"
    assert installation.host_path("/etc/libvirt", "/s/etc") == "/s/etc"
    assert installation.host_path("/etc/libvirtx/a", "/s/etc") == "/etc/libvirtx/a"
    assert installation.host_path("/srv/hooks/", "/s/etc") == "/srv/hooks"
    assert installation.host_path("/etc/libvirt/hooks", "/etc/libvirt") == "/etc/libvirt/hooks"


def test_a_process_uses_the_confdir_its_root_sees_as_etc_libvirt(tmp_path: Path) -> None:
    if os.path.isdir("/etc/libvirt"):
        assert daemons.uses_confdir(os.getpid(), "/etc/libvirt")
    assert not daemons.uses_confdir(os.getpid(), str(tmp_path))
    assert daemons.daemons_using(str(tmp_path)) == []


def test_sighup_goes_only_to_the_daemon_using_the_confdir(host: Host, tmp_path: Path) -> None:
    reason = namespaces_usable()
    if reason:
        pytest.skip(reason)
    sandboxed = FakeDaemon(tmp_path / "sandboxed", host.confdir)
    on_host = FakeDaemon(tmp_path / "on-host", None)
    try:
        assert daemons.daemons_using(str(host.confdir)) == [
            daemons.Daemon("libvirtd", sandboxed.pid)
        ]
        status, out, _ = host.install()
        assert status == 0
        assert f"sent SIGHUP to libvirtd (pid {sandboxed.pid})" in out
        wait_for(lambda: sandboxed.sighups() == 1)
        # It ran the daemon hook, which recorded it: it has picked the launchers up, and a
        # second install has no reason to signal it again.
        record = host.bridge.state / "daemon" / "libvirtd"
        wait_for(lambda: record.exists() and f"pid={sandboxed.pid}" in record.read_text())
        status, out, _ = host.install()
        assert f"libvirtd (pid {sandboxed.pid}) already uses the launchers" in out
        status, out, _ = host.cmd("uninstall")
        assert f"sent SIGHUP to libvirtd (pid {sandboxed.pid})" in out
        wait_for(lambda: sandboxed.sighups() == 2)
        assert on_host.sighups() == 0
    finally:
        sandboxed.stop()
        on_host.stop()


def wait_for(condition: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.mark.parametrize("command", ["install", "uninstall", "status", "list"])
def test_help_has_a_description_and_an_example(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert f"usage: libvirt-bridge {command}" in out
    assert "example" in out
    assert "--config" in out


def test_install_starts_the_listener_and_uninstall_stops_it(tmp_path: Path) -> None:
    host = Host(tmp_path)
    host.bridge.write_config(libvirt_uri="test:///default")
    state = str(host.bridge.state)
    status, out, err = host.install(listener=True)
    assert status == 0, err
    pid = service.running_pid(state)
    assert pid is not None
    assert f"started the listener in the background (no systemd here; pid file {state}" in out
    status, out, _ = host.install(listener=True)
    assert f"the listener runs already (pid {pid}" in out
    status, out, err = host.cmd("uninstall")
    assert status == 0, err
    assert f"stopped the listener (pid {pid})" in out
    assert service.running_pid(state) is None


def test_systemd_unit_names_this_installation_and_the_config() -> None:
    unit = service.render_unit("/etc/x bridge.toml")
    assert 'Environment="LIBVIRT_BRIDGE_CONFIG=/etc/x bridge.toml"\n' in unit
    exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    assert exec_start.endswith(" listen")
    assert os.path.exists(exec_start.removeprefix("ExecStart=").split()[0])
    assert "Restart=on-failure" in unit and "Type=notify" in unit


def keep_launcher_as_legacy(host: Host, driver: str = "qemu", earlier: str = "") -> Path:
    """A launcher of ours at hooks/<driver>.legacy (naming ``earlier``, else itself)."""
    host.hooks.mkdir(exist_ok=True)
    legacy = host.hooks / f"{driver}.legacy"
    launcher.write(str(legacy), driver, str(host.config), earlier or str(legacy))
    return legacy


def test_install_removes_a_launcher_kept_as_legacy(host: Host) -> None:
    host.install()
    legacy = keep_launcher_as_legacy(host)
    qemu = host.hooks / "qemu"
    launcher.write(str(qemu), "qemu", str(host.config), str(legacy))
    status, out, err = host.install()
    assert status == 0, err
    assert f"removed {legacy}: a libvirt-bridge launcher, not an earlier hook" in out
    assert f"updated {qemu}\n" in out
    assert not legacy.exists()
    call = installation.launcher_call(str(qemu))
    assert call is not None and call.legacy == ""
    host.bridge.probe("before_vm_start")
    assert host.bridge.qemu("vm1", "prepare", "begin", domain_xml()).returncode == 0
    assert host.bridge.events() == ["before_vm_start"]
    again = host.install()[1]
    assert f"up to date: {qemu}\n" in again and "removed" not in again


def test_install_puts_back_the_foreign_hook_a_kept_launcher_ran(host: Host) -> None:
    original = LEGACY.format(records=host.bridge.records, body="cat > /dev/null")
    foreign = host.hooks / "qemu.original"
    host.hooks.mkdir()
    foreign.write_text(original)
    foreign.chmod(0o755)
    legacy = keep_launcher_as_legacy(host, earlier=str(foreign))
    status, out, err = host.install()
    assert status == 0, err
    assert f"with the earlier hook it ran first, {foreign}" in out
    assert legacy.read_text() == original and not foreign.exists()
    assert f"installed {host.hooks / 'qemu'}; it runs the earlier hook {legacy} first\n" in out
    host.bridge.probe("before_vm_start")
    assert host.bridge.qemu("vm1", "prepare", "begin", domain_xml()).returncode == 0
    assert host.bridge.events() == ["legacy", "before_vm_start"]


def test_a_foreign_hook_is_kept_where_a_launcher_was_kept_before(host: Host) -> None:
    legacy = keep_launcher_as_legacy(host)
    qemu = host.foreign("qemu", b"#!/bin/sh\nexit 0\n")
    status, out, err = host.install()
    assert status == 0, err
    assert f"removed {legacy}: a libvirt-bridge launcher" in out
    assert f"kept the earlier hook as {legacy}; it runs first\n" in out
    assert legacy.read_bytes() == b"#!/bin/sh\nexit 0\n" and is_launcher(str(qemu))


def test_uninstall_never_restores_a_launcher(host: Host) -> None:
    host.install()
    legacy = keep_launcher_as_legacy(host)
    status, out, err = host.cmd("uninstall")
    assert status == 0, err
    assert f"removed {legacy}: a libvirt-bridge launcher, not an earlier hook\n" in out
    assert f"removed {host.hooks / 'qemu'}\n" in out
    assert "restored" not in out
    assert sorted(os.listdir(host.hooks)) == []


def test_uninstall_restores_the_foreign_hook_a_kept_launcher_ran(host: Host) -> None:
    host.install()
    foreign = host.hooks / "qemu.original"
    foreign.write_bytes(b"#!/bin/sh\nexit 0\n")
    foreign.chmod(0o700)
    legacy = keep_launcher_as_legacy(host, earlier=str(foreign))
    status, out, err = host.cmd("uninstall")
    assert status == 0, err
    qemu = host.hooks / "qemu"
    assert f"restored the earlier hook {qemu} from {foreign}" in out
    assert qemu.read_bytes() == b"#!/bin/sh\nexit 0\n"
    assert stat.S_IMODE(qemu.stat().st_mode) == 0o700
    assert not legacy.exists() and not foreign.exists()


def test_install_writes_the_logrotate_entry_and_uninstall_removes_it(host: Host) -> None:
    status, out, err = host.install()
    assert status == 0, err
    (entry,) = host.logrotate_dir.iterdir()
    assert f"wrote {entry} (logrotate rotates {host.bridge.log} by renaming it" in out
    assert f'"{host.bridge.log}" {{' in entry.read_text()
    assert stat.S_IMODE(entry.stat().st_mode) == 0o644
    assert f"up to date: {entry}\n" in host.install()[1]
    status, out, _ = host.cmd("uninstall")
    assert status == 0 and f"removed {entry}\n" in out
    assert list(host.logrotate_dir.iterdir()) == []


def test_a_foreign_logrotate_entry_of_the_same_name_is_left_alone(host: Host) -> None:
    entry = Path(logrotate.entry_path(str(host.bridge.log), str(host.logrotate_dir)))
    entry.write_text("# mine\n")
    assert f"left {entry} alone: it was not written by libvirt-bridge" in host.install()[1]
    host.cmd("uninstall")
    assert entry.read_text() == "# mine\n"


def test_without_logrotate_install_says_nothing_rotates_the_log(host: Host) -> None:
    host.logrotate_dir.rmdir()
    status, out, _ = host.install()
    assert status == 0
    assert f"no {host.logrotate_dir} (logrotate is not installed): nothing rotates" in out
    assert not host.logrotate_dir.exists()
