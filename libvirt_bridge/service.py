"""Running the listener as a service: a systemd unit, or a background process with a pid file.

With systemd (``/run/systemd/system`` exists) the unit rendered from
``install/libvirt-bridge-listener.service`` is installed and enabled. Without it, the
listener runs as ``libvirt-bridge listen --background --pidfile <state_dir>/listener.pid``;
``install`` starts it when it does not run, ``uninstall`` stops it (by that pid).
The listener writes ``<state_dir>/listener.status`` (connected or not) for ``status``.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from importlib import resources

from .files import write_atomic

UNIT_NAME = "libvirt-bridge-listener.service"
UNIT_DIR = "/etc/systemd/system"
STOP_TIMEOUT = 10.0


def systemd_running() -> bool:
    return os.path.isdir("/run/systemd/system")


def pidfile(state_dir: str) -> str:
    return os.path.join(state_dir, "listener.pid")


def status_file(state_dir: str) -> str:
    return os.path.join(state_dir, "listener.status")


def bridge_command() -> list[str]:
    """How to run this installation's ``libvirt-bridge`` (the venv's script when there is one)."""
    script = os.path.join(os.path.dirname(sys.executable), "libvirt-bridge")
    if os.access(script, os.X_OK):
        return [script]
    return [sys.executable, "-m", "libvirt_bridge"]


def render_unit(config_path: str) -> str:
    template = resources.files("libvirt_bridge.assets").joinpath(UNIT_NAME).read_text()
    return template.replace("@BRIDGE@", shlex.join(bridge_command())).replace(
        "@CONFIG@", config_path
    )


def running_pid(state_dir: str) -> int | None:
    """The pid of the background listener of this state dir, if it runs."""
    try:
        with open(pidfile(state_dir)) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        return None
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read().split(b"\0")
        with open(f"/proc/{pid}/stat") as f:
            zombie = f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return None
    return pid if b"listen" in cmdline and not zombie else None


def start_background(
    config_path: str,
    state_dir: str,
    argv_prefix: list[str] | None = None,
    command: list[str] | None = None,
) -> int:
    """Start the listener in the background; return its pid. Raises OSError/RuntimeError.

    ``argv_prefix`` runs it through another command (the sandbox uses ``nsenter``);
    ``command`` is the ``libvirt-bridge`` to run (default: this installation's).
    """
    env = dict(os.environ, LIBVIRT_BRIDGE_CONFIG=config_path)
    argv = [*(argv_prefix or []), *(command or bridge_command()), "listen", "--background"]
    argv += ["--pidfile", pidfile(state_dir)]
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30, cwd="/")
    if result.returncode != 0:
        raise RuntimeError(f"the listener did not start: {result.stderr.strip()}")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        pid = running_pid(state_dir)
        if pid:
            return pid
        time.sleep(0.02)
    raise RuntimeError(f"the listener did not write {pidfile(state_dir)}")


def stop_background(state_dir: str) -> int | None:
    """Stop the background listener (SIGTERM, then SIGKILL); return its pid, or None."""
    pid = running_pid(state_dir)
    if pid is None:
        return None
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    while running_pid(state_dir) == pid and time.monotonic() < deadline:
        time.sleep(0.05)
    if running_pid(state_dir) == pid:
        os.kill(pid, signal.SIGKILL)
    return pid


def write_status(state_dir: str, text: str) -> None:
    """Called by the listener: one line saying whether it is connected, and to what."""
    path = status_file(state_dir)
    try:
        os.makedirs(state_dir, mode=0o700, exist_ok=True)
        write_atomic(path, text + "\n")
    except OSError:
        pass


def read_status(state_dir: str) -> str | None:
    try:
        with open(status_file(state_dir)) as f:
            return f.read().strip()
    except OSError:
        return None


def systemctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["systemctl", *args], capture_output=True, text=True, timeout=60)
