"""``libvirt-bridge drain KEY`` (internal): run the queued async events of one domain.

The hook forks its runner directly; the listener, being multi-threaded, starts this
command instead.
"""

from __future__ import annotations

import argparse

from .. import config
from ..asyncq import drain
from ..log import Log, say
from ..state import is_uuid


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("drain", description="internal: run one async queue")
    parser.add_argument("key", help="the queue: a domain UUID, or daemon")
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    try:
        cfg = config.load()
    except config.ConfigError as exc:
        say(str(exc))
        return 1
    if args.key != "daemon" and not is_uuid(args.key):
        say(f"drain: {args.key!r} is neither a domain UUID nor 'daemon'")
        return 2
    drain(cfg, Log(cfg.log_file), args.key)
    return 0
