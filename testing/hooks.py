"""Helpers for the tests of the shipped hooks (``hooks.d``).

The scripts run as the bridge runs them: directly, with ``$_hook_domxml``, the custom
properties, ``vmId`` and the PYTHONPATH of the ``hooking`` module; or through the bridge
harness, where a small wrapper in the event's directory sets the hook's settings (the
harness gives scripts libvirt's bare environment) and execs the shipped file, so the
script still sees its event in the name of its directory.

Fake trees stand in for the host: :class:`HugeTLB` (the hugepage pool in sysfs and
/proc), :class:`FakePci` (PCI devices and drivers in sysfs, whose ``bind``, ``unbind``
and ``drivers_probe`` files are FIFOs served by a thread that applies the kernel's rules).
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import selectors
import shlex
import subprocess
import threading
import uuid as uuidlib
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType

from libvirt_bridge import catalogue
from libvirt_bridge.runner import COMPAT_DIR
from testing.harness import LIBVIRT_ENV, Bridge

HOOKS_D = Path(catalogue.SOURCE_CATALOGUE)
OVIRT_NS = "http://ovirt.org/vm/1.0"


def shipped(event: str, name: str) -> Path:
    """The shipped file of hook ``name`` (e.g. ``hugepages``) for ``event``."""
    hook = catalogue.available(str(HOOKS_D))[name]
    return Path(hook.files[event])


def guest_xml(
    name: str = "g1",
    uuid: str | None = None,
    properties: Mapping[str, str] | None = None,
    memory: str = "<memory unit='KiB'>65536</memory>",
    extra: str = "",
) -> bytes:
    """A domain XML with optional custom properties and extra elements."""
    metadata = ""
    if properties:
        items = "".join(f"<ovirt-vm:{k}>{v}</ovirt-vm:{k}>" for k, v in properties.items())
        metadata = (
            f'<metadata><ovirt-vm:vm xmlns:ovirt-vm="{OVIRT_NS}">'
            f"<ovirt-vm:custom>{items}</ovirt-vm:custom></ovirt-vm:vm></metadata>"
        )
    return (
        f"<domain type='kvm'>\n  <name>{name}</name>\n  <uuid>{uuid or uuidlib.uuid4()}</uuid>\n"
        f"  {metadata}\n  {memory}\n  <vcpu placement='static'>2</vcpu>\n"
        f"  <os><type arch='x86_64' machine='pc'>hvm</type></os>\n{extra}</domain>\n"
    ).encode()


def uuid_of(xml: bytes) -> str:
    start = xml.index(b"<uuid>") + 6
    return xml[start : xml.index(b"</uuid>")].decode()


class Ran:
    """A direct run of a script: its process result and the XML file it left."""

    def __init__(self, result: subprocess.CompletedProcess[str], xml: bytes) -> None:
        self.rc = result.returncode
        self.stderr = result.stderr
        self.xml = xml


def run_hook(
    script: Path,
    xml: bytes,
    tmp_path: Path,
    env: Mapping[str, str] | None = None,
    properties: Mapping[str, str] | None = None,
) -> Ran:
    """Run ``script`` the way the bridge does, on a temp copy of ``xml``."""
    path = tmp_path / f"domxml-{uuidlib.uuid4().hex}.xml"
    path.write_bytes(xml)
    full = dict(LIBVIRT_ENV, **(env or {}), **(properties or {}))
    full.update(_hook_domxml=str(path), PYTHONPATH=COMPAT_DIR)
    if b"<uuid>" in xml:
        full["vmId"] = uuid_of(xml)
    result = subprocess.run(
        [str(script)],
        env=full,
        cwd="/",
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    left = path.read_bytes()
    path.unlink()
    return Ran(result, left)


def install_wrapped(bridge: Bridge, hook: str, env: Mapping[str, str]) -> None:
    """Install every file of shipped ``hook`` into the harness, with ``env`` set."""
    exports = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items())
    for event, source in catalogue.available(str(HOOKS_D))[hook].files.items():
        body = f"#!/bin/sh\n{exports}exec {shlex.quote(source)}\n"
        bridge.script(event, os.path.basename(source), body)


def load_script(path: Path) -> ModuleType:
    """Import a hook script (a file without .py) as a module; COMPAT_DIR must be on sys.path."""
    name = "hook_" + path.name.replace("-", "_")
    loader = importlib.machinery.SourceFileLoader(name, str(path))
    spec = importlib.util.spec_from_loader(name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


# -- hugepages ---------------------------------------------------------------------------------


class HugeTLB:
    """A fake hugepage pool: sysfs ``kernel/mm/hugepages`` and /proc's meminfo and boot id.

    The hook writes ``nr_hugepages``; :meth:`settle` then does what the kernel would have:
    the pool grows or shrinks, and ``free_hugepages`` follows. ``faulted`` pages are in use
    (out of the free count), ``reserved`` ones are promised to a mapping (``resv``).
    :meth:`settle` fails the test if the pool was lowered below the pages in use.
    """

    def __init__(self, root: Path, sizes: tuple[int, ...] = (2048, 1048576)) -> None:
        self.sysfs = root / "sys"
        self.proc = root / "proc"
        self.state = root / "hugepages-state"
        self.faulted = dict.fromkeys(sizes, 0)
        self.reserved = dict.fromkeys(sizes, 0)
        for size in sizes:
            self.dir(size).mkdir(parents=True)
            self.write(size, nr=0)
        self.proc.mkdir(parents=True, exist_ok=True)
        (self.proc / "meminfo").write_text(
            "MemTotal:       24683612 kB\nHugePages_Total:       0\nHugepagesize:       2048 kB\n"
        )
        (self.proc / "sys" / "kernel" / "random").mkdir(parents=True)
        self.reboot()

    def env(self) -> dict[str, str]:
        return {
            "LIBVIRT_BRIDGE_SYSFS_ROOT": str(self.sysfs),
            "LIBVIRT_BRIDGE_PROC_ROOT": str(self.proc),
            "LIBVIRT_BRIDGE_HUGEPAGES_STATE_DIR": str(self.state),
        }

    def dir(self, size: int) -> Path:
        return self.sysfs / "kernel" / "mm" / "hugepages" / f"hugepages-{size}kB"

    def read(self, size: int, name: str) -> int:
        return int((self.dir(size) / name).read_text())

    def nr(self, size: int = 2048) -> int:
        return self.read(size, "nr_hugepages")

    def free(self, size: int = 2048) -> int:
        return self.read(size, "free_hugepages")

    def write(self, size: int, nr: int) -> None:
        files = {
            "nr_hugepages": nr,
            "free_hugepages": nr - self.faulted[size],
            "resv_hugepages": self.reserved[size],
            "surplus_hugepages": 0,
        }
        for name, value in files.items():
            (self.dir(size) / name).write_text(f"{value}\n")

    def settle(self) -> None:
        for size in self.faulted:
            nr = self.nr(size)
            in_use = self.faulted[size] + self.reserved[size]
            assert nr >= in_use, f"{size} kB pool lowered to {nr}, below the {in_use} in use"
            self.write(size, nr)

    def admin_sets(self, nr: int, size: int = 2048) -> None:
        """The pool as an administrator (or another program) left it."""
        self.write(size, nr)

    def qemu_starts(self, pages: int, size: int = 2048, prefault: bool = True) -> None:
        """A guest maps ``pages``: faulted in (prefault) or only reserved."""
        self.settle()
        available = self.free(size) - self.reserved[size]
        assert pages <= available, f"QEMU cannot get {pages} pages: {available} available"
        if prefault:
            self.faulted[size] += pages
        else:
            self.reserved[size] += pages
        self.write(size, self.nr(size))

    def qemu_stops(self, pages: int, size: int = 2048, prefault: bool = True) -> None:
        if prefault:
            self.faulted[size] -= pages
        else:
            self.reserved[size] -= pages
        self.write(size, self.nr(size))

    def reboot(self) -> None:
        (self.proc / "sys" / "kernel" / "random" / "boot_id").write_text(f"{uuidlib.uuid4()}\n")

    def books(self) -> dict[str, dict[str, int]]:
        """What the hook's state dir holds: per UUID, pages reserved per size."""
        import json

        if not self.state.exists():
            return {}
        return {
            p.stem: json.loads(p.read_text())["reserved"] for p in sorted(self.state.glob("*.json"))
        }


def hugepage_xml(
    name: str = "g1",
    uuid: str | None = None,
    memory_mib: int = 64,
    page: str = "",
    properties: Mapping[str, str] | None = None,
) -> bytes:
    backing = f"<memoryBacking><hugepages>{page}</hugepages></memoryBacking>\n"
    return guest_xml(
        name,
        uuid,
        properties,
        memory=f"<memory unit='MiB'>{memory_mib}</memory>",
        extra=backing,
    )


# -- PCI ----------------------------------------------------------------------------------------


class FakePci:
    """``bus/pci`` in a temp sysfs: devices, drivers, and a thread playing the kernel.

    ``bind``, ``unbind`` (per driver) and ``drivers_probe`` are FIFOs; writing a device
    address there has the kernel's effect on the device's ``driver`` symlink, by the kernel's
    rules: a driver binds a device that has no driver if the device's ``driver_override``
    names it, or, without an override, if it is the device's native driver. Drivers in
    ``refuse`` never bind. ``driver_override`` is a plain file. Use as a context manager.
    """

    def __init__(self, root: Path, drivers: tuple[str, ...] = ("e1000e", "nvme", "vfio-pci")):
        self.sysfs = root / "sys"
        self.proc = root / "proc"
        self.state = root / "vfio-state"
        self.bus = self.sysfs / "bus" / "pci"
        (self.bus / "devices").mkdir(parents=True)
        self.native: dict[str, str | None] = {}
        self.refuse: set[str] = set()
        self.writes: list[tuple[str, str]] = []
        self._fifos: dict[int, tuple[str, str]] = {}
        self._buffers: dict[int, bytes] = {}
        self.proc.mkdir(parents=True)
        (self.proc / "sys" / "kernel" / "random").mkdir(parents=True)
        (self.proc / "sys" / "kernel" / "random" / "boot_id").write_text("boot-1\n")
        self._fifo(self.bus / "drivers_probe", "probe", "")
        for driver in drivers:
            self.add_driver(driver)
        self._stop_r, self._stop_w = os.pipe()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def env(self, wait: float = 2.0) -> dict[str, str]:
        return {
            "LIBVIRT_BRIDGE_SYSFS_ROOT": str(self.sysfs),
            "LIBVIRT_BRIDGE_PROC_ROOT": str(self.proc),
            "LIBVIRT_BRIDGE_VFIO_STATE_DIR": str(self.state),
            "LIBVIRT_BRIDGE_VFIO_WAIT": str(wait),
        }

    def _fifo(self, path: Path, action: str, driver: str) -> None:
        os.mkfifo(path)
        # Read-write: writers never block, and the FIFO never reaches end-of-file.
        fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
        self._fifos[fd] = (action, driver)
        self._buffers[fd] = b""

    def add_driver(self, driver: str) -> None:
        directory = self.bus / "drivers" / driver
        directory.mkdir(parents=True)
        self._fifo(directory / "bind", "bind", driver)
        self._fifo(directory / "unbind", "unbind", driver)

    def add_device(
        self, address: str, native: str | None, group: int | None = 12, bound: bool = True
    ) -> None:
        device = self.bus / "devices" / address
        device.mkdir()
        (device / "driver_override").write_text("(null)\n")
        if group is not None:
            (self.sysfs / "kernel" / "iommu_groups" / str(group)).mkdir(parents=True, exist_ok=True)
            (device / "iommu_group").symlink_to(f"../../../../kernel/iommu_groups/{group}")
        self.native[address] = native
        if bound and native is not None:
            self._set_driver(address, native)

    def driver(self, address: str) -> str | None:
        link = self.bus / "devices" / address / "driver"
        return os.path.basename(os.readlink(link)) if link.is_symlink() else None

    def override(self, address: str) -> str:
        text = (self.bus / "devices" / address / "driver_override").read_text().strip()
        return "" if text == "(null)" else text

    def open_by(self, pid: int, target: str) -> None:
        """A fake process ``pid`` holding ``target`` (e.g. /dev/vfio/12) open."""
        fd_dir = self.proc / str(pid) / "fd"
        fd_dir.mkdir(parents=True, exist_ok=True)
        (fd_dir / "3").symlink_to(target)

    def close_by(self, pid: int) -> None:
        (self.proc / str(pid) / "fd" / "3").unlink()

    def _set_driver(self, address: str, driver: str | None) -> None:
        link = self.bus / "devices" / address / "driver"
        if link.is_symlink():
            link.unlink()
        if driver is not None:
            link.symlink_to(f"../../drivers/{driver}")

    def _can_bind(self, address: str, driver: str) -> bool:
        if driver in self.refuse or self.driver(address) is not None:
            return False
        override = self.override(address)
        return driver == override if override else driver == self.native.get(address)

    def _apply(self, action: str, driver: str, address: str) -> None:
        self.writes.append((f"{action} {driver}".strip(), address))
        if address not in self.native:
            return
        if action == "unbind" and self.driver(address) == driver:
            self._set_driver(address, None)
        elif action == "bind" and self._can_bind(address, driver):
            self._set_driver(address, driver)
        elif action == "probe" and self.driver(address) is None:
            override = self.override(address)
            candidate = override or self.native.get(address)
            loaded = bool(candidate) and (self.bus / "drivers" / str(candidate)).is_dir()
            if loaded and self._can_bind(address, str(candidate)):
                self._set_driver(address, str(candidate))

    def _serve(self) -> None:
        with selectors.DefaultSelector() as sel:
            for fd in self._fifos:
                sel.register(fd, selectors.EVENT_READ)
            sel.register(self._stop_r, selectors.EVENT_READ)
            while True:
                for key, _ in sel.select():
                    if key.fd == self._stop_r:
                        return
                    try:
                        chunk = os.read(key.fd, 4096)
                    except BlockingIOError:
                        continue
                    data = self._buffers[key.fd] + chunk
                    *lines, rest = data.split(b"\n")
                    self._buffers[key.fd] = rest
                    action, driver = self._fifos[key.fd]
                    for line in lines:
                        if line.strip():
                            self._apply(action, driver, line.strip().decode())

    def __enter__(self) -> FakePci:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        os.write(self._stop_w, b"q")
        self._thread.join(timeout=10)
        for fd in [*self._fifos, self._stop_r, self._stop_w]:
            os.close(fd)

    def records(self) -> dict[str, dict[str, object]]:
        import json

        if not self.state.exists():
            return {}
        return {p.stem: json.loads(p.read_text()) for p in sorted(self.state.glob("*.json"))}


def pci_hostdev(address: str, managed: str | None = "no") -> str:
    domain, bus, rest = address.split(":")
    slot, function = rest.split(".")
    attr = f" managed='{managed}'" if managed is not None else ""
    return (
        f"    <hostdev mode='subsystem' type='pci'{attr}>\n"
        f"      <source><address domain='0x{domain}' bus='0x{bus}' slot='0x{slot}' "
        f"function='0x{function}'/></source>\n    </hostdev>\n"
    )


def vfio_xml(name: str, devices: str, uuid: str | None = None) -> bytes:
    return guest_xml(name, uuid, extra=f"  <devices>\n{devices}  </devices>\n")
