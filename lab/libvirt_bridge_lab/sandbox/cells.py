"""Which libvirt a sandbox runs, and how: a *cell* of the test matrix.

``libvirt`` is ``system`` (the host's own libvirt, Debian 12's 9.0) or a version a cached
root carries (``roots``: ``11.3``). ``mode`` is ``monolithic`` (one ``libvirtd`` runs every
driver) or ``modular`` (``virtqemud`` runs the qemu driver alone; libvirt >= 7 has it, and
Debian 12's 9.0 does not ship it). Both modes run ``virtlogd`` for QEMU's output. A diskless,
NIC-less guest needs no other modular daemon: no network (``virtnetworkd``), storage
(``virtstoraged``), secret (``virtsecretd``) or node device (``virtnodedevd``) driver is
used, and migration between two sandboxes goes from client to daemon directly. A test that
needs another modular daemon starts one beside (``Sandbox.start_other_daemon``: the root
has ``virtnetworkd``).
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import SandboxError

SYSTEM = "system"
MONOLITHIC = "monolithic"
MODULAR = "modular"
# The cells the end-to-end tests run on, the first the default.
CELLS = ("system-monolithic", "11.3-monolithic", "11.3-modular")


@dataclass(frozen=True)
class Cell:
    libvirt: str = SYSTEM
    mode: str = MONOLITHIC

    def __post_init__(self) -> None:
        if self.name not in CELLS:
            raise SandboxError(f"no such libvirt cell {self.name!r} (known: {', '.join(CELLS)})")

    @classmethod
    def parse(cls, text: str) -> Cell:
        """``system-monolithic``, ``11.3-modular``, ...: the form :attr:`name` gives."""
        libvirt, sep, mode = text.rpartition("-")
        if not sep:
            raise SandboxError(f"no such libvirt cell {text!r} (known: {', '.join(CELLS)})")
        return cls(libvirt, mode)

    @property
    def name(self) -> str:
        return f"{self.libvirt}-{self.mode}"

    @property
    def chrooted(self) -> bool:
        """Whether the daemons run chrooted into a cached root (not the host's libvirt)."""
        return self.libvirt != SYSTEM

    @property
    def main_daemon(self) -> str:
        """The daemon that runs the qemu driver, calls the hooks and owns the socket."""
        return "virtqemud" if self.mode == MODULAR else "libvirtd"

    @property
    def socket_name(self) -> str:
        """The name of its read-write socket in /run/libvirt."""
        return "virtqemud-sock" if self.mode == MODULAR else "libvirt-sock"

    @property
    def conf_name(self) -> str:
        """Its config file in /etc/libvirt."""
        return f"{self.main_daemon}.conf"

    def __str__(self) -> str:
        return self.name
