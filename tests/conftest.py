"""Fixtures shared by the tests; the helpers they share are the ``testing`` package.

The whole suite must leave the machine as it found it: no file in the host's libvirt
directories, nor one of the bridge's or libvirt's in /run, /tmp, /var/log,
/etc/logrotate.d or /usr/share/cockpit (tests work under pytest's tmp_path), and no
process it started (hook runners, listeners, daemons, guests). ``host_untouched`` checks
this once, at the end of the session. It watches only what the suite may create, so that
other work on the machine (another test run, a shell) does not fail it: in the shared
directories, names that are the bridge's or libvirt's and are still there a few seconds
later; among processes, those that name this session's temp dir in their argv,
environment or open files.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from libvirt_bridge_lab.sandbox.cells import CELLS
from testing.harness import Bridge, live_processes_mentioning

WATCHED_TREES = ("/etc/libvirt", "/var/lib/libvirt", "/var/log/libvirt", "/run/libvirt")
WATCHED_DIRS = ("/run", "/tmp", "/var/log", "/etc/logrotate.d", "/usr/share/cockpit")
# What the bridge, libvirt and QEMU name the files they make (runner.py's temp XML files
# are libvirt-bridge-*, the benchmarks' lb-bench-*).
OUR_NAMES = ("libvirt", "bridge", "lb-", "vdsm", "qemu", "virt")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--libvirt-cell",
        default="system-monolithic",
        metavar="CELLS",
        help=(
            "which libvirt the end-to-end tests run on: a comma-separated list of "
            f"{', '.join(CELLS)}, or 'all' (default: system-monolithic). A cell other than "
            "the host's needs its root built: python -m libvirt_bridge_lab.sandbox.roots build 11.3"
        ),
    )
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
            entries.update(
                os.path.join(directory, n)
                for n in os.listdir(directory)
                if any(mark in n for mark in OUR_NAMES)
            )
    return entries


@pytest.fixture(scope="session", autouse=True)
def host_untouched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    # With the slash: pytest-2 must not match another run's pytest-23.
    session = (os.path.join(tmp_path_factory.getbasetemp(), "").encode(),)
    files_before = snapshot()
    yield
    deadline = time.monotonic() + 15
    while live_processes_mentioning(session) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = live_processes_mentioning(session)
    assert not left, f"processes left behind: {sorted(left)}"
    # A file another run on the machine has open for a moment is gone again soon; one
    # left behind stays.
    added = snapshot() - files_before
    deadline = time.monotonic() + 5
    while added and time.monotonic() < deadline:
        time.sleep(0.2)
        added = snapshot() - files_before
    assert not added, f"files left behind on the host: {sorted(added)}"


@pytest.fixture
def bridge(tmp_path: Path) -> Bridge:
    return Bridge(tmp_path)
