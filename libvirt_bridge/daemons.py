"""The libvirt daemons that use a confdir, and whether they have picked up the launchers.

A *confdir* is what a libvirt daemon sees as ``/etc/libvirt``: the host's own, or a
sandbox's directory bind-mounted there in a private mount namespace. The daemons are found
through ``/proc/PID/root``, which resolves paths in each process's own mount namespace: a
sandboxed daemon is matched by its sandbox's confdir, and the host's daemons are not.
libvirt looks for hook files only when a daemon starts and on SIGHUP; the daemon hook
records each time it does (``dispatch``), which is how ``picked_up`` knows.
"""

from __future__ import annotations

import os
import signal
from typing import NamedTuple

from . import mapping
from .config import ETC_LIBVIRT


class Daemon(NamedTuple):
    name: str
    pid: int


def uses_confdir(pid: int, confdir: str) -> bool:
    """Whether process ``pid`` sees ``confdir`` as its /etc/libvirt."""
    try:
        theirs = os.stat(f"/proc/{pid}/root{ETC_LIBVIRT}")
        ours = os.stat(confdir)
    except OSError:
        return False
    return (theirs.st_dev, theirs.st_ino) == (ours.st_dev, ours.st_ino)


def process_name(pid: int) -> str:
    """The name of process ``pid`` (its comm), or "" when it is gone."""
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def daemons_using(confdir: str) -> list[Daemon]:
    """The running libvirtd/virtqemud processes whose /etc/libvirt is ``confdir``."""
    found: list[Daemon] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        name = process_name(pid)
        if name in mapping.QEMU_DAEMONS and uses_confdir(pid, confdir):
            found.append(Daemon(name, pid))
    return sorted(found, key=lambda d: d.pid)


def daemon_record(daemon: Daemon, state_dir: str) -> tuple[int, int] | None:
    """(pid, mtime_ns) of the record the daemon hook last wrote for ``daemon``'s name.

    Read through the daemon's own root: the hook wrote it in the daemon's mount namespace.
    """
    path = f"/proc/{daemon.pid}/root" + os.path.join(state_dir, "daemon", daemon.name)
    try:
        mtime = os.stat(path).st_mtime_ns
        with open(path) as f:
            text = f.read()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key == "pid" and value.strip().isdigit():
            return int(value), mtime
    return None


def picked_up(daemon: Daemon, state_dir: str, launchers: list[str]) -> bool:
    """Whether ``daemon`` looked for hooks (start or SIGHUP) since ``launchers`` were written.

    libvirt looks for hook files only then; the daemon hook records each time it does.
    """
    record = daemon_record(daemon, state_dir)
    if record is None:
        return False
    pid, recorded = record
    newest = 0
    for path in launchers:
        try:
            newest = max(newest, os.stat(path).st_mtime_ns)
        except OSError:
            pass
    return pid == daemon.pid and recorded > newest


def send_sighup(daemon: Daemon, confdir: str) -> None:
    # The pid may have been reused since the plan was made; a daemon that has gone looks
    # for hooks anyway when it starts again.
    if process_name(daemon.pid) == daemon.name and uses_confdir(daemon.pid, confdir):
        try:
            os.kill(daemon.pid, signal.SIGHUP)
        except ProcessLookupError:
            pass


def no_daemon_message(confdir: str) -> str:
    return f"no running libvirtd/virtqemud uses {confdir}; hooks take effect when it starts"
