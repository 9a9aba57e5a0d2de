"""``libvirt-bridge lab``: a private libvirt with one guest and the bridge, kept until ``down``.

``up`` starts a *keeper*, a process of its own session that owns a sandbox (``sandbox``: a
libvirt daemon in private namespaces, the host's libvirt untouched), installs the bridge
and its listener in it, defines one guest (shut off), writes the lab's record and waits.
``down`` sends the keeper SIGTERM: it destroys the guests, stops the listener and the
daemons (the sandbox's close) and removes its record; then the lab's directory goes. A
keeper killed outright takes the daemons with it (the sandbox's watchdog).

The lab's config names the daemon by its socket (``libvirt_uri``), whose path is the same
in the sandbox's namespaces and out of them: ``virsh -c URI`` and every command given
``--config`` of the lab reach it from the host.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass

from libvirt_bridge.errors import BridgeError

DEFAULT_DIR = "/var/lib/libvirt-bridge/lab"
SANDBOX_NAME = "lblab"
GUEST = "lab1"
RECORD = "lab.json"
KEEPER_LOG = "keeper.log"
UP_TIMEOUT = 300.0
DOWN_TIMEOUT = 120.0


class LabError(BridgeError):
    """The lab cannot be started, found or stopped; the message says why."""


@dataclass
class Lab:
    """What ``up`` prints and ``status`` and ``down`` read: the lab's record."""

    directory: str
    keeper_pid: int
    libvirt: str
    uri: str
    config_path: str
    hooks_root: str
    log_file: str
    state_dir: str
    guest: str
    domain_type: str


def record_path(directory: str) -> str:
    return os.path.join(directory, RECORD)


def read_lab(directory: str) -> Lab | None:
    """The record of the lab in ``directory``; None when there is none."""
    try:
        with open(record_path(directory)) as f:
            return Lab(**json.load(f))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as exc:
        raise LabError(f"cannot read the lab's record {record_path(directory)}: {exc}") from None


def keeper_alive(pid: int, directory: str) -> bool:
    """Whether ``pid`` is this lab's keeper (not a process that took its pid since)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return False
    return b"libvirt_bridge_lab.lab" in argv and os.fsencode(directory) in argv


def keeper_argv(directory: str, libvirt: str) -> list[str]:
    return [sys.executable, "-m", "libvirt_bridge_lab.lab", directory, libvirt]


# -- up, status, down (the CLI's side) -------------------------------------------------------


def up(directory: str, libvirt: str) -> tuple[Lab, bool]:
    """Start the lab in ``directory`` unless it runs; (its record, whether it was started)."""
    from .sandbox.namespaces import session_child

    directory = os.path.abspath(directory)
    running = _running_lab(directory)
    if running is not None:
        return running, False
    if os.path.exists(directory) and os.listdir(directory):
        raise LabError(
            f"{directory} exists and holds no running lab (one that was not brought down?): "
            f"run `libvirt-bridge lab down --dir {directory}`, or name another --dir"
        )
    os.makedirs(directory, mode=0o755, exist_ok=True)
    with open(os.path.join(directory, KEEPER_LOG), "wb") as log:
        keeper = session_child(
            keeper_argv(directory, libvirt), stdout=log, stderr=subprocess.STDOUT
        )
    deadline = time.monotonic() + UP_TIMEOUT
    while time.monotonic() < deadline:
        lab = read_lab(directory)
        if lab is not None:
            return lab, True
        if keeper.poll() is not None:
            raise LabError(f"the lab did not start:\n{_keeper_log(directory)}")
        time.sleep(0.1)
    keeper.terminate()
    keeper.wait(DOWN_TIMEOUT)
    raise LabError(f"the lab did not start in {UP_TIMEOUT:.0f}s:\n{_keeper_log(directory)}")


def down(directory: str) -> Lab | None:
    """Stop the lab in ``directory`` and remove the directory; the lab that ran, if any."""
    directory = os.path.abspath(directory)
    if not os.path.exists(directory):
        return None
    lab = read_lab(directory)
    if lab is None and not os.path.exists(os.path.join(directory, KEEPER_LOG)):
        raise LabError(f"{directory} is not a lab's directory (no {RECORD}, no {KEEPER_LOG})")
    if lab is not None and keeper_alive(lab.keeper_pid, directory):
        os.kill(lab.keeper_pid, signal.SIGTERM)
        deadline = time.monotonic() + DOWN_TIMEOUT
        while keeper_alive(lab.keeper_pid, directory):
            if time.monotonic() > deadline:
                raise LabError(
                    f"the lab's keeper (pid {lab.keeper_pid}) did not stop in "
                    f"{DOWN_TIMEOUT:.0f}s; see {os.path.join(directory, KEEPER_LOG)}"
                )
            time.sleep(0.1)
    from .sandbox import mounts_mentioning

    left = mounts_mentioning(directory)
    if left:
        raise LabError(f"mounts under {directory} remain; not removing it:\n" + "\n".join(left))
    shutil.rmtree(directory)
    return lab


def _running_lab(directory: str) -> Lab | None:
    lab = read_lab(directory)
    if lab is not None and keeper_alive(lab.keeper_pid, directory):
        return lab
    return None


def running_lab(directory: str) -> Lab | None:
    """The lab in ``directory`` if its keeper runs."""
    return _running_lab(os.path.abspath(directory))


def _keeper_log(directory: str) -> str:
    try:
        with open(os.path.join(directory, KEEPER_LOG), errors="replace") as f:
            return f.read()[-4000:].rstrip() or "(the keeper wrote nothing)"
    except OSError as exc:
        return f"(no keeper log: {exc.strerror})"


# -- the keeper --------------------------------------------------------------------------------


def keep(directory: str, libvirt: str) -> int:
    """The keeper: start the lab, write its record, wait for SIGTERM, tear it down."""
    from .sandbox import Sandbox

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda signum, frame: stop.set())
    sandbox = Sandbox(os.path.join(directory, "sandbox"), SANDBOX_NAME, cell=libvirt)
    with sandbox:
        sandbox.start()
        # The socket's URI reaches the daemon from the host and from its namespaces alike.
        sandbox.install_bridge({"libvirt_uri": sandbox.uri})
        sandbox.define_guest(GUEST)
        sandbox.start_listener()
        lab = Lab(
            directory=directory,
            keeper_pid=os.getpid(),
            libvirt=str(sandbox.cell),
            uri=sandbox.uri,
            config_path=sandbox.config_path,
            hooks_root=sandbox.hooks_root,
            log_file=sandbox.log_file,
            state_dir=sandbox.state_dir,
            guest=GUEST,
            domain_type=sandbox.domain_type,
        )
        tmp = record_path(directory) + ".tmp"
        with open(tmp, "w") as f:
            json.dump(asdict(lab), f, indent=1)
        os.replace(tmp, record_path(directory))
        print(f"lab up: {sandbox!r}", flush=True)
        stop.wait()
        print("lab: stopping", flush=True)
        os.unlink(record_path(directory))
    print("lab: stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(keep(sys.argv[1], sys.argv[2]))
