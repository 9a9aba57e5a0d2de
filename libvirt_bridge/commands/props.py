"""``libvirt-bridge props DOMAIN get|set|unset``: a VM's custom properties in its metadata."""

from __future__ import annotations

import argparse
import json
import sys

from ..config import Config, ConfigError
from ..errors import OK, BridgeError, UsageError
from ..screening import VM, refusal
from . import options
from .options import AddParser

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..props import DeviceEntry
    from ..schema import Schema

DEVICE_HELP = (
    "a device's properties instead of the VM's: ID is a NIC's MAC, a disk's target (vda), a "
    "device's alias (ua-hd0), an mdev's UUID, a lease's key, or DEVTYPE:NAME (disk:vdb, "
    "hostdev:ua-hd0) for a device that is not plugged (yet, or any more)"
)

# (action, help, description, example)
ACTIONS = (
    (
        "get",
        "print the properties as NAME=VALUE lines",
        "Print the domain's custom properties as NAME=VALUE lines, sorted by name (of the "
        "live definition when the domain runs); --json prints an object.",
        "libvirt-bridge props vm1 get --json",
    ),
    (
        "set",
        "set properties: NAME=VALUE...",
        "Set custom properties, in the persistent definition and, when the domain runs, in "
        "the live one. VALUE is everything after the first =.",
        "libvirt-bridge props vm1 set pincpu=1-4 'label=web server' empty=",
    ),
    (
        "devices",
        "list the device entries of the metadata: each device's properties, and whether "
        "the device is there",
        "List every device entry of the domain's ovirt-vm metadata (of each definition): "
        "the device it names, whether that device is in the domain (an entry can name a "
        "device before it is plugged, or after it is detached), and its properties as "
        "NAME=VALUE lines; --json prints a list of objects.",
        "libvirt-bridge props vm1 devices",
    ),
    (
        "unset",
        "remove properties: NAME...",
        "Remove custom properties, from the persistent definition and, when the domain "
        "runs, from the live one. A property that is not set is not an error. Any name "
        "can be removed, one that is refused too.",
        "libvirt-bridge props vm1 unset pincpu label",
    ),
)


def add_parser(add: AddParser) -> None:
    parser = options.add_command(
        add,
        "props",
        summary=(
            "get, set or unset a VM's custom properties (what hook scripts get in their "
            "environment)"
        ),
        description=(
            "Show or change the custom properties of a domain: the "
            "<ovirt-vm:custom><ovirt-vm:NAME>VALUE</ovirt-vm:NAME> elements in its "
            "ovirt-vm metadata, as oVirt writes them and as the bridge exports them to every "
            "hook script as the environment variable NAME. A change is made in the "
            "persistent definition and, when the domain runs, in the live one too; the rest "
            "of the ovirt-vm metadata is left as it is. get prints NAME=VALUE lines, sorted "
            "(values verbatim; --json for an object), marks with # the properties that "
            "never reach scripts, and says so when the live and the persistent definitions "
            "differ. A NAME is made of ASCII letters, digits and _ and does not start with "
            "a digit, and is not one that changes how a program runs (PATH, LD_PRELOAD, "
            "BASH_ENV, ...: docs/security.md); a VALUE is any text. With a property schema "
            "in force ([properties] in the config), set takes only declared names whose "
            "value matches; `libvirt-bridge check-props` lists what is refused on every "
            "domain. Exit status: 0 done, 1 when libvirt or the domain fails, 2 for bad "
            "usage or a refused property."
        ),
        epilog=options.examples(
            "libvirt-bridge props vm1 set pincpu=1-4 'label=web server'",
            "libvirt-bridge props vm1 get",
            "libvirt-bridge props vm1 get --json",
            "libvirt-bridge props vm1 unset label",
            "libvirt-bridge props --connect qemu+ssh://host2/system vm1 get",
        ),
        parents=[options.CONNECT],
    )
    parser.add_argument("domain", metavar="DOMAIN", help="the domain's name, UUID or id")
    parser.add_argument("--device", metavar="ID", help=DEVICE_HELP)
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    for name, help_, description, example in ACTIONS:
        action = actions.add_parser(
            name, help=help_, description=description, epilog=f"example: {example}"
        )
        if name == "devices":
            action.add_argument("--json", action="store_true", help="print a list of objects")
        elif name == "get":
            action.add_argument("--json", action="store_true", help='print {"NAME": "VALUE", ...}')
            action.add_argument(
                "--inactive",
                action="store_true",
                help="show the persistent definition (what the next start uses), even when it runs",
            )
        elif name == "set":
            action.add_argument("assignments", nargs="+", metavar="NAME=VALUE")
        else:
            action.add_argument("names", nargs="+", metavar="NAME")
        # Also after the action: ``props vm1 get --connect URI`` (SUPPRESS: one given before
        # the action is not reset).
        options.add_config(action, argparse.SUPPRESS)
        options.add_confdir(action, argparse.SUPPRESS)
        options.add_connect(action, argparse.SUPPRESS)
        if name != "devices":
            action.add_argument(
                "--device", metavar="ID", default=argparse.SUPPRESS, help=DEVICE_HELP
            )
    parser.set_defaults(func=main)


def note(message: str, command: str = "props") -> None:
    sys.stderr.write(f"libvirt-bridge {command}: {message}\n")


def main(args: argparse.Namespace) -> int:
    from .. import props
    from ..connection import find_domain, open_connection

    try:
        if args.action == "set":
            changes = props.parse_assignments(args.assignments)
            removals: list[str] = []
        elif args.action == "unset":
            for name in args.names:
                props.check_removable(name)
            changes, removals = {}, list(dict.fromkeys(args.names))
    except props.PropsError as exc:
        raise UsageError(str(exc)) from None
    cfg = config_or_none(args)
    uri: str = args.connect or (cfg.libvirt_uri if cfg is not None else "")
    schema = cfg.property_schema if cfg is not None else None
    if args.action == "devices" and args.device is not None:
        raise UsageError("devices lists every device's entry: it takes no --device")
    conn = open_connection(uri, readonly=args.action in ("get", "devices"))
    try:
        dom = find_domain(conn, args.domain)
        if args.action == "devices":
            return _devices(dom.name(), props.device_entries(dom), args.json)
        device = None if args.device is None else props.resolve_device(dom, args.device)
        if device is not None and not device.present:
            note(
                f"no device of {dom.name()} is the {device}: its properties are in the "
                "metadata for when it is plugged (after_nic_hotplug, a start, ...)"
            )
        subject = dom.name() if device is None else f"{dom.name()} {device}"
        scope = VM if device is None else device.tag
        if args.action == "get":
            found = props.read(dom, device)
            return _get(subject, found, args.json, args.inactive, scope, schema)
        try:
            props.check_against_schema(changes, schema, scope, cfg.path if cfg else "")
        except props.PropsError as exc:
            raise UsageError(str(exc)) from None
        outcome = props.change(dom, changes, removals, device)
        return _change(subject, outcome, changes, removals)
    finally:
        conn.close()


def _devices(domain: str, entries: list[DeviceEntry], as_json: bool) -> int:
    if as_json:
        listed = [
            {
                "device": str(entry.key),
                "id": entry.key.ident(),
                "present": entry.present,
                "properties": entry.properties,
            }
            for entry in entries
        ]
        print(json.dumps(listed, indent=2, sort_keys=True))
        return OK
    if not entries:
        print(f"{domain}: no device entry in its metadata")
    for entry in entries:
        where = ", ".join(f"<{tag}> in the {which}" for which, tag in entry.present.items())
        print(f"{entry.key} (--device {entry.key.ident()}): {where or 'no such device'}")
        shown = _one_or_each(entry.properties)
        for which, found in shown.items():
            label = f"  {which}:" if len(shown) > 1 else ""
            if label:
                print(label)
            for name, value in sorted(found.items()):
                print(f"{'    ' if label else '  '}{name}={value}")
    return OK


def _one_or_each(by_definition: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
    """The properties once when every definition holds the same, else each definition's."""
    values = list(by_definition.values())
    if all(found == values[0] for found in values[1:]):
        return {"": values[0]} if values else {}
    return by_definition


def config_or_none(args: argparse.Namespace, command: str = "props") -> Config | None:
    """The bridge's config (for its schema and URI); None when it cannot be read and
    --connect names the URI (then only the names that never reach scripts are judged)."""
    try:
        return options.load_config(args)
    except ConfigError as exc:
        if not args.connect:
            raise ConfigError(f"{exc} (or give --connect URI)") from None
        note(f"{exc}; the property schema is not applied", command)
        return None


def _get(
    name: str,
    found: dict[str, dict[str, str]],
    as_json: bool,
    inactive: bool,
    scope: str,
    schema: Schema | None,
) -> int:
    from ..props import LIVE, PERSISTENT

    if inactive and PERSISTENT not in found:
        raise BridgeError(f"domain {name} is transient: it has no persistent definition")
    shown_which = PERSISTENT if inactive or LIVE not in found else LIVE
    shown = found[shown_which]
    refused = {key: refusal(scope, key, value, schema) for key, value in shown.items()}
    if as_json:
        reaching = {key: value for key, value in shown.items() if refused[key] is None}
        print(json.dumps(dict(sorted(reaching.items())), indent=2, ensure_ascii=False))
    else:
        for key, value in sorted(shown.items()):
            why = refused[key]
            print(f"{key}={value}" if why is None else f"# refused: {key}={value} ({why})")
    if as_json:
        for key, why in sorted(refused.items()):
            if why is not None:
                note(
                    f"domain {name}: {key}={shown[key]} is refused, so scripts never get it: {why}"
                )
    other_which = LIVE if shown_which == PERSISTENT else PERSISTENT
    other = found.get(other_which)
    if other is not None and other != shown:
        used = {LIVE: "the running VM's", PERSISTENT: "used from the next start"}
        note(
            f"domain {name}: the {other_which} definition ({used[other_which]}) differs from "
            f"the {shown_which} one shown:\n" + "\n".join(_differences(shown, other, shown_which))
        )
    elif not shown and not as_json:
        note(f"domain {name} has no custom properties")
    return OK


def _differences(shown: dict[str, str], other: dict[str, str], shown_which: str) -> list[str]:
    lines = []
    for key in sorted(set(shown) | set(other)):
        if shown.get(key) == other.get(key):
            continue
        was = f"{shown_which}: {shown[key]!r}" if key in shown else f"{shown_which}: not set"
        now = f"{key}={other[key]}" if key in other else f"{key} not set"
        lines.append(f"  {now}  ({was})")
    return lines


def _change(
    name: str,
    outcome: dict[str, tuple[dict[str, str], dict[str, str]]],
    changes: dict[str, str],
    removals: list[str],
) -> int:
    every = tuple(outcome)
    for key, value in changes.items():
        changed = tuple(which for which, (before, _) in outcome.items() if before.get(key) != value)
        if changed:
            print(f"{name}: set {key}={value} in {_where(changed, every)}")
        else:
            print(f"{name}: {key}={value} was set already")
    for key in removals:
        changed = tuple(which for which, (before, _) in outcome.items() if key in before)
        if changed:
            print(f"{name}: unset {key} in {_where(changed, every)}")
        else:
            note(f"domain {name}: {key} was not set; nothing to remove")
    return OK


def _where(changed: tuple[str, ...], every: tuple[str, ...]) -> str:
    """Which definitions a change went into, said for people."""
    from ..props import LIVE, PERSISTENT

    if changed != every:
        other = next(which for which in every if which not in changed)
        return f"the {changed[0]} definition only (the {other} one was so already)"
    if changed == (PERSISTENT,):
        return "the persistent definition (the domain is not running)"
    if changed == (LIVE,):
        return "the live definition (the domain is transient: it has no persistent one)"
    return "the live and persistent definitions"
