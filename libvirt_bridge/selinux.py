"""What SELinux says about libvirt's hooks, read from selinuxfs (no library needed).

Since Fedora 40 (and on EL with the same policy) libvirt runs its hooks in a confined
domain unless the boolean ``virt_hooks_unconfined`` is on.
"""

from __future__ import annotations

import os

SELINUXFS = "/sys/fs/selinux"
HOOKS_UNCONFINED = "virt_hooks_unconfined"


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def enforcing(selinuxfs: str = SELINUXFS) -> bool:
    return (_read(os.path.join(selinuxfs, "enforce")) or "").strip() == "1"


def boolean(name: str, selinuxfs: str = SELINUXFS) -> bool | None:
    """The current value of boolean ``name``; None when the policy has no such boolean."""
    text = _read(os.path.join(selinuxfs, "booleans", name))
    if text is None:
        return None
    # "CURRENT PENDING", e.g. "0 0"; setsebool changes both.
    return text.split()[:1] == ["1"]
