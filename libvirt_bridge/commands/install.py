"""``libvirt-bridge install``: the launchers, the hooks roots and the default config.

``--hooks NAME...`` also copies shipped hooks (``hooks.d``, see ``libvirt_bridge.catalogue``)
into the first hooks root; ``--hooks list`` lists them and installs nothing.
"""

from __future__ import annotations

import argparse
import os
from functools import partial

from .. import catalogue, cockpit, installation, service
from .. import config as configmod
from ..catalogue import CatalogueError
from ..installation import Plan
from . import options
from .options import AddParser


def add_parser(add: AddParser) -> None:
    parser = options.add_command(
        add,
        "install",
        summary="install the hook launchers into libvirt's hooks directory (idempotent)",
        description=(
            "Install the bridge: the launchers CONFDIR/hooks/qemu and CONFDIR/hooks/daemon "
            "that libvirt executes, one directory per VDSM event under every hooks root of "
            "the config, and the config file with every default when it does not exist (an "
            "existing config is never changed; an invalid one is refused). A foreign hook "
            "already at hooks/qemu or hooks/daemon is kept as qemu.legacy (daemon.legacy) "
            "and runs first; a libvirt-bridge launcher found kept there is removed (or replaced "
            "by the foreign hook it ran first), since run first it would run the bridge again. "
            "Where logrotate is installed, an entry in LOGROTATE_DIR rotates the bridge's log "
            "by renaming it. Where Cockpit is installed (COCKPIT_DIR exists), its Hooks page "
            "goes to COCKPIT_DIR/libvirt-bridge: links to the page's files and a manifest "
            "naming this installation's command, --config and --confdir (the Debian package "
            "ships the page itself). libvirt looks for hooks only at start and on SIGHUP, so the "
            "running libvirtd/virtqemud that uses CONFDIR gets a SIGHUP. Running it again "
            "updates only what changed (launchers, the fast-path file beside the config, "
            "missing event directories), and sends the SIGHUP only when a launcher changed or "
            "the daemon has not picked them up yet. With --hooks, the named hooks "
            "shipped with the bridge (hooks.d) are copied into the first hooks root, one file "
            "per event each runs at, mode 0755 and owned by root; none is installed without "
            "it. --hooks list lists them and installs nothing. Without --config or "
            f"${configmod.ENV_VAR}, the config is the one launchers already installed in "
            "CONFDIR read (else the default), so that running install again keeps to it. "
            "--if-installed does all this only where the bridge's launchers are installed "
            "in CONFDIR already (the Debian package runs `install --if-installed "
            "--no-listener` on upgrade, so that the launchers are the new version's)."
        ),
        epilog=options.examples(
            "sudo libvirt-bridge install",
            "sudo libvirt-bridge install --dry-run",
            "sudo libvirt-bridge install --confdir /srv/lab/etc/libvirt "
            "--config /srv/lab/bridge.toml",
            "libvirt-bridge install --hooks list",
            "sudo libvirt-bridge install --hooks cantmigrate hugepages",
        ),
        parents=[options.INSTALLING],
    )
    parser.add_argument(
        "--no-listener",
        action="store_true",
        help="do not install or start the listener (pause, continue and incoming-migration "
        "events then never fire)",
    )
    parser.add_argument(
        "--if-installed",
        action="store_true",
        help="do nothing unless the bridge's launchers are installed in CONFDIR already "
        "(to update an installation after an upgrade)",
    )
    parser.add_argument(
        "--hooks",
        nargs="+",
        metavar="NAME",
        help="also install these hooks shipped with the bridge (hooks.d) into the first hooks "
        "root; `--hooks list` lists them",
    )
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    config_path = options.config_path(args)
    names: list[str] = args.hooks or []
    if catalogue.LIST in names:
        if len(names) > 1:
            raise CatalogueError("--hooks list takes no hook names")
        shipped = catalogue.available()
        print(f"hooks shipped with libvirt-bridge ({catalogue.catalogue_dir()}):")
        print(catalogue.describe(shipped), end="")
        print("install them with: libvirt-bridge install --hooks NAME [NAME...]")
        return 0
    selected = catalogue.select(names, catalogue.available()) if names else []
    if args.if_installed and not installation.launchers_installed(options.confdir(args)):
        hooks_dir = os.path.join(options.confdir(args), "hooks")
        print(f"nothing to update: no libvirt-bridge launcher in {hooks_dir}")
        return 0
    plan = installation.plan_install(
        options.confdir(args),
        config_path,
        not args.no_listener,
        args.logrotate_dir,
        record_listener_choice=not args.if_installed,
    )
    cockpit.plan_install(
        plan, args.cockpit_dir, service.bridge_command(), config_path, options.confdir(args)
    )
    if selected:
        plan_hooks(plan, selected, options.confdir(args), config_path)
    plan.execute(args.dry_run)
    return 0


def plan_hooks(
    plan: Plan, hooks: list[catalogue.ShippedHook], confdir: str, config_path: str
) -> None:
    """Copy ``hooks`` into the config's first hooks root (as the daemon of confdir sees it)."""
    cfg = installation.read_config(config_path)
    confdir = os.path.abspath(confdir)
    root = installation.host_path(cfg.hooks_dirs[0], confdir)
    properties_dir = installation.host_path(cfg.properties_dir, confdir)
    for copy in catalogue.copies(hooks, root, properties_dir):
        what = f"hook {copy.hook}" if copy.event else f"hook {copy.hook}'s properties"
        if catalogue.is_current(copy):
            plan.note(f"up to date: {copy.dest} ({what})")
            continue
        done = "updated" if os.path.lexists(copy.dest) else "installed"
        plan.do(f"{done} {copy.dest} ({what})", partial(catalogue.install_copy, copy))
