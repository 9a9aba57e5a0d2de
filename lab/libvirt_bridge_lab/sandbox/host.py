"""What a sandbox needs of this machine: root, the daemons' binaries, a working ``unshare``."""

from __future__ import annotations

import fcntl
import os
import pwd
import shutil
import subprocess
from functools import cache

from .cells import Cell
from .errors import SandboxError

HOST_ETC = "/etc/libvirt"
# The daemons' PATH, also searched for binaries: sbin is often not on a user's PATH.
DAEMON_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
REQUIRED_BINARIES = ("unshare", "nsenter", "virtlogd", "libvirtd", "virsh", "qemu-system-x86_64")
# A chrooted cell runs the root's daemons and QEMU, the host's client (virsh).
CHROOT_HOST_BINARIES = ("unshare", "nsenter", "chroot", "mount", "virsh")
ROOT_BINARIES = ("virtlogd", "qemu-system-x86_64", "python3")

_KVM_GET_API_VERSION = 0xAE00
_KVM_CREATE_VM = 0xAE01


def which(name: str) -> str | None:
    search = os.pathsep.join([os.environ.get("PATH", ""), DAEMON_PATH])
    return shutil.which(name, path=search)


def binary(name: str) -> str:
    path = which(name)
    if path is None:
        raise SandboxError(f"{name} not found (searched PATH and {DAEMON_PATH})")
    return path


def root_binary(libvirt_root: str, name: str) -> str:
    """The path, as seen inside ``libvirt_root``, of its binary ``name``."""
    for directory in DAEMON_PATH.split(os.pathsep):
        path = os.path.join(directory, name)
        if os.path.isfile(libvirt_root + path) and os.access(libvirt_root + path, os.X_OK):
            return path
    raise SandboxError(f"{name} not found in the root {libvirt_root}")


def daemon_env() -> dict[str, str]:
    """The environment of what runs in the sandbox's namespaces: the daemons' own."""
    return {"PATH": DAEMON_PATH, "HOME": pwd.getpwuid(0).pw_dir}


def check_host_can_run_libvirt(cell: Cell | None = None) -> str | None:
    """Why this machine cannot run a sandbox of ``cell`` (default: the host's libvirt)."""
    cell = cell or Cell()
    if os.geteuid() != 0:
        return "the libvirt sandbox needs root (mount namespaces, libvirtd, virtlogd)"
    if cell.chrooted:
        missing = [name for name in CHROOT_HOST_BINARIES if which(name) is None]
        if missing:
            return f"missing {', '.join(missing)}: install util-linux, coreutils, libvirt-clients"
        from .roots import require  # not at import: python -m libvirt_bridge_lab.sandbox.roots

        try:
            libvirt_root = require(cell.libvirt)
            for name in (*ROOT_BINARIES, cell.main_daemon):
                root_binary(libvirt_root, name)
        except SandboxError as exc:
            return str(exc)
    else:
        missing = [name for name in REQUIRED_BINARIES if which(name) is None]
        if missing:
            return (
                f"missing {', '.join(missing)}: install util-linux, libvirt-daemon-system, "
                "libvirt-clients and qemu-system-x86"
            )
        if cell.mode != "monolithic" and which(cell.main_daemon) is None:
            return f"{cell.main_daemon} not found: this libvirt has no modular daemons"
        if not os.path.isfile(os.path.join(HOST_ETC, "libvirtd.conf")):
            return f"{HOST_ETC}/libvirtd.conf not found: install libvirt-daemon-system"
    try:
        probe = subprocess.run(
            [binary("unshare"), "--mount", "--uts", "--propagation", "private", "true"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot run unshare: {exc}"
    if probe.returncode != 0:
        return f"unshare --mount --uts failed here: {probe.stderr.strip()}"
    return None


@cache
def kvm_usable() -> bool:
    """Whether /dev/kvm can really run a guest (open it, check the API, create a VM)."""
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        if fcntl.ioctl(fd, _KVM_GET_API_VERSION, 0) != 12:
            return False
        vm = fcntl.ioctl(fd, _KVM_CREATE_VM, 0)
        os.close(vm)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
