"""What the hook remembers between libvirt's calls, in ``state_dir``.

libvirt uses the same calls (``prepare``, ``started``, ``stopped``, ``release``) for a cold
boot, a restore and an incoming migration, and on libvirt < 10.5 for a destroy, a save and
a migration out. The bridge tells them apart with small files keyed by domain UUID (never
by name: a name may hold any character):

- ``markers/<uuid>``: written at ``migrate begin``/``restore begin``, taken at the
  ``prepare`` that follows within ``MARKER_TTL`` seconds; an older one is stale, and so
  is one left by another daemon process (a hook that outlived a killed daemon).
- ``domains/<uuid>.stop``: why it stopped (``destroy``, ``saved``, ``migrated``), decided
  at ``stopped`` and read at ``release``, where libvirt < 10.5 no longer says.
- ``listener/<uuid>`` and ``listener/<uuid>.xml``: the listener's own, what it knew of
  a domain (its state; the live XML its devices were last taken from), kept across its
  restarts.

``started`` needs no file of its own: libvirt's status file, which it has written by then,
tells a boot from a restore and from an incoming migration.

On the hook's fast path: standard library only, plain file operations.
"""

from __future__ import annotations

import posix
import time

from .mapping import DESTROY, FRESH, MIGRATE, MIGRATED, RESTORE, SAVED
from .plainos import isdir, join, makedirs

# restore/migrate begin and their prepare are one libvirt operation, seconds apart at most.
MARKER_TTL = 30.0

# Markers the libvirt-bridge verbs leave: the before_* event already ran.
STARTED_BY_VERB = "verb-start"
DESTROYED_BY_VERB = "verb-destroy"

STOP_KINDS = (DESTROY, SAVED, MIGRATED)
KNOWN = "listener"  # the listener's known states, one file per domain
LIVE_XML = ".xml"  # beside them, the live XML of each domain its devices were taken from

# libvirt's own status files; the hook runs in the daemon's mount namespace.
QEMU_STATUS_DIR = "/run/libvirt/qemu"
_HEX = frozenset("0123456789abcdefABCDEF")


def is_uuid(text: str) -> bool:
    """Whether ``text`` is a UUID in libvirt's 8-4-4-4-12 form (safe as a file name)."""
    if len(text) != 36:
        return False
    for i, ch in enumerate(text):
        if i in (8, 13, 18, 23):
            if ch != "-":
                return False
        elif ch not in _HEX:
            return False
    return True


def domain_uuid(xml: bytes) -> str | None:
    """The domain's UUID from libvirt's XML without parsing it.

    libvirt writes ``<uuid>`` right after ``<name>``, before any metadata, so the first
    ``<uuid>`` element is the domain's own.
    """
    start = xml.find(b"<uuid>")
    if start < 0:
        return None
    end = xml.find(b"</uuid>", start)
    if end < 0:
        return None
    text = xml[start + 6 : end].strip().decode("ascii", "replace").lower()
    return text if is_uuid(text) else None


def safe_domain_name(name: str) -> bool:
    """Whether a domain name can be used to build libvirt's status file path."""
    return bool(name) and name not in (".", "..") and "/" not in name and "\0" not in name


class State:
    """The bridge's per-domain bookkeeping under ``state_dir``."""

    __slots__ = ("root",)

    def __init__(self, root: str) -> None:
        self.root = root

    def _path(self, kind: str, name: str) -> str:
        return join(self.root, kind, name)

    def _write(self, kind: str, name: str, value: str) -> None:
        directory = join(self.root, kind)
        makedirs(directory, 0o700)
        from .files import write_atomic  # not imported by the calls that only read

        write_atomic(join(directory, name), value, 0o600)

    def _read(self, kind: str, name: str) -> str | None:
        try:
            with open(self._path(kind, name)) as f:
                return f.read().strip()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def _remove(self, kind: str, name: str) -> None:
        try:
            posix.unlink(self._path(kind, name))
        except FileNotFoundError:
            pass

    def set_marker(self, uuid: str, kind: str, daemon: int = 0) -> None:
        """Leave a marker; ``daemon`` is the pid of the libvirt daemon it is for (0: any)."""
        self._write("markers", uuid, f"{kind} {daemon}")

    def take_marker(
        self, uuid: str, kinds: tuple[str, ...], daemon: int = 0, ttl: float = MARKER_TTL
    ) -> str | None:
        """The kind a fresh marker of one of ``kinds`` announces (and remove it).

        None when there is none, when it is stale (removed: too old, or left for another
        daemon process than ``daemon``), or when it is of another kind (kept).
        """
        path = self._path("markers", uuid)
        try:
            age = time.time() - posix.stat(path).st_mtime
        except (FileNotFoundError, NotADirectoryError):
            return None
        kind, _, owner = (self._read("markers", uuid) or "").partition(" ")
        stale = age > ttl or (daemon and owner not in ("", "0", str(daemon)))
        if not stale and kind not in kinds:
            return None
        self._remove("markers", uuid)
        return None if stale else kind

    def clear_marker(self, uuid: str) -> None:
        self._remove("markers", uuid)

    def remove_stale_markers(self, ttl: float = MARKER_TTL) -> list[str]:
        """Remove markers older than ``ttl``; return their UUIDs."""
        removed: list[str] = []
        directory = join(self.root, "markers")
        try:
            entries = list(posix.scandir(directory))
        except (FileNotFoundError, NotADirectoryError):
            return removed
        now = time.time()
        for entry in entries:
            try:
                if now - entry.stat().st_mtime > ttl:
                    posix.unlink(entry.path)
                    removed.append(entry.name)
            except FileNotFoundError:
                pass
        return removed

    def set_stop_kind(self, uuid: str, kind: str) -> None:
        self._write("domains", f"{uuid}.stop", kind)

    def stop_kind(self, uuid: str) -> str | None:
        kind = self._read("domains", f"{uuid}.stop")
        return kind if kind in STOP_KINDS else None

    def forget_domain(self, uuid: str) -> None:
        """Drop everything known about a domain that is gone from this host."""
        self._remove("domains", f"{uuid}.stop")
        self._remove("markers", uuid)

    # -- the listener's knowledge: each domain's last known (state, reason), its devices --

    def known_dir(self) -> str:
        return join(self.root, KNOWN)

    def has_known(self) -> bool:
        """Whether a listener kept states here before (its directory exists)."""
        return isdir(self.known_dir())

    def known_states(self) -> dict[str, tuple[str, str]]:
        """Every domain's last known ``(state, reason)``; unreadable entries are skipped."""
        known: dict[str, tuple[str, str]] = {}
        try:
            names = posix.listdir(self.known_dir())
        except OSError:
            return known
        for uuid in names:
            if not is_uuid(uuid):
                continue  # a temp file of a write under way
            try:
                text = self._read(KNOWN, uuid)
            except OSError:
                continue
            if text is not None:
                state, _, reason = text.partition(" ")
                known[uuid] = (state, reason)
        return known

    def keep_known(self, uuid: str, state: tuple[str, str] | None) -> None:
        """Record (None: forget) a domain's known state. Raises OSError."""
        if state is None:
            self._remove(KNOWN, uuid)
        else:
            self._write(KNOWN, uuid, f"{state[0]} {state[1]}\n")

    def start_known(self) -> None:
        """Mark that a listener has looked at the host. Raises OSError."""
        makedirs(self.known_dir(), 0o700)

    def live_xmls(self) -> dict[str, str]:
        """Each running domain's live XML as the listener last took its devices from it."""
        found: dict[str, str] = {}
        try:
            names = posix.listdir(self.known_dir())
        except OSError:
            return found
        for name in names:
            uuid = name[: -len(LIVE_XML)]
            if not name.endswith(LIVE_XML) or not is_uuid(uuid):
                continue  # a known state, or a temp file of a write under way
            try:
                with open(self._path(KNOWN, name), encoding="utf-8") as f:
                    found[uuid] = f.read()
            except (OSError, UnicodeDecodeError):
                continue
        return found

    def keep_live_xml(self, uuid: str, xml: str | None) -> None:
        """Record (None: forget) the live XML of a domain's devices. Raises OSError."""
        if xml is None:
            self._remove(KNOWN, uuid + LIVE_XML)
        else:
            self._write(KNOWN, uuid + LIVE_XML, xml)


def start_kind_from_status(status_xml: bytes) -> str:
    """How a domain was started, from libvirt's status file as it is at ``started begin``.

    An incoming migration still holds its ``migration in`` job; a restore (``virsh
    restore``, a start from a managed save) is still paused with reason ``migration``, its
    memory yet to be read from the file. Anything else is a boot.
    """
    if _async_job(status_xml) == "migration in":
        return MIGRATE
    attrs = _domstatus_attributes(status_xml)
    if (attrs.get("state"), attrs.get("reason")) == ("paused", "migration"):
        return RESTORE
    return FRESH


def stop_kind_from_status(status_xml: bytes) -> str:
    """Why a domain stopped, from libvirt's status file as it is at ``stopped end``.

    The domain's async job says it: ``save`` (a save or managed save) or ``migration out``.
    libvirt 9.0 also still holds the state from before the stop in the ``<domstatus>``
    root (paused, reason ``save``); libvirt 11.3 has already set it to shutdown/unknown
    there, whatever the cause, and only the job tells. Anything else is a destroy,
    shutdown, crash or failed start.
    """
    job = _async_job(status_xml)
    if job == "save":
        return SAVED
    if job == "migration out":
        return MIGRATED
    attrs = _domstatus_attributes(status_xml)
    if (attrs.get("state"), attrs.get("reason")) == ("paused", "save"):
        return SAVED
    return DESTROY


def _domstatus_attributes(status_xml: bytes) -> dict[str, str]:
    start = status_xml.find(b"<domstatus")
    if start < 0:
        return {}
    end = status_xml.find(b">", start)
    return _attributes(status_xml[start:end])


def _async_job(status_xml: bytes) -> str | None:
    """The async job the domain is in (``start``, ``migration in``, ...), if recorded."""
    start = status_xml.find(b"<job ")
    if start < 0:
        return None
    end = status_xml.find(b">", start)
    return _attributes(status_xml[start:end]).get("async")


def _attributes(tag: bytes) -> dict[str, str]:
    """Attributes of one start tag; enough for libvirt's own machine-written files."""
    attrs: dict[str, str] = {}
    text = tag.decode("utf-8", "replace")
    i = 0
    while True:
        eq = text.find("=", i)
        if eq < 0 or eq + 1 >= len(text):
            return attrs
        quote = text[eq + 1]
        if quote not in "'\"":
            return attrs
        close = text.find(quote, eq + 2)
        if close < 0:
            return attrs
        key = text[i:eq].split()[-1] if text[i:eq].split() else ""
        attrs[key] = text[eq + 2 : close]
        i = close + 1


def read_status_file(name: str, status_dir: str = QEMU_STATUS_DIR) -> bytes | None:
    """The head of libvirt's status file for domain ``name``, or None."""
    if not safe_domain_name(name):
        return None
    try:
        with open(join(status_dir, f"{name}.xml"), "rb") as f:
            return f.read(65536)
    except OSError:
        return None
