"""Lines for systemd's journal: its native protocol on a real datagram socket, as journald
reads it, and the log's targets (the real journal: tests/realhost)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from libvirt_bridge import journal
from libvirt_bridge.log import Log
from libvirt_bridge.runner import _log_result, event_label, run_script


def parse(data: bytes) -> dict[str, str]:
    """A datagram of the native protocol, read as journald reads it."""
    fields: dict[str, str] = {}
    while data:
        line, _, rest = data.partition(b"\n")
        if b"=" in line:
            key, _, value = line.partition(b"=")
            fields[key.decode()] = value.decode()
            data = rest
            continue
        size = int.from_bytes(rest[:8], "little")
        fields[line.decode()] = rest[8 : 8 + size].decode()
        assert rest[8 + size : 9 + size] == b"\n"
        data = rest[9 + size :]
    return fields


@pytest.fixture
def journald(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A datagram socket where the journal's would be."""
    path = str(tmp_path / "journal.socket")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(5)
        monkeypatch.setattr(journal, "SOCKET", path)
        yield sock


def test_a_line_carries_message_priority_identifier_and_fields(journald: socket.socket) -> None:
    assert journal.send("WARNING", "two\nlines", {"DOMAIN": "vm 1", "RC": "3"})
    fields = parse(journald.recv(65536))
    assert fields == {
        "MESSAGE": "two\nlines",
        "PRIORITY": "4",
        "SYSLOG_IDENTIFIER": "libvirt-bridge",
        "DOMAIN": "vm 1",
        "RC": "3",
    }


def test_without_a_journal_send_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(journal, "SOCKET", str(tmp_path / "none"))
    assert not journal.send("INFO", "lost?")


def test_journal_target_sends_and_writes_no_file(journald: socket.socket, tmp_path: Path) -> None:
    path = tmp_path / "bridge.log"
    Log(str(path), "journal").error("failed", {"EVENT": "before_vm_start"})
    fields = parse(journald.recv(65536))
    assert fields["MESSAGE"] == "failed" and fields["PRIORITY"] == "3"
    assert fields["EVENT"] == "before_vm_start"
    assert not path.exists()


def test_both_targets_get_the_line(journald: socket.socket, tmp_path: Path) -> None:
    path = tmp_path / "bridge.log"
    Log(str(path), "both").info("hello")
    assert parse(journald.recv(65536))["MESSAGE"] == "hello"
    assert path.read_text().endswith(" INFO hello\n")


def test_a_line_the_journal_does_not_take_goes_to_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(journal, "SOCKET", str(tmp_path / "no-journald"))
    path = tmp_path / "bridge.log"
    Log(str(path), "journal").info("kept")
    assert path.read_text().endswith(" INFO kept\n")


def test_a_script_run_has_the_fields_to_filter_on(journald: socket.socket, tmp_path: Path) -> None:
    script = tmp_path / "50_fail"
    script.write_text("#!/bin/sh\necho 'no such CPU' >&2\nexit 1\n")
    script.chmod(0o755)
    result = run_script(str(script), {"PATH": "/usr/bin:/bin"}, 30)
    label = event_label("before_vm_start", "vm1", "1111-2222")
    _log_result(Log(str(tmp_path / "bridge.log"), "journal"), label, result)
    fields = parse(journald.recv(65536))
    assert fields["PRIORITY"] == "3"
    assert {k: fields[k] for k in ("DOMAIN", "UUID", "EVENT", "SCRIPT", "RC")} == {
        "DOMAIN": "vm1",
        "UUID": "1111-2222",
        "EVENT": "before_vm_start",
        "SCRIPT": str(script),
        "RC": "1",
    }
    assert fields["MESSAGE"].startswith(f"{label} script={script} rc=1 duration=")
