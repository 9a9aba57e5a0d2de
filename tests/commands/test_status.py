"""status: each problem is reported with its fix (exit 1); a clean install exits 0."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from libvirt_bridge import confinement, launcher, logrotate, service
from testing.hosts import FakeDaemon, Host, namespaces_usable, run
from testing.waits import wait_until


@pytest.fixture
def host(tmp_path: Path) -> Iterator[Host]:
    host = Host(tmp_path)
    # The listener connects to the test driver, in its own process: never the host's libvirt.
    host.bridge.write_config(libvirt_uri="test:///default")
    status, _, err = host.install(listener=True)
    assert status == 0, err
    host.bridge.script("before_vm_start", "50_ok", "#!/bin/sh\nexit 0\n")
    wait_until(
        lambda: (service.read_status(str(host.bridge.state)) or "").startswith("connected"),
        "the listener connected",
        10,
    )
    yield host
    service.stop_background(str(host.bridge.state))


def status_report(host: Host, exit_status: int) -> str:
    """What ``libvirt-bridge status`` printed, once it exited with ``exit_status``."""
    status, out, _ = host.cmd("status")
    assert status == exit_status, out
    return out


def test_listener_that_does_not_run_is_a_problem(host: Host) -> None:
    assert service.stop_background(str(host.bridge.state))
    out = status_report(host, 1)
    assert "PROBLEM: the listener is not running" in out
    assert "fix: libvirt-bridge install" in out
    assert host.cmd("uninstall")[0] == 0


def test_an_install_without_listener_is_a_choice_not_a_problem(tmp_path: Path) -> None:
    host = Host(tmp_path)
    host.bridge.write_config(libvirt_uri="test:///default")
    status, out, err = host.install()  # --no-listener
    assert status == 0, err
    marker = service.no_listener_marker(str(host.config))
    assert f"wrote {marker} (status takes the missing listener for this choice)" in out
    out = status_report(host, 0)
    assert "note: no listener: the bridge was installed without one (install --no-listener)" in out
    assert "PROBLEM" not in out
    # Installed with the listener later, its absence is a problem again.
    status, out, err = host.install(listener=True)
    assert status == 0, err
    assert f"removed {marker} (the listener is installed again)" in out
    service.stop_background(str(host.bridge.state))
    assert "PROBLEM: the listener is not running" in status_report(host, 1)
    assert host.cmd("uninstall")[0] == 0


def test_clean_install_is_well(host: Host) -> None:
    out = status_report(host, 0)
    assert out.endswith("all is well\n")
    assert f"ok: {host.hooks / 'qemu'} is the libvirt-bridge launcher\n" in out
    assert f"ok: config {host.config} is valid\n" in out
    assert f"ok: hooks root {host.hooks_root}: every script would run\n" in out
    # No daemon in the test: status says so, and that is not a problem.
    assert f"note: no running libvirtd/virtqemud uses {host.confdir}; hooks take effect" in out
    assert "PROBLEM" not in out
    assert "ok: the listener runs (pid " in out
    assert "ok: the listener is connected test:///default" in out


def test_status_file_of_an_earlier_listener_is_not_trusted(host: Host) -> None:
    # A listener restarted: the running one has not written yet, and what is there says
    # "connected" for a pid that is gone.
    state = str(host.bridge.state)
    pid = service.running_pid(state)
    service.write_status(state, f"connected test:///default pid={pid + 100000}")
    out = status_report(host, 1)
    assert (
        f"PROBLEM: the listener (pid {pid}) has not said whether it is connected to "
        f"test:///default; {service.status_file(state)} is an earlier listener's\n"
    ) in out
    assert "ok: the listener is connected" not in out
    service.write_status(state, f"connected test:///default pid={pid}")
    out = status_report(host, 0)


def test_legacy_is_reported(host: Host) -> None:
    legacy = host.hooks / "qemu.legacy"
    legacy.write_text("#!/bin/sh\nexit 0\n")
    legacy.chmod(0o755)
    out = status_report(host, 1)
    assert f"PROBLEM: {host.hooks / 'qemu'} does not run the earlier hook {legacy}\n" in out
    host.install()
    out = status_report(host, 0)
    assert f"launcher; it runs the earlier hook {legacy} first\n" in out


def script(host: Host, name: str, body: bytes, mode: int = 0o755) -> Path:
    path = host.hooks_root / "before_vm_start" / name
    path.write_bytes(body)
    path.chmod(mode)
    return path


def not_executable(host: Host) -> tuple[str, str]:
    path = script(host, "10_x", b"#!/bin/sh\n", 0o644)
    return f"{path} is not executable", f"fix: chmod +x {path}"


def no_shebang(host: Host) -> tuple[str, str]:
    path = script(host, "10_x", b"echo hi\n")
    return f"{path} has no #! line", "#!/bin/sh"


def elf_binary_is_fine(host: Host) -> tuple[str, str]:
    shutil.copy("/bin/true", host.hooks_root / "before_vm_start" / "10_true")
    no_shebang(host)
    return "has no #! line", "10_x"


def crlf(host: Host) -> tuple[str, str]:
    path = script(host, "10_x", b"#!/bin/sh\r\necho hi\r\n")
    return f"{path} has CRLF (Windows) line ends", f"fix: sed -i 's/\\r$//' {path}"


def writable_by_others(host: Host) -> tuple[str, str]:
    path = script(host, "10_x", b"#!/bin/sh\n", 0o775)
    return f"{path} is refused: writable by group or others", f"fix: chmod go-w {path}"


def not_owned_by_root(host: Host) -> tuple[str, str]:
    if os.geteuid() != 0:
        pytest.skip("needs root to give a file away")
    path = script(host, "10_x", b"#!/bin/sh\n")
    os.chown(path, 12345, -1)
    return f"{path} is refused: owned by uid 12345", f"fix: chown root {path}"


def dangling_symlink(host: Host) -> tuple[str, str]:
    path = host.hooks_root / "before_vm_start" / "10_x"
    path.symlink_to(host.root / "nowhere")
    return f"{path} is a dangling symlink", f"fix: rm {path}"


def unknown_event(host: Host) -> tuple[str, str]:
    path = host.hooks_root / "before_vm_migrate_src"
    path.mkdir()
    good = host.hooks_root / "before_vm_migrate_source"
    return f"{path} is not named after a VDSM event", f"fix: mv {path} {good}"


def hooks_root_missing(host: Host) -> tuple[str, str]:
    shutil.rmtree(host.hooks_root)
    return f"hooks root {host.hooks_root} does not exist", "fix: libvirt-bridge install --confdir"


def launcher_missing(host: Host) -> tuple[str, str]:
    (host.hooks / "daemon").unlink()
    return f"{host.hooks / 'daemon'} is not installed", "fix: libvirt-bridge install --confdir"


def launcher_foreign(host: Host) -> tuple[str, str]:
    (host.hooks / "qemu").write_text("#!/bin/sh\nexit 0\n")
    return f"{host.hooks / 'qemu'} is not a libvirt-bridge launcher", "qemu.legacy and runs it"


def launcher_not_executable(host: Host) -> tuple[str, str]:
    (host.hooks / "qemu").chmod(0o644)
    return f"{host.hooks / 'qemu'} is not executable", "fix: libvirt-bridge install"


def launcher_other_config(host: Host) -> tuple[str, str]:
    launcher.write(str(host.hooks / "qemu"), "qemu", str(host.root / "other.toml"))
    return f"reads the config {host.root / 'other.toml'}, not {host.config}", "--config"


def launcher_interpreter_gone(host: Host) -> tuple[str, str]:
    text = launcher.render("qemu", str(host.config), python=str(host.root / "gone/python"))
    (host.hooks / "qemu").write_text(text)
    return f"names the interpreter {host.root / 'gone/python'}, which is gone", "install"


def invalid_config(host: Host) -> tuple[str, str]:
    host.config.write_text("hooks_dirs = 3\n")
    return f"config {host.config}: hooks_dirs must be a list of strings", f"fix: fix {host.config}"


def event_dir_others_may_write(host: Host) -> tuple[str, str]:
    directory = host.hooks_root / "before_vm_start"
    directory.chmod(0o777)
    return (
        f"{directory}: the directory {directory} is writable by group or others without the "
        "sticky bit (mode 0777), so none of its scripts runs",
        f"fix: chmod go-w {directory}",
    )


def hooks_root_not_roots(host: Host) -> tuple[str, str]:
    os.chown(host.hooks_root, 12345, -1)
    return (
        f"hooks root {host.hooks_root}: the directory {host.hooks_root} is owned by uid 12345",
        f"fix: chown root {host.hooks_root}",
    )


def symlink_to_a_script_others_may_replace(host: Host) -> tuple[str, str]:
    elsewhere = host.root / "elsewhere"
    elsewhere.mkdir(mode=0o777)
    elsewhere.chmod(0o777)
    target = elsewhere / "real"
    target.write_text("#!/bin/sh\n")
    target.chmod(0o755)
    link = host.hooks_root / "before_vm_start" / "10_link"
    link.symlink_to(target)
    return (
        f"{link} is refused: the directory {elsewhere} is writable by group or others",
        f"fix: chmod go-w {elsewhere}",
    )


def config_others_may_write(host: Host) -> tuple[str, str]:
    host.config.chmod(0o666)
    return (
        f"config {host.config} is writable by group or others (mode 0666): refused",
        f"fix: chmod go-w {host.config}",
    )


def state_dir_others_may_write(host: Host) -> tuple[str, str]:
    host.bridge.state.chmod(0o777)
    return (
        f"state dir {host.bridge.state}: the directory {host.bridge.state} is writable by "
        "group or others",
        f"fix: chmod go-w {host.bridge.state}",
    )


def apparmor(host: Host) -> tuple[str, str]:
    profiles = host.root / "profiles"
    profiles.write_text("/usr/sbin/libvirtd (enforce)\n")
    confinement.APPARMOR_PROFILES = str(profiles)
    return (
        f"hooks root {host.hooks_root} is outside /etc/libvirt/hooks, and AppArmor",
        "fix: move it under /etc/libvirt/hooks",
    )


CASES: list[Callable[[Host], tuple[str, str]]] = [
    not_executable,
    no_shebang,
    elf_binary_is_fine,
    crlf,
    writable_by_others,
    not_owned_by_root,
    dangling_symlink,
    unknown_event,
    hooks_root_missing,
    launcher_missing,
    launcher_foreign,
    launcher_not_executable,
    launcher_other_config,
    launcher_interpreter_gone,
    invalid_config,
    event_dir_others_may_write,
    hooks_root_not_roots,
    symlink_to_a_script_others_may_replace,
    config_others_may_write,
    state_dir_others_may_write,
    apparmor,
]


@pytest.mark.parametrize("case", CASES, ids=[c.__name__ for c in CASES])
def test_each_problem_is_reported_with_its_fix(
    host: Host, case: Callable[[Host], tuple[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(confinement, "APPARMOR_PROFILES", str(host.root / "no-apparmor"))
    problem, fix = case(host)
    out = status_report(host, 1)
    assert out.endswith("1 problem(s)\n"), out
    start = out.index("PROBLEM: ")
    reported = out[start:]
    assert problem in reported.splitlines()[0], out
    assert fix in reported.splitlines()[1], out


def test_the_property_schema_is_noted(host: Host) -> None:
    out = status_report(host, 0)
    assert "note: no property schema is in force: every custom property reaches the" in out
    dropins = host.root / "properties.d"
    dropins.mkdir()
    (dropins / "nicnet.toml").write_text("[interface]\nnicnet = '.*'\n")
    host.bridge.write_config(libvirt_uri="test:///default", properties_dir=str(dropins))
    _, out, _ = host.cmd("status")
    assert f"the 1 file(s) in {dropins} count once it has one" in out
    with host.config.open("a") as f:
        f.write("[properties.vm]\npincpu = '[0-9-]+'\nlabel = '.*'\n")
    out = status_report(host, 0)
    assert (
        f"ok: a property schema is in force ([properties] in {host.config} and 1 file(s) in "
        f"{dropins}): interface: nicnet; vm: label, pincpu; libvirt-bridge check-props lists"
    ) in out


def test_vdsm_only_event_is_a_note_with_the_reason(host: Host) -> None:
    (host.hooks_root / "after_get_caps").mkdir()
    out = status_report(host, 0)
    assert (
        f"note: {host.hooks_root / 'after_get_caps'}: the bridge does not fire after_get_caps "
        "(a call of VDSM's own API (host capabilities) that plain libvirt has no counterpart of)"
    ) in out


def test_missing_confdir_exits_2(tmp_path: Path) -> None:
    status, _, err = run("status", "--confdir", str(tmp_path / "x"), "--config", "/dev/null/c")
    assert status == 2
    assert f"confdir {tmp_path / 'x'} does not exist" in err


def test_daemon_picked_up_the_launchers_or_needs_a_sighup(host: Host, tmp_path: Path) -> None:
    reason = namespaces_usable()
    if reason:
        pytest.skip(reason)
    daemon = FakeDaemon(tmp_path / "daemon", host.confdir)
    try:
        # Started after install, it has not looked for hooks since: libvirt would not know.
        out = status_report(host, 1)
        assert f"PROBLEM: libvirtd (pid {daemon.pid}) has not looked for hooks since" in out
        assert f"  fix: kill -HUP {daemon.pid}\n" in out
        # The SIGHUP makes it run the daemon hook, which records it.
        os.kill(daemon.pid, 1)
        record = host.bridge.state / "daemon" / "libvirtd"
        wait_until(
            lambda: record.exists() and f"pid={daemon.pid}" in record.read_text(),
            "the fake daemon running the daemon hook",
            20,
        )
        out = status_report(host, 0)
        assert f"ok: libvirtd (pid {daemon.pid}) has looked for hooks since" in out
        # Launchers written after its last look: it needs a SIGHUP again.
        future = time.time() + 5
        os.utime(host.hooks / "daemon", (future, future))
        out = status_report(host, 1)
        assert f"fix: kill -HUP {daemon.pid}" in out
        # A record left by an earlier daemon (another pid) does not count either.
        os.utime(host.hooks / "daemon", (0, 0))
        record.write_text(f"pid={daemon.pid + 100000}\nop=start\n")
        assert host.cmd("status")[0] == 1
    finally:
        daemon.stop()


def test_status_runs_as_a_program(host: Host) -> None:
    import subprocess

    result = subprocess.run(
        [sys.executable, "-m", "libvirt_bridge", "status", *host.command_args("status")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_launcher_kept_as_legacy_is_a_problem_install_fixes(host: Host) -> None:
    legacy = host.hooks / "daemon.legacy"
    launcher.write(str(legacy), "daemon", str(host.config), str(legacy))
    out = status_report(host, 1)
    assert f"PROBLEM: {legacy} is a libvirt-bridge launcher kept as the earlier hook" in out
    assert "  fix: libvirt-bridge install --confdir " in out
    # One problem for it, not a second one about the launcher beside it.
    assert out.count("PROBLEM") == 1, out
    host.install()
    out = status_report(host, 0)


def test_a_large_log_that_nothing_rotates_is_noted(host: Host) -> None:
    _, out, _ = host.cmd("status")
    entry = host.logrotate_dir / os.listdir(host.logrotate_dir)[0]
    assert f"ok: logrotate rotates the log {host.bridge.log} ({entry})\n" in out
    entry.unlink()
    with open(host.bridge.log, "ab") as f:
        f.truncate(logrotate.LARGE_LOG + 1)
    out = status_report(host, 0)
    assert f"note: the log {host.bridge.log} is 64 MiB and no entry in {host.logrotate_dir}" in out
    assert "libvirt-bridge install --confdir" in out


@pytest.mark.parametrize(
    ("enforce", "boolean", "expected", "problem"),
    [
        ("1", "0 0", "PROBLEM: SELinux enforces and virt_hooks_unconfined is off", True),
        ("1", "1 1", "ok: SELinux enforces, and virt_hooks_unconfined is on", False),
        ("1", None, "note: SELinux enforces; its policy has no virt_hooks_unconfined", False),
        ("0", "0 0", None, False),
    ],
)
def test_selinux_confining_hooks_is_a_problem_with_its_fix(
    host: Host, enforce: str, boolean: str | None, expected: str | None, problem: bool
) -> None:
    (host.selinuxfs / "booleans").mkdir(parents=True)
    (host.selinuxfs / "enforce").write_text(enforce)
    if boolean is not None:
        (host.selinuxfs / "booleans" / "virt_hooks_unconfined").write_text(boolean)
    out = status_report(host, (1 if problem else 0))
    if expected is None:
        assert "SELinux" not in out
    else:
        assert expected in out
    if problem:
        assert "  fix: setsebool -P virt_hooks_unconfined on\n" in out


def test_json_has_every_check_the_listener_and_the_exit_status(host: Host) -> None:
    status, text, _ = host.cmd("status")
    status_json, out, err = host.cmd("status", "--json")
    assert (status, status_json, err) == (0, 0, "")
    report = json.loads(out)
    assert report["ok"] is True and report["problems"] == 0
    # The same checks as the text, in the same order.
    lines = [f"{c['level']}: {c['message']}" for c in report["checks"]]
    assert lines == text.splitlines()[:-1]
    pid = service.running_pid(str(host.bridge.state))
    assert report["listener"]["state"] == "connected" and report["listener"]["pid"] == pid
    assert report["cockpit_page"] is None

    assert service.stop_background(str(host.bridge.state))
    status, out, _ = host.cmd("status", "--json")
    report = json.loads(out)
    assert status == 1 and report["ok"] is False and report["problems"] == 1
    [problem] = [c for c in report["checks"] if c["level"] == "problem"]
    assert problem["message"].startswith("the listener is not running")
    assert problem["fix"].startswith("libvirt-bridge install")
    assert report["listener"] == {"state": "not running", "pid": None, "detail": ""}
    assert host.cmd("uninstall")[0] == 0
