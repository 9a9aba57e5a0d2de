"""The hooks shipped with the bridge (``hooks.d``): finding them and copying them.

``hooks.d/<event>/<NN_name>`` holds one file per event a hook runs at; the hook's name is
the file name without its number (``90_hugepages`` is ``hugepages``). In the repository
most are symlinks to one script; they are copied as files. ``hooks.d/properties/<name>.toml``
declares the custom properties a hook takes, for the property schema (``screening``).
``libvirt-bridge install --hooks NAME...`` copies every file of the named hooks into the
first hooks root, mode 0755 and owned by root, as the bridge wants scripts to be, and
their declarations into the config's ``properties_dir``, mode 0644.

The catalogue is found beside the package (a source tree or an editable install), or, in
an installed wheel, as ``libvirt_bridge/shipped_hooks`` if the build put it there.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from . import mapping
from .errors import BridgeError
from .files import write_atomic

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
# Where a wheel carries hooks.d when pyproject.toml maps it into the package.
INSTALLED_CATALOGUE = os.path.join(PACKAGE_DIR, "shipped_hooks")
# hooks.d in the source tree: the package's parent directory.
SOURCE_CATALOGUE = os.path.join(os.path.dirname(PACKAGE_DIR), "hooks.d")
LIST = "list"
# hooks.d/properties/<hook>.toml: the custom properties a hook takes, for the schema.
PROPERTIES_DIR = "properties"

_SCRIPT = re.compile(r"[0-9]+_([A-Za-z0-9][A-Za-z0-9_.-]*)\Z")
_EVENT = re.compile(r"(before|after)_[a-z0-9_]+\Z")


class CatalogueError(BridgeError):
    """The catalogue cannot be found or does not have what was asked; says why."""


class ShippedHook:
    """One hook of the catalogue: its name and, per event, the file to install."""

    __slots__ = ("files", "name", "properties")

    def __init__(self, name: str) -> None:
        self.name = name
        self.files: dict[str, str] = {}
        # The file that declares its custom properties; None: it takes none.
        self.properties: str | None = None

    @property
    def events(self) -> list[str]:
        """Its events, in the bridge's order (unknown names last)."""
        order = {event: index for index, event in enumerate(mapping.EVENTS)}
        return sorted(self.files, key=lambda e: (order.get(e, len(order)), e))

    @property
    def summary(self) -> str:
        """The first line of the script's docstring or comment, without the hook's name."""
        return script_summary(next(iter(self.files.values())), self.name)


class Copy(NamedTuple):
    """One file to install: ``source`` (in the catalogue) to ``dest`` (in a hooks root)."""

    hook: str
    event: str  # "" for a hook's declaration of its properties
    source: str
    dest: str
    mode: int = 0o755


def catalogue_dir() -> str | None:
    """The catalogue's directory, or None when this installation has none."""
    for candidate in (INSTALLED_CATALOGUE, SOURCE_CATALOGUE):
        if os.path.isdir(candidate):
            return candidate
    return None


def available(directory: str | None = None) -> dict[str, ShippedHook]:
    """Every hook of the catalogue (``directory``, default :func:`catalogue_dir`), by name."""
    if directory is None:
        directory = catalogue_dir()
        if directory is None:
            raise CatalogueError(
                "the shipped hooks (hooks.d) are not part of this installation: looked in "
                f"{INSTALLED_CATALOGUE} and {SOURCE_CATALOGUE}; copy them from the "
                "libvirt-bridge source tree instead"
            )
    hooks: dict[str, ShippedHook] = {}
    for event in sorted(os.listdir(directory)):
        event_dir = os.path.join(directory, event)
        if not _EVENT.match(event) or not os.path.isdir(event_dir):
            continue
        for filename in sorted(os.listdir(event_dir)):
            match = _SCRIPT.match(filename)
            source = os.path.join(event_dir, filename)
            if match is None or not os.path.isfile(source):
                continue
            hook = hooks.setdefault(match.group(1), ShippedHook(match.group(1)))
            if event in hook.files:
                raise CatalogueError(
                    f"{event_dir} has two files of hook {hook.name}: "
                    f"{os.path.basename(hook.files[event])} and {filename}"
                )
            hook.files[event] = source
    for name, hook in hooks.items():
        declaration = os.path.join(directory, PROPERTIES_DIR, f"{name}.toml")
        if os.path.isfile(declaration):
            hook.properties = declaration
    return dict(sorted(hooks.items()))


def select(names: Iterable[str], hooks: dict[str, ShippedHook]) -> list[ShippedHook]:
    """The hooks named, in the order given; CatalogueError naming the unknown ones."""
    wanted = list(dict.fromkeys(names))
    unknown = [name for name in wanted if name not in hooks]
    if unknown:
        raise CatalogueError(
            f"no shipped hook named {', '.join(repr(n) for n in unknown)}; the shipped hooks "
            f"are: {', '.join(hooks) or 'none'} (`libvirt-bridge install --hooks list` "
            "describes them)"
        )
    return [hooks[name] for name in wanted]


def describe(hooks: dict[str, ShippedHook]) -> str:
    """The catalogue as ``--hooks list`` prints it."""
    width = max((len(name) for name in hooks), default=0) + 2
    lines = []
    for hook in hooks.values():
        events = hook.events
        if set(mapping.EVENTS) <= set(events):
            where = f"every event ({len(events)})"
        else:
            where = ", ".join(events)
        lines.append(f"{hook.name:<{width}}{hook.summary}")
        lines.append(f"{'':<{width}}events: {where}")
    return "\n".join(lines) + "\n"


def script_summary(path: str, name: str = "") -> str:
    """The first line of a script's docstring (or of its first comment)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return ""
    for line in lines[1:] if lines and lines[0].startswith("#!") else lines:
        text = line.strip()
        if not text:
            continue
        text = text.strip('"').lstrip("#").strip()
        if name and text.startswith(f"{name}:"):
            text = text[len(name) + 1 :].strip()
        return text.rstrip(".")
    return ""


def copies(hooks: Sequence[ShippedHook], root: str, properties_dir: str) -> list[Copy]:
    """The files that installing ``hooks`` writes: their scripts into the hooks root
    ``root``, their declarations of properties into ``properties_dir``."""
    scripts = [
        Copy(hook.name, event, hook.files[event], os.path.join(root, event, name))
        for hook in hooks
        for event in hook.events
        for name in [os.path.basename(hook.files[event])]
    ]
    declarations = [
        Copy(
            hook.name, "", hook.properties, os.path.join(properties_dir, f"{hook.name}.toml"), 0o644
        )
        for hook in hooks
        if hook.properties is not None
    ]
    return scripts + declarations


def is_current(copy: Copy) -> bool:
    """Whether ``copy.dest`` is already the file ``install_copy`` would write."""
    try:
        st = os.lstat(copy.dest)
        if not stat.S_ISREG(st.st_mode) or stat.S_IMODE(st.st_mode) != copy.mode:
            return False
        if os.geteuid() == 0 and (st.st_uid, st.st_gid) != (0, 0):
            return False
        with open(copy.source, "rb") as a, open(copy.dest, "rb") as b:
            return a.read() == b.read()
    except OSError:
        return False


def install_copy(copy: Copy) -> None:
    """Write ``copy.dest``: the source's content, its mode, owned by root (when root)."""
    directory = os.path.dirname(copy.dest)
    os.makedirs(directory, mode=0o755, exist_ok=True)
    with open(copy.source, "rb") as src:
        content = src.read()
    write_atomic(copy.dest, content, copy.mode, root_owned=True)
