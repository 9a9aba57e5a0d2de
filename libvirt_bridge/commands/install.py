"""``libvirt-bridge install``: the launchers, the hooks roots and the default config."""

from __future__ import annotations

import argparse
import textwrap

from .. import installation
from ..installation import InstallError


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "install",
        help="install the hook launchers into libvirt's hooks directory (idempotent)",
        description=textwrap.fill(
            "Install the bridge: the launchers CONFDIR/hooks/qemu and CONFDIR/hooks/daemon "
            "that libvirt executes, one directory per VDSM event under every hooks root of "
            "the config, and the config file with every default when it does not exist (an "
            "existing config is never changed; an invalid one is refused). A foreign hook "
            "already at hooks/qemu or hooks/daemon is kept as qemu.legacy (daemon.legacy) "
            "and runs first. libvirt looks for hooks only at start and on SIGHUP, so the "
            "running libvirtd/virtqemud that uses CONFDIR gets a SIGHUP. Running it again "
            "updates the launchers and changes nothing else."
        ),
        epilog=(
            "examples: sudo libvirt-bridge install\n"
            "          sudo libvirt-bridge install --dry-run\n"
            "          sudo libvirt-bridge install --confdir /srv/lab/etc/libvirt "
            "--config /srv/lab/bridge.toml"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    installation.add_confdir_argument(parser)
    installation.add_config_argument(parser)
    parser.add_argument(
        "--dry-run", action="store_true", help="print what would be done; change nothing"
    )
    parser.add_argument(
        "--no-listener",
        action="store_true",
        help="do not install or start the listener (pause, continue and incoming-migration "
        "events then never fire)",
    )
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    config_path = installation.config_argument(args.config)
    try:
        plan = installation.plan_install(args.confdir, config_path, listener=not args.no_listener)
        plan.execute(args.dry_run)
    except InstallError as exc:
        installation.error("install", str(exc))
        return 1
    return 0
