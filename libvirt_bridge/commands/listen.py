"""``libvirt-bridge listen``: the long-running listener for pause, continue and migrations."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from types import FrameType

from .. import mapping
from ..config import ENV_VAR
from ..errors import BridgeError
from ..files import write_atomic
from ..log import BOTH, FILE, Log
from . import options
from .options import AddParser


def add_parser(add: AddParser) -> None:
    parser = add(
        "listen",
        parents=[options.CONNECT],
        help="fire the VDSM events libvirt has no hook for (after_vm_pause, after_vm_cont, ...)",
        description=(
            "Listen to libvirt's lifecycle and device events on libvirt_uri and fire the VDSM "
            f"events libvirt has no hook for: {mapping.listener_events_text()} (and the "
            "per-device events beside them). Runs in the foreground (as a systemd service) "
            "unless --background is given; reconnects when the daemon restarts."
        ),
        epilog=options.examples(
            "libvirt-bridge listen",
            "libvirt-bridge listen --background --pidfile /run/lb/listener.pid",
        ),
    )
    parser.add_argument("--pidfile", help="write the listener's pid here (removed on exit)")
    parser.add_argument(
        "--background", action="store_true", help="detach from the terminal and return at once"
    )
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    cfg = options.load_config(args)
    if args.connect:
        cfg.libvirt_uri = args.connect
    if args.background:
        _start_detached(args)
        return 0
    if args.pidfile:
        try:
            _write_pidfile(args.pidfile)
        except OSError as exc:
            raise BridgeError(f"cannot write pid file {args.pidfile}: {exc.strerror}") from None
    from ..listener import Listener

    listener = Listener(cfg, Log(cfg.log_file, listener_log_target(cfg.log_target)))

    def stop(signum: int, frame: FrameType | None) -> None:
        listener.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        listener.run()
    finally:
        if args.pidfile:
            try:
                os.unlink(args.pidfile)
            except OSError:
                pass
    return 0


def listener_log_target(target: str) -> str:
    """Where the listener's lines go: the config's target, and the journal too when
    systemd runs it (``journalctl -u`` is where an admin looks for a service's lines)."""
    if "INVOCATION_ID" in os.environ and target == FILE:
        return BOTH
    return target


def _start_detached(args: argparse.Namespace) -> None:
    """The same listener in a new session, its stdio on /dev/null; this process returns."""
    argv = [sys.executable, "-m", "libvirt_bridge", "listen"]
    # Named as the unit names it: a config that does not exist yet means the defaults.
    env = dict(os.environ, **{ENV_VAR: options.config_path(args)})
    if args.connect:
        argv += ["--connect", args.connect]
    if args.pidfile:
        argv += ["--pidfile", os.path.abspath(args.pidfile)]
    subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        cwd="/",
        start_new_session=True,
    )


def _write_pidfile(path: str) -> None:
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    write_atomic(path, f"{os.getpid()}\n")
