"""``libvirt-bridge lab up|status|down``: a private libvirt to try hooks on, kept until down."""

from __future__ import annotations

import argparse
import shlex

from libvirt_bridge.commands import options
from libvirt_bridge.commands.options import AddParser
from libvirt_bridge.errors import OK, BridgeError

from ..lab import DEFAULT_DIR, GUEST, Lab
from . import add_libvirt_cell, libvirt_cell

FAILED = 1


def add_parser(add: AddParser) -> None:
    parser = options.add_command(
        add,
        "lab",
        summary="a private libvirt with one guest and the bridge installed, to try hooks on",
        description=(
            "up: boot a private libvirt daemon in its own namespaces (the host's libvirt "
            "is not touched), install the bridge and its listener in it, define one guest "
            f"({GUEST}, shut off), and print the URI to drive it with (virsh -c URI) and "
            "where its hook scripts, config and log are. The lab stays until down, across "
            "this command's exit. status: whether it runs, its guests' states and the "
            "listener. down: destroy its guests, stop it and remove its directory. up on "
            "a lab that runs prints it again. Needs root, libvirt and QEMU "
            "(scripts/setup.sh). Exit status: 0 done (status: the lab runs), 1 it failed "
            "(status: no lab runs there), 2 bad usage."
        ),
        epilog=options.examples(
            "sudo libvirt-bridge lab up",
            "sudo libvirt-bridge lab status",
            "sudo libvirt-bridge lab down",
            "sudo libvirt-bridge lab up --dir /srv/lab2 --libvirt 11.3-modular",
        ),
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, help_ in (
        ("up", "start the lab (or show the one that runs)"),
        ("status", "show whether the lab runs, its guests and its listener"),
        ("down", "stop the lab and remove its directory"),
    ):
        action = actions.add_parser(name, help=help_, description=help_)
        action.add_argument(
            "--dir",
            default=DEFAULT_DIR,
            metavar="DIR",
            help=f"the lab's directory (default: {DEFAULT_DIR})",
        )
        if name == "up":
            add_libvirt_cell(action)
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from .. import lab

    if args.action == "up":
        return _up(args)
    if args.action == "down":
        stopped = lab.down(args.dir)
        if stopped is None:
            print(f"no lab in {args.dir}: nothing to do")
        else:
            print(f"lab in {stopped.directory} stopped (its guests destroyed) and removed")
        return OK
    running = lab.running_lab(args.dir)
    if running is None:
        print(f"no lab runs in {args.dir} (`libvirt-bridge lab up --dir {args.dir}` starts one)")
        return FAILED
    return _status(running)


def _up(args: argparse.Namespace) -> int:
    from .. import lab

    started, new = lab.up(args.dir, str(libvirt_cell(args)))
    what = "started" if new else "runs already"
    print(
        f"lab {what} in {started.directory} (libvirt {started.libvirt}, pid {started.keeper_pid})"
    )
    _describe(started)
    return OK


def _describe(lab: Lab) -> None:
    uri = shlex.quote(lab.uri)
    config = shlex.quote(lab.config_path)
    print(f"  libvirt:  virsh -c {uri}")
    print(
        f"  guest:    {lab.guest} (a {lab.domain_type} domain with no OS; up defines it shut off)"
    )
    print(f"  hooks:    {lab.hooks_root}/<event>/<script> (root's, mode 0755)")
    print(f"  config:   {lab.config_path}")
    print(f"  log:      {lab.log_file}")
    print("  try it:")
    print(f"    export LIBVIRT_DEFAULT_URI={uri} LIBVIRT_BRIDGE_CONFIG={config}")
    print(f"    virsh start {lab.guest}; virsh suspend {lab.guest}; virsh destroy {lab.guest}")
    print(f"    libvirt-bridge run before_vm_start {lab.guest}; libvirt-bridge list")
    print(f"  down:     libvirt-bridge lab down --dir {shlex.quote(lab.directory)}")


def _status(lab: Lab) -> int:
    from libvirt_bridge import service
    from libvirt_bridge.connection import open_connection

    print(f"lab runs in {lab.directory} (libvirt {lab.libvirt}, its keeper pid {lab.keeper_pid})")
    _describe(lab)
    try:
        conn = open_connection(lab.uri, readonly=True)
    except BridgeError as exc:
        print(f"PROBLEM: its libvirt does not answer: {exc}")
        return FAILED
    try:
        from libvirt_bridge.listener import STATE_NAMES

        for dom in conn.listAllDomains():
            print(f"  domain:   {dom.name()} {STATE_NAMES.get(dom.state()[0], '?')}")
    finally:
        conn.close()
    pid = service.running_pid(lab.state_dir)
    print(f"  listener: {'pid ' + str(pid) if pid else 'not running'}")
    return OK
