"""``libvirt-bridge list``: the scripts each event runs, in order, with their sha256."""

from __future__ import annotations

import argparse
import json
import sys
import textwrap

from .. import installation
from ..log import Log
from . import options
from .options import AddParser


class _StderrLog(Log):
    """Tells the user, not the bridge's log file, why a file does not run."""

    def line(self, level: str, message: str, fields: dict[str, str] | None = None) -> None:
        sys.stderr.write(f"{level.lower()}: {message}\n")


def add_parser(add: AddParser) -> None:
    parser = add(
        "list",
        parents=[],
        help="list the scripts each event runs, in run order, with their sha256",
        description=textwrap.fill(
            "List, per VDSM event that has at least one script that would run, its scripts "
            "in run order with their sha256 (like VDSM's installed() report; an unreadable "
            'script gets checksum ""). The rules are the hook\'s own: files that are not '
            "executable, or are refused for their owner or mode, are left out and named on "
            "stderr. --json prints "
            '{"<event>": {"<script>": {"checksum": "<sha256>", "path": "<path>"}}}.'
        ),
        epilog=(
            "examples: libvirt-bridge list\n"
            "          libvirt-bridge list --json --config /srv/lab/bridge.toml"
        ),
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    cfg = installation.read_config(options.config_path(args))
    roots = [installation.host_path(root, options.confdir(args)) for root in cfg.hooks_dirs]
    report = installation.installed(roots, _StderrLog(""))
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    if not report:
        print(f"no script would run (hooks roots: {', '.join(roots)})")
    for event, scripts in report.items():
        print(f"{event}:")
        width = max(len(name) for name in scripts)
        for name, entry in scripts.items():
            shown = entry["checksum"] or "(unreadable)"
            print(f"  {name:<{width}}  {shown}  {entry['path']}")
    return 0
