"""QEMU capabilities, probed by one sandbox's libvirtd, reused by the next ones.

libvirt probes each QEMU binary's capabilities (about 2 s per accelerator, kvm and tcg)
when it first needs them: the first guest defined probes ``qemu-system-x86_64``, ``virsh
capabilities`` also ``qemu-system-i386``. The result is cached under
``/var/cache/libvirt/qemu/capabilities`` and reused only if the host CPUID that libvirtd
read at its start is identical, and on some virtual machines CPUID differs between CPUs.
So libvirtd starts pinned to one CPU (its threads are unpinned once it answers), and the
cache files of one sandbox seed the sandboxes started later by this process.
"""

from __future__ import annotations

import os

# libvirt (a cell's) -> cache file name -> contents, gathered from this process's sandboxes.
# Each libvirt keeps its own: a file another libvirt wrote is probed again, and replaced.
_seed: dict[str, dict[str, bytes]] = {}


def capabilities_dir(cache_dir: str) -> str:
    """Where a libvirtd whose /var/cache/libvirt is ``cache_dir`` caches capabilities."""
    return os.path.join(cache_dir, "qemu", "capabilities")


def seed_capabilities(cache_dir: str, libvirt: str) -> None:
    """Put the files gathered from ``libvirt``'s sandboxes that ``cache_dir`` lacks into it."""
    seed = _seed.get(libvirt)
    if not seed:
        return
    directory = capabilities_dir(cache_dir)
    os.makedirs(directory, mode=0o755, exist_ok=True)
    for name, data in seed.items():
        path = os.path.join(directory, name)
        if not os.path.exists(path):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)


def gather_capabilities(cache_dir: str, libvirt: str) -> None:
    """Keep the cache files of ``cache_dir``, run by ``libvirt``, for later sandboxes."""
    directory = capabilities_dir(cache_dir)
    try:
        names = [n for n in os.listdir(directory) if n.endswith(".xml")]
        found = {}
        for name in names:
            with open(os.path.join(directory, name), "rb") as f:
                found[name] = f.read()
    except OSError:
        return
    _seed.setdefault(libvirt, {}).update(found)
