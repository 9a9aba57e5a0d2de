"""The sandbox fixtures of the end-to-end tests, for the packaging tests too; the .deb,
built once per session; a package world on a running sandbox."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from e2e import conftest as e2e

from libvirt_bridge.sandbox import Sandbox
from testing import packaging
from testing.packaging import PackageWorld

libvirt_host = e2e.libvirt_host
make_sandbox = e2e.make_sandbox


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
def world(make_sandbox: Callable[[str], Sandbox], tmp_path: Path) -> Iterator[PackageWorld]:
    """A package world on a running sandbox; the package is purged from it on the way out."""
    world = PackageWorld(make_sandbox("lbdeb1"), tmp_path / "world")
    try:
        yield world
    finally:
        if packaging.status():
            world.run(["dpkg", "--purge", packaging.PACKAGE], check=False)
