"""The sandbox's mount and UTS namespaces: which processes are in them, and killing those.

A process belongs to the sandbox if its mount *or* its UTS namespace is the sandbox's:
libvirt starts QEMU in a mount namespace of its own, but QEMU keeps the UTS one. A
namespace's inode number is reused as soon as the namespace is gone, so the sandbox holds
its namespaces open (and so does its watchdog) while it matches processes by them. If the
owner dies without closing the sandbox (SIGKILL), the watchdog, which holds the read end of
a pipe only the owner writes to, sees EOF and kills every process of the sandbox.

PID 1 may not reap orphans: an exited daemon stays a zombie (state ``Z``), which counts as
gone here. A zombie has no namespaces left, so it never looks like a member.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from typing import IO

import libvirt_bridge

from .errors import SandboxError

GRACE = 5.0
# What the watchdog, run isolated (-I -S), imports this package and the bridge from (the
# sandbox package's __init__ imports the bridge).
_PACKAGE_PARENTS = sorted(
    {
        os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
        os.path.dirname(os.path.dirname(os.path.abspath(libvirt_bridge.__file__))),
    }
)
# (mount namespace inode, UTS namespace inode)
Inodes = tuple[int, int]


def session_child(
    argv: Sequence[str],
    *,
    stdout: int | IO[bytes] = subprocess.DEVNULL,
    stderr: int = subprocess.DEVNULL,
    env: Mapping[str, str] | None = None,
    pass_fds: Sequence[int] = (),
) -> subprocess.Popen[bytes]:
    """``argv`` in a session of its own, at ``/``, its stdin /dev/null (its output too unless
    ``stdout``, ``stderr`` say otherwise). Raises OSError."""
    # Its own session: what the caller's terminal sends its process group (Ctrl-C, a
    # hangup) does not reach it; it is ended on purpose (a sandbox's close, lab down).
    return subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=stderr,
        env=env,
        pass_fds=pass_fds,
        cwd="/",
        start_new_session=True,
    )


def process_alive(pid: int) -> bool:
    """Whether ``pid`` runs; a zombie (state Z, never reaped here) counts as gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    state = stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3]
    return state not in (b"Z", b"X", b"")


def _ns_ino(pid: int | str, kind: str) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/{kind}").st_ino
    except OSError:
        return None


def is_member(pid: int | str, inos: Inodes) -> bool:
    """Whether ``pid`` lives in the mount or the UTS namespace identified by ``inos``."""
    mnt, uts = inos
    return _ns_ino(pid, "mnt") == mnt or _ns_ino(pid, "uts") == uts


def _is_own(inos: Inodes) -> bool:
    return inos[0] == _ns_ino("self", "mnt") or inos[1] == _ns_ino("self", "uts")


def member_pids(inos: Inodes) -> list[int]:
    """Live processes in the namespaces ``inos`` = (mount ns inode, UTS ns inode)."""
    if _is_own(inos):
        # Never treat this process's own namespaces as the sandbox's: that is everything.
        raise SandboxError(f"namespace {inos} is this process's own; refusing to match it")
    me = os.getpid()
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != me and is_member(entry, inos):
            pids.append(int(entry))
    return sorted(pids)


def _signal_member(pid: int, inos: Inodes, sig: int) -> None:
    """Send ``sig`` to ``pid`` if it is (still) a member; immune to pid reuse."""
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return
    try:
        if is_member(pid, inos):
            signal.pidfd_send_signal(pidfd, sig)
    except OSError:
        pass
    finally:
        os.close(pidfd)


def kill_namespace(inos: Inodes, grace: float = GRACE) -> list[int]:
    """SIGTERM every member, SIGKILL what remains after ``grace`` s; return survivors.

    Members that appear meanwhile (a hook run by a daemon shutting down) get the same.
    """
    for sig in (signal.SIGTERM, signal.SIGKILL):
        deadline = time.monotonic() + grace
        signalled: set[int] = set()
        while True:
            pids = member_pids(inos)
            if not pids:
                return []
            for pid in pids:
                if pid not in signalled:
                    _signal_member(pid, inos, sig)
                    signalled.add(pid)
            if time.monotonic() >= deadline:
                break
            time.sleep(0.05)
    return member_pids(inos)


def mounts_mentioning(path: str) -> list[str]:
    """Lines of this process's /proc/self/mountinfo that mention ``path``."""
    escaped = path.replace("\\", "\\134").replace(" ", "\\040")
    escaped = escaped.replace("\t", "\\011").replace("\n", "\\012")
    with open("/proc/self/mountinfo") as f:
        return [line.rstrip("\n") for line in f if escaped in line]


def watchdog_main() -> None:
    """Kill the sandbox if its owner dies: run as ``python -c`` with three fds in argv.

    argv: the read end of a pipe whose write end only the owner holds, and fds of the
    sandbox's mount and UTS namespaces (held open, so their inodes cannot be reused). The
    owner writes ``q`` before closing to dismiss the watchdog; EOF without it means the
    owner died, and every process of the sandbox is killed.
    """
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_IGN)
    pipe_fd, mnt_fd, uts_fd = (int(arg) for arg in sys.argv[1:4])
    received = b""
    while True:
        try:
            chunk = os.read(pipe_fd, 64)
        except InterruptedError:
            continue
        if not chunk:
            break
        received += chunk
    if b"q" in received:
        return
    kill_namespace((os.fstat(mnt_fd).st_ino, os.fstat(uts_fd).st_ino))


class Namespaces:
    """The namespaces of one sandbox, once its setup recorded them, held open."""

    def __init__(self) -> None:
        self.inos: Inodes | None = None
        self._fds: list[int] = []
        self._watchdog: subprocess.Popen[bytes] | None = None
        self._watchdog_fd = -1
        self._released = False

    def read(self, record: str) -> None:
        """Take the inodes from ``record``, the setup's ``readlink`` of its two namespaces."""
        try:
            with open(record) as f:
                text = f.read()
        except OSError:
            return
        numbers = [int(n) for n in re.findall(r"\[(\d+)\]", text)]
        if len(numbers) == 2:
            inos = (numbers[0], numbers[1])
            if _is_own(inos):
                raise SandboxError(f"the sandbox did not get namespaces of its own: {text}")
            self.inos = inos

    def hold(self, pid: int) -> None:
        """Open the namespaces through ``pid``, a member, so their identity stays unique."""
        if self.inos is None:
            raise SandboxError("the sandbox setup did not record its namespaces")
        for kind, ino in zip(("mnt", "uts"), self.inos, strict=True):
            fd = os.open(f"/proc/{pid}/ns/{kind}", os.O_RDONLY | os.O_CLOEXEC)
            self._fds.append(fd)
            if os.fstat(fd).st_ino != ino:
                raise SandboxError(f"process {pid} is not in the sandbox's {kind} namespace")

    def contains(self, pid: int) -> bool:
        """Whether ``pid`` is a member (any pid, while the namespaces are not known yet)."""
        if self._released:
            return False
        return self.inos is None or is_member(pid, self.inos)

    def members(self) -> list[int]:
        """The live members; none once released: their inode numbers may be others' then."""
        if self._released or self.inos is None:
            return []
        return member_pids(self.inos)

    def kill_members(self) -> list[int]:
        """Kill every member (see :func:`kill_namespace`); return the survivors."""
        return [] if self.inos is None else kill_namespace(self.inos)

    def start_watchdog(self) -> None:
        read_fd, write_fd = os.pipe()
        code = (
            f"import sys; sys.path[:0] = {_PACKAGE_PARENTS!r}; "
            "from libvirt_bridge_lab.sandbox.namespaces import watchdog_main; watchdog_main()"
        )
        fds = [read_fd, *self._fds]
        try:
            self._watchdog = session_child(
                [sys.executable, "-I", "-S", "-c", code, *map(str, fds)], pass_fds=fds
            )
        except BaseException:
            os.close(write_fd)
            raise
        finally:
            os.close(read_fd)
        self._watchdog_fd = write_fd

    def release(self) -> None:
        """Close the namespaces and dismiss the watchdog: the members are gone."""
        self._released = True
        for fd in self._fds:
            os.close(fd)
        self._fds = []
        if self._watchdog_fd >= 0:
            with contextlib.suppress(OSError):
                os.write(self._watchdog_fd, b"q")
            os.close(self._watchdog_fd)
            self._watchdog_fd = -1
        if self._watchdog is not None:
            try:
                self._watchdog.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._watchdog.kill()
                self._watchdog.wait()
            self._watchdog = None
