"""``libvirt-bridge uninstall``: remove the launchers, put back the hooks they kept."""

from __future__ import annotations

import argparse

from .. import cockpit, installation
from .. import config as configmod
from . import options
from .options import AddParser


def add_parser(add: AddParser) -> None:
    parser = options.add_command(
        add,
        "uninstall",
        summary="remove the hook launchers and restore the hooks they kept (idempotent)",
        description=(
            "Remove the bridge's launchers CONFDIR/hooks/qemu and CONFDIR/hooks/daemon (only "
            "files written by libvirt-bridge) and rename the kept earlier hooks qemu.legacy "
            "and daemon.legacy back, unchanged (a libvirt-bridge launcher kept there is removed, "
            "never restored), and remove the logrotate entry and the Cockpit page install "
            "wrote. The hooks roots, their scripts, the log and the config file are left "
            "alone. The running libvirtd/virtqemud that uses CONFDIR gets a "
            "SIGHUP so that it looks for hooks again. Without --config or "
            f"${configmod.ENV_VAR}, the config is the one the installed launchers read, so "
            "that uninstall undoes what install did with it (the Debian package's prerm "
            "relies on this)."
        ),
        epilog=options.examples(
            "sudo libvirt-bridge uninstall", "sudo libvirt-bridge uninstall --dry-run"
        ),
        parents=[options.INSTALLING],
    )
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    config_path = options.config_path(args)
    plan = installation.plan_uninstall(options.confdir(args), config_path, args.logrotate_dir)
    cockpit.plan_uninstall(plan, args.cockpit_dir)
    plan.execute(args.dry_run)
    return 0
