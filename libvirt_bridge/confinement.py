"""What the host's mandatory access control does to libvirt's hooks: AppArmor, SELinux.

- AppArmor (Debian, Ubuntu): the profiles of libvirtd and virqemud let hooks execute files
  under /etc/libvirt/hooks only.
- SELinux (Fedora 40 and later, EL with the same policy): libvirt runs its hooks in a
  confined domain unless the boolean ``virt_hooks_unconfined`` is on. Read from selinuxfs,
  no library needed.
"""

from __future__ import annotations

import os

from . import mapping

# The only place where the AppArmor profiles of Debian's and Ubuntu's libvirtd and
# virtqemud let hooks execute files.
APPARMOR_HOOKS_DIR = "/etc/libvirt/hooks"
APPARMOR_PROFILES = "/sys/kernel/security/apparmor/profiles"


def apparmor_confines_libvirt() -> bool:
    """Whether AppArmor enforces a libvirtd or virtqemud profile on this host."""
    try:
        with open(APPARMOR_PROFILES) as f:
            lines = f.read().splitlines()
    except OSError:
        return False
    for line in lines:
        name, _, mode = line.rpartition(" (")
        if os.path.basename(name) in mapping.QEMU_DAEMONS and mode.rstrip(")") == "enforce":
            return True
    return False


def outside_apparmor_dir(root: str) -> bool:
    norm = os.path.normpath(root)
    return not (norm == APPARMOR_HOOKS_DIR or norm.startswith(APPARMOR_HOOKS_DIR + "/"))


def apparmor_risk(root: str) -> str:
    return (
        f"hooks root {root} is outside {APPARMOR_HOOKS_DIR}, and AppArmor confines "
        "libvirtd/virtqemud here: it may refuse to run the scripts there"
    )


def apparmor_fix(root: str, config_path: str) -> str:
    return (
        f"move it under {APPARMOR_HOOKS_DIR} (hooks_dirs in {config_path}), or allow it with "
        f"a line '{os.path.normpath(root)}/** rmix,' in "
        "/etc/apparmor.d/local/usr.sbin.libvirtd (usr.sbin.virtqemud on modular hosts), then "
        "reload AppArmor"
    )


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
