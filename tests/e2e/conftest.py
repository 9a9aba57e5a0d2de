"""Fixtures that run private libvirt daemons (``libvirt_bridge.sandbox``).

On a machine that cannot run them (not root, libvirt or QEMU missing), the fixtures fail
with the reason instead of skipping: the end-to-end tests are part of the suite. After
each test, the fixtures check that the sandbox left no process and no mount behind.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from libvirt_bridge.sandbox import (
    Sandbox,
    check_host_can_run_libvirt,
    mounts_mentioning,
    process_alive,
)


def require_libvirt_host() -> None:
    reason = check_host_can_run_libvirt()
    if reason is not None:
        pytest.fail(f"cannot run the libvirt end-to-end tests here: {reason}", pytrace=False)


def assert_gone(sandbox: Sandbox, pids: list[int]) -> None:
    """No recorded process of ``sandbox`` runs and nothing is mounted under its root."""
    alive = [pid for pid in pids if process_alive(pid)]
    assert not alive, f"processes of {sandbox!r} still running: {alive}"
    assert sandbox.pids() == [], f"processes left in {sandbox!r}: {sandbox.pids()}"
    mounts = mounts_mentioning(sandbox.root)
    assert not mounts, f"mounts of {sandbox!r} left: {mounts}"


@contextlib.contextmanager
def started_sandbox(root: Path, name: str) -> Iterator[Sandbox]:
    """A started sandbox; closed and checked for leftovers on exit."""
    sandbox = Sandbox(root, name)
    try:
        sandbox.start()
        yield sandbox
    finally:
        pids = sandbox.pids()
        sandbox.close()
        assert_gone(sandbox, pids)


@pytest.fixture
def libvirt_host() -> None:
    """For a test that starts its own daemons: fails, with the reason, where none can run."""
    require_libvirt_host()


@pytest.fixture
def make_sandbox(tmp_path: Path) -> Iterator[Callable[[str], Sandbox]]:
    """A factory: ``make_sandbox(name)`` starts a sandbox under ``tmp_path / name``."""
    require_libvirt_host()
    with contextlib.ExitStack() as stack:

        def make(name: str) -> Sandbox:
            return stack.enter_context(started_sandbox(tmp_path / name, name))

        yield make


@pytest.fixture
def sandbox(make_sandbox: Callable[[str], Sandbox]) -> Sandbox:
    """One running private libvirtd (hostname ``lbsb1``)."""
    return make_sandbox("lbsb1")


@pytest.fixture
def sandbox_pair(make_sandbox: Callable[[str], Sandbox]) -> tuple[Sandbox, Sandbox]:
    """Two running private libvirtds (``lbsb1``, ``lbsb2``), e.g. for migration."""
    return make_sandbox("lbsb1"), make_sandbox("lbsb2")
