"""The launcher files libvirt executes (``hooks/qemu``, ``hooks/daemon``).

A launcher is a short POSIX sh script rendered from ``install/launcher.in``: it names this
interpreter, the import path that reaches this package, the config file and the foreign
hook kept as ``.legacy``, in plain ``name='value'`` lines, then starts Python with ``-IS``
(no site, isolated) to call ``libvirt_bridge.hook.launch``. A launcher first asks the
file ``fastpath.py`` writes whether the call has anything to run; when it has not, no
Python starts.
"""

from __future__ import annotations

import os
import sys
from importlib import resources
from typing import NamedTuple

from .fastpath import fastpath_path, sh_quote
from .files import write_atomic
from .hook import DEFERRED_NICE, RUNNING_LEGACY

DRIVERS = ("qemu", "daemon")


def import_path() -> list[str]:
    """The directories that hold this package and its dependencies (lxml, libvirt).

    The launcher starts Python without ``site``, so they are all named here, including the
    system's site-packages a venv made with ``--system-site-packages`` sees (where Debian's
    python3-lxml is).
    """
    import site
    import sysconfig

    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    paths = [package_parent]
    for key in ("purelib", "platlib"):
        entry = sysconfig.get_paths()[key]
        if entry not in paths:
            paths.append(entry)
    for entry in site.getsitepackages():
        if entry not in paths and os.path.isdir(entry):
            paths.append(entry)
    return paths


def render(driver: str, config_path: str, python: str | None = None, legacy: str = "") -> str:
    """The text of the launcher for ``driver`` reading ``config_path``.

    ``legacy``: the path of a foreign hook the launcher runs first ("" for none).
    """
    if driver not in DRIVERS:
        raise ValueError(f"unknown hook driver {driver!r}; expected one of {DRIVERS}")
    paths = import_path()
    if any(os.pathsep in path for path in paths):
        raise ValueError(f"an import path directory contains {os.pathsep!r}: {paths}")
    template = resources.files("libvirt_bridge.assets").joinpath("launcher.in").read_text()
    fast = fastpath_path(config_path)
    return (
        template.replace("@PYTHON@", sh_quote(python or sys.executable))
        .replace("@IMPORT_PATH@", sh_quote(os.pathsep.join(paths)))
        .replace("@CONFIG@", sh_quote(os.path.abspath(config_path)))
        .replace("@LEGACY@", sh_quote(legacy))
        .replace("@FAST_PATH@", sh_quote(fast))
        .replace("@RUNNING_LEGACY@", RUNNING_LEGACY)
        .replace("@DEFERRED_NICE@", str(DEFERRED_NICE))
        .replace("@DRIVER@", driver)
    )


class LauncherCall(NamedTuple):
    """What a launcher runs, as its ``name='value'`` lines say."""

    interpreter: str
    config_path: str
    legacy: str


_SETTINGS = ("python", "config", "legacy")


def read_call(text: str) -> LauncherCall | None:
    """What the launcher with this text runs, or None when a line is missing or malformed."""
    if not text.startswith("#!"):
        return None
    values: dict[str, str] = {}
    for line in text.splitlines():
        name, sep, value = line.partition("=")
        if sep and name in _SETTINGS:
            word = _sh_unquote(value)
            if word is None:
                return None
            values[name] = word
    if values.keys() != set(_SETTINGS) or not values["python"]:
        return None
    return LauncherCall(values["python"], values["config"], values["legacy"])


def _sh_unquote(word: str) -> str | None:
    """The inverse of ``sh_quote``, or None for anything it does not write."""
    if len(word) < 2 or not (word.startswith("'") and word.endswith("'")):
        return None
    parts = word[1:-1].split("'\\''")
    if any("'" in part for part in parts):
        return None
    return "'".join(parts)


def write(path: str, driver: str, config_path: str, legacy: str = "") -> None:
    """Write the launcher for ``driver`` at ``path`` (mode 0755), atomically."""
    write_atomic(path, render(driver, config_path, legacy=legacy), 0o755)
