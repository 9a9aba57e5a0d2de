"""The "Hooks" page of Cockpit: where its files are, and installing it into Cockpit.

The page is a Cockpit package, a directory of static files (``cockpit/`` in the source
tree, the package data ``libvirt_bridge/cockpit_page`` once installed) that Cockpit serves
from ``/usr/share/cockpit/libvirt-bridge``. The page runs ``libvirt-bridge`` commands
through ``cockpit.spawn``; the manifest says how.

The Debian package ships the directory as a symlink to the package data: its manifest
names no command, so the page runs ``libvirt-bridge`` from PATH (``/usr/bin``), and the
bridge finds its installation by its one rule. ``libvirt-bridge install`` from a venv
writes a directory of its own instead: symlinks to the page's files, so the page follows
the venv's upgrades, and a manifest that names the venv's command and the installation's
``--config`` and ``--confdir``. Cockpit runs commands that need root through sudo or
pkexec, which drop the caller's PATH and environment, so the page must be told both.
"""

from __future__ import annotations

import json
import os
import shutil
from functools import partial

from .files import write_atomic

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .installation import Plan

ENTRY_DIR = "/usr/share/cockpit"
PACKAGE_NAME = "libvirt-bridge"
MANIFEST = "manifest.json"
# The page's files beside the manifest (what a venv install links).
PAGE_FILES = ("index.html", "hooks.js", "hooks.css")
# The manifest's key for how the page runs the bridge (Cockpit ignores keys it does not know).
COMMAND_KEY = "libvirt-bridge"

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
# Where a wheel (and the Debian package) carries the page: pyproject.toml maps it there.
INSTALLED_PAGE = os.path.join(PACKAGE_DIR, "cockpit_page")
# cockpit/ in the source tree: the package's parent directory.
SOURCE_PAGE = os.path.join(os.path.dirname(PACKAGE_DIR), "cockpit")
# The Debian package's symlink /usr/share/cockpit/libvirt-bridge, relative as policy asks.
PACKAGED_TARGET = "../../lib/python3/dist-packages/libvirt_bridge/cockpit_page"


def page_dir() -> str | None:
    """The page's files in this installation, or None when it has none."""
    for candidate in (INSTALLED_PAGE, SOURCE_PAGE):
        if os.path.isfile(os.path.join(candidate, MANIFEST)):
            return candidate
    return None


def destination(cockpit_dir: str) -> str:
    return os.path.join(cockpit_dir, PACKAGE_NAME)


def is_packaged(path: str) -> bool:
    """Whether ``path`` is the Debian package's symlink to its copy of the page."""
    return os.path.islink(path) and os.readlink(path) == PACKAGED_TARGET


def read_manifest(directory: str) -> dict[str, object] | None:
    try:
        with open(os.path.join(directory, MANIFEST)) as f:
            manifest = json.load(f)
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def is_ours(path: str) -> bool:
    """Whether ``path`` is a page ``install`` wrote (a directory with our manifest key)."""
    if os.path.islink(path) or not os.path.isdir(path):
        return False
    manifest = read_manifest(path)
    return manifest is not None and COMMAND_KEY in manifest


def render_manifest(source: str, command: list[str], options: list[str]) -> str:
    """The page's manifest from ``source``, naming how the page runs the bridge."""
    manifest = read_manifest(source)
    if manifest is None:
        raise OSError(f"cannot read {os.path.join(source, MANIFEST)}")
    manifest[COMMAND_KEY] = {"command": command, "options": options}
    return json.dumps(manifest, indent=2) + "\n"


def is_current(dest: str, source: str, manifest: str) -> bool:
    """Whether the page at ``dest`` links ``source``'s files and has ``manifest``."""
    try:
        with open(os.path.join(dest, MANIFEST)) as f:
            if f.read() != manifest:
                return False
        return all(
            os.readlink(os.path.join(dest, name)) == os.path.join(source, name)
            for name in PAGE_FILES
        )
    except OSError:
        return False


def write_page(dest: str, source: str, manifest: str) -> None:
    """Make ``dest`` the page: links to ``source``'s files, and ``manifest``."""
    os.makedirs(dest, mode=0o755, exist_ok=True)
    for name in PAGE_FILES:
        link = os.path.join(dest, name)
        tmp = link + ".new"
        if os.path.lexists(tmp):
            os.unlink(tmp)
        os.symlink(os.path.join(source, name), tmp)
        os.replace(tmp, link)
    write_atomic(os.path.join(dest, MANIFEST), manifest, 0o644)


def plan_install(
    plan: Plan, cockpit_dir: str, command: list[str], config_path: str, confdir: str
) -> None:
    """The page in ``cockpit_dir``, where Cockpit is installed."""
    dest = destination(cockpit_dir)
    if not os.path.isdir(cockpit_dir):
        plan.note(f"no {cockpit_dir}: no Cockpit on this host, so no Hooks page for it")
        return
    source = page_dir()
    if source is None:
        plan.note(f"this installation has no Cockpit page (looked in {INSTALLED_PAGE})")
        return
    if is_packaged(dest):
        plan.note(f"up to date: {dest} (shipped by the libvirt-bridge package)")
        return
    if os.path.lexists(dest) and not is_ours(dest):
        plan.note(f"left {dest} alone: it was not written by libvirt-bridge")
        return
    options = ["--config", config_path, "--confdir", os.path.abspath(confdir)]
    manifest = render_manifest(source, command, options)
    if is_current(dest, source, manifest):
        plan.note(f"up to date: {dest}")
        return
    plan.do(
        f"installed {dest} (the Hooks page of Cockpit, for this installation)",
        partial(write_page, dest, source, manifest),
    )


def plan_uninstall(plan: Plan, cockpit_dir: str) -> None:
    dest = destination(cockpit_dir)
    if is_ours(dest):
        plan.do(f"removed {dest} (the Hooks page of Cockpit)", partial(shutil.rmtree, dest))


def package_dirs(cockpit_dir: str) -> list[str]:
    """``cockpit_dir``, then the other directories this session's Cockpit reads packages
    from: ``$XDG_DATA_DIRS/cockpit`` (set in the environment Cockpit gives the commands it
    runs, so ``status`` run by the page sees the page where that Cockpit does)."""
    found = [os.path.abspath(cockpit_dir)]
    for data_dir in os.environ.get("XDG_DATA_DIRS", "").split(":"):
        candidate = os.path.join(os.path.abspath(data_dir), "cockpit") if data_dir else ""
        if candidate and candidate not in found:
            found.append(candidate)
    return found


def installed_page(cockpit_dir: str) -> str | None:
    """What is at the page's place in ``cockpit_dir``: "packaged", "installed", "broken"
    (install's page whose files are gone), "foreign", or None for nothing."""
    dest = destination(cockpit_dir)
    if is_packaged(dest):
        return "packaged" if os.path.isdir(dest) else "broken"
    if is_ours(dest):
        whole = all(os.path.exists(os.path.join(dest, name)) for name in PAGE_FILES)
        return "installed" if whole else "broken"
    return "foreign" if os.path.lexists(dest) else None
