"""The options several commands share, each defined once.

``cli`` gives every command that reads the bridge's config ``--config``; a command adds
the others it needs as ``parents`` of its parser (``CONNECT`` for the commands that talk to
libvirt, ``CONFDIR`` and ``LOGROTATE_DIR`` for those that look at a host's files).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable

from .. import config as configmod
from .. import installation, logrotate
from ..daemons import ETC_LIBVIRT

# What a command module's ``add_parser`` is given: ``add_subparsers().add_parser``, with
# the shared options and formatting already in place.
AddParser = Callable[..., argparse.ArgumentParser]


def _parent() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(add_help=False)


def add_config(parser: argparse.ArgumentParser, default: object = None) -> None:
    parser.add_argument(
        "--config",
        metavar="FILE",
        default=default,
        help=(
            f"the bridge's config file (default: ${configmod.ENV_VAR}, else "
            f"{configmod.DEFAULT_PATH})"
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

CONFDIR = _parent()
CONFDIR.add_argument(
    "--confdir",
    default=ETC_LIBVIRT,
    metavar="DIR",
    help=(
        "libvirt's configuration directory, the one its daemon sees as /etc/libvirt "
        f"(default: {ETC_LIBVIRT}); config paths under /etc/libvirt are taken under it"
    ),
)

LOGROTATE_DIR = _parent()
LOGROTATE_DIR.add_argument(
    "--logrotate-dir",
    default=logrotate.ENTRY_DIR,
    metavar="DIR",
    help=(
        "where logrotate reads its entries, the bridge's log rotation among them "
        f"(default: {logrotate.ENTRY_DIR})"
    ),
)


DRY_RUN = _parent()
DRY_RUN.add_argument(
    "--dry-run", action="store_true", help="print what would be done; change nothing"
)


def config_path(args: argparse.Namespace) -> str:
    """``--config``, else ``$LIBVIRT_BRIDGE_CONFIG``, else the default; absolute, since the
    installed launchers are run by libvirt with cwd /."""
    return os.path.abspath(args.config or configmod.config_path())


def installed_config_path(args: argparse.Namespace) -> str:
    """``--config``, else ``$LIBVIRT_BRIDGE_CONFIG``, else the config the launchers installed
    in ``--confdir`` read, else the default: what install and uninstall work with, so that
    running either again keeps to the config the bridge was installed with."""
    if args.config or os.environ.get(configmod.ENV_VAR):
        return config_path(args)
    return installation.launchers_config(args.confdir) or config_path(args)


def load_config(args: argparse.Namespace) -> configmod.Config:
    """The config ``--config`` names (raises ConfigError, a BridgeError)."""
    return configmod.load(config_path(args))


def libvirt_uri(args: argparse.Namespace) -> str:
    """``--connect``, else the config's libvirt_uri."""
    uri: str | None = args.connect
    return uri or load_config(args).libvirt_uri
