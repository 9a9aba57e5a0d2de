"""``demo`` and ``lab`` where the bench that runs them is not installed (a host's package).

The bench, ``libvirt_bridge_lab``, boots private libvirt daemons from the repository's
checkout; a host's Debian package does not carry it, so its commands say where they are.
"""

from __future__ import annotations

import argparse

from ..errors import BridgeError
from .options import AddParser

BENCH_COMMANDS = ("demo", "lab")


def add_parser(add: AddParser) -> None:
    for name in BENCH_COMMANDS:
        parser = add(
            name,
            help=f"(not installed here) the {name} comes with the repository's bench",
            description=(
                f"The {name} runs on libvirt-bridge's bench (libvirt_bridge_lab), which "
                "is not installed here: a host's package does not carry it. From a "
                "checkout of the repository, `sudo bash scripts/setup.sh` installs it "
                f"beside the bridge in .venv, and `sudo .venv/bin/libvirt-bridge {name}` "
                "runs it."
            ),
        )
        parser.add_argument("words", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
        parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    raise BridgeError(
        f"the {args.command} comes with libvirt-bridge's bench (libvirt_bridge_lab), which "
        "is not installed here; from a checkout of the repository: sudo bash "
        f"scripts/setup.sh && sudo .venv/bin/libvirt-bridge {args.command}"
    )
