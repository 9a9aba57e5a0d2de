"""The listener's devices: libvirt's device events, and what a resync finds missed.

Each running domain's devices are taken from its live XML (``devicewatch`` decides which
VDSM event a device event fires, and keeps what its scripts get: a removed device is gone
from the XML by then). That XML is kept in ``state_dir`` too, so a listener that starts
again can tell what changed while none ran. A domain's methods run in its handler only,
or in a resync, which waits for the handlers.
"""

from __future__ import annotations

import libvirt

from . import mapping
from .devicewatch import DeviceWatch
from .domxml import XMLError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from .log import Log
    from .runner import EventProperties
    from .state import State

    # Fires a VDSM event: (event, domain name, uuid, why, xml, props) (``Listener._fire``).
    FireEvent = Callable[[str, str, str, str, bytes, EventProperties], None]

# libvirt's metadata change, which changes devices' properties but fires no event.
METADATA_CHANGED = "metadata-changed"


class DeviceEvents:
    """What the listener knows of running domains' devices, and the events it fires."""

    def __init__(self, store: State, log: Log, fire: FireEvent) -> None:
        self.store = store
        self.log = log
        self.fire = fire
        self.watch = DeviceWatch()
        # What the listener before this one kept of each running domain's devices.
        for uuid, xml in store.live_xmls().items():
            try:
                self.watch.remember(uuid, xml)
            except XMLError as exc:
                log.warning(f"listener: the kept XML of domain {uuid} is unusable: {exc}")

    def domains(self) -> set[str]:
        return set(self.watch.domains)

    def handle(self, uuid: str, name: str, dom: libvirt.virDomain, what: str, alias: str) -> None:
        """A device event (``mapping.DEVICE_ADDED``, ...) or a metadata change."""
        if what in (mapping.DEVICE_ADDED, METADATA_CHANGED) or not self.watch.knows(uuid):
            self.see(uuid, dom)
        if what == METADATA_CHANGED:
            return
        why = f"{what.upper().replace('-', '_')} of {alias!r}"
        if self.watch.echo(uuid, what, alias):
            self.log.info(f"listener: {why} in domain {name!r}: fired by the resync already")
            return
        if not self.watch.knows(uuid, alias):
            # Seen neither in the live XML before it went nor after it came.
            self.log.warning(
                f"listener: {why} in domain {name!r}: a device never seen; no event fired"
            )
            return
        fired = self.watch.fired(uuid, what, alias)
        if what == mapping.DEVICE_REMOVED:
            self._keep(uuid)
        if fired is None:
            self.log.info(f"listener: {why} in domain {name!r}: no event for this device")
            return
        event, payload = fired
        self.fire(event, name, uuid, why, payload.xml, payload.props)

    def see(self, uuid: str, dom: libvirt.virDomain) -> None:
        """Take the domain's devices from its live XML (gone: forget them)."""
        xml = self._live_xml(uuid, dom)
        if xml is not None and xml != self.watch.xml.get(uuid):
            self.watch.remember(uuid, xml)
            self._keep(uuid)

    def catch_up(self, uuid: str, name: str, dom: libvirt.virDomain) -> int:
        """Fire the device events the domain's devices show were missed; their number."""
        xml = self._live_xml(uuid, dom)
        if xml is None or xml == self.watch.xml.get(uuid):
            return 0
        missed = self.watch.catch_up(uuid, xml)
        self._keep(uuid)
        for change in missed:
            why = f"{change.op.upper().replace('-', '_')} of {change.alias!r} found on resync"
            self.fire(change.event, name, uuid, why, change.payload.xml, change.payload.props)
        return len(missed)

    def forget(self, uuid: str) -> None:
        self.watch.forget(uuid)
        self._keep(uuid)

    def _live_xml(self, uuid: str, dom: libvirt.virDomain) -> str | None:
        """The domain's live XML; None when it is gone (its devices are forgotten)."""
        try:
            xml: str = dom.XMLDesc(0)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                raise
            self.forget(uuid)
            return None
        return xml

    def _keep(self, uuid: str) -> None:
        try:
            self.store.keep_live_xml(uuid, self.watch.xml.get(uuid))
        except OSError as exc:
            self.log.error(
                f"listener: cannot keep state in {self.store.known_dir()}: {exc.strerror}"
            )
