"""The sandbox's guests: tiny diskless domains, defined, driven and migrated with virsh."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
import uuid as uuidlib
from collections.abc import Callable, Iterable
from typing import Protocol
from xml.sax.saxutils import escape

from .client import client_env, virsh, virsh_argv
from .errors import SandboxError
from .host import binary, kvm_usable

OVIRT_VM_NS = "http://ovirt.org/vm/1.0"


class Reachable(Protocol):
    """What a guest can migrate to: anything with a libvirt URI, another sandbox."""

    uri: str


class Guests:
    """The guests of the libvirtd at ``uri``; their XML files go to ``domains_dir``.

    ``domain_type`` is ``kvm``, ``qemu`` or None (``kvm`` when /dev/kvm works).
    ``after_define`` runs after each definition (defining one makes libvirtd probe QEMU).
    ``emulator``: the QEMU binary as the daemon sees it (default: the host's).
    """

    def __init__(
        self,
        uri: str,
        domains_dir: str,
        domain_type: str | None,
        after_define: Callable[[], None],
        emulator: str | None = None,
    ) -> None:
        if domain_type not in (None, "kvm", "qemu"):
            raise SandboxError(f"domain_type must be 'kvm', 'qemu' or None, not {domain_type!r}")
        self.uri = uri
        self.domains_dir = domains_dir
        self._domain_type = domain_type
        self._after_define = after_define
        self._emulator = emulator

    def virsh(
        self, *args: str, check: bool = True, timeout: float = 60.0, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run ``virsh -c <uri> ARGS``; VirshError on failure (if ``check``) or timeout."""
        return virsh(self.uri, *args, check=check, timeout=timeout, input=input)

    def domstate(self, name: str) -> str:
        """``virsh domstate NAME``, e.g. ``running`` or ``shut off``."""
        return self.virsh("domstate", name).stdout.strip()

    def running(self) -> list[str]:
        """Names of the active guests."""
        return self.virsh("list", "--name").stdout.split()

    @property
    def domain_type(self) -> str:
        """``kvm`` when /dev/kvm works, else ``qemu`` (TCG), unless set at construction."""
        return self._domain_type or ("kvm" if kvm_usable() else "qemu")

    def domain_xml(
        self,
        name: str,
        *,
        uuid: str | None = None,
        metadata: str = "",
        description: str | None = None,
    ) -> str:
        """A tiny diskless guest: 64 MiB, 1 vCPU, no disk, no NIC, no graphics."""
        emulator = self._emulator or binary("qemu-system-x86_64")
        parts = [
            f"<domain type='{self.domain_type}'>",
            f"  <name>{escape(name)}</name>",
            f"  <uuid>{uuid or uuidlib.uuid4()}</uuid>",
        ]
        if description is not None:
            parts.append(f"  <description>{escape(description)}</description>")
        if metadata:
            parts.append(f"  <metadata>{metadata}</metadata>")
        parts += [
            "  <memory unit='MiB'>64</memory>",
            "  <vcpu>1</vcpu>",
            "  <os><type arch='x86_64' machine='pc'>hvm</type></os>",
            "  <on_poweroff>destroy</on_poweroff>",
            "  <devices>",
            f"    <emulator>{escape(emulator)}</emulator>",
            "  </devices>",
            "</domain>",
        ]
        return "\n".join(parts) + "\n"

    def define(self, name: str, *, metadata: str = "", description: str | None = None) -> str:
        """Define a tiny diskless guest (see :meth:`domain_xml`); return its UUID."""
        if "/" in name or not name:
            raise SandboxError(f"bad guest name {name!r}")
        guest_uuid = str(uuidlib.uuid4())
        os.makedirs(self.domains_dir, exist_ok=True)
        path = os.path.join(self.domains_dir, f"{name}.xml")
        with open(path, "w") as f:
            f.write(
                self.domain_xml(name, uuid=guest_uuid, metadata=metadata, description=description)
            )
        self.virsh("define", path)
        self._after_define()
        return guest_uuid

    def migrate(
        self,
        name: str,
        dest: Reachable,
        *,
        live: bool = True,
        extra_args: Iterable[str] = (),
        timeout: float = 120.0,
    ) -> subprocess.CompletedProcess[str]:
        """Migrate guest ``name`` to ``dest`` over TCP on 127.0.0.1; not checked."""
        args = ["migrate", *(["--live"] if live else []), *extra_args]
        args += [name, dest.uri, "--migrateuri", "tcp://127.0.0.1"]
        return self.virsh(*args, check=False, timeout=timeout)

    def destroy_all(self, timeout: float) -> None:
        """Destroy every running guest, so that hooks see their end; errors are ignored."""
        deadline = time.monotonic() + timeout
        try:
            names = self.virsh("list", "--name", timeout=timeout).stdout.split()
        except SandboxError:
            return
        # In parallel: each destroy waits for its QEMU to exit (1-2 s).
        destroys = [
            subprocess.Popen(
                virsh_argv(self.uri, "destroy", name),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=client_env(),
            )
            for name in names
        ]
        try:
            for destroy in destroys:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    destroy.wait(timeout=max(0.0, deadline - time.monotonic()))
        finally:
            for destroy in destroys:
                if destroy.poll() is None:
                    destroy.kill()
                    destroy.wait()
