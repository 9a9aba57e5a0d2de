"""The bridge's log: a line per write, and stderr when the file cannot be written."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from libvirt_bridge.log import Log, read
from testing.harness import Bridge, domain_xml

LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3} \d+ (INFO|WARNING|ERROR) .*$")


def test_lines_are_appended_with_level_and_newlines_escaped(tmp_path: Path) -> None:
    log = Log(str(tmp_path / "bridge.log"))
    log.info("one")
    log.error("two\nlines")
    lines = (tmp_path / "bridge.log").read_text().splitlines()
    assert len(lines) == 2 and all(LINE.match(line) for line in lines)
    assert lines[0].endswith(" INFO one") and lines[1].endswith(" ERROR two\\nlines")


def test_an_unwritable_log_sends_every_line_to_stderr_and_says_so_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "missing-dir" / "bridge.log"
    log = Log(str(path))
    log.warning("first")
    log.info("second")
    err = capsys.readouterr().err.splitlines()
    assert err[0] == f"libvirt-bridge: cannot write log {path}: No such file or directory"
    assert [line.split(" ", 3)[2:] for line in err[1:]] == [
        ["WARNING", "first"],
        ["INFO", "second"],
    ]
    assert not path.exists()


def test_a_hook_call_with_an_unwritable_log_loses_nothing(tmp_path: Path) -> None:
    # libvirt keeps a hook's stderr (in its error for a refused start, else its debug log).
    bridge = Bridge(tmp_path, log_file=str(tmp_path / "no-such-dir" / "bridge.log"))
    bridge.script("before_vm_start", "10_veto", "#!/bin/sh\necho no room >&2\nexit 1\n")
    result = bridge.qemu("vm1", "prepare", "begin", domain_xml("vm1"))
    assert result.returncode == 1
    err = result.stderr.decode()
    assert "cannot write log" in err
    assert "10_veto" in err and "no room" in err


def test_the_log_reads_back_what_the_bridge_wrote(bridge: Bridge) -> None:
    bridge.script("before_vm_start", "10_ok", "#!/bin/sh\nexit 0\n")
    bridge.script("before_vm_start", "20_fails", "#!/bin/sh\necho 'no way' >&2\nexit 1\n")
    name = 'it\'s a "vm" with spaces'
    assert bridge.qemu(name, "prepare", "begin", domain_xml(name=name)).returncode == 1
    entries, offset = read(str(bridge.log))
    assert offset == bridge.log.stat().st_size
    runs = [entry.script_run() for entry in entries if entry.script_run()]
    assert [(r[0], os.path.basename(r[1]), r[2]) for r in runs if r] == [
        ("before_vm_start", "10_ok", "rc=0"),
        ("before_vm_start", "20_fails", "rc=1"),
    ]
    failed = next(e for e in entries if e.level == "ERROR" and e.script_run())
    assert failed.fields()["domain"] == name and failed.fields()["stderr"] == "no way"
    assert abs(failed.time - time.time()) < 60
    assert read(str(bridge.log), offset) == ([], offset)


def test_a_line_being_written_is_left_for_the_next_read(tmp_path: Path) -> None:
    path = tmp_path / "log"
    path.write_bytes(b"2026-12-01T10:00:00.250 7 INFO one\n2026-12-01T10:00:01.000 7 INFO tw")
    entries, offset = read(str(path))
    assert [(e.pid, e.level, e.message) for e in entries] == [(7, "INFO", "one")]
    assert offset == len(b"2026-12-01T10:00:00.250 7 INFO one\n")
    assert entries[0].time % 1 == 0.25
    assert read(str(tmp_path / "absent"), 5) == ([], 5)
