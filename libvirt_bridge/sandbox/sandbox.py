"""The :class:`Sandbox`: a private libvirtd, its guests and the bridge, in one object."""

from __future__ import annotations

import os
import subprocess
import uuid as uuidlib
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType

from .bridge import Bridge
from .capscache import gather_capabilities
from .daemons import Daemons
from .errors import SandboxError
from .guests import Guests
from .host import check_host_can_run_libvirt
from .layout import Layout
from .namespaces import Namespaces, mounts_mentioning


class Sandbox(Layout):
    """A private libvirtd (with virtlogd) in its own mount and UTS namespaces.

    ``Sandbox(root, name)`` lays out ``root`` (a fresh directory the caller owns; the
    paths are :class:`Layout`'s); :meth:`start` starts the daemons; :meth:`close` (or
    leaving the ``with`` block) kills everything the sandbox started. ``__enter__`` does
    not start the daemons.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        name: str,
        *,
        start_timeout: float = 60.0,
        domain_type: str | None = None,
    ) -> None:
        super().__init__(root, name)
        self.start_timeout = start_timeout
        self.host_uuid = str(uuidlib.uuid4())
        self.namespaces = Namespaces()
        self.daemons = Daemons(self, self.namespaces, start_timeout)
        self.guests = Guests(self.uri, self.domains_dir, domain_type, self._gather_caps)
        self.bridge = Bridge(self, self.daemons)
        self._started = False
        self._closed = False
        self.check()
        self.create(self.host_uuid)

    # -- lifetime -------------------------------------------------------------------------

    def start(self) -> Sandbox:
        """Start virtlogd and libvirtd in new namespaces; return when libvirtd answers."""
        if self._closed:
            raise SandboxError("this sandbox was closed; create a new one")
        if self._started:
            return self
        reason = check_host_can_run_libvirt()
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
            self._gather_caps()
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

    def _gather_caps(self) -> None:
        gather_capabilities(self.cache_dir)

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
        return f"Sandbox({self.root!r}, {self.name!r})"

    # -- processes and daemons ----------------------------------------------------------

    def pids(self) -> list[int]:
        """Every live process of the sandbox: daemons, QEMU, hook processes, listener."""
        return self.namespaces.members()

    def libvirtd_pid(self) -> int:
        """The pid of the running libvirtd (SandboxError if it does not run)."""
        return self.daemons.pid("libvirtd")

    def virtlogd_pid(self) -> int:
        """The pid of the running virtlogd (SandboxError if it does not run)."""
        return self.daemons.pid("virtlogd")

    def running(self) -> bool:
        """Whether libvirtd runs."""
        return self.daemons.running()

    def run_in_namespace(
        self,
        argv: Sequence[str],
        *,
        check: bool = True,
        timeout: float = 60.0,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` in the sandbox's mount and UTS namespaces (``nsenter``)."""
        return self.daemons.run_in_namespace(argv, check=check, timeout=timeout, input=input)

    def reload(self, timeout: float = 10.0) -> None:
        """SIGHUP libvirtd; return once it has looked for hook files again.

        If a ``daemon`` hook is installed, also wait until its ``reload`` call returned.
        Gives up silently after ``timeout`` s (the wait reads libvirtd's debug log).
        """
        self.daemons.reload(timeout)

    def stop_daemon(self, timeout: float = 30.0) -> None:
        """SIGTERM libvirtd and wait until it has exited (running guests keep running)."""
        self.daemons.stop_libvirtd(timeout)

    def start_daemon(self, timeout: float | None = None) -> None:
        """Start libvirtd again in the sandbox's namespaces and wait until it answers."""
        self.daemons.start_libvirtd(timeout)

    def restart_daemon(self) -> None:
        """Stop libvirtd and start it again; guests keep running and are reconnected."""
        self.daemons.stop_libvirtd()
        self.daemons.start_libvirtd()

    # -- guests ---------------------------------------------------------------------------

    def virsh(
        self, *args: str, check: bool = True, timeout: float = 60.0, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run ``virsh -c <uri> ARGS``; VirshError on failure (if ``check``) or timeout."""
        return self.guests.virsh(*args, check=check, timeout=timeout, input=input)

    def domstate(self, name: str) -> str:
        """``virsh domstate NAME``, e.g. ``running`` or ``shut off``."""
        return self.guests.domstate(name)

    def running_guests(self) -> list[str]:
        """Names of the active guests."""
        return self.guests.running()

    @property
    def domain_type(self) -> str:
        """``kvm`` when /dev/kvm works, else ``qemu`` (TCG), unless set at construction."""
        return self.guests.domain_type

    def domain_xml(
        self,
        name: str,
        *,
        uuid: str | None = None,
        metadata: str = "",
        description: str | None = None,
    ) -> str:
        """A tiny diskless guest: 64 MiB, 1 vCPU, no disk, no NIC, no graphics."""
        return self.guests.domain_xml(name, uuid=uuid, metadata=metadata, description=description)

    def define_guest(self, name: str, *, metadata: str = "", description: str | None = None) -> str:
        """Define a tiny diskless guest (see :meth:`domain_xml`); return its UUID."""
        return self.guests.define(name, metadata=metadata, description=description)

    def migrate(
        self,
        name: str,
        dest: Sandbox,
        *,
        live: bool = True,
        extra_args: Iterable[str] = (),
        timeout: float = 120.0,
    ) -> subprocess.CompletedProcess[str]:
        """Migrate guest ``name`` to ``dest`` over TCP on 127.0.0.1; not checked."""
        return self.guests.migrate(
            name, dest.uri, live=live, extra_args=extra_args, timeout=timeout
        )

    # -- the bridge -----------------------------------------------------------------------

    def install_bridge(self, config_overrides: Mapping[str, object] | None = None) -> None:
        """Write the bridge's config, then install the bridge as ``libvirt-bridge install``.

        A None value in ``config_overrides`` leaves that key out. Returns once a running
        libvirtd has looked for hook files again (install sends it SIGHUP).
        """
        self.bridge.install(config_overrides)

    def add_hook_script(self, event: str, name: str, text: str) -> str:
        """Write an executable (0755, root-owned) script ``<hooks_root>/<event>/<name>``."""
        return self.bridge.add_hook_script(event, name, text)

    def start_listener(self, timeout: float = 30.0) -> int:
        """Run ``libvirt-bridge listen`` in the sandbox's namespaces; return its pid.

        Call :meth:`install_bridge` first: the listener reads that config. Returns once it
        connected. :meth:`close` stops it.
        """
        return self.bridge.start_listener(timeout)

    def listener_pid(self) -> int:
        """The pid of the listener started by :meth:`start_listener` (SandboxError if none)."""
        return self.bridge.listener_pid()
