"""The one rule every command follows to find an installation: --confdir and --config."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest

from libvirt_bridge import cli, config, service
from testing.harness import domain_xml
from testing.hosts import Host, run


@pytest.fixture
def lab(tmp_path: Path) -> Host:
    """A bridge installed into a confdir that is not the host's, its config keeping the
    default hooks root /etc/libvirt/hooks/vdsm.d (as that libvirt's daemon sees it)."""
    host = Host(tmp_path)
    host.bridge.write_config(hooks_dirs=[config.ETC_LIBVIRT + "/hooks/vdsm.d"])
    status, _, err = host.install()
    assert status == 0, err
    return host


def lab_script(lab: Host, event: str, name: str) -> Path:
    directory = lab.confdir / "hooks" / "vdsm.d" / event
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text("#!/bin/sh\necho ran >&2\n")
    path.chmod(0o755)
    return path


def test_run_finds_the_installation_of_a_confdir(lab: Host, tmp_path: Path) -> None:
    script = lab_script(lab, "before_vm_start", "10_lab")
    xml = tmp_path / "vm1.xml"
    xml.write_bytes(domain_xml("vm1"))
    # No --config: the config is the one the launchers in the confdir read; the hooks root
    # /etc/libvirt/hooks/vdsm.d is that confdir's.
    status, out, err = run(
        "run", "before_vm_start", "vm1", "--xml", str(xml), "--confdir", str(lab.confdir)
    )
    assert (status, err) == (0, "")
    assert "10_lab: rc=0" in out and str(script) in out
    assert "result: all 1 script(s) succeeded" in out
    status, out, _ = run("list", "--confdir", str(lab.confdir))
    assert status == 0 and str(script) in out


def test_the_confdir_comes_from_the_environment_too(
    lab: Host, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = lab_script(lab, "before_vm_start", "10_lab")
    xml = tmp_path / "vm1.xml"
    xml.write_bytes(domain_xml("vm1"))
    monkeypatch.setenv(config.CONFDIR_ENV_VAR, str(lab.confdir))
    status, out, err = run("run", "before_vm_start", "vm1", "--xml", str(xml))
    assert (status, err) == (0, "")
    assert str(script) in out


def test_a_named_config_that_does_not_exist_is_an_error(tmp_path: Path) -> None:
    xml = tmp_path / "vm1.xml"
    xml.write_bytes(domain_xml("vm1"))
    missing = tmp_path / "lab" / "bridge.toml"
    status, out, err = run(
        "run", "before_vm_start", "vm1", "--xml", str(xml), "--config", str(missing)
    )
    assert status != 0 and out == ""
    assert f"config {missing} does not exist" in err
    assert "no script would run" not in out


def test_a_named_config_other_than_the_launchers_is_said(lab: Host, tmp_path: Path) -> None:
    other = tmp_path / "other.toml"
    other.write_text(lab.config.read_text())
    xml = tmp_path / "vm1.xml"
    xml.write_bytes(domain_xml("vm1"))
    args = ("--xml", str(xml), "--confdir", str(lab.confdir), "--config", str(other))
    status, _, err = run("run", "before_vm_start", "vm1", *args)
    assert status == 0
    assert f"the launchers in {lab.confdir}/hooks read {lab.config}, not {other}" in err


def test_every_command_that_needs_an_installation_takes_both_options() -> None:
    parser = cli.build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    for name, command in commands.items():
        flags = {flag for action in command._actions for flag in action.option_strings}
        if name in cli.WITHOUT_CONFIG:
            assert "--config" not in flags, name
        else:
            assert "--config" in flags, name
        assert ("--confdir" in flags) == (name not in cli.WITHOUT_CONFDIR), name


@pytest.mark.parametrize("action", [["get"], ["set", "a=1"], ["unset", "a"]])
def test_options_go_after_the_positionals_of_props_too(action: list[str]) -> None:
    argv = ["props", "vm1", *action, "--confdir", "/srv/lab", "--config", "/srv/lab.toml"]
    args = cli.build_parser().parse_args([*argv, "--connect", "test:///default"])
    assert (args.confdir, args.config, args.connect) == (
        "/srv/lab",
        "/srv/lab.toml",
        "test:///default",
    )


def test_the_confdir_is_the_commands_only_while_it_runs(lab: Host) -> None:
    assert config.CONFDIR_ENV_VAR not in os.environ
    status, _, _ = run("list", "--confdir", str(lab.confdir))
    assert status == 0
    assert config.CONFDIR_ENV_VAR not in os.environ


def test_config_paths_under_etc_libvirt_are_taken_under_the_confdir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "bridge.toml"
    path.write_text(
        'hooks_dirs = ["/etc/libvirt/hooks/vdsm.d", "/srv/hooks"]\n'
        'state_dir = "/etc/libvirt/bridge-state"\nlog_file = "/var/log/lb.log"\n'
    )
    monkeypatch.setenv(config.CONFDIR_ENV_VAR, str(tmp_path / "etc-libvirt"))
    for cfg in (config.load(str(path)), config.read(str(path))):
        assert cfg.hooks_dirs == [f"{tmp_path}/etc-libvirt/hooks/vdsm.d", "/srv/hooks"]
        assert cfg.state_dir == f"{tmp_path}/etc-libvirt/bridge-state"
        assert cfg.log_file == "/var/log/lb.log"
    # /etc/libvirtX is not under /etc/libvirt.
    assert config.host_path("/etc/libvirtX/a", "/srv/c") == "/etc/libvirtX/a"
    monkeypatch.setenv(config.CONFDIR_ENV_VAR, "/etc/libvirt/")
    assert config.load(str(path)).hooks_dirs[0] == "/etc/libvirt/hooks/vdsm.d"


def test_another_confdirs_listener_is_never_the_hosts_unit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service, "systemd_running", lambda: True)
    assert service.runs_as_unit()
    monkeypatch.setenv(config.CONFDIR_ENV_VAR, str(tmp_path))
    assert not service.runs_as_unit()
