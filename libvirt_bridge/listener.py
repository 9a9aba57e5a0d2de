"""``libvirt-bridge listen``: fires the events libvirt has no hook for.

- libvirt's default event loop is registered before any connection is opened and runs
  in its own thread; the connection's callbacks (``eventconnection``) only queue what
  libvirt reports, so nothing blocks that thread (keepalive replies go on).
- A worker thread hands each event to its domain's handler (``Serial``: a domain's events
  in order, domains side by side), which reads the domain's state reason
  (``tracker.Tracker`` decides; libvirt answers that call at once, even while the daemon's
  workers are busy with a burst of operations) and, for a real pause, continue or
  finished incoming migration, hands the event to the domain's runner. A resync waits
  for the handlers to finish what came before it.
- libvirt's device events (``DEVICE_ADDED``, ``DEVICE_REMOVED``, ``DEVICE_REMOVAL_FAILED``)
  and metadata changes go to the same per-domain handlers (``deviceevents``, where
  ``devicewatch`` says which VDSM device event each fires, and keeps, from the live XML,
  what a device's event gives its scripts: the device is gone from the XML once removed).
- The handler that fires an event (``firing``, as the hook and the verbs do) fetches the
  domain's XML, queues the event into the domain's async queue, the same one the hook
  uses (so a pause's event never overtakes the start's ``after_vm_start``), and hands
  the queue to the listener's drainer (``drainer``), one long-lived process that runs the
  scripts: no process starts per event but the scripts, and none of their work slows the
  listener's threads. A listener that starts has its drainer run what a listener killed
  before it left queued.
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
from .config import ConfigError, load
from .connection import LibvirtFailure, message
from .deviceevents import DeviceEvents
from .drainer import Drainer
from .eventconnection import DeviceEvent, Event, EventConnection, Item
from .firing import Firing, fire, take_deferred
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
    from .runner import EventProperties

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
        self.connected = threading.Event()
        self.connection = EventConnection(config.libvirt_uri, self.queue, log)
        self.tracker_lock = threading.Lock()
        # Touched by a domain's handler for that domain only, and by a resync (which waits
        # for the handlers).
        self.device_events = DeviceEvents(self.store, log, self._fire)
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
                while not self.stopping.is_set() and not self.connection.closed.wait(0.2):
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
        self.connection.open()
        self.queue.put(RESYNC)
        self.connected.set()
        self.log.info(f"listener: connected to {self.config.libvirt_uri}")
        write_status(
            self.config.state_dir, f"connected {self.config.libvirt_uri} pid={os.getpid()}"
        )

    def _disconnect(self) -> None:
        self.connected.clear()
        write_status(self.config.state_dir, f"disconnected pid={os.getpid()}")
        if self.connection.close() and not self.stopping.is_set():
            self.log.warning(f"listener: lost {self.config.libvirt_uri}; reconnecting")
            notify(f"STATUS=lost {self.config.libvirt_uri}; reconnecting")

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
                self._guarded(lambda: self.device_events.handle(*item))
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
            self.device_events.see(uuid, dom)
        elif current[0] == "shutoff":
            self.device_events.forget(uuid)
        if fired:
            why = f"{event_name.upper()}/{detail_name.upper()}, state {current[0]}/{current[1]}"
            self._fire(fired, name, uuid, why, functools.partial(self._domain_xml, name, dom))

    def _state(self, dom: libvirt.virDomain) -> DomainState:
        """The domain's state now: read after its event, maybe after later ones too."""
        try:
            return state_names(dom.state())
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return SHUTOFF
            raise

    def _resync(self) -> None:
        conn = self.connection.conn
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
                self.device_events.forget(uuid)
            else:
                fired += self.device_events.catch_up(uuid, dom.name(), dom)
            if missed:
                fired += 1
                why = f"state {current[0]}/{current[1]} found on resync"
                xml = functools.partial(self._domain_xml, dom.name(), dom)
                self._fire(missed, dom.name(), uuid, why, xml)
        with self.tracker_lock:
            gone = set(self.tracker.known) - seen
            for uuid in gone:
                self.tracker.forget(uuid)
        for uuid in gone:
            self._save_known(uuid, None)
        for uuid in (gone | self.device_events.domains()) - seen:
            self.device_events.forget(uuid)
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
        self,
        event: str,
        name: str,
        uuid: str,
        why: str,
        xml: bytes | Callable[[], bytes],
        props: EventProperties | None = None,
    ) -> None:
        """Fire ``event`` (``firing``): its jobs go to the drainer; the runs' records name
        ``why`` (``history``)."""
        firing = Firing(
            mapping.listener_row(event), name, uuid, xml, uuid, f"listener: {why}", props
        )
        fired = fire(firing, self.config, self.log, self._hand_over)
        per_device = f", {fired.device_scripts} per device" if fired.device_scripts else ""
        self.log.info(
            f"listener: {event} domain={name!r} uuid={uuid} ({why}); "
            f"{fired.scripts} script(s){per_device}"
        )

    # --- jobs -----------------------------------------------------------------------------

    def _domain_xml(self, name: str, dom: libvirt.virDomain) -> bytes:
        """The domain's XML as it is now, for its event's scripts (b"" when it is gone)."""
        try:
            return dom.XMLDesc(0).encode()  # type: ignore[no-any-return]
        except libvirt.libvirtError as exc:
            self.log.warning(f"listener: no XML for {name!r}: {message(exc)}")
            return b""

    def _hand_over(self, config: Config, log: Log, key: str) -> None:
        """Start the runner of queue ``key`` (``firing.fire``): the drainer."""
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

    def _cannot_keep(self, exc: OSError) -> None:
        self.log.error(f"listener: cannot keep state in {self.store.known_dir()}: {exc.strerror}")
