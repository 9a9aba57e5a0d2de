"""The options several commands share, each defined once.

``cli`` gives every command that works with an installation ``--config`` and ``--confdir``
(the hook command, which libvirt runs, only ``--config``); a command adds the others it
needs as ``parents`` of its parser (``CONNECT`` for the commands that talk to libvirt,
``LOGROTATE_DIR`` and ``COCKPIT_DIR`` for those that check a host's files, ``INSTALLING``
for those that write them). ``add_command`` declares a command's parser from its texts.

One rule finds the installation: the libvirt configuration directory is ``--confdir``, else
$LIBVIRT_BRIDGE_CONFDIR, else /etc/libvirt; the config is ``--config``, else
$LIBVIRT_BRIDGE_CONFIG, else the config the launchers installed in that directory read,
else the default. The config's paths under /etc/libvirt are as the daemon using the
directory sees them, so they are taken under it (``config.seen_from_here``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import textwrap
from collections.abc import Callable, Iterator, Sequence

from .. import cockpit, installation, logrotate
from .. import config as configmod
from ..config import ETC_LIBVIRT

# What a command module's ``add_parser`` is given: ``add_subparsers().add_parser``, with
# the shared options and formatting already in place.
AddParser = Callable[..., argparse.ArgumentParser]


def _parent(*parents: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """A parser of options only, to be a command's parent; with those of ``parents``."""
    return argparse.ArgumentParser(add_help=False, parents=list(parents))


def add_config(parser: argparse.ArgumentParser, default: object = None) -> None:
    parser.add_argument(
        "--config",
        metavar="FILE",
        default=default,
        help=(
            f"the bridge's config file (default: ${configmod.ENV_VAR}, else the one the "
            f"launchers in the confdir read, else {configmod.DEFAULT_PATH})"
        ),
    )


def add_connect(parser: argparse.ArgumentParser, default: object = None) -> None:
    parser.add_argument(
        "--connect",
        "-c",
        metavar="URI",
        default=default,
        help="libvirt connection URI (default: libvirt_uri of the config file)",
    )


CONFIG = _parent()
add_config(CONFIG)

CONNECT = _parent()
add_connect(CONNECT)


def add_confdir(parser: argparse.ArgumentParser, default: object = None) -> None:
    parser.add_argument(
        "--confdir",
        default=default,
        metavar="DIR",
        help=(
            "libvirt's configuration directory, the one its daemon sees as /etc/libvirt "
            f"(default: ${configmod.CONFDIR_ENV_VAR}, else {ETC_LIBVIRT}); the config's paths "
            "under /etc/libvirt are taken under it"
        ),
    )


CONFDIR = _parent()
add_confdir(CONFDIR)


def _entry_dir(flag: str, default: str, what: str) -> argparse.ArgumentParser:
    """A parent with ``flag DIR``: ``what``, a directory another program reads the
    bridge's entries from."""
    parent = _parent()
    parent.add_argument(flag, default=default, metavar="DIR", help=f"{what} (default: {default})")
    return parent


LOGROTATE_DIR = _entry_dir(
    "--logrotate-dir",
    logrotate.ENTRY_DIR,
    "where logrotate reads its entries, the bridge's log rotation among them",
)
COCKPIT_DIR = _entry_dir(
    "--cockpit-dir",
    cockpit.ENTRY_DIR,
    "Cockpit's directory of packages, where the Hooks page goes when Cockpit is installed",
)

DRY_RUN = _parent()
DRY_RUN.add_argument(
    "--dry-run", action="store_true", help="print what would be done; change nothing"
)

# install and uninstall: they write (or remove) the entries, or say what they would do.
INSTALLING = _parent(LOGROTATE_DIR, COCKPIT_DIR, DRY_RUN)


def examples(*command_lines: str) -> str:
    """An epilog: ``command_lines`` one under another, after "example:" ("examples:")."""
    label = "example: " if len(command_lines) == 1 else "examples: "
    return label + f"\n{' ' * len(label)}".join(command_lines)


def add_command(
    add: AddParser,
    name: str,
    *,
    summary: str,
    description: str,
    epilog: str,
    parents: Sequence[argparse.ArgumentParser] = (),
    break_on_hyphens: bool = False,
) -> argparse.ArgumentParser:
    """The parser of command ``name``: ``summary`` in the list of commands, ``description``
    under its usage, filled to 70 columns, and ``epilog`` after its options.

    An option or a name with a hyphen (--dry-run, libvirt-bridge) is kept on one line
    unless ``break_on_hyphens``."""
    return add(
        name,
        parents=list(parents),
        help=summary,
        description=textwrap.fill(description, break_on_hyphens=break_on_hyphens),
        epilog=epilog,
    )


def confdir(args: argparse.Namespace) -> str:
    """``--confdir``, else $LIBVIRT_BRIDGE_CONFDIR, else /etc/libvirt; absolute."""
    return os.path.abspath(getattr(args, "confdir", None) or configmod.confdir())


@contextlib.contextmanager
def confdir_in_force(args: argparse.Namespace) -> Iterator[None]:
    """Make ``--confdir`` this process's (and its children's: the listener's drainer) for
    every config read while the command runs. Commands without ``--confdir`` keep the
    environment's."""
    if not getattr(args, "confdir", None):
        yield
        return
    before = os.environ.get(configmod.CONFDIR_ENV_VAR)
    os.environ[configmod.CONFDIR_ENV_VAR] = confdir(args)
    try:
        yield
    finally:
        if before is None:
            del os.environ[configmod.CONFDIR_ENV_VAR]
        else:
            os.environ[configmod.CONFDIR_ENV_VAR] = before


def config_path(args: argparse.Namespace) -> str:
    """The config file of the installation, by the rule above; absolute, since the
    installed launchers are run by libvirt with cwd /."""
    if args.config or os.environ.get(configmod.ENV_VAR):
        return os.path.abspath(args.config or configmod.config_path())
    if hasattr(args, "confdir"):
        here = confdir(args)
        launched = installation.launchers_config(here)
        if launched:
            return installation.host_path(launched, here)
    return configmod.DEFAULT_PATH


def load_config(args: argparse.Namespace) -> configmod.Config:
    """The installation's config (raises ConfigError, a BridgeError). A file named with
    --config must exist: one that does not is a typo, not a request for the defaults."""
    path = config_path(args)
    if args.config and not os.path.lexists(path):
        raise configmod.ConfigError(
            f"config {path} does not exist (a config named with --config must; "
            f"`libvirt-bridge install --config {path}` writes one)"
        )
    if args.config and hasattr(args, "confdir"):
        here = confdir(args)
        launched = installation.launchers_config(here)
        if launched and installation.host_path(launched, here) != path:
            sys.stderr.write(
                f"note: the launchers in {here}/hooks read {launched}, not {path}; {path}'s "
                f"paths under {ETC_LIBVIRT} are taken as {here}'s (--confdir names another)\n"
            )
    return configmod.load(path)


def libvirt_uri(args: argparse.Namespace) -> str:
    """``--connect``, else the config's libvirt_uri."""
    uri: str | None = args.connect
    return uri or load_config(args).libvirt_uri
