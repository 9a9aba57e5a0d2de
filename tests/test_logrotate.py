"""The log's rotation: the entry ``install`` writes, run by the real logrotate."""

from __future__ import annotations

import gzip
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from libvirt_bridge import logrotate
from testing.harness import domain_xml
from testing.hosts import Host

ROTATIONS = 5


def logrotate_binary() -> str:
    path = shutil.which("logrotate") or (
        "/usr/sbin/logrotate" if Path("/usr/sbin/logrotate").exists() else None
    )
    if path is None:
        pytest.fail("logrotate is not installed (scripts/setup.sh installs it)", pytrace=False)
    return path


def read_rotated(log: Path) -> list[str]:
    """Every line of the log and of its rotated (and compressed) copies."""
    lines: list[str] = []
    for path in sorted(log.parent.glob(log.name + "*")):
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        lines += data.decode().splitlines()
    return lines


def test_the_entry_is_valid_for_logrotate(tmp_path: Path) -> None:
    entry = tmp_path / "entry"
    entry.write_text(logrotate.render(str(tmp_path / "a b.log")))
    result = subprocess.run(
        [logrotate_binary(), "-d", "-s", str(tmp_path / "state"), str(entry)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "error" not in result.stderr.lower(), result.stderr


def test_a_rotation_in_a_burst_of_events_loses_no_line(tmp_path: Path) -> None:
    host = Host(tmp_path)
    assert host.install()[0] == 0
    (entry,) = host.logrotate_dir.iterdir()
    # This test is about the rotation mode, not how many rotated files are kept.
    text = entry.read_text().replace("rotate 8", "rotate 1000")
    assert text != entry.read_text()
    config = tmp_path / "entry"
    config.write_text(text)
    host.bridge.script("before_vm_start", "50_ok", "#!/bin/sh\nexit 0\n")
    called: list[str] = []
    failures: list[str] = []
    stop = threading.Event()

    def calls(worker: int) -> None:
        n = 0
        while not stop.is_set():
            name = f"vm-{worker}-{n}"
            result = host.bridge.qemu(name, "prepare", "begin", domain_xml(name=name))
            if result.returncode != 0:
                failures.append(result.stderr.decode())
            called.append(name)
            n += 1

    workers = [threading.Thread(target=calls, args=(w,)) for w in range(4)]
    for worker in workers:
        worker.start()
    try:
        for _ in range(ROTATIONS):
            count = len(called)
            while len(called) < count + 5 and not failures:
                stop.wait(0.01)
            result = subprocess.run(
                [logrotate_binary(), "-f", "-s", str(tmp_path / "state"), str(config)],
                capture_output=True,
                text=True,
            )
            assert result.returncode == 0, result.stderr
    finally:
        stop.set()
        for worker in workers:
            worker.join()
    assert not failures
    rotated = list(host.bridge.log.parent.glob(host.bridge.log.name + ".*"))
    assert len(rotated) >= ROTATIONS - 1, rotated
    logged = [line.split("domain='")[1].split("'")[0] for line in read_rotated(host.bridge.log)]
    assert sorted(logged) == sorted(called)


def test_paths_logrotate_cannot_take_are_refused() -> None:
    for bad in ('/var/log/a"b.log', "/var/log/*.log", "/var/log/a\nb"):
        with pytest.raises(logrotate.EntryError):
            logrotate.render(bad)


def test_an_entry_is_found_by_the_path_it_names(tmp_path: Path) -> None:
    log = "/var/log/libvirt/libvirt-bridge.log"
    assert logrotate.rotates(log, str(tmp_path)) is None
    (tmp_path / "other").write_text("/var/log/other.log {\n weekly\n}\n")
    assert logrotate.rotates(log, str(tmp_path)) is None
    (tmp_path / "by-hand").write_text(f"/var/log/other.log {log} {{\n weekly\n}}\n")
    assert logrotate.rotates(log, str(tmp_path)) == str(tmp_path / "by-hand")
    assert logrotate.rotates(log, str(tmp_path / "absent")) is None


def test_each_log_file_has_its_own_entry(tmp_path: Path) -> None:
    default = logrotate.entry_path("/var/log/libvirt/libvirt-bridge.log", str(tmp_path))
    assert default == str(tmp_path / "libvirt-bridge")
    other = logrotate.entry_path("/srv/lab/bridge.log", str(tmp_path))
    assert other.startswith(str(tmp_path / "libvirt-bridge-")) and other != default
