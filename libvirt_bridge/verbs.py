"""The verbs: VDSM "before" events that libvirt has no hook for, then the libvirt call.

``libvirt-bridge pause|resume|save|migrate|destroy DOMAIN`` run before_vm_pause,
before_vm_cont, before_vm_hibernate, before_vm_migrate_source or before_vm_destroy (a
failing script of an event that can veto stops the action, and its stderr is shown), then
call libvirt; the after_* events then come from the hook and the listener, as for virsh.

``libvirt-bridge start DOMAIN`` runs before_vm_start itself and boots the XML its scripts
leave (for this boot only: ``createXML`` over the inactive persistent domain leaves the
persistent definition as it was, as VDSM does), and leaves a marker so that the hook's
``prepare`` does not run before_vm_start a second time. It honours the launch flags
scripts may set through ``hooking.dump_vm_launch_flags_to_file`` (START_PAUSED).
``destroy`` leaves a marker likewise, for the hook's ``stopped``. A start refused by a
before_vm_start script is followed by before_vm_destroy and after_vm_destroy, as libvirt
follows a start refused in its ``prepare`` hook with ``stopped`` and ``release``: scripts
rely on them to give back what earlier before_vm_start scripts took.

The scripts get the environment libvirt gives a hook (``runner.libvirt_hook_environment``),
not the caller's, so a script behaves the same under a verb as under ``virsh``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping

import libvirt

from . import fastpath, mapping
from .config import Config
from .connection import find_domain, message, open_connection
from .errors import BridgeError
from .firing import Firing, fire, take_deferred
from .log import Log, say
from .mapping import DESTROY
from .runner import libvirt_hook_environment
from .state import DESTROYED_BY_VERB, STARTED_BY_VERB, State

RUN_DIR_VARIABLE = "LIBVIRT_BRIDGE_RUN_DIR"


class VerbError(BridgeError):
    """The action did not happen; the message says why."""


class Vetoed(VerbError):
    """A script of the verb's before_* event refused it."""

    def __init__(self, message: str, event: str, xml: bytes) -> None:
        super().__init__(message)
        self.event = event
        self.xml = xml  # what the event's scripts were given


@contextlib.contextmanager
def hook_process_environment(extra: Mapping[str, str] | None = None) -> Iterator[None]:
    """Make this process's environment libvirt's hook environment (plus ``extra``) for a while.

    The sync runner, and the async runner this process forks, build the scripts'
    environment from ``os.environ``, as the hook does, where it holds what libvirt gave.
    Only for a while: libvirt's client may need the caller's (ssh for a migration).
    """
    saved = dict(os.environ)
    base = libvirt_hook_environment()
    base.update(extra or {})
    try:
        os.environ.clear()
        os.environ.update(base)
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def per_device_summary(event: str, scripts: int, devices: int) -> str:
    """What a per-device event did: its scripts run once per device with custom properties."""
    if not devices:
        return (
            f"{event}: no device it fires for has custom properties; "
            f"its {scripts} script(s) did not run"
        )
    return f"{event}: {scripts} script(s) ran for each of {devices} device(s)"


class Verbs:
    """One connection, and the verbs on it."""

    def __init__(self, config: Config, uri: str | None = None) -> None:
        self.config = config
        self.log = Log.of(config)
        self.uri = uri or config.libvirt_uri
        self.conn = open_connection(self.uri)

    def close(self) -> None:
        self.conn.close()

    def domain(self, ident: str) -> libvirt.virDomain:
        """The domain named ``ident``, or with that UUID or id."""
        return find_domain(self.conn, ident)

    def before(
        self,
        verb: str,
        dom: libvirt.virDomain,
        flags: int = 0,
        extra_env: Mapping[str, str] | None = None,
    ) -> bytes:
        """Run the verb's before_* event; return the XML its scripts left if it changed.

        Its per-device companion (``per_device``) runs first, on each device with custom
        properties, and the VM's event gets the domain XML with what it applied. Raises
        Vetoed when a script vetoes (the scripts' stderr is already printed).
        """
        row = mapping.find_row("verb", verb, "-", mapping.ANY)
        assert row is not None, verb
        name, uuid = dom.name(), dom.UUIDString()
        firing = Firing(row, name, uuid, lambda: dom.XMLDesc(flags).encode())
        with hook_process_environment(extra_env):
            fired = fire(firing, self.config, self.log)
        if fired.device_scripts:
            device_event = mapping.DEVICE_COMPANIONS[row.event]
            print(per_device_summary(device_event, fired.device_scripts, fired.devices))
        if fired.ran_last == row.event:
            print(f"{row.event}: {fired.scripts} script(s) ran")
        if fired.status:
            message = f"{fired.ran_last} refused to {verb} {name!r}; nothing was done"
            raise Vetoed(message, fired.ran_last, fired.given)
        return fired.output or (fired.xml if fired.xml != fired.given else b"")

    def _call(self, what: str, action: object, *args: object) -> None:
        try:
            action(*args)  # type: ignore[operator]
        except libvirt.libvirtError as exc:
            raise VerbError(f"{what} failed: {message(exc)}") from None

    # --- the verbs ---------------------------------------------------------------------

    def start(self, name: str, paused: bool = False) -> None:
        dom = self.domain(name)
        if dom.isActive():
            raise VerbError(f"domain {name!r} is already running")
        flags = libvirt.VIR_DOMAIN_START_PAUSED if paused else 0
        if dom.hasManagedSaveImage(0):
            # A restore, not a boot: libvirt's restore hook fires before_vm_dehibernate.
            self._call(f"starting {name!r} from its managed save", dom.createWithFlags, flags)
            print(f"started {name!r} from its managed save image")
            return
        uuid = dom.UUIDString()
        run_dir = os.path.join(self.config.state_dir, "vdsm-run")
        flags_file = _dump_launch_flags(run_dir, uuid, flags)
        try:
            # Scripts (through hooking) and this process must agree on the run directory.
            changed = self._before_start(dom, {RUN_DIR_VARIABLE: run_dir})
            flags = _load_launch_flags(flags_file, flags)
            state = State(self.config.state_dir)
            self._mark(state, name, uuid, STARTED_BY_VERB, ("prepare", "begin"))
            try:
                if changed:
                    self._call(f"starting {name!r}", self.conn.createXML, changed.decode(), flags)
                else:
                    self._call(f"starting {name!r}", dom.createWithFlags, flags)
            except VerbError:
                state.clear_marker(uuid)
                raise
        finally:
            _remove(flags_file)
        how = "with the XML its before_vm_start scripts changed" if changed else "as defined"
        print(f"started {name!r} {how}{' (paused)' if flags & 1 else ''}")

    def _before_start(self, dom: libvirt.virDomain, extra_env: Mapping[str, str]) -> bytes:
        """before_vm_start; after a veto, what libvirt fires after its prepare hook's veto."""
        try:
            return self.before("start", dom, libvirt.VIR_DOMAIN_XML_SECURE, extra_env)
        except Vetoed as veto:
            try:
                self._fire_failed_start(dom.name(), dom.UUIDString(), veto.xml)
            except Exception as exc:  # the veto is what the caller must hear about
                self.log.error(f"after the refused start of {dom.name()!r}: {exc!r}")
                say(f"internal error firing the events of a refused start: {exc!r}")
            raise VerbError(
                f"{veto.event} refused to start {dom.name()!r}; the domain was not started, "
                "and before_vm_destroy and after_vm_destroy were fired for it, as libvirt "
                "fires them after a start refused in its prepare hook"
            ) from None

    def _fire_failed_start(self, name: str, uuid: str, xml: bytes) -> None:
        """libvirt's ``stopped end`` then ``release end`` of a failed start, through the hook.

        The hook's own code runs them: before_vm_destroy now, after_vm_destroy queued behind
        the domain's other async events, with the XML before_vm_start was given.
        """
        with hook_process_environment():
            for op in ("stopped", "release"):
                row = mapping.find_row("qemu", op, "end", DESTROY)
                assert row is not None, op
                fire(Firing(row, name, uuid, xml), self.config, self.log)

    def _mark(
        self, state: State, name: str, uuid: str, kind: str, taken_at: tuple[str, str]
    ) -> None:
        """Tell the hook's call ``taken_at`` that this verb already ran its before_* event.

        Not when the launcher will answer that call without the hook (nothing to run): the
        marker would outlive the operation.
        """
        if not fastpath.nothing_to_run(self.config, *taken_at):
            # A deferred release of the domain's last run would clear the marker.
            with hook_process_environment():
                take_deferred(self.config, self.log, name=name)
            state.set_marker(uuid, kind)

    def _require_state(self, dom: libvirt.virDomain, name: str, verb: str) -> None:
        """Refuse, before any script runs, what libvirt would refuse in the domain's state:
        a script must never run for an operation that cannot happen."""
        try:
            active = dom.isActive()
            paused = active and dom.state()[0] == libvirt.VIR_DOMAIN_PAUSED
        except libvirt.libvirtError as exc:
            raise VerbError(f"cannot read the state of {name!r}: {message(exc)}") from None
        if not active:
            problem = "is not running"
        elif verb == "pause" and paused:
            problem = "is already paused"
        elif verb == "resume" and not paused:
            problem = "is already running"
        else:
            return
        raise VerbError(f"domain {name!r} {problem}: cannot {verb} it (no script ran)")

    def pause(self, name: str) -> None:
        dom = self.domain(name)
        self._require_state(dom, name, "pause")
        self.before("pause", dom)
        self._call(f"pausing {name!r}", dom.suspend)
        print(f"paused {name!r}")

    def resume(self, name: str) -> None:
        dom = self.domain(name)
        self._require_state(dom, name, "resume")
        self.before("resume", dom)
        self._call(f"resuming {name!r}", dom.resume)
        print(f"resumed {name!r}")

    def save(self, name: str, path: str | None) -> None:
        dom = self.domain(name)
        self._require_state(dom, name, "save")
        self.before("save", dom)
        if path is None:
            self._call(f"saving {name!r}", dom.managedSave, 0)
            print(f"saved {name!r} (managed save; `libvirt-bridge start {name}` restores it)")
        else:
            self._call(f"saving {name!r}", dom.save, os.path.abspath(path))
            print(f"saved {name!r} to {path}")

    def restore(self, path: str) -> None:
        # libvirt's restore hook fires before_vm_dehibernate: nothing to run here.
        self._call(f"restoring {path}", self.conn.restore, os.path.abspath(path))
        print(f"restored {path}")

    def migrate(self, name: str, destination: str, live: bool, migrate_uri: str | None) -> None:
        dom = self.domain(name)
        self._require_state(dom, name, "migrate")
        self.before("migrate", dom)
        dconn = open_connection(destination)
        try:
            params = {libvirt.VIR_MIGRATE_PARAM_URI: migrate_uri} if migrate_uri else {}
            flags = libvirt.VIR_MIGRATE_LIVE if live else 0
            self._call(f"migrating {name!r}", dom.migrate3, dconn, params, flags)
        finally:
            dconn.close()
        print(f"migrated {name!r} to {destination}")

    def destroy(self, name: str) -> None:
        dom = self.domain(name)
        uuid = dom.UUIDString()
        self._require_state(dom, name, "destroy")
        self.before("destroy", dom)
        state = State(self.config.state_dir)
        self._mark(state, name, uuid, DESTROYED_BY_VERB, ("stopped", "end"))
        try:
            self._call(f"destroying {name!r}", dom.destroy)
        except VerbError:
            state.clear_marker(uuid)
            raise
        print(f"destroyed {name!r}")


# --- launch flags (VDSM's side channel for before_vm_start scripts) ---------------------


def _dump_launch_flags(run_dir: str, uuid: str, flags: int) -> str:
    path = os.path.join(run_dir, uuid, "launchflags")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(str(flags))
    return path


def _load_launch_flags(path: str, default: int) -> int:
    try:
        with open(path) as f:
            return int(f.readline())
    except (OSError, ValueError):
        return default


def _remove(path: str) -> None:
    try:
        os.unlink(path)
        os.rmdir(os.path.dirname(path))
    except OSError:
        pass
