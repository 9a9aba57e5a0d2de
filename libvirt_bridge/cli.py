"""``libvirt-bridge``: one subcommand per module in ``libvirt_bridge.commands``."""

from __future__ import annotations

import argparse

from . import __version__
from .commands import (
    demo,
    drain,
    hook,
    install,
    lifecycle,
    listen,
    props,
    run,
    status,
    uninstall,
)
from .commands import list as list_

COMMANDS = (demo, install, uninstall, status, list_, lifecycle, props, run, listen, hook, drain)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="libvirt-bridge",
        description=(
            "Run oVirt VDSM-style hook directories (before_vm_start/50_pincpu, ...) on a "
            "plain libvirt/KVM host."
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        command.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    status: int = args.func(args)
    return status
