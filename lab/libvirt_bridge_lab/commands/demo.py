"""``libvirt-bridge demo``: the bridge at work on a private, real libvirt."""

from __future__ import annotations

import argparse
import os

from libvirt_bridge.commands import options
from libvirt_bridge.commands.options import AddParser
from libvirt_bridge.errors import BridgeError, UsageError

from . import add_libvirt_cell, libvirt_cell


def add_parser(add: AddParser) -> None:
    parser = options.add_command(
        add,
        "demo",
        summary="show the bridge at work on two private libvirt daemons (about a minute)",
        description=(
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
    )
    parser.add_argument("--workdir", help="where the sandboxes live (default: a temp dir)")
    add_libvirt_cell(parser)
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    if args.workdir is not None and not os.path.isdir(args.workdir):
        raise UsageError(f"--workdir {args.workdir!r} is not a directory")
    cell = libvirt_cell(args)
    from ..demo import run_demo
    from ..sandbox import SandboxError

    try:
        return run_demo(workdir=args.workdir, cell=cell)
    except SandboxError as exc:
        raise BridgeError(str(exc)) from None
