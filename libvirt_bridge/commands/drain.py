"""``libvirt-bridge drain KEY`` (internal): run the queued async events of one domain.

The hook forks its runner directly; the listener, being multi-threaded, execs a small
bootstrap that calls the same ``asyncq.run_queue`` without this CLI's imports.
"""

from __future__ import annotations

import argparse

from ..asyncq import run_queue
from ..config import config_path


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("drain", description="internal: run one async queue")
    parser.add_argument("key", help="the queue: a domain UUID, or daemon")
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    return run_queue(config_path(), args.key)
