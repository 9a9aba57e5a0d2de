"""The launcher files libvirt executes (``hooks/qemu``, ``hooks/daemon``).

A launcher is a few lines of Python rendered from ``install/launcher.in``: it names this
interpreter, the import path that reaches this package, and the config file, then calls
``libvirt_bridge.hook.run_launcher``. It starts Python with ``-IS`` (no site, isolated) so
that a hook call costs about one bare interpreter start.
"""

from __future__ import annotations

import os
import sys
from importlib import resources

MARK = "# libvirt-bridge launcher"
DRIVERS = ("qemu", "daemon")


def import_path() -> list[str]:
    """The directories that hold this package and its dependencies (lxml, libvirt)."""
    import sysconfig

    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    paths = [package_parent]
    for key in ("purelib", "platlib"):
        entry = sysconfig.get_paths()[key]
        if entry not in paths:
            paths.append(entry)
    return paths


def render(driver: str, config_path: str, python: str | None = None, legacy: str = "") -> str:
    """The text of the launcher for ``driver`` reading ``config_path``.

    ``legacy``: the path of a foreign hook the launcher runs first ("" for none).
    """
    if driver not in DRIVERS:
        raise ValueError(f"unknown hook driver {driver!r}; expected one of {DRIVERS}")
    template = resources.files("libvirt_bridge.assets").joinpath("launcher.in").read_text()
    return (
        template.replace("@PYTHON@", python or sys.executable)
        .replace("@DRIVER@", driver)
        .replace("@SYS_PATH@", repr(import_path()))
        .replace("@DRIVER_REPR@", repr(driver))
        .replace("@CONFIG_REPR@", repr(os.path.abspath(config_path)))
        .replace("@LEGACY_REPR@", repr(legacy))
    )


def is_ours(path: str) -> bool:
    """Whether the file at ``path`` is a launcher written by this project."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return False
    return MARK.encode() in head


def write(path: str, driver: str, config_path: str, legacy: str = "") -> None:
    """Write the launcher for ``driver`` at ``path`` (mode 0755), atomically."""
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(render(driver, config_path, legacy=legacy))
    os.chmod(tmp, 0o755)
    os.replace(tmp, path)
