"""``libvirt-bridge history``: the record of every hook script run, filtered."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import sys
import time

from ..errors import OK, UsageError
from ..records import OUTCOMES
from . import options
from .options import AddParser

FOLLOW_INTERVAL = 0.5
_RELATIVE = re.compile(r"^(\d+)\s*([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
COLUMNS = ("time", "domain", "event", "script", "rc", "outcome", "duration")


def add_parser(add: AddParser) -> None:
    parser = options.add_command(
        add,
        "history",
        summary="the hook script runs on record: which ran for a VM, when, how they ended",
        description=(
            "Print the record of each hook script run (kept in state_dir, history_size KiB of "
            "it, the oldest dropped first): when it started, the domain, the VDSM event, "
            "what fired it (the libvirt call or event, a verb, a trial of `run`), the script, "
            "its exit status, its outcome ("
            + ", ".join(OUTCOMES)
            + "), how long it ran, whether it changed the XML, and the end of its stderr when "
            "it failed. A table by default, oldest first; --json prints one JSON object a "
            "line with the keys time (UTC), domain, uuid, event, source, script, rc, "
            "outcome, duration, xml_changed and stderr. --follow waits for new runs after "
            "printing those on record."
        ),
        epilog=options.examples(
            "libvirt-bridge history vm1",
            "libvirt-bridge history --failed --since 1h",
            "libvirt-bridge history vm1 --event before_vm_start --json",
            "libvirt-bridge history --since 2026-12-07T08:00 --follow",
        ),
    )
    parser.add_argument(
        "domain", metavar="DOMAIN", nargs="?", help="only this domain's runs (name or UUID)"
    )
    parser.add_argument("--event", metavar="EVENT", help="only this VDSM event's runs")
    parser.add_argument(
        "--since",
        metavar="TIME",
        help="only runs since TIME: a date and time (2026-12-07, 2026-12-07T08:00, local "
        "time unless it ends in Z or an offset) or a time ago (90s, 15m, 2h, 3d)",
    )
    parser.add_argument("--failed", action="store_true", help="only runs that did not succeed")
    parser.add_argument("--json", action="store_true", help="one JSON object a line")
    parser.add_argument("--follow", action="store_true", help="then wait for new runs")
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from .. import history

    since = parse_since(args.since) if args.since is not None else None
    cfg = options.load_config(args)

    def wanted(record: dict[str, object]) -> bool:
        if args.domain is not None and args.domain not in (
            record.get("domain"),
            record.get("uuid"),
        ):
            return False
        if args.event is not None and record.get("event") != args.event:
            return False
        if args.failed and record.get("outcome") == "ok":
            return False
        return since is None or record_time(record) >= since

    follower = history.Follower(cfg.state_dir) if args.follow else None
    shown = [r for r in history.read(cfg.state_dir) if wanted(r)]
    if not args.json:
        print(_row(COLUMNS))
    _print(shown, args.json)
    if not shown and not args.json and follower is None:
        print(f"(no run on record in {history.directory(cfg.state_dir)} matches)")
    while follower is not None:
        time.sleep(FOLLOW_INTERVAL)
        _print([r for r in follower.new() if wanted(r)], args.json)
    return OK


def parse_since(text: str) -> float:
    """``--since``'s value as a Unix time; UsageError naming the value when it is none."""
    value = text.strip()
    relative = _RELATIVE.match(value)
    if relative:
        return time.time() - int(relative.group(1)) * _UNITS[relative.group(2)]
    try:
        moment = datetime.datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(
            f"--since {text!r} is not a time: give a date and time (2026-12-07T08:00) or a "
            "time ago (90s, 15m, 2h, 3d)"
        ) from None
    return moment.timestamp()  # a naive time is local time


def record_time(record: dict[str, object]) -> float:
    try:
        return datetime.datetime.fromisoformat(str(record.get("time"))).timestamp()
    except ValueError:
        return 0.0


def _print(records: list[dict[str, object]], as_json: bool) -> None:
    for record in records:
        if as_json:
            print(json.dumps(record, ensure_ascii=False))
        else:
            print(_row(_cells(record)))
    sys.stdout.flush()


def _cells(record: dict[str, object]) -> tuple[str, ...]:
    local = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record_time(record)))
    rc = record.get("rc")
    duration = record.get("duration")
    return (
        local,
        str(record.get("domain") or "-"),
        str(record.get("event")),
        os.path.basename(str(record.get("script"))),
        "-" if rc is None else str(rc),
        str(record.get("outcome")),
        f"{duration:.3f}s" if isinstance(duration, int | float) else "?",
    )


def _row(cells: tuple[str, ...]) -> str:
    widths = (19, 16, 30, 24, 3, 9, 9)
    padded = [cell.ljust(width) for cell, width in zip(cells[:-1], widths, strict=False)]
    return " ".join([*padded, cells[-1].rjust(widths[-1])]).rstrip()
