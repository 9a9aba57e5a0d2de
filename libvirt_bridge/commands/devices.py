"""``libvirt-bridge attach-device|detach-device|update-device``: the device verbs.

Each runs VDSM's "before" event of the device (see ``libvirt_bridge.device_verbs``), then
makes the change in libvirt.
"""

from __future__ import annotations

import argparse
import sys

from ..errors import UsageError
from ..runner import LIBVIRT_ENV_TEXT
from . import options
from .options import AddParser

# Operators may expect a variable exported in their shell to reach the scripts: it does not.
ENVIRONMENT = (
    "The scripts get that device's element alone in $_hook_domxml, and the environment "
    f"libvirt gives its hooks ({LIBVIRT_ENV_TEXT}) plus the device's custom properties, "
    "then the VM's, then vmId, as in VDSM. The domain must be running: a change of the "
    "persistent definition alone fires no VDSM event (use virsh --config)."
)
HELP = {
    "attach-device": (
        "run before_nic_hotplug (disk, memory), then attach the device in FILE",
        "Run before_nic_hotplug, before_disk_hotplug or before_memory_hotplug, by the "
        "device in FILE (an <interface>, a <disk> or a <memory>, or one of them in a "
        "<devices>), then attach the element the scripts leave to the running domain. A "
        "failing script stops it. The after event comes from the listener, as for virsh "
        "attach-device; a NIC libvirt refuses fires after_nic_hotplug_fail. --prop keeps "
        "the device's custom properties in the domain's metadata (live and persistent) "
        "before the attach, so its events get them (a refused attach takes them back).",
        "libvirt-bridge attach-device vm1 nic.xml --prop extnet=br-ext",
    ),
    "detach-device": (
        "run before_nic_hotunplug (disk), then detach the device",
        "Run before_nic_hotunplug or before_disk_hotunplug, for the device of the running "
        "domain that FILE describes or --device names (its MAC, disk target or alias), "
        "then detach it and wait until libvirt reports it gone (--wait seconds). A failing "
        "script stops it. The after event comes from the listener, as for virsh "
        "detach-device; a NIC that libvirt refuses to detach, or that is still there when "
        "the wait ends, fires after_nic_hotunplug_fail.",
        "libvirt-bridge detach-device vm1 --device 52:54:00:12:34:56",
    ),
    "update-device": (
        "run before_update_device, then update the NIC in FILE (link state, network)",
        "Run before_update_device on the <interface> in FILE (a NIC of the running domain, "
        "by its MAC), then update the NIC with the element the scripts leave. A failing "
        "script stops it. Then after_update_device, or after_update_device_fail when "
        "libvirt refuses the update.",
        "libvirt-bridge update-device vm1 nic-down.xml",
    ),
}


def add_parser(add: AddParser) -> None:
    for verb, (short, long, example) in HELP.items():
        parser = options.add_command(
            add,
            verb,
            summary=short,
            description=f"{long} {ENVIRONMENT}",
            epilog=options.examples(example),
            parents=[options.CONNECT],
        )
        parser.add_argument("domain", help="the domain's name, UUID or id")
        required = verb != "detach-device"
        parser.add_argument(
            "file",
            nargs=None if required else "?",
            help="the device's XML (- for stdin)" + ("" if required else "; or --device"),
        )
        if verb == "attach-device":
            parser.add_argument(
                "--prop",
                action="append",
                default=[],
                metavar="NAME=VALUE",
                help="a custom property of the device, kept in the metadata (repeatable)",
            )
        if verb == "detach-device":
            parser.add_argument(
                "--device", metavar="ID", help="the device, by its MAC, disk target or alias"
            )
            parser.add_argument(
                "--wait",
                type=float,
                default=30.0,
                metavar="SECONDS",
                help="how long to wait for the device to be gone (default: 30)",
            )
        parser.add_argument(
            "--persistent",
            action="store_true",
            help="change the persistent definition too",
        )
        parser.set_defaults(func=main, verb=verb)


def main(args: argparse.Namespace) -> int:
    from .. import props
    from ..device_verbs import DeviceVerbs
    from ..verbs import Verbs

    try:
        new_props = props.parse_assignments(getattr(args, "prop", []))
    except props.PropsError as exc:
        raise UsageError(f"--prop: {exc}") from None
    device = getattr(args, "device", None)
    if args.verb == "detach-device" and (args.file is None) == (device is None):
        raise UsageError("detach-device takes the device's FILE or --device ID, one of them")
    if args.verb == "detach-device" and args.wait < 0:
        raise UsageError(f"--wait {args.wait:g}: a wait cannot be negative")
    xml = _read(args.file) if args.file else b""
    verbs = Verbs(options.load_config(args), args.connect)
    try:
        device_verbs = DeviceVerbs(verbs)
        if args.verb == "attach-device":
            device_verbs.attach(args.domain, xml, new_props, args.persistent)
        elif args.verb == "update-device":
            device_verbs.update(args.domain, xml, args.persistent)
        else:
            ident = device if device is not None else _ident_of(xml)
            device_verbs.detach(args.domain, ident, args.persistent, args.wait)
    finally:
        verbs.close()
    return 0


def _read(path: str) -> bytes:
    try:
        if path == "-":
            return sys.stdin.buffer.read()
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None


def _ident_of(xml: bytes) -> str:
    """What names the device of ``xml`` in the domain: its MAC, target or alias."""
    from .. import devices, domxml

    try:
        key = devices.key_of(devices.parse_element(xml))
    except (domxml.XMLError, devices.DeviceError) as exc:
        raise UsageError(f"the device file holds no device: {exc}") from None
    if key is None:
        raise UsageError("the device in the file has no MAC, target or alias to find it by")
    return key.value
