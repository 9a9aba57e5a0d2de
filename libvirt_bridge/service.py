"""Running the listener as a service: a systemd unit, or a background process with a pid file.

With systemd (``/run/systemd/system`` exists) the listener is the unit
``libvirt-bridge-listener.service``, rendered from ``install/libvirt-bridge-listener.service``.
The Debian package ships it in /lib/systemd/system; ``install`` from the package adds only a
drop-in naming a config that is not the default one, so that an upgrade's fixes to the unit
reach the host. Installed from a venv, ``install`` writes the whole unit (naming the venv's
``libvirt-bridge``) to /etc/systemd/system. Either way it is ``Type=notify``: the listener
says ready (``notify``) once connected to libvirt, so ``systemctl start`` returns when it is.
Without systemd, the listener runs as ``libvirt-bridge listen --background --pidfile
<state_dir>/listener.pid``; ``install`` starts it when it does not run, ``uninstall`` stops
it (by that pid). The listener writes ``<state_dir>/listener.status`` (connected or not,
with its pid) for ``status``.
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from importlib import resources

from .config import ENV_VAR, ETC_LIBVIRT, confdir
from .files import write_atomic

UNIT_NAME = "libvirt-bridge-listener.service"
UNIT_DIR = "/etc/systemd/system"
# Where a distribution package puts its units (/lib is /usr/lib on merged-/usr hosts).
PACKAGED_UNIT_DIRS = ("/usr/lib/systemd/system", "/lib/systemd/system")
# The drop-in install writes beside a packaged unit for a config that is not the default.
DROPIN = os.path.join(UNIT_DIR, UNIT_NAME + ".d", "config.conf")
# The first line of every unit rendered from the template: how a unit of ours is known.
UNIT_HEADER = "# systemd unit for libvirt-bridge's listener"
DROPIN_HEADER = "# written by libvirt-bridge install:"
STOP_TIMEOUT = 10.0


def systemd_running() -> bool:
    return os.path.isdir("/run/systemd/system")


def runs_as_unit() -> bool:
    """Whether this installation's listener is the systemd unit: on a systemd host, for the
    host's own libvirt. Another libvirt's (--confdir) runs in the background: the unit is
    the host's, one of it."""
    return systemd_running() and confdir() == ETC_LIBVIRT


def no_listener_marker(config_path: str) -> str:
    """The file beside the config that says the bridge was installed without a listener
    (``install --no-listener``), so that ``status`` takes its absence for a choice."""
    head, tail = os.path.split(os.path.abspath(config_path))
    return os.path.join(head, f".{tail}.no-listener")


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
        f"{ENV_VAR}=@CONFIG@", _quoted_assignment(ENV_VAR, config_path)
    )


def is_ours(unit_path: str) -> bool:
    """Whether the unit file at ``unit_path`` was rendered from the bridge's template."""
    try:
        with open(unit_path) as f:
            return f.readline().startswith(UNIT_HEADER)
    except (OSError, UnicodeDecodeError):
        return False


def packaged_unit() -> str | None:
    """The unit the distribution's package ships, when this code is that package's."""
    here = os.path.realpath(__file__)
    if not here.startswith(("/usr/lib/python3/dist-packages/", "/usr/lib/python3/site-packages/")):
        return None
    for directory in PACKAGED_UNIT_DIRS:
        path = os.path.join(directory, UNIT_NAME)
        if os.path.isfile(path):
            return path
    return None


def render_dropin(config_path: str) -> str:
    return (
        f"{DROPIN_HEADER} the config of this host's listener, which is not the\n"
        "# default one (the unit itself is the package's).\n"
        f"[Service]\nEnvironment={_quoted_assignment(ENV_VAR, config_path)}\n"
    )


def _quoted_assignment(name: str, value: str) -> str:
    # systemd's Environment= splits on spaces unless the assignment is quoted.
    if any(c in value for c in " \t\"'\\"):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{name}={escaped}"'
    return f"{name}={value}"


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


def notify(*assignments: str) -> None:
    """Tell systemd about this service (``READY=1``, ``STATUS=...``); nothing without it.

    The ``sd_notify`` protocol: one datagram of ``KEY=value`` lines to ``$NOTIFY_SOCKET``
    (an abstract socket when it starts with ``@``).
    """
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return
    if path.startswith("@"):
        path = "\0" + path[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto("\n".join(assignments).encode(), path)
    except OSError:
        pass  # systemd gives up on a unit that never says ready, and status says so


def main_pid() -> int | None:
    """The pid systemd runs the listener's unit as, if it runs."""
    result = systemctl("show", "--property=MainPID", "--value", UNIT_NAME)
    try:
        pid = int(result.stdout.strip())
    except ValueError:
        return None
    return pid or None


def status_pid(status: str) -> int | None:
    """The pid of the listener that wrote ``status`` (its ``pid=N`` word)."""
    for word in status.split():
        if word.startswith("pid="):
            try:
                return int(word[4:])
            except ValueError:
                return None
    return None


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
