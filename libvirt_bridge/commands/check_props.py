"""``libvirt-bridge check-props [DOMAIN]``: the custom properties that never reach scripts."""

from __future__ import annotations

import argparse
import json

from ..errors import FAILED, OK
from . import options
from .options import AddParser
from .props import config_or_none, note


def add_parser(add: AddParser) -> None:
    parser = options.add_command(
        add,
        "check-props",
        summary="list the custom properties of the domains that never reach hook scripts",
        description=(
            "List the custom properties, the VMs' and their devices', in the live and "
            "persistent definitions of DOMAIN (without DOMAIN: of every domain, running or "
            "defined) that the bridge keeps from hook scripts: names that are not plain, "
            "names that change how a program, a shell, the dynamic loader or an "
            "interpreter runs, names the bridge sets itself, and, with a property schema "
            "in force ([properties] in the config), names it does not declare and values "
            "that do not match (docs/security.md). Each is printed with its fix. Exit "
            "status: 0 when none is refused, 1 when one is or libvirt fails, 2 for bad "
            "usage."
        ),
        epilog=options.examples(
            "libvirt-bridge check-props",
            "libvirt-bridge check-props vm1 --json",
        ),
        parents=[options.CONNECT],
    )
    parser.add_argument(
        "domain", metavar="DOMAIN", nargs="?", help="only this domain (name, UUID or id)"
    )
    parser.add_argument(
        "--json", action="store_true", help="print a JSON array, one object per refused property"
    )
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from .. import props
    from ..connection import find_domain, list_domains, open_connection

    cfg = config_or_none(args, "check-props")
    uri: str = args.connect or (cfg.libvirt_uri if cfg is not None else "")
    schema = cfg.property_schema if cfg is not None else None
    conn = open_connection(uri, readonly=True)
    try:
        doms = [find_domain(conn, args.domain)] if args.domain else list_domains(conn)
        found = [refused for dom in doms for refused in props.refused_in(dom, schema)]
    finally:
        conn.close()
    if args.json:
        print(json.dumps([f.to_json() for f in found], indent=2, ensure_ascii=False))
    else:
        for refused in found:
            print(f"{refused.describe()}\n  fix: {refused.fix()}")
    if found:
        count = f"{len(found)} propert{'y is' if len(found) == 1 else 'ies are'}"
        note(f"{count} refused: hook scripts never get them", "check-props")
        return FAILED
    if not args.json:
        print(f"{len(doms)} domain(s) checked: every custom property reaches the scripts")
    return OK
