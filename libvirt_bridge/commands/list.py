"""``libvirt-bridge list``: the scripts each event runs, in order, with their sha256; with
``--domains``, the domains of libvirt_uri instead (what Cockpit's Hooks page offers)."""

from __future__ import annotations

import argparse
import json
import sys

from .. import installation
from ..errors import UsageError
from ..log import Log
from . import options
from .options import AddParser


class _StderrLog(Log):
    """Tells the user, not the bridge's log file, why a file does not run."""

    def line(self, level: str, message: str, fields: dict[str, str] | None = None) -> None:
        sys.stderr.write(f"{level.lower()}: {message}\n")


def add_parser(add: AddParser) -> None:
    parser = options.add_command(
        add,
        "list",
        summary=(
            "list the scripts each event runs, in run order, with their sha256 (--domains: "
            "the domains)"
        ),
        description=(
            "List, per VDSM event that has at least one script that would run, its scripts "
            "in run order with their sha256 (like VDSM's installed() report; an unreadable "
            'script gets checksum ""). The rules are the hook\'s own: files that are not '
            "executable, or are refused for their owner or mode, are left out and named on "
            "stderr. --json prints "
            '{"<event>": {"<script>": {"checksum": "<sha256>", "path": "<path>"}}}.'
        ),
        epilog=options.examples(
            "libvirt-bridge list",
            "libvirt-bridge list --json --config /srv/lab/bridge.toml",
            "libvirt-bridge list --domains --json",
        ),
        parents=[options.CONNECT],
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.add_argument(
        "--domains",
        action="store_true",
        help="list the domains of libvirt_uri, with their state, instead of the scripts",
    )
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    if args.domains:
        return list_domains(options.libvirt_uri(args), args.json)
    if args.connect:
        raise UsageError("--connect is for --domains: the scripts are this host's")
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


# virsh's words for a domain's state (virDomainState).
STATE_WORDS = (
    "no state",
    "running",
    "blocked",
    "paused",
    "in shutdown",
    "shut off",
    "crashed",
    "pmsuspended",
)


def domain_rows(uri: str) -> list[dict[str, object]]:
    """Every domain of ``uri``, running or defined: name, UUID, state and persistence."""
    import libvirt

    from ..connection import LibvirtFailure, list_domains, message, open_connection

    conn = open_connection(uri, readonly=True)
    try:
        rows: list[dict[str, object]] = []
        for dom in list_domains(conn):
            try:
                state = dom.state()[0]
                persistent = bool(dom.isPersistent())
            except libvirt.libvirtError as exc:
                # A domain that went away meanwhile is no longer one to list.
                if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                    continue
                raise LibvirtFailure(f"cannot read domain {dom.name()!r}: {message(exc)}") from None
            word = STATE_WORDS[state] if 0 <= state < len(STATE_WORDS) else f"state {state}"
            rows.append(
                {
                    "name": dom.name(),
                    "uuid": dom.UUIDString(),
                    "state": word,
                    "persistent": persistent,
                }
            )
    finally:
        conn.close()
    return rows


def list_domains(uri: str, as_json: bool) -> int:
    rows = domain_rows(uri)
    if as_json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return 0
    if not rows:
        print(f"no domain on {uri}")
    width = max((len(str(row["name"])) for row in rows), default=0)
    for row in rows:
        transient = "" if row["persistent"] else " (transient)"
        print(f"{row['name']:<{width}}  {row['uuid']}  {row['state']}{transient}")
    return 0
