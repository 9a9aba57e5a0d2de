"""The listener as a service: its unit, systemd's notify protocol, its status file."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from libvirt_bridge import service
from libvirt_bridge.commands.listen import listener_log_target


def unit_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def test_unit_is_ordered_after_either_daemon_and_pulls_in_none() -> None:
    lines = unit_lines(service.render_unit("/etc/libvirt-bridge.toml"))
    assert "After=libvirtd.service libvirtd.socket virtqemud.service virtqemud.socket" in lines
    # Wants=/Requires=/BindsTo= on libvirtd would start it on a virtqemud host, whose units
    # conflict with it, and stop virtqemud.
    assert not [line for line in lines if line.split("=")[0] in ("Wants", "Requires", "BindsTo")]
    assert "Type=notify" in lines and "NotifyAccess=main" in lines
    assert "Documentation=man:libvirt-bridge(8)" in lines


def test_a_config_path_with_spaces_is_one_assignment() -> None:
    text = service.render_unit("/etc/x bridge.toml")
    assert 'Environment="LIBVIRT_BRIDGE_CONFIG=/etc/x bridge.toml"\n' in text
    dropin = service.render_dropin('/etc/a"b.toml')
    assert 'Environment="LIBVIRT_BRIDGE_CONFIG=/etc/a\\"b.toml"\n' in dropin
    assert "[Service]" in dropin
    assert service.render_dropin("/etc/lab.toml").endswith(
        "Environment=LIBVIRT_BRIDGE_CONFIG=/etc/lab.toml\n"
    )


def test_units_of_ours_are_known_by_their_first_line(tmp_path: Path) -> None:
    ours, theirs = tmp_path / "ours.service", tmp_path / "theirs.service"
    ours.write_text(service.render_unit("/etc/libvirt-bridge.toml"))
    theirs.write_text("[Unit]\nDescription=someone's\n")
    assert service.is_ours(str(ours))
    assert not service.is_ours(str(theirs)) and not service.is_ours(str(tmp_path / "none"))


def test_from_a_checkout_the_unit_is_never_the_package_s() -> None:
    assert service.packaged_unit() is None


@pytest.mark.parametrize("abstract", [False, True])
def test_notify_sends_one_datagram_to_notify_socket(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, abstract: bool
) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        if abstract:
            name = f"libvirt-bridge-test-{os.getpid()}"
            sock.bind("\0" + name)
            monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        else:
            sock.bind(str(tmp_path / "notify"))
            monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
        sock.settimeout(5)
        service.notify("READY=1", "STATUS=connected to qemu:///system")
        assert sock.recv(4096) == b"READY=1\nSTATUS=connected to qemu:///system"


def test_notify_without_systemd_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    service.notify("READY=1")  # no socket, no error


def test_status_names_the_listener_that_wrote_it(tmp_path: Path) -> None:
    service.write_status(str(tmp_path), "connected qemu:///system pid=4242")
    status = service.read_status(str(tmp_path))
    assert status is not None and service.status_pid(status) == 4242
    assert service.status_pid("disconnected pid=77 (no daemon)") == 77
    assert service.status_pid("connected qemu:///system") is None
    assert service.status_pid("connected pid=x") is None


def test_listener_under_systemd_also_logs_to_the_journal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INVOCATION_ID", raising=False)
    assert listener_log_target("file") == "file"
    monkeypatch.setenv("INVOCATION_ID", "0123456789abcdef")
    assert listener_log_target("file") == "both"
    assert listener_log_target("journal") == "journal"
