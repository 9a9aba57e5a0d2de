"""The .deb, built once per session, and a package world on a running sandbox (started
as the end-to-end tests start theirs)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e import conftest as e2e

from testing import packaging
from testing.packaging import PackageWorld


@pytest.fixture(scope="session")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if packaging.status():
        pytest.fail(
            f"{packaging.PACKAGE} is known to dpkg on this machine ({packaging.status()}); "
            "the packaging tests install and purge it: purge it first",
            pytrace=False,
        )
    return packaging.build_deb(tmp_path_factory.mktemp("deb"))


@pytest.fixture
def world(tmp_path: Path) -> Iterator[PackageWorld]:
    """A package world on a running sandbox of this machine's libvirt (the one the package's
    python3-libvirt is built for); the package is purged from it on the way out."""
    e2e.require_libvirt_host()
    with e2e.started_sandbox(tmp_path / "lbdeb1", "lbdeb1") as sandbox:
        world = PackageWorld(sandbox, tmp_path / "world")
        try:
            yield world
        finally:
            if packaging.status():
                world.run(["dpkg", "--purge", packaging.PACKAGE], check=False)
