"""The :class:`Sandbox`: a private libvirtd, its guests and the bridge, in one object."""

from __future__ import annotations

import os
import sys
import uuid as uuidlib
from collections.abc import Iterable
from types import TracebackType

from .bridge import Bridge
from .capscache import gather_capabilities
from .cells import Cell
from .daemons import Daemons
from .errors import SandboxError
from .guests import Guests
from .host import check_host_can_run_libvirt, root_binary
from .layout import Layout
from .namespaces import Namespaces, mounts_mentioning


class Sandbox(Layout):
    """A private libvirtd or virtqemud (with virtlogd) in its own mount and UTS namespaces.

    ``Sandbox(root, name)`` lays out ``root`` (a fresh directory the caller owns; the
    paths are :class:`Layout`'s); :meth:`start` starts the daemons; :meth:`close` (or
    leaving the ``with`` block) kills everything the sandbox started. ``__enter__`` does
    not start the daemons. ``cell`` chooses the libvirt and the daemon mode (``cells``;
    default: the host's libvirt, monolithic); ``shared_dirs`` are host directories a
    chrooted cell's daemons see too (the sandbox root always).

    The rest of its API is its parts' (``namespaces``, ``daemons``, ``guests``,
    ``bridge``), under the names below; each is documented where it is defined.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        name: str,
        *,
        start_timeout: float = 60.0,
        domain_type: str | None = None,
        cell: Cell | str | None = None,
        shared_dirs: Iterable[str | os.PathLike[str]] = (),
    ) -> None:
        if isinstance(cell, str):
            cell = Cell.parse(cell)
        super().__init__(root, name, cell, tuple(os.fspath(d) for d in shared_dirs))
        self.start_timeout = start_timeout
        self.host_uuid = str(uuidlib.uuid4())
        self.namespaces = Namespaces()
        self.daemons = Daemons(self, self.namespaces, start_timeout)
        emulator = None
        # What scripts the daemons run (hooks) can name as their interpreter.
        self.python = sys.executable
        if self.libvirt_root is not None:
            emulator = root_binary(self.libvirt_root, "qemu-system-x86_64")
            self.python = root_binary(self.libvirt_root, "python3")
        # Defining a guest makes the daemon probe QEMU, if nothing had yet.
        self.guests = Guests(
            self.uri, self.domains_dir, domain_type, self._gather_capabilities, emulator
        )
        self.bridge = Bridge(self, self.daemons)
        self._started = False
        self._closed = False
        self.check()
        self.create(self.host_uuid)

        # Processes and daemons.
        self.pids = self.namespaces.members
        self.daemon_pid = self.daemons.daemon_pid
        # The main daemon's, by its monolithic name (virtqemud's in a modular cell).
        self.libvirtd_pid = self.daemons.daemon_pid
        self.virtlogd_pid = self.daemons.virtlogd_pid
        self.running = self.daemons.running
        self.run_in_namespace = self.daemons.run_in_namespace
        self.reload = self.daemons.reload
        self.stop_daemon = self.daemons.stop_daemon
        self.start_daemon = self.daemons.start_daemon
        self.restart_daemon = self.daemons.restart_daemon
        # Other modular daemons (virtnetworkd, ...), in a modular cell.
        self.start_other_daemon = self.daemons.start_other
        self.stop_other_daemon = self.daemons.stop_other
        self.other_daemon_pid = self.daemons.other_pid
        # Guests.
        self.virsh = self.guests.virsh
        self.domstate = self.guests.domstate
        self.running_guests = self.guests.running
        self.domain_xml = self.guests.domain_xml
        self.define_guest = self.guests.define
        self.migrate = self.guests.migrate
        # The bridge.
        self.install_bridge = self.bridge.install
        self.add_hook_script = self.bridge.add_hook_script
        self.start_listener = self.bridge.start_listener
        self.listener_pid = self.bridge.listener_pid

    @property
    def domain_type(self) -> str:
        """``kvm`` when /dev/kvm works, else ``qemu`` (TCG), unless set at construction."""
        return self.guests.domain_type

    def start(self) -> Sandbox:
        """Start virtlogd and the main daemon in new namespaces; return when it answers."""
        if self._closed:
            raise SandboxError("this sandbox was closed; create a new one")
        if self._started:
            return self
        reason = check_host_can_run_libvirt(self.cell)
        if reason is not None:
            raise SandboxError(reason)
        self._started = True
        try:
            self.daemons.start()
        except BaseException as exc:
            try:
                self.close()
            except Exception as close_exc:
                exc.add_note(f"and cleaning up failed too: {close_exc}")
            raise
        return self

    def close(self) -> None:
        """Tear down everything the sandbox started; idempotent.

        Running guests are destroyed (so hooks see their end) if libvirtd answers, and the
        listener is stopped; then every process in the sandbox's namespaces gets SIGTERM,
        and SIGKILL after a grace period. Raises SandboxError if a process survives or a
        mount is left on the host.
        """
        if self._closed:
            return
        if not self._started:
            self._closed = True
            return
        interrupted: BaseException | None = None
        try:
            self._gather_capabilities()
            if self.daemons.running():
                self.guests.destroy_all(timeout=30.0)
            self.bridge.stop_listener()
        except KeyboardInterrupt as exc:  # still kill what runs, then let it propagate
            interrupted = exc
        except Exception:
            pass
        if self.namespaces.inos is None:
            self.namespaces.read(self.namespaces_record)
        self.daemons.stop_setup()
        survivors = self.namespaces.kill_members()
        if survivors:
            raise SandboxError(f"sandbox {self.name}: processes {survivors} survived SIGKILL")
        self.namespaces.release()
        self._closed = True
        if interrupted is not None:
            raise interrupted
        leftovers = mounts_mentioning(self.root)
        if leftovers:
            raise SandboxError(f"mounts of sandbox {self.name} remain:\n" + "\n".join(leftovers))

    def _gather_capabilities(self) -> None:
        gather_capabilities(self.cache_dir, self.cell.libvirt)

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Sandbox({self.root!r}, {self.name!r}, cell={self.cell.name!r})"
