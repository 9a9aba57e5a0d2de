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
``destroy`` leaves a marker likewise, for the hook's ``stopped``.
"""

from __future__ import annotations

import os

import libvirt

from . import mapping
from .config import Config
from .discovery import find_scripts
from .log import Log
from .state import DESTROYED_BY_VERB, STARTED_BY_VERB, State
from .sync import run_sync

RUN_DIR_VARIABLE = "LIBVIRT_BRIDGE_RUN_DIR"


class VerbError(Exception):
    """The action did not happen; the message says why."""


class Verbs:
    """One connection, and the verbs on it."""

    def __init__(self, config: Config, uri: str | None = None) -> None:
        self.config = config
        self.log = Log(config.log_file)
        self.uri = uri or config.libvirt_uri
        try:
            self.conn = libvirt.open(self.uri)
        except libvirt.libvirtError as exc:
            raise VerbError(f"cannot connect to {self.uri}: {exc.get_error_message()}") from None

    def close(self) -> None:
        self.conn.close()

    def domain(self, name: str) -> libvirt.virDomain:
        try:
            return self.conn.lookupByName(name)
        except libvirt.libvirtError as exc:
            raise VerbError(
                f"no domain {name!r} on {self.uri}: {exc.get_error_message()}"
            ) from None

    def before(self, verb: str, dom: libvirt.virDomain, flags: int = 0) -> bytes:
        """Run the verb's before_* event; return the XML its scripts left if it changed.

        Raises VerbError when a script vetoes (the scripts' stderr is already printed).
        """
        row = mapping.find_row("verb", verb, "-", mapping.ANY)
        assert row is not None, verb
        scripts = find_scripts(self.config.hooks_dirs, row.event, self.log)
        if not scripts:
            return b""
        xml = dom.XMLDesc(flags).encode()
        status, output = run_sync(
            row, self.config, self.log, dom.name(), dom.UUIDString(), xml, scripts
        )
        print(f"{row.event}: {len(scripts)} script(s) ran")
        if status:
            raise VerbError(f"{row.event} refused to {verb} {dom.name()!r}; nothing was done")
        return output

    def _call(self, what: str, action: object, *args: object) -> None:
        try:
            action(*args)  # type: ignore[operator]
        except libvirt.libvirtError as exc:
            raise VerbError(f"{what} failed: {exc.get_error_message()}") from None

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
        flags_file = self._dump_launch_flags(uuid, flags)
        try:
            changed = self.before("start", dom, libvirt.VIR_DOMAIN_XML_SECURE)
            flags = _load_launch_flags(flags_file, flags)
            state = State(self.config.state_dir)
            state.set_marker(uuid, STARTED_BY_VERB)
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

    def pause(self, name: str) -> None:
        dom = self.domain(name)
        self.before("pause", dom)
        self._call(f"pausing {name!r}", dom.suspend)
        print(f"paused {name!r}")

    def resume(self, name: str) -> None:
        dom = self.domain(name)
        self.before("resume", dom)
        self._call(f"resuming {name!r}", dom.resume)
        print(f"resumed {name!r}")

    def save(self, name: str, path: str | None) -> None:
        dom = self.domain(name)
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
        self.before("migrate", dom)
        try:
            dconn = libvirt.open(destination)
        except libvirt.libvirtError as exc:
            raise VerbError(f"cannot connect to {destination}: {exc.get_error_message()}") from None
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
        self.before("destroy", dom)
        state = State(self.config.state_dir)
        state.set_marker(uuid, DESTROYED_BY_VERB)
        try:
            self._call(f"destroying {name!r}", dom.destroy)
        except VerbError:
            state.clear_marker(uuid)
            raise
        print(f"destroyed {name!r}")

    # --- launch flags (VDSM's side channel for before_vm_start scripts) -----------------

    def _dump_launch_flags(self, uuid: str, flags: int) -> str:
        run_dir = os.path.join(self.config.state_dir, "vdsm-run")
        # Scripts (through hooking) and this process must agree on the directory.
        os.environ[RUN_DIR_VARIABLE] = run_dir
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
