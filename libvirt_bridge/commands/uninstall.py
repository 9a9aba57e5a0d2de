"""``libvirt-bridge uninstall``: remove the launchers, put back the hooks they kept."""

from __future__ import annotations

import argparse
import textwrap

from .. import installation
from ..installation import InstallError


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "uninstall",
        help="remove the hook launchers and restore the hooks they kept (idempotent)",
        description=textwrap.fill(
            "Remove the bridge's launchers CONFDIR/hooks/qemu and CONFDIR/hooks/daemon (only "
            "files written by libvirt-bridge) and rename the kept earlier hooks qemu.legacy "
            "and daemon.legacy back, unchanged (a libvirt-bridge launcher kept there is removed, "
            "never restored), and remove the logrotate entry install wrote. The hooks roots, "
            "their scripts, the log and the config file are left alone. The running "
            "libvirtd/virtqemud that uses CONFDIR gets a "
            "SIGHUP so that it looks for hooks again."
        ),
        epilog=(
            "examples: sudo libvirt-bridge uninstall\n"
            "          sudo libvirt-bridge uninstall --dry-run"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    installation.add_confdir_argument(parser)
    installation.add_config_argument(parser)
    installation.add_logrotate_dir_argument(parser)
    parser.add_argument(
        "--dry-run", action="store_true", help="print what would be done; change nothing"
    )
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    config_path = installation.config_argument(args.config)
    try:
        plan = installation.plan_uninstall(args.confdir, config_path, args.logrotate_dir)
        plan.execute(args.dry_run)
    except InstallError as exc:
        installation.error("uninstall", str(exc))
        return 1
    return 0
