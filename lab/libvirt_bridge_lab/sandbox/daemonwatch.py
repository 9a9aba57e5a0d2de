"""What the daemons of one sandbox show of themselves, and waiting for it.

A daemon's pid is in its pid file (``run_dir/<daemon>.pid``), and counts only while that
process runs in the sandbox's namespaces: a stale file, or one naming a pid reused
elsewhere, names no daemon. A daemon is ready once its socket accepts a connection and, the
main one, once it answers a call. What it did on a reload is in the main daemon's debug log
(``layout.daemon_log``), read from the offset it had before the SIGHUP.
"""

from __future__ import annotations

import os
import re
import socket
import time

from .client import VirshError, virsh
from .errors import SandboxError, tails
from .layout import Layout
from .namespaces import Namespaces, process_alive

# "2026-01-01 10:00:00.000+0000: 1234: debug : virRunScript:279 : Calling hook ..."
_LOG_LINE = re.compile(r"^\S+ \S+: (\d+): \w+ : (\w+):\d+ : (.*)$")
# The main daemon writes its pid file as it starts: missing for longer, it did not start.
_PID_FILE_GRACE = 3.0


class DaemonWatch:
    """Reads and waits on the daemons of the sandbox laid out by ``layout``: their pid
    files, their sockets and the main daemon's log. It starts and stops nothing."""

    def __init__(self, layout: Layout, namespaces: Namespaces) -> None:
        self.layout = layout
        self.namespaces = namespaces
        self.main = layout.cell.main_daemon

    # -- pids -----------------------------------------------------------------------------

    def pid(self, daemon: str) -> int | None:
        """The pid of ``daemon`` if it runs in the sandbox, by its pid file."""
        try:
            with open(os.path.join(self.layout.run_dir, f"{daemon}.pid")) as f:
                pid = int(f.read().strip())
        except (OSError, ValueError):
            return None
        if not self.namespaces.contains(pid):
            return None
        return pid if process_alive(pid) else None

    def running_pid(self, daemon: str) -> int:
        """The pid of ``daemon``, which runs (SandboxError if it does not)."""
        pid = self.pid(daemon)
        if pid is None:
            raise SandboxError(f"{daemon} of sandbox {self.layout.name} is not running")
        return pid

    def daemon_pid(self) -> int:
        """The pid of the running main daemon, libvirtd or virtqemud (SandboxError if none)."""
        return self.running_pid(self.main)

    def virtlogd_pid(self) -> int:
        """The pid of the running virtlogd (SandboxError if it does not run)."""
        return self.running_pid("virtlogd")

    def running(self) -> bool:
        """Whether the main daemon runs."""
        return self.pid(self.main) is not None

    # -- readiness ------------------------------------------------------------------------

    def wait_answering(self, deadline: float, timeout: float) -> int:
        """Wait until the main daemon's socket accepts connections and the daemon answers a
        call; its pid. ``timeout`` is what the error says was waited."""
        since = time.monotonic()
        while True:
            pid = self.pid(self.main)
            if pid is None:
                if time.monotonic() - since < _PID_FILE_GRACE:
                    time.sleep(0.02)
                    continue
                raise SandboxError(f"{self.main} is not running" + self.diagnostics())
            if accepts(self.layout.socket_path):
                break
            if time.monotonic() > deadline:
                raise SandboxError(
                    f"{self.main} socket {self.layout.socket_path} not ready after "
                    f"{timeout} s" + self.diagnostics()
                )
            time.sleep(0.02)
        # The socket accepts before the drivers are up; a call returns once they are.
        try:
            virsh(self.layout.uri, "uri", timeout=max(1.0, deadline - time.monotonic()))
        except VirshError as exc:
            raise SandboxError(f"{self.main} does not answer: {exc}" + self.diagnostics()) from None
        return pid

    def wait_accepting(self, daemon: str, timeout: float) -> int:
        """Wait until another modular daemon runs and its socket accepts connections; its
        pid."""
        sock = os.path.join(self.layout.run_dir, f"{daemon}-sock")
        deadline = time.monotonic() + timeout
        while True:
            pid = self.pid(daemon)
            if pid is not None and accepts(sock):
                return pid
            if time.monotonic() > deadline:
                raise SandboxError(
                    f"{daemon} not ready after {timeout} s" + self.diagnostics(daemon)
                )
            time.sleep(0.02)

    def diagnostics(self, daemon: str | None = None) -> str:
        """The tails of the daemons' output and log, for an error message (of ``daemon``'s
        output alone, for another modular daemon)."""
        if daemon is not None and daemon != self.main:
            return tails([self.output(daemon)])
        names = (f"{self.main}.out", "virtlogd.out", f"{self.main}.log")
        return tails([os.path.join(self.layout.log_dir, name) for name in names])

    def output(self, daemon: str) -> str:
        """Where ``daemon``'s stdout and stderr go."""
        return os.path.join(self.layout.log_dir, f"{daemon}.out")

    # -- reloads --------------------------------------------------------------------------

    def log_size(self) -> int:
        """The size of the main daemon's log: where what it logs next begins."""
        try:
            return os.path.getsize(self.layout.daemon_log)
        except OSError:
            return 0

    def wait_reloaded(self, offset: int, timeout: float = 10.0) -> None:
        """Wait until the daemon's log, from ``offset`` on, shows a reload's hook work done.

        If a ``daemon`` hook is installed, that includes its ``reload`` call's return.
        Gives up silently after ``timeout`` s.
        """
        daemon_scripts = self._daemon_hook_scripts()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with open(self.layout.daemon_log, "rb") as f:
                    f.seek(offset)
                    text = f.read().decode("utf-8", "replace")
            except OSError:
                text = ""
            if _reload_finished(text, daemon_scripts):
                return
            time.sleep(0.02)

    def _daemon_hook_scripts(self) -> int:
        """How many scripts libvirt runs for a daemon hook call (main file + daemon.d)."""
        hooks_dir = self.layout.hooks_dir
        paths = [os.path.join(hooks_dir, "daemon")]
        directory = os.path.join(hooks_dir, "daemon.d")
        if os.path.isdir(directory):
            paths += [os.path.join(directory, name) for name in os.listdir(directory)]
        return sum(1 for p in paths if os.path.isfile(p) and os.access(p, os.X_OK))


def accepts(socket_path: str) -> bool:
    """Whether the unix socket at ``socket_path`` accepts a connection now."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        try:
            client.connect(socket_path)
        except OSError:
            return False
    return True


def _reload_finished(log: str, daemon_scripts: int) -> bool:
    """Whether the daemon's log (from the SIGHUP on) shows the reload's hook work done."""
    # virHookInitialize checks the drivers in a fixed order, bhyve last.
    if "/etc/libvirt/hooks/bhyve" not in log:
        return False
    if daemon_scripts == 0:
        return True
    thread, calls, results = "", 0, 0
    for line in log.splitlines():
        match = _LOG_LINE.match(line)
        if match is None:
            continue
        tid, function, message = match.groups()
        if function == "virRunScript" and "hooks/daemon" in message and "op=reload" in message:
            thread = tid
            calls += 1
        elif tid == thread and function == "virCommandRun" and message.startswith("Result"):
            results += 1
    return calls >= daemon_scripts and results >= calls
