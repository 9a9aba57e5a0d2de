"""A booted Debian host per release (systemd as PID 1), shared by the tests of a module in
order, and the two .deb files they install: this checkout's, and a newer one to upgrade to."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from testing import packaging, systemd_host
from testing.systemd_host import Host

UPGRADE_VERSION = "0.1.0+upgrade1"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "realhost" in item.nodeid.split("/"):
            item.add_marker(pytest.mark.realhost)


@pytest.fixture(scope="session")
def debs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(this checkout's .deb, the same code as a newer version)."""
    out = tmp_path_factory.mktemp("realhost-debs")
    first = packaging.build_deb(out / "first")
    newer = packaging.build_deb(out / "newer", version=UPGRADE_VERSION)
    return first, newer


@pytest.fixture(scope="module", params=sorted(systemd_host.RECIPES))
def host(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Host]:
    name = request.param
    try:
        root = systemd_host.require(name)
    except systemd_host.HostError as exc:
        pytest.fail(str(exc), pytrace=False)
    # The pid: nspawn keeps per-machine state under /run/systemd/nspawn, so two test runs
    # at once must not share a name.
    booted = Host(root, tmp_path_factory.mktemp(f"host-{name}"), f"lb-{name}-{os.getpid()}")
    booted.boot()
    try:
        yield booted
    finally:
        booted.shutdown()
