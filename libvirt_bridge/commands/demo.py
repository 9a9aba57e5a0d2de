"""``libvirt-bridge demo``: the bridge at work on a private, real libvirt."""

from __future__ import annotations

import argparse
import os
import textwrap

from ..errors import BridgeError, UsageError
from .options import AddParser


def add_parser(add: AddParser) -> None:
    parser = add(
        "demo",
        help="show the bridge at work on two private libvirt daemons (about a minute)",
        description=textwrap.fill(
            "Boot two private libvirt daemons in their own namespaces (the host's libvirt "
            "is not touched), install the bridge, a probe script for every VDSM event and "
            "the listener in each, then drive one guest through start, suspend, resume, "
            "attaching and detaching a disk and a NIC, save, restore, managedsave and "
            "start, a live migration there and back, destroy and a daemon restart, printing "
            "after each action the VDSM events it fired. Exits 1 if an expected event did "
            "not fire. Needs root, libvirt and QEMU (scripts/setup.sh installs them, and "
            "builds the libvirt 11.3 root that --libvirt 11.3-... runs)."
        ),
        epilog=(
            "examples:\n  sudo .venv/bin/libvirt-bridge demo\n"
            "  sudo .venv/bin/libvirt-bridge demo --libvirt 11.3-modular"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--workdir", help="where the sandboxes live (default: a temp dir)")
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
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    # The sandbox is imported here, not with the CLI: it is most of the CLI's import time.
    from ..sandbox import SandboxError, check_host_can_run_libvirt
    from ..sandbox.cells import Cell

    try:
        cell = Cell.parse(args.libvirt)
    except SandboxError as exc:
        raise UsageError(f"--libvirt: {exc}") from None
    if args.workdir is not None and not os.path.isdir(args.workdir):
        raise UsageError(f"--workdir {args.workdir!r} is not a directory")
    reason = check_host_can_run_libvirt(cell)
    if reason is not None:
        raise BridgeError(f"cannot run libvirt {cell} here: {reason}")
    from ..demo import run_demo

    try:
        return run_demo(workdir=args.workdir, cell=cell)
    except SandboxError as exc:
        raise BridgeError(str(exc)) from None
