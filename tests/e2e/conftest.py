"""Fixtures that run private libvirt daemons (``libvirt_bridge_lab.sandbox``).

On a machine that cannot run them (not root, libvirt or QEMU missing, a cell's root not
built), the fixtures fail with the reason instead of skipping: the end-to-end tests are
part of the suite. After each test, the fixtures check that the sandbox left no process
and no mount behind.

Every test that uses a sandbox runs once per libvirt *cell* chosen with
``--libvirt-cell`` (``system-monolithic`` by default; ``all`` for every cell), through the
``libvirt_cell`` fixture; its id names the cell (``test_x[11.3-modular]``). A test marked
``@pytest.mark.libvirt_modes("modular")`` is about one daemon mode: it runs on the chosen
cells of that mode only, and is deselected (not skipped) where none is chosen.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from libvirt_bridge_lab.sandbox import (
    Sandbox,
    check_host_can_run_libvirt,
    mounts_mentioning,
    process_alive,
)
from libvirt_bridge_lab.sandbox.cells import CELLS, Cell


def chosen_cells(config: pytest.Config) -> list[str]:
    value = str(config.getoption("--libvirt-cell"))
    names = list(CELLS) if value == "all" else [v.strip() for v in value.split(",") if v.strip()]
    for name in names:
        if name not in CELLS:
            raise pytest.UsageError(f"--libvirt-cell: no cell {name!r} (known: {CELLS}, all)")
    return names


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "libvirt_cell" in metafunc.fixturenames:
        names = chosen_cells(metafunc.config)
        metafunc.parametrize("libvirt_cell", [Cell.parse(n) for n in names], ids=names)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect the runs of ``libvirt_modes`` tests on cells of another daemon mode."""
    kept: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        marker = item.get_closest_marker("libvirt_modes")
        callspec = getattr(item, "callspec", None)
        cell = callspec.params.get("libvirt_cell") if callspec is not None else None
        if marker is not None and isinstance(cell, Cell) and cell.mode not in marker.args:
            dropped.append(item)
        else:
            kept.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


def require_libvirt_host(cell: Cell | None = None) -> None:
    reason = check_host_can_run_libvirt(cell)
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
def started_sandbox(root: Path, name: str, cell: Cell | None = None) -> Iterator[Sandbox]:
    """A started sandbox; closed and checked for leftovers on exit.

    Its daemons see the directory that holds ``root`` (the test's tmp_path) too.
    """
    sandbox = Sandbox(root, name, cell=cell, shared_dirs=[root.parent])
    try:
        sandbox.start()
        yield sandbox
    finally:
        pids = sandbox.pids()
        sandbox.close()
        assert_gone(sandbox, pids)


@pytest.fixture
def libvirt_host() -> None:
    """For a test that starts its own daemons on the host's libvirt (the demo's): fails,
    with the reason, where none can run."""
    require_libvirt_host()


@pytest.fixture
def runnable_cell(libvirt_cell: Cell) -> Cell:
    """The test's cell (``libvirt_cell``), for a test that starts its own daemons there (the
    demo's); fails, with the reason, where that cell cannot run."""
    require_libvirt_host(libvirt_cell)
    return libvirt_cell


@pytest.fixture
def make_sandbox(tmp_path: Path, libvirt_cell: Cell) -> Iterator[Callable[[str], Sandbox]]:
    """A factory: ``make_sandbox(name)`` starts a sandbox under ``tmp_path / name``."""
    require_libvirt_host(libvirt_cell)
    with contextlib.ExitStack() as stack:

        def make(name: str) -> Sandbox:
            return stack.enter_context(started_sandbox(tmp_path / name, name, libvirt_cell))

        yield make


@pytest.fixture
def sandbox(make_sandbox: Callable[[str], Sandbox]) -> Sandbox:
    """One running private libvirtd or virtqemud (hostname ``lbsb1``)."""
    return make_sandbox("lbsb1")


@pytest.fixture
def sandbox_pair(make_sandbox: Callable[[str], Sandbox]) -> tuple[Sandbox, Sandbox]:
    """Two running private daemons (``lbsb1``, ``lbsb2``), e.g. for migration."""
    return make_sandbox("lbsb1"), make_sandbox("lbsb2")
