"""Fixtures shared by the tests; the harness itself is ``bridge_harness``.

The whole suite must leave the machine as it found it: no file in the host's libvirt
directories, /run or /tmp (tests work under pytest's tmp_path), and no process it
started (hook runners, listeners, daemons, guests). ``host_untouched`` checks this once,
at the end of the session.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from bridge_harness import Bridge, live_processes_mentioning

WATCHED_TREES = ("/etc/libvirt", "/var/lib/libvirt", "/var/log/libvirt", "/run/libvirt")
WATCHED_DIRS = ("/run", "/tmp", "/var/log", "/etc/logrotate.d")
OURS = (b"libvirt_bridge", b"libvirt-bridge", b"libvirtd", b"virtlogd", b"qemu-system")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--soak-cycles",
        type=int,
        default=8,
        metavar="N",
        help="how many cycles the soak test runs (default: 8, a short run for CI)",
    )


@pytest.fixture
def soak_cycles(request: pytest.FixtureRequest) -> int:
    cycles = int(request.config.getoption("--soak-cycles"))
    if cycles < 5:
        pytest.fail("--soak-cycles takes 5 or more (a fifth of them warm the listener up)")
    return cycles


def snapshot() -> set[str]:
    entries: set[str] = set()
    for top in WATCHED_TREES:
        for dirpath, dirnames, filenames in os.walk(top):
            entries.update(os.path.join(dirpath, n) for n in dirnames + filenames)
    for directory in WATCHED_DIRS:
        if os.path.isdir(directory):
            entries.update(os.path.join(directory, n) for n in os.listdir(directory))
    return entries


@pytest.fixture(scope="session", autouse=True)
def host_untouched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    tmp_path_factory.getbasetemp()  # pytest's own /tmp/pytest-of-USER is not a leftover
    files_before = snapshot()
    processes_before = live_processes_mentioning(OURS)
    yield
    deadline = time.monotonic() + 15
    while live_processes_mentioning(OURS) - processes_before and time.monotonic() < deadline:
        time.sleep(0.1)
    left = live_processes_mentioning(OURS) - processes_before
    assert not left, f"processes left behind: {sorted(left)}"
    added = snapshot() - files_before
    assert not added, f"files left behind on the host: {sorted(added)}"


@pytest.fixture
def bridge(tmp_path: Path) -> Bridge:
    return Bridge(tmp_path)
