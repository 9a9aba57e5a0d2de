"""``libvirt-bridge hook DRIVER OBJECT OP SUBOP EXTRA``: what libvirt's hook files run."""

from __future__ import annotations

import argparse
import sys

from ..dispatch import run
from . import options
from .options import AddParser


def add_parser(add: AddParser) -> None:
    parser = add(
        "hook",
        help="handle one libvirt hook call, exactly as /etc/libvirt/hooks/qemu or daemon",
        description=(
            "Handle one libvirt hook call, exactly as the installed /etc/libvirt/hooks/qemu "
            "and /etc/libvirt/hooks/daemon files do: the domain XML on stdin, the "
            "(possibly rewritten) XML on stdout for migrate and restore, a non-zero exit "
            "to refuse the operation."
        ),
        epilog=options.examples(
            "libvirt-bridge hook qemu vm1 prepare begin - < vm1.xml",
            "libvirt-bridge hook daemon - start - start",
        ),
    )
    parser.add_argument("driver", choices=["qemu", "daemon"], help="which libvirt hook")
    parser.add_argument("object", help="the domain name, or - for the daemon hook")
    parser.add_argument("op", help="libvirt's operation: prepare, start, started, stopped, ...")
    parser.add_argument("subop", help="begin, end or -")
    parser.add_argument("extra", help="libvirt's extra argument, usually -")
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    argv = [args.object, args.op, args.subop, args.extra]
    return run(args.driver, argv, options.config_path(args), sys.stdin.buffer, sys.stdout.buffer)
