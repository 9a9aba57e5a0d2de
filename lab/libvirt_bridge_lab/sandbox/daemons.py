"""The daemons of one sandbox: started in new namespaces, stopped, reloaded.

The *main* daemon runs the qemu driver, calls the hooks and owns the socket: ``libvirtd``
(monolithic) or ``virtqemud`` (modular); ``virtlogd`` runs beside it. The setup (``unshare
--mount --uts --propagation private``) records its namespaces, mounts the sandbox's
directories, sets the hostname and starts both daemons; whatever runs in the sandbox later
enters those namespaces through virtlogd (``nsenter``), which runs as long as the sandbox
does. In a chrooted cell the daemons run chrooted into the view (``layout``), and so does
what ``run_in_namespace`` runs (``nsenter --root``): paths are the root's there. Their
pids, their readiness and what the main daemon's log says are ``daemonwatch``'s.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Sequence

from .capscache import seed_capabilities
from .cells import MODULAR
from .daemonwatch import DaemonWatch
from .errors import SandboxError
from .host import binary, daemon_env, root_binary, which
from .layout import LOG_FILTERS, Layout
from .namespaces import Namespaces, process_alive, session_child


class Daemons:
    """The daemons of the sandbox laid out by ``layout``, in the namespaces ``namespaces``:
    starting, stopping and reloading them. What they show of themselves (pids, readiness,
    the log) is ``watch``'s, whose readers are offered here too."""

    def __init__(self, layout: Layout, namespaces: Namespaces, start_timeout: float) -> None:
        self.layout = layout
        self.namespaces = namespaces
        self.start_timeout = start_timeout
        self._setup: subprocess.Popen[bytes] | None = None
        self._cpus = os.sched_getaffinity(0)
        self.cell = layout.cell
        self.main = layout.cell.main_daemon
        # Which QEMU capabilities a sandbox may take from another's (see capscache).
        self._caps_key = layout.cell.libvirt
        self.watch = DaemonWatch(layout, namespaces)
        self.daemon_pid = self.watch.daemon_pid
        self.virtlogd_pid = self.watch.virtlogd_pid
        self.running = self.watch.running
        self.diagnostics = self.watch.diagnostics
        self.log_size = self.watch.log_size
        self.wait_reloaded = self.watch.wait_reloaded
        # The pid of a running daemon started by :meth:`start_other`.
        self.other_pid = self.watch.running_pid

    # -- starting -----------------------------------------------------------------------

    def start(self) -> None:
        """Run the setup in new namespaces; return when the main daemon answers."""
        deadline = time.monotonic() + self.start_timeout
        seed_capabilities(self.layout.cache_dir, self._caps_key)
        argv = [binary("unshare"), "--mount", "--uts", "--propagation", "private"]
        argv += ["/bin/sh", "-c", self._setup_script()]
        self._setup = session_child(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=daemon_env()
        )
        try:
            out, err = self._setup.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self._setup.kill()
            _, err = self._setup.communicate()
            raise SandboxError(
                f"sandbox setup did not finish in {self.start_timeout} s\n{_text(err)}"
                + self.diagnostics()
            ) from None
        self.namespaces.read(self.layout.namespaces_record)
        if self._setup.returncode != 0:
            output = _text(err + out).strip()
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
        out = self.watch.output(daemon)
        return f"{command} -d -p /run/libvirt/{daemon}.pid </dev/null >>{q(out)} 2>&1"

    def _main_command(self) -> str:
        command = self._daemon_command(self.main)
        taskset = which("taskset")
        if taskset is not None:
            # Pinned while it reads the host CPUID (see capscache); unpinned when ready.
            command = f"{shlex.quote(taskset)} -c {min(self._cpus)} {command}"
        return command

    def _wait_ready(self, deadline: float) -> None:
        """Wait until the main daemon answers a call; then unpin it."""
        pid = self.watch.wait_answering(deadline, self.start_timeout)
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                os.sched_setaffinity(int(task), self._cpus)

    def _start_in_host_view(self, daemon: str, command: str, timeout: float) -> None:
        """Run ``command``, a shell command that starts ``daemon`` and chroots it by itself,
        in the sandbox's namespaces; SandboxError if it fails."""
        argv = ["/bin/sh", "-c", command]
        result = self.run_in_namespace(argv, check=False, timeout=timeout, chrooted=False)
        if result.returncode != 0:
            raise SandboxError(
                f"{daemon} did not start (exit {result.returncode}): {result.stderr.strip()}"
                + self.diagnostics(daemon)
            )

    # -- running in the namespaces --------------------------------------------------------

    def nsenter(self, chrooted: bool = True) -> list[str]:
        """The command prefix that runs a command in the sandbox's namespaces.

        In a chrooted cell, also chrooted into the view, as the daemons are, unless not
        ``chrooted`` (for a command that chroots by itself: it sees the host's view).
        """
        pid = self.virtlogd_pid()
        argv = [binary("nsenter"), "--target", str(pid), "--mount", "--uts"]
        if chrooted and self.layout.libvirt_root is not None:
            argv += ["--root", "--wd"]  # virtlogd's: the view, and / in it
        return [*argv, "--"]

    def run_in_namespace(
        self,
        argv: Sequence[str],
        *,
        check: bool = True,
        timeout: float = 60.0,
        input: str | None = None,
        chrooted: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` in the sandbox's mount and UTS namespaces (``nsenter``)."""
        return subprocess.run(
            [*self.nsenter(chrooted), *argv],
            input=input,
            capture_output=True,
            text=True,
            env=daemon_env(),
            cwd="/",
            timeout=timeout,
            check=check,
        )

    # -- reload, stop, start ------------------------------------------------------------

    def reload(self, timeout: float = 10.0) -> None:
        """SIGHUP the main daemon; return once it has looked for hook files again.

        If a ``daemon`` hook is installed, also wait until its ``reload`` call returned.
        Gives up silently after ``timeout`` s (the wait reads the daemon's debug log).
        """
        pid = self.daemon_pid()
        offset = self.log_size()
        os.kill(pid, signal.SIGHUP)
        self.wait_reloaded(offset, timeout)

    def stop_daemon(self, timeout: float = 30.0) -> None:
        """SIGTERM the main daemon, wait until it has exited (running guests keep running)."""
        self._terminate(self.main, timeout)

    def _terminate(self, daemon: str, timeout: float) -> None:
        """SIGTERM ``daemon`` (by its pid file) and wait until it has exited; SIGKILL and a
        SandboxError after ``timeout`` s."""
        pid = self.watch.pid(daemon)
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
        left = max(1.0, deadline - time.monotonic())
        self._start_in_host_view(self.main, self._main_command(), left)
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
        command = f"{shlex.quote(binary('unshare'))} --net {self._daemon_command(daemon)}"
        self._start_in_host_view(daemon, command, timeout)
        return self.watch.wait_accepting(daemon, timeout)

    def stop_other(self, daemon: str, timeout: float = 30.0) -> None:
        """SIGTERM ``daemon`` (started by :meth:`start_other`); wait until it has exited."""
        self._terminate(daemon, timeout)


def _text(output: bytes) -> str:
    return output.decode("utf-8", "replace")
