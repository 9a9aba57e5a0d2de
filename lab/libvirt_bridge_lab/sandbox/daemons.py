"""The daemons of one sandbox: started in new namespaces, stopped, reloaded.

The *main* daemon runs the qemu driver, calls the hooks and owns the socket: ``libvirtd``
(monolithic) or ``virtqemud`` (modular); ``virtlogd`` runs beside it. The setup (``unshare
--mount --uts --propagation private``) records its namespaces, mounts the sandbox's
directories, sets the hostname and starts both daemons; whatever runs in the sandbox later
enters those namespaces through virtlogd (``nsenter``), which runs as long as the sandbox
does. In a chrooted cell the daemons run chrooted into the view (``layout``), and so does
what ``run_in_namespace`` runs (``nsenter --root``): paths are the root's there.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import time
from collections.abc import Sequence

from .capscache import seed_capabilities
from .cells import MODULAR
from .client import VirshError, virsh
from .errors import SandboxError, tails
from .host import binary, daemon_env, root_binary, which
from .layout import LOG_FILTERS, Layout
from .namespaces import Namespaces, process_alive

# "2026-01-01 10:00:00.000+0000: 1234: debug : virRunScript:279 : Calling hook ..."
_LOG_LINE = re.compile(r"^\S+ \S+: (\d+): \w+ : (\w+):\d+ : (.*)$")


class Daemons:
    """The daemons of the sandbox laid out by ``layout``, in the namespaces ``namespaces``."""

    def __init__(self, layout: Layout, namespaces: Namespaces, start_timeout: float) -> None:
        self.layout = layout
        self.namespaces = namespaces
        self.start_timeout = start_timeout
        self._setup: subprocess.Popen[str] | None = None
        self._cpus = os.sched_getaffinity(0)
        self.cell = layout.cell
        self.main = layout.cell.main_daemon
        # Which QEMU capabilities a sandbox may take from another's (see capscache).
        self._caps_key = layout.cell.libvirt

    # -- starting -----------------------------------------------------------------------

    def start(self) -> None:
        """Run the setup in new namespaces; return when the main daemon answers."""
        deadline = time.monotonic() + self.start_timeout
        seed_capabilities(self.layout.cache_dir, self._caps_key)
        argv = [binary("unshare"), "--mount", "--uts", "--propagation", "private"]
        argv += ["/bin/sh", "-c", self._setup_script()]
        self._setup = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=daemon_env(),
            cwd="/",
            text=True,
            start_new_session=True,
        )
        try:
            out, err = self._setup.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self._setup.kill()
            out, err = self._setup.communicate()
            raise SandboxError(
                f"sandbox setup did not finish in {self.start_timeout} s\n{err}"
                + self.diagnostics()
            ) from None
        self.namespaces.read(self.layout.namespaces_record)
        if self._setup.returncode != 0:
            output = (err + out).strip()
            raise SandboxError(
                f"sandbox setup failed (exit {self._setup.returncode})"
                + (f": {output}" if output else "")
                + self.diagnostics()
            )
        self.namespaces.hold(self.virtlogd_pid())
        self.namespaces.start_watchdog()
        self._wait_ready(deadline)

    def stop_setup(self) -> None:
        """Kill the setup if it still runs (a start that failed or was interrupted)."""
        if self._setup is not None and self._setup.poll() is None:
            self._setup.kill()
            self._setup.wait()

    def _setup_script(self) -> str:
        q = shlex.quote
        lines = [
            "set -e",
            f"readlink /proc/$$/ns/mnt /proc/$$/ns/uts > {q(self.layout.namespaces_record)}",
            *self.layout.mount_commands(),
            f"printf %s {q(self.layout.name)} > /proc/sys/kernel/hostname",
            self._daemon_command("virtlogd"),
            self._main_command(),
        ]
        return "\n".join(lines) + "\n"

    def _daemon_command(self, daemon: str) -> str:
        """A shell command that starts ``daemon`` (``-d``); run in the host's view."""
        q = shlex.quote
        if self.layout.libvirt_root is None:
            command = q(binary(daemon))
        else:
            path = root_binary(self.layout.libvirt_root, daemon)
            command = f"{q(binary('chroot'))} {q(self.layout.view_dir)} {q(path)}"
        out = os.path.join(self.layout.log_dir, f"{daemon}.out")
        return f"{command} -d -p /run/libvirt/{daemon}.pid </dev/null >>{q(out)} 2>&1"

    def _main_command(self) -> str:
        command = self._daemon_command(self.main)
        taskset = which("taskset")
        if taskset is not None:
            # Pinned while it reads the host CPUID (see capscache); unpinned when ready.
            command = f"{shlex.quote(taskset)} -c {min(self._cpus)} {command}"
        return command

    def _wait_ready(self, deadline: float) -> None:
        """Wait until the socket accepts connections and the main daemon answers a call."""
        since = time.monotonic()
        while True:
            pid = self._pid_from_file(self.main)
            if pid is None:
                if time.monotonic() - since < 3.0:
                    time.sleep(0.02)
                    continue
                raise SandboxError(f"{self.main} is not running" + self.diagnostics())
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                try:
                    sock.connect(self.layout.socket_path)
                    break
                except OSError:
                    pass
            if time.monotonic() > deadline:
                raise SandboxError(
                    f"{self.main} socket {self.layout.socket_path} not ready after "
                    f"{self.start_timeout} s" + self.diagnostics()
                )
            time.sleep(0.02)
        # The socket accepts before the drivers are up; a call returns once they are.
        try:
            virsh(self.layout.uri, "uri", timeout=max(1.0, deadline - time.monotonic()))
        except VirshError as exc:
            raise SandboxError(f"{self.main} does not answer: {exc}" + self.diagnostics()) from None
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                os.sched_setaffinity(int(task), self._cpus)

    def diagnostics(self) -> str:
        """The tails of the daemons' output and log, for an error message."""
        names = (f"{self.main}.out", "virtlogd.out", f"{self.main}.log")
        return tails([os.path.join(self.layout.log_dir, name) for name in names])

    # -- processes ------------------------------------------------------------------------

    def _pid_from_file(self, daemon: str) -> int | None:
        try:
            with open(os.path.join(self.layout.run_dir, f"{daemon}.pid")) as f:
                pid = int(f.read().strip())
        except (OSError, ValueError):
            return None
        if not self.namespaces.contains(pid):
            return None
        return pid if process_alive(pid) else None

    def _running_pid(self, daemon: str) -> int:
        pid = self._pid_from_file(daemon)
        if pid is None:
            raise SandboxError(f"{daemon} of sandbox {self.layout.name} is not running")
        return pid

    def daemon_pid(self) -> int:
        """The pid of the running main daemon, libvirtd or virtqemud (SandboxError if none)."""
        return self._running_pid(self.main)

    def virtlogd_pid(self) -> int:
        """The pid of the running virtlogd (SandboxError if it does not run)."""
        return self._running_pid("virtlogd")

    def running(self) -> bool:
        """Whether the main daemon runs."""
        return self._pid_from_file(self.main) is not None

    def nsenter(self) -> list[str]:
        """The command prefix that runs a command in the sandbox's namespaces.

        In a chrooted cell, also chrooted into the view, as the daemons are.
        """
        pid = self.virtlogd_pid()
        argv = [binary("nsenter"), "--target", str(pid), "--mount", "--uts"]
        if self.layout.libvirt_root is not None:
            argv += ["--root", "--wd"]  # virtlogd's: the view, and / in it
        return [*argv, "--"]

    def run_in_namespace(
        self,
        argv: Sequence[str],
        *,
        check: bool = True,
        timeout: float = 60.0,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` in the sandbox's mount and UTS namespaces (``nsenter``)."""
        return subprocess.run(
            [*self.nsenter(), *argv],
            input=input,
            capture_output=True,
            text=True,
            env=daemon_env(),
            cwd="/",
            timeout=timeout,
            check=check,
        )

    # -- reload, stop, start ------------------------------------------------------------

    def log_size(self) -> int:
        """The size of the main daemon's log: where what it logs next begins."""
        try:
            return os.path.getsize(self.layout.daemon_log)
        except OSError:
            return 0

    def reload(self, timeout: float = 10.0) -> None:
        """SIGHUP the main daemon; return once it has looked for hook files again.

        If a ``daemon`` hook is installed, also wait until its ``reload`` call returned.
        Gives up silently after ``timeout`` s (the wait reads the daemon's debug log).
        """
        pid = self.daemon_pid()
        offset = self.log_size()
        os.kill(pid, signal.SIGHUP)
        self.wait_reloaded(offset, timeout)

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

    def stop_daemon(self, timeout: float = 30.0) -> None:
        """SIGTERM the main daemon, wait until it has exited (running guests keep running)."""
        self._terminate(self.main, timeout)

    def _terminate(self, daemon: str, timeout: float) -> None:
        """SIGTERM ``daemon`` (by its pid file) and wait until it has exited; SIGKILL and a
        SandboxError after ``timeout`` s."""
        pid = self._pid_from_file(daemon)
        if pid is None:
            return
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while process_alive(pid):
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                raise SandboxError(
                    f"{daemon} {pid} did not exit {timeout} s after SIGTERM; killed"
                    + self.diagnostics()
                )
            time.sleep(0.02)

    def start_daemon(self, timeout: float | None = None) -> None:
        """Start the main daemon again in the sandbox's namespaces; wait until it answers."""
        deadline = time.monotonic() + (self.start_timeout if timeout is None else timeout)
        seed_capabilities(self.layout.cache_dir, self._caps_key)
        # In the host's view of the namespaces: the command chroots by itself.
        pid = self.virtlogd_pid()
        nsenter = [binary("nsenter"), "--target", str(pid), "--mount", "--uts", "--"]
        result = subprocess.run(
            [*nsenter, "/bin/sh", "-c", self._main_command()],
            capture_output=True,
            text=True,
            env=daemon_env(),
            cwd="/",
            timeout=max(1.0, deadline - time.monotonic()),
            check=False,
        )
        if result.returncode != 0:
            raise SandboxError(
                f"{self.main} did not start (exit {result.returncode}): {result.stderr.strip()}"
                + self.diagnostics()
            )
        self._wait_ready(deadline)

    def restart_daemon(self) -> None:
        """Stop the main daemon and start it again; guests keep running, are reconnected."""
        self.stop_daemon()
        self.start_daemon()

    # -- other modular daemons ------------------------------------------------------------

    def start_other(self, daemon: str, timeout: float = 30.0) -> int:
        """Start another modular daemon (``virtnetworkd``, ...) beside the main one; its pid.

        Modular cells only. It runs in the sandbox's namespaces, chrooted like the main
        daemon, and in a network namespace of its own: whatever its driver does to bridges
        or firewalls stays there. It logs hook calls as the main daemon does, to
        ``log_dir/<daemon>.log``. Returns once its socket accepts connections.
        """
        if self.cell.mode != MODULAR or daemon in (self.main, "virtlogd"):
            raise SandboxError(f"{daemon} is not another modular daemon of {self.cell}")
        log_outputs = f"1:file:/var/log/libvirt/{daemon}.log"
        self.layout.edit_conf(
            f"{daemon}.conf",
            {"log_filters": json.dumps(LOG_FILTERS), "log_outputs": json.dumps(log_outputs)},
        )
        q = shlex.quote
        command = f"{q(binary('unshare'))} --net {self._daemon_command(daemon)}"
        nsenter = [binary("nsenter"), "--target", str(self.virtlogd_pid()), "--mount", "--uts"]
        result = subprocess.run(
            [*nsenter, "--", "/bin/sh", "-c", command],
            capture_output=True,
            text=True,
            env=daemon_env(),
            cwd="/",
            timeout=timeout,
            check=False,
        )
        out = os.path.join(self.layout.log_dir, f"{daemon}.out")
        if result.returncode != 0:
            raise SandboxError(
                f"{daemon} did not start (exit {result.returncode}): {result.stderr.strip()}"
                + tails([out])
            )
        sock = os.path.join(self.layout.run_dir, f"{daemon}-sock")
        deadline = time.monotonic() + timeout
        while True:
            pid = self._pid_from_file(daemon)
            if pid is not None:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
                    try:
                        client.connect(sock)
                        return pid
                    except OSError:
                        pass
            if time.monotonic() > deadline:
                raise SandboxError(f"{daemon} not ready after {timeout} s" + tails([out]))
            time.sleep(0.02)

    def other_pid(self, daemon: str) -> int:
        """The pid of the running ``daemon`` started by :meth:`start_other`."""
        return self._running_pid(daemon)

    def stop_other(self, daemon: str, timeout: float = 30.0) -> None:
        """SIGTERM ``daemon`` (started by :meth:`start_other`); wait until it has exited."""
        self._terminate(daemon, timeout)


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
