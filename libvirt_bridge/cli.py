"""``libvirt-bridge``: one subcommand per module in ``libvirt_bridge.commands``.

Each module has ``add_parser(add)``, which defines its parser through ``add`` (so every
command gets ``--config`` and the same formatting), and the ``main(args)`` it sets as
``func``. Errors are ``BridgeError``s, printed here and nowhere else. ``demo`` and ``lab``
are the bench's (``libvirt_bridge_lab``, installed from a checkout, never on a host).
"""

from __future__ import annotations

import argparse
import sys
from types import ModuleType

from . import __version__, config
from .commands import (
    check_props,
    devices,
    history,
    hook,
    install,
    lifecycle,
    listen,
    options,
    props,
    run,
    status,
    uninstall,
)
from .commands import list as list_
from .errors import BridgeError


def bench_commands() -> tuple[ModuleType, ...]:
    """``demo`` and ``lab``: the bench's (a checkout's venv), else a note of where they are."""
    try:
        from libvirt_bridge_lab.commands import demo, lab
    except ModuleNotFoundError as exc:
        if exc.name != "libvirt_bridge_lab":
            raise
        from .commands import without_bench

        return (without_bench,)
    return (demo, lab)


COMMANDS = (
    install,
    uninstall,
    status,
    list_,
    lifecycle,
    devices,
    props,
    check_props,
    run,
    history,
    listen,
    hook,
)
# Commands that read no config of the bridge's (the demo and the lab write their own).
WITHOUT_CONFIG = frozenset({"demo", "lab"})
# Commands that work for no other libvirt than the one that runs them (libvirt runs hook).
WITHOUT_CONFDIR = WITHOUT_CONFIG | {"hook"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="libvirt-bridge",
        description=(
            "Run oVirt VDSM-style hook directories (before_vm_start/50_pincpu, ...) on a "
            "plain libvirt/KVM host."
        ),
        epilog=(
            "Every command but demo, lab and hook works with one installation: libvirt's "
            f"configuration directory (--confdir, else ${config.CONFDIR_ENV_VAR}, else "
            f"{config.ETC_LIBVIRT}) and the bridge's config (--config, else ${config.ENV_VAR}, "
            "else the config the launchers in that directory read, else "
            f"{config.DEFAULT_PATH}). A config named with --config must exist (install "
            f"writes it). The config's paths under {config.ETC_LIBVIRT} are as that "
            "directory's daemon sees them, so they are taken under the directory. Options go "
            "before or after the positional arguments."
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, **kwargs: object) -> argparse.ArgumentParser:
        parents = list(kwargs.pop("parents", None) or [])  # type: ignore[call-overload]
        if name not in WITHOUT_CONFDIR:
            parents.insert(0, options.CONFDIR)
        if name not in WITHOUT_CONFIG:
            parents.insert(0, options.CONFIG)
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        return subparsers.add_parser(name, parents=parents, **kwargs)  # type: ignore[arg-type]

    for command in (*bench_commands(), *COMMANDS):
        command.add_parser(add)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with options.confdir_in_force(args):
            status: int = args.func(args)
    except BridgeError as exc:
        sys.stderr.write(f"libvirt-bridge {args.command}: error: {exc}\n")
        return exc.status
    return status
