"""The bench's commands, ``demo`` and ``lab``, and the option they share.

``libvirt_bridge.cli`` adds these to ``libvirt-bridge`` when this package is installed.
"""

from __future__ import annotations

import argparse

from libvirt_bridge.errors import BridgeError, UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..sandbox.cells import Cell


def add_libvirt_cell(parser: argparse.ArgumentParser) -> None:
    """``--libvirt CELL``: which libvirt a private sandbox runs (demo, lab)."""
    parser.add_argument(
        "--libvirt",
        metavar="CELL",
        default="system-monolithic",
        help=(
            "which libvirt the daemons run, and how: the host's own (system-monolithic, "
            "the default: one libvirtd), or libvirt 11.3 from the cached root with one "
            "libvirtd (11.3-monolithic) or modular daemons (11.3-modular: virtqemud, "
            "virtlogd)"
        ),
    )


def libvirt_cell(args: argparse.Namespace) -> Cell:
    """``--libvirt``'s cell, once this host can run it (UsageError, BridgeError)."""
    # The sandbox is imported here, not with the CLI: it is most of the CLI's import time.
    from ..sandbox import SandboxError, check_host_can_run_libvirt
    from ..sandbox.cells import Cell

    try:
        cell = Cell.parse(args.libvirt)
    except SandboxError as exc:
        raise UsageError(f"--libvirt: {exc}") from None
    reason = check_host_can_run_libvirt(cell)
    if reason is not None:
        raise BridgeError(f"cannot run libvirt {cell} here: {reason}")
    return cell
