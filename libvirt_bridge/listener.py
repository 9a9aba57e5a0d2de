"""``libvirt-bridge listen``: fires the events libvirt has no hook for.

- libvirt's default event loop is registered before any connection is opened and runs
  in its own thread; the lifecycle callback only queues ``(uuid, name, domain, event,
  detail)``, so nothing blocks that thread (keepalive replies go on).
- A worker thread hands each event to its domain's handler (``Serial``: a domain's events
  in order, domains side by side), which reads the domain's state reason
  (``tracker.Tracker`` decides; libvirt answers that call at once, even while the daemon's
  workers are busy with a burst of operations) and, for a real pause, continue or
  finished incoming migration, hands the event to the domain's runner. A resync waits
  for the handlers to finish what came before it.
- libvirt's device events (``DEVICE_ADDED``, ``DEVICE_REMOVED``, ``DEVICE_REMOVAL_FAILED``)
  and metadata changes go to the same per-domain handlers; ``devicewatch`` says which
  VDSM device event each fires, and keeps, from the live XML, what a device's event gives
  its scripts (the device is gone from the XML once it is removed).
- The handler that fires an event fetches the domain's XML, queues the event into the
  domain's async queue, the same one the hook uses (so a pause's event never overtakes
  the start's ``after_vm_start``), and hands the queue to the listener's drainer
  (``drainer``), one long-lived process that runs the scripts: no process starts per
  event but the scripts, and none of their work slows the listener's threads. A listener
  that starts has its drainer run what a listener killed before it left queued.
- The connection is watched (close callback, keepalive); when it drops, the listener
  reconnects with back-off, registers its callbacks again and resynchronises: what it knew
  of each domain is compared with the domain's state now, and of each running domain's
  devices with its devices now, which also covers what changed while the listener itself
  was not running (the known states, and the live XML the devices were taken from, are
  kept in ``state_dir``).
"""

from __future__ import annotations

import functools
import os
import queue
import threading
import time

import libvirt

from . import mapping
from .asyncq import Job, enqueue
from .config import ConfigError, load
from .connection import LibvirtFailure, message, open_connection
from .devicewatch import DeviceWatch, Missed
from .discovery import find_scripts
from .dispatch import companion_scripts, queue_companion, take_deferred
from .domxml import XMLError
from .drainer import Drainer
from .launcher import import_path
from .serial import Serial
from .service import notify, write_status
from .state import State
from .tracker import SHUTOFF, DomainState, Tracker

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from .config import Config
    from .log import Log

KEEPALIVE_INTERVAL = 5
KEEPALIVE_COUNT = 3
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 15.0
# How long a listener that systemd started waits for libvirt before it says ready anyway
# (its unit is Type=notify): its start must not fail with the daemon down, and then
# ``status`` reports it as not connected.
READY_WAIT = 30.0
RESYNC = "resync"
# Seconds a stopping listener waits for the events being handled (uninstall sends SIGKILL
# 10 s after SIGTERM); the drainer, a process of its own, runs the scripts to their end.
STOP_GRACE = 5.0
# Domains whose lifecycle events are handled at once (each handler reads a state and the
# XML of the event it fires).
HANDLERS = 16

# A lifecycle event as the callback queues it: (uuid, name, domain, event, detail).
Event = tuple[str, str, "libvirt.virDomain", int, int]
# A device or metadata event: (uuid, name, domain, what, alias).
DeviceEvent = tuple[str, str, "libvirt.virDomain", str, str]
Item = Event | DeviceEvent | str | None
METADATA_CHANGED = "metadata-changed"
# libvirt's device events (and the metadata's, which changes devices' properties), as the
# table's rows name them; an event this libvirt-python lacks is not registered.
LIBVIRT_DEVICE_EVENTS: dict[str, str] = {
    "VIR_DOMAIN_EVENT_ID_DEVICE_ADDED": mapping.DEVICE_ADDED,
    "VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED": mapping.DEVICE_REMOVED,
    "VIR_DOMAIN_EVENT_ID_DEVICE_REMOVAL_FAILED": mapping.REMOVAL_FAILED,
    "VIR_DOMAIN_EVENT_ID_METADATA_CHANGE": METADATA_CHANGED,
}


def _names(prefix: str) -> dict[int, str]:
    return {
        value: key[len(prefix) :].lower()
        for key, value in vars(libvirt).items()
        if key.startswith(prefix) and isinstance(value, int) and not key.endswith("_LAST")
    }


EVENT_NAMES = {
    libvirt.VIR_DOMAIN_EVENT_DEFINED: "defined",
    libvirt.VIR_DOMAIN_EVENT_UNDEFINED: "undefined",
    libvirt.VIR_DOMAIN_EVENT_STARTED: "started",
    libvirt.VIR_DOMAIN_EVENT_SUSPENDED: "suspended",
    libvirt.VIR_DOMAIN_EVENT_RESUMED: "resumed",
    libvirt.VIR_DOMAIN_EVENT_STOPPED: "stopped",
    libvirt.VIR_DOMAIN_EVENT_SHUTDOWN: "shutdown",
    libvirt.VIR_DOMAIN_EVENT_PMSUSPENDED: "pmsuspended",
    libvirt.VIR_DOMAIN_EVENT_CRASHED: "crashed",
}
DETAIL_NAMES = {
    event: _names(f"VIR_DOMAIN_EVENT_{name.upper()}_") for event, name in EVENT_NAMES.items()
}
STATE_NAMES = {
    libvirt.VIR_DOMAIN_NOSTATE: "nostate",
    libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_BLOCKED: "blocked",
    libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTDOWN: "shutdown",
    libvirt.VIR_DOMAIN_SHUTOFF: "shutoff",
    libvirt.VIR_DOMAIN_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_PMSUSPENDED: "pmsuspended",
}
REASON_NAMES = {
    libvirt.VIR_DOMAIN_RUNNING: _names("VIR_DOMAIN_RUNNING_"),
    libvirt.VIR_DOMAIN_PAUSED: _names("VIR_DOMAIN_PAUSED_"),
    libvirt.VIR_DOMAIN_SHUTOFF: _names("VIR_DOMAIN_SHUTOFF_"),
}

_loop_started = False
_loop_lock = threading.Lock()


def start_event_loop() -> None:
    """Register libvirt's default event loop (once per process) and run it in a thread."""
    global _loop_started
    with _loop_lock:
        if _loop_started:
            return
        libvirt.virEventRegisterDefaultImpl()
        thread = threading.Thread(target=_run_loop, name="libvirt-event-loop", daemon=True)
        thread.start()
        _loop_started = True


def _run_loop() -> None:
    while True:
        libvirt.virEventRunDefaultImpl()


def state_names(state: list[int]) -> DomainState:
    code, reason = state[0], state[1]
    return STATE_NAMES.get(code, str(code)), REASON_NAMES.get(code, {}).get(reason, str(reason))


class Listener:
    """One listener process: connection, callbacks, worker, hand-off to its drainer."""

    def __init__(self, config: Config, log: Log) -> None:
        self.config = config
        self.log = log
        self.store = State(config.state_dir)
        self.tracker = Tracker(self.store.known_states())
        # A listener that ran before (its state dir survives restarts, not reboots) is
        # back from a gap; a first look at the host has nothing to compare with.
        self.looked_before = self.store.has_known()
        self.queue: queue.Queue[Item] = queue.Queue()
        self.stopping = threading.Event()
        self.closed = threading.Event()
        self.connected = threading.Event()
        self.conn: libvirt.virConnect | None = None
        self.tracker_lock = threading.Lock()
        # Touched by a domain's handler for that domain only, and by a resync (which waits
        # for the handlers).
        self.devices = DeviceWatch()
        self._load_devices()
        self.handlers = Serial(log, "handler", HANDLERS)
        self.drainer = Drainer(config.path, config.state_dir, import_path(), log)
        self.config_refused = False

    # --- connection -----------------------------------------------------------------

    def run(self) -> None:
        """Listen until ``stop()``; reconnect with back-off when the daemon goes away."""
        start_event_loop()
        worker = threading.Thread(target=self._work, name="listener-worker", daemon=True)
        worker.start()
        # What a listener killed before this one left queued (nothing is run twice: a job
        # it left running is logged as interrupted and dropped), and what the hook deferred.
        self.drainer.start()
        take_deferred(self.config, self.log, self._hand_over)
        backoff = BACKOFF_FIRST
        ready_by = time.monotonic() + READY_WAIT
        try:
            while not self.stopping.is_set():
                try:
                    self._connect()
                except LibvirtFailure as exc:
                    self.log.warning(f"listener: {exc}; retrying in {backoff:.1f}s")
                    notify(f"STATUS=not connected: {exc}")
                    write_status(self.config.state_dir, f"disconnected pid={os.getpid()} ({exc})")
                    if time.monotonic() >= ready_by:
                        notify("READY=1")
                    self.stopping.wait(backoff)
                    backoff = min(backoff * 2, BACKOFF_MAX)
                    continue
                notify("READY=1", f"STATUS=connected to {self.config.libvirt_uri}")
                backoff = BACKOFF_FIRST
                while not self.stopping.is_set() and not self.closed.wait(0.2):
                    pass
                self._disconnect()
        finally:
            notify("STOPPING=1")
            self.queue.put(None)
            worker.join(timeout=10)
            self.handlers.wait_idle(STOP_GRACE)
            self.drainer.close()

    def stop(self) -> None:
        self.stopping.set()

    def _connect(self) -> None:
        conn = open_connection(self.config.libvirt_uri, readonly=True)
        self.closed.clear()
        try:
            conn.registerCloseCallback(self._on_close, None)
        except libvirt.libvirtError:
            pass  # drivers without a persistent connection (test://) have none
        try:
            conn.setKeepAlive(KEEPALIVE_INTERVAL, KEEPALIVE_COUNT)
        except libvirt.libvirtError:
            pass
        conn.domainEventRegisterAny(
            None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._on_lifecycle, None
        )
        for constant, what in LIBVIRT_DEVICE_EVENTS.items():
            if hasattr(libvirt, constant):
                callback = self._on_metadata if what == METADATA_CHANGED else self._on_device
                conn.domainEventRegisterAny(None, getattr(libvirt, constant), callback, what)
        self.conn = conn
        self.queue.put(RESYNC)
        self.connected.set()
        self.log.info(f"listener: connected to {self.config.libvirt_uri}")
        write_status(
            self.config.state_dir, f"connected {self.config.libvirt_uri} pid={os.getpid()}"
        )

    def _disconnect(self) -> None:
        self.connected.clear()
        write_status(self.config.state_dir, f"disconnected pid={os.getpid()}")
        conn, self.conn = self.conn, None
        if conn is None:
            return
        try:
            conn.unregisterCloseCallback()
        except libvirt.libvirtError:
            pass
        try:
            conn.close()
        except libvirt.libvirtError:
            pass
        if not self.stopping.is_set():
            self.log.warning(f"listener: lost {self.config.libvirt_uri}; reconnecting")
            notify(f"STATUS=lost {self.config.libvirt_uri}; reconnecting")

    def _on_close(self, conn: libvirt.virConnect, reason: int, opaque: object) -> None:
        self.closed.set()

    def _on_lifecycle(
        self, conn: libvirt.virConnect, dom: libvirt.virDomain, event: int, detail: int, _: object
    ) -> None:
        # libvirt's loop thread: queue and return, never call libvirt here (the domain's
        # UUID and name are known to the client, they cost no call).
        try:
            self.queue.put((dom.UUIDString(), dom.name(), dom, event, detail))
        except Exception as exc:  # an escaping exception would only be printed by libvirt
            self.log.error(f"listener: dropped a lifecycle event: {exc!r}")

    def _on_device(
        self, conn: libvirt.virConnect, dom: libvirt.virDomain, alias: str, what: str
    ) -> None:
        # As _on_lifecycle: queue and return.
        try:
            self.queue.put((dom.UUIDString(), dom.name(), dom, what, alias))
        except Exception as exc:
            self.log.error(f"listener: dropped a device event: {exc!r}")

    def _on_metadata(
        self, conn: libvirt.virConnect, dom: libvirt.virDomain, kind: int, uri: str, what: str
    ) -> None:
        self._on_device(conn, dom, "", what)

    # --- worker ---------------------------------------------------------------------

    def _refresh_config(self) -> None:
        """Take a changed config from the next event on (its hooks roots, the property
        schema, ...; the drainer takes script_timeout the same way). libvirt_uri, state_dir
        and the log stay until the listener restarts: it says so."""
        try:
            fresh = load(self.config.path)
        except ConfigError as exc:
            if not self.config_refused:
                self.log.error(f"listener: {exc}; keeping the config read before")
            self.config_refused = True
            return
        self.config_refused = False
        if fresh.mtime_ns == self.config.mtime_ns:
            return
        pinned = ("libvirt_uri", "state_dir", "log_file", "log_target")
        changed = [key for key in pinned if getattr(fresh, key) != getattr(self.config, key)]
        for key in pinned:
            setattr(fresh, key, getattr(self.config, key))
        self.config = fresh
        later = f"; {', '.join(changed)} only when it restarts" if changed else ""
        self.log.info(f"listener: read the changed config {fresh.path}{later}")

    def _work(self) -> None:
        while True:
            item = self.queue.get()
            if item is not None:
                self._refresh_config()
            if isinstance(item, tuple):
                # Done (``task_done``) by the domain's handler.
                self.handlers.submit(item[0], functools.partial(self._handle_event, item))
                continue
            if item == RESYNC:
                # What came before the resync is handled before it.
                self.handlers.wait_idle()
                self._guarded(self._resync)
            self.drainer.reap()
            # So that ``queue.join()`` tells when all that came has been handled.
            self.queue.task_done()
            if item is None:
                return

    def _guarded(self, work: Callable[[], None]) -> None:
        try:
            work()
        except libvirt.libvirtError as exc:
            # The connection went away: the resync after reconnecting catches up.
            self.log.warning(f"listener: {message(exc)}; will resync")
        except Exception as exc:
            self.log.error(f"listener: internal error: {exc!r}")

    def _handle_event(self, item: Event | DeviceEvent) -> None:
        try:
            if isinstance(item[3], str):
                self._guarded(lambda: self._handle_device(*item))
            else:
                self._guarded(lambda: self._handle(*item))
        finally:
            self.queue.task_done()

    def _handle(
        self, uuid: str, name: str, dom: libvirt.virDomain, event: int, detail: int
    ) -> None:
        event_name = EVENT_NAMES.get(event, str(event))
        detail_name = DETAIL_NAMES.get(event, {}).get(detail, str(detail))
        with self.tracker_lock:
            implied = self.tracker.implied_state(uuid, event_name, detail_name)
        current = implied or self._state(dom)
        with self.tracker_lock:
            fired = self.tracker.observe(uuid, event_name, detail_name, current)
            known = self.tracker.known.get(uuid)
        # Out of the lock: only this domain's handler (or a resync, which waits for the
        # handlers) writes its file.
        self._save_known(uuid, known)
        if event_name == "started":
            self._see_devices(uuid, dom)
        elif current[0] == "shutoff":
            self._forget_devices(uuid)
        if fired:
            why = f"{event_name.upper()}/{detail_name.upper()}, state {current[0]}/{current[1]}"
            self._fire(
                fired, name, uuid, why, functools.partial(self._domain_job, fired, name, uuid, dom)
            )

    def _handle_device(
        self, uuid: str, name: str, dom: libvirt.virDomain, what: str, alias: str
    ) -> None:
        if what in (mapping.DEVICE_ADDED, METADATA_CHANGED) or not self.devices.knows(uuid):
            self._see_devices(uuid, dom)
        if what == METADATA_CHANGED:
            return
        why = f"{what.upper().replace('-', '_')} of {alias!r}"
        if self.devices.echo(uuid, what, alias):
            self.log.info(f"listener: {why} in domain {name!r}: fired by the resync already")
            return
        if not self.devices.knows(uuid, alias):
            # Seen neither in the live XML before it went nor after it came.
            self.log.warning(
                f"listener: {why} in domain {name!r}: a device never seen; no event fired"
            )
            return
        fired = self.devices.fired(uuid, what, alias)
        if what == mapping.DEVICE_REMOVED:
            self._keep_devices(uuid)
        if fired is None:
            self.log.info(f"listener: {why} in domain {name!r}: no event for this device")
            return
        event, payload = fired
        job = Job(event, name, uuid, payload.xml, props=payload.props)
        self._fire(event, name, uuid, why, lambda: job)

    def _see_devices(self, uuid: str, dom: libvirt.virDomain) -> None:
        """Take the domain's devices from its live XML (gone: forget them)."""
        xml = self._live_xml(uuid, dom)
        if xml is not None and xml != self.devices.xml.get(uuid):
            self.devices.remember(uuid, xml)
            self._keep_devices(uuid)

    def _live_xml(self, uuid: str, dom: libvirt.virDomain) -> str | None:
        """The domain's live XML; None when it is gone (its devices are forgotten)."""
        try:
            xml: str = dom.XMLDesc(0)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                raise
            self._forget_devices(uuid)
            return None
        return xml

    def _catch_up_devices(self, uuid: str, name: str, dom: libvirt.virDomain) -> int:
        """Fire the device events the domain's devices show were missed; their number."""
        xml = self._live_xml(uuid, dom)
        if xml is None:
            return 0
        if xml == self.devices.xml.get(uuid):
            return 0
        missed = self.devices.catch_up(uuid, xml)
        self._keep_devices(uuid)
        for change in missed:
            self._fire_missed(change, name, uuid)
        return len(missed)

    def _fire_missed(self, change: Missed, name: str, uuid: str) -> None:
        why = f"{change.op.upper().replace('-', '_')} of {change.alias!r} found on resync"
        job = Job(change.event, name, uuid, change.payload.xml, props=change.payload.props)
        self._fire(change.event, name, uuid, why, lambda: job)

    def _state(self, dom: libvirt.virDomain) -> DomainState:
        """The domain's state now: read after its event, maybe after later ones too."""
        try:
            return state_names(dom.state())
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return SHUTOFF
            raise

    def _resync(self) -> None:
        conn = self.conn
        if conn is None:
            return
        seen = set()
        after_gap = self.looked_before
        fired = 0
        for dom in conn.listAllDomains():
            uuid = dom.UUIDString()
            seen.add(uuid)
            current = state_names(dom.state())
            with self.tracker_lock:
                missed = self.tracker.resync(uuid, current, after_gap)
            self._save_known(uuid, current)
            if current[0] == "shutoff":
                self._forget_devices(uuid)
            else:
                fired += self._catch_up_devices(uuid, dom.name(), dom)
            if missed:
                fired += 1
                why = f"state {current[0]}/{current[1]} found on resync"
                job = functools.partial(self._domain_job, missed, dom.name(), uuid, dom)
                self._fire(missed, dom.name(), uuid, why, job)
        with self.tracker_lock:
            gone = set(self.tracker.known) - seen
            for uuid in gone:
                self.tracker.forget(uuid)
        for uuid in gone:
            self._save_known(uuid, None)
        for uuid in (gone | set(self.devices.domains)) - seen:
            self._forget_devices(uuid)
        self._note_looked()
        if after_gap:
            # Events are not replayed: what changed and changed back meanwhile is lost.
            self.log.warning(
                f"listener: resynchronised {len(seen)} domain(s) after a gap, {fired} missed "
                "event(s) fired from their state and devices now; a pause and resume, or a "
                "device attached and detached, that both happened during the gap cannot be "
                "seen and were missed"
            )

    def _fire(
        self, event: str, name: str, uuid: str, why: str, make_job: Callable[[], Job]
    ) -> None:
        scripts = find_scripts(self.config.hooks_dirs, event, self.log)
        device_scripts = companion_scripts(event, self.config, self.log)
        per_device = f", {len(device_scripts)} per device" if device_scripts else ""
        self.log.info(
            f"listener: {event} domain={name!r} uuid={uuid} ({why}); "
            f"{len(scripts)} script(s){per_device}"
        )
        if scripts or device_scripts:
            job = make_job()
            # The runs' records name what fired them (``history``).
            job.source = f"listener: {why}"
            self._queue(job, bool(device_scripts))

    # --- jobs -----------------------------------------------------------------------------

    def _domain_job(self, event: str, name: str, uuid: str, dom: libvirt.virDomain | None) -> Job:
        """The job of a domain's event: the domain's XML as it is now."""
        xml = b""
        if dom is not None:
            try:
                xml = dom.XMLDesc(0).encode()
            except libvirt.libvirtError as exc:
                self.log.warning(f"listener: no XML for {name!r}: {message(exc)}")
        return Job(event, name, uuid, xml)

    def _queue(self, job: Job, per_device: bool = False) -> None:
        """Queue ``job`` (and, with ``per_device``, its per-device companion's) and hand
        its domain's queue to the drainer."""
        # The domain's hook calls the launcher deferred happened before this event.
        take_deferred(self.config, self.log, self._hand_over, job.name)
        try:
            enqueue(self.config.state_dir, job.uuid, job)
        except OSError as exc:
            self.log.error(
                f"listener: cannot queue {job.event} for {job.name!r}: {exc.strerror}; lost"
            )
        if per_device:
            queue_companion(
                job.event,
                self.config,
                self.log,
                job.uuid,
                job.name,
                job.uuid,
                job.xml,
                job.source,
            )
        self.drainer.hand_over(job.uuid)

    def _hand_over(self, config: Config, log: Log, key: str) -> None:
        """Start the runner of queue ``key`` (``dispatch.take_deferred``): the drainer."""
        self.drainer.hand_over(key)

    # --- known states, kept across restarts (in the state dir, through State) -----------

    def _note_looked(self) -> None:
        self.looked_before = True
        try:
            self.store.start_known()
        except OSError as exc:
            self._cannot_keep(exc)

    def _save_known(self, uuid: str, known: DomainState | None) -> None:
        try:
            self.store.keep_known(uuid, known)
        except OSError as exc:
            self._cannot_keep(exc)

    def _load_devices(self) -> None:
        """What the listener before this one kept of each running domain's devices."""
        for uuid, xml in self.store.live_xmls().items():
            try:
                self.devices.remember(uuid, xml)
            except XMLError as exc:
                self.log.warning(f"listener: the kept XML of domain {uuid} is unusable: {exc}")

    def _keep_devices(self, uuid: str) -> None:
        try:
            self.store.keep_live_xml(uuid, self.devices.xml.get(uuid))
        except OSError as exc:
            self._cannot_keep(exc)

    def _forget_devices(self, uuid: str) -> None:
        self.devices.forget(uuid)
        self._keep_devices(uuid)

    def _cannot_keep(self, exc: OSError) -> None:
        self.log.error(f"listener: cannot keep state in {self.store.known_dir()}: {exc.strerror}")
