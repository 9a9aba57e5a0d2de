"""One libvirt hook call, mapped to its VDSM event and fired.

libvirt calls ``<driver> <object> <op> <subop> <extra>`` with the domain XML on stdin and
waits, holding the domain's lock. This module maps the call to a VDSM event through
``mapping.HOOK_TABLE``, keeps the bookkeeping that tells a cold boot from a restore or an
incoming migration (``state``), then either runs the event's scripts here (sync: they can
veto or rewrite the XML) or queues them for a detached runner (async) and returns. An async
call the launcher deferred (``inbox``) goes through the same code later, from
``take_deferred``.

Nothing here calls libvirt. Nothing heavy is imported until a script is known to run: an
event with no scripts costs about one interpreter start, and when no qemu event has a
script the launcher does not start Python at all (``fastpath``). ``hook`` is what the
launchers call; the verbs fire calls through ``fire`` too.
"""

from __future__ import annotations

import posix

from . import domxml, fastpath, inbox, mapping
from .config import ConfigError, load
from .discovery import find_scripts
from .log import Log, say
from .mapping import DESTROY, FRESH, MIGRATE, QEMU_DAEMONS, RESTORE
from .plainos import join, makedirs
from .state import (
    DESTROYED_BY_VERB,
    STARTED_BY_VERB,
    State,
    domain_uuid,
    read_status_file,
    start_kind_from_status,
    stop_kind_from_status,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import BinaryIO

    from .config import Config

    # Starts what drains queue ``key``: a forked runner (the hook), the drainer (listener).
    RunnerStart = Callable[[Config, Log, str], None]


def run(
    driver: str,
    argv: list[str],
    config_path: str,
    stdin: BinaryIO,
    stdout: BinaryIO,
) -> int:
    """Handle one libvirt hook call; return the exit status libvirt must see."""
    if len(argv) != 4:
        say(f"{driver} hook: expected 4 arguments (object op subop extra), got {len(argv)}")
        return 2
    obj, op, subop, extra = argv
    call = HookCall(driver, obj, op, subop, extra, daemon=posix.getppid())
    try:
        config = load(config_path)
    except ConfigError as exc:
        # Without a config there is no log file: stderr is all there is, and libvirt keeps
        # it (in its error for an operation refused, in its debug log otherwise).
        say(f"{call}: {exc}; no hook scripts run")
        return 1 if call.can_veto() else 0
    fastpath.refresh(config)
    log = Log.of(config)
    try:
        # Calls the launcher deferred came first: their bookkeeping and jobs go first.
        take_deferred(config, log)
        status = _dispatch(call, config, log, stdin, stdout)
    except Exception as exc:
        import traceback

        log.error(f"{call}: internal error: {traceback.format_exc()}")
        say(f"internal error in {call}: {exc!r}")
        status = 1
    return 0 if call.always_succeeds() else status


class HookCall:
    """One call from libvirt, as its argv gives it."""

    __slots__ = ("daemon", "deferred", "driver", "extra", "obj", "op", "subop")

    def __init__(
        self,
        driver: str,
        obj: str,
        op: str,
        subop: str,
        extra: str,
        daemon: int = 0,
        deferred: inbox.Deferred | None = None,
    ) -> None:
        self.driver, self.obj, self.op, self.subop, self.extra = driver, obj, op, subop, extra
        # The pid of the libvirt daemon that called; 0 when the bridge fires the call's
        # events itself (the verbs) or the call was deferred.
        self.daemon = daemon
        # The call as the launcher saved it in the inbox, when it was deferred.
        self.deferred = deferred

    def status_file(self, status_dir: str) -> bytes | None:
        """libvirt's status file of the domain as it was during the call."""
        if self.deferred is not None:
            return self.deferred.status
        return read_status_file(self.obj, status_dir)

    def can_veto(self) -> bool:
        return any(
            r.veto
            for r in mapping.HOOK_TABLE
            if (r.driver, r.op, r.subop) == (self.driver, self.op, self.subop)
        )

    def always_succeeds(self) -> bool:
        return (self.driver, self.op) in mapping.ALWAYS_SUCCEED

    def __str__(self) -> str:
        return f"{self.driver} {self.obj!r} {self.op} {self.subop} {self.extra!r}"


def _dispatch(call: HookCall, config: Config, log: Log, stdin: BinaryIO, stdout: BinaryIO) -> int:
    if call.driver == "daemon":
        return _daemon_call(call, config, log)
    if call.driver == "qemu":
        return _qemu_call(call, config, log, stdin, stdout)
    log.warning(f"{call}: unknown hook driver; nothing to run")
    return 0


def _daemon_call(call: HookCall, config: Config, log: Log) -> int:
    parent = _parent_name()
    if parent not in QEMU_DAEMONS:
        # Modular hosts run one daemon per driver, and each calls the daemon hook.
        log.info(f"{call}: called by {parent!r}, not by a qemu daemon; no event")
        return 0
    _record_daemon_call(config, log, call, parent)
    row = mapping.find_row("daemon", call.op, call.subop, mapping.ANY)
    if call.op == "start":
        # Whatever restore or migration was under way died with the previous daemon.
        for uuid in State(config.state_dir).remove_stale_markers(ttl=0):
            log.info(f"{call}: removed the marker of an interrupted restore/migration of {uuid}")
    if row is None:
        if (call.driver, call.op, call.subop) not in mapping.SILENT_CALLS:
            log.info(f"{call}: no VDSM event for this call")
        return 0
    return fire(row, call, config, log, "daemon", "", b"", None)


def _qemu_call(
    call: HookCall,
    config: Config,
    log: Log,
    stdin: BinaryIO,
    stdout: BinaryIO | None,
    start_runner: RunnerStart | None = None,
) -> int:
    key = ("qemu", call.op, call.subop)
    if key in mapping.SILENT_CALLS:
        return 0
    if not mapping.has_rows(*key):
        log.info(f"{call}: no VDSM event for this call")
        return 0
    if fastpath.nothing_to_run(config, call.op, call.subop):
        return 0
    xml = stdin.read()
    uuid = domain_uuid(xml)
    if uuid is None:
        log.error(f"{call}: no domain UUID in the XML on stdin; bookkeeping skipped")
    context = _context(call, config, log, uuid or "", xml)
    row = mapping.find_row(*key, context)
    if row is None:
        return 0
    return fire(row, call, config, log, uuid or call.obj, uuid or "", xml, stdout, start_runner)


def take_deferred(
    config: Config, log: Log, start_runner: RunnerStart | None = None, name: str | None = None
) -> None:
    """Queue the async calls the launcher deferred (``inbox``), each domain's in order.

    Whatever queues a job or records bookkeeping for a domain calls this first, so that a
    deferred call goes before what happened after it. ``start_runner``: as for ``fire``;
    ``name``: only that domain's calls (the others are left to the hook's processes, whose
    environment their scripts get).
    """
    import io

    if not inbox.has_calls(config.state_dir):
        return
    try:
        for deferred in inbox.take(config.state_dir, log, name):
            call = HookCall(
                "qemu", deferred.name, deferred.op, deferred.subop, deferred.extra, 0, deferred
            )
            try:
                _qemu_call(call, config, log, io.BytesIO(deferred.xml), None, start_runner)
            except Exception:
                import traceback

                log.error(f"{call} (deferred): internal error: {traceback.format_exc()}")
    except OSError as exc:
        log.error(f"cannot read the deferred hook calls in {config.state_dir}: {exc}")


def _context(call: HookCall, config: Config, log: Log, uuid: str, xml: bytes) -> str:
    """Which of the call's rows applies, from (and updating) the bridge's bookkeeping."""
    if not uuid:
        return FRESH if call.op in ("prepare", "started") else DESTROY
    state = State(config.state_dir)
    try:
        if call.op == "prepare":
            kinds = (RESTORE, MIGRATE, STARTED_BY_VERB)
            return state.take_marker(uuid, kinds, call.daemon) or FRESH
        if call.op == "started":
            status = call.status_file(config.qemu_status_dir)
            return start_kind_from_status(status) if status else FRESH
        if call.op == "stopped":
            status = call.status_file(config.qemu_status_dir)
            kind = stop_kind_from_status(status) if status else DESTROY
            if _is_read_later(config, call):
                state.set_stop_kind(uuid, kind)
            if kind == DESTROY and state.take_marker(uuid, (DESTROYED_BY_VERB,)):
                return DESTROYED_BY_VERB  # before_vm_destroy ran in the verb already
            return kind
        if call.op == "release":
            if call.extra != "-":
                kind = mapping.release_context(call.extra)
            else:
                kind = state.stop_kind(uuid) or DESTROY
            state.forget_domain(uuid)
            return kind
    except OSError as exc:
        log.error(f"{call}: state dir {config.state_dir}: {exc.strerror}; assuming the default")
        return FRESH if call.op in ("prepare", "started") else DESTROY
    return mapping.ANY


def fire(
    row: mapping.Row,
    call: HookCall,
    config: Config,
    log: Log,
    queue_key: str,
    uuid: str,
    xml: bytes,
    stdout: BinaryIO | None,
    start_runner: RunnerStart | None = None,
) -> int:
    """Run (sync) or queue (async) the row's event; the exit status libvirt gets.

    ``start_runner``: what starts the runner of an async event's queue (default: a forked
    runner, ``asyncq.spawn_runner``).
    """
    name = call.obj
    data = xml if row.xml != mapping.XML_NONE else b""
    if row.mode == mapping.ASYNC:
        return _queue(row, call, config, log, queue_key, name, uuid, data, start_runner)
    scripts = find_scripts(config.hooks_dirs, row.event, log)
    device_scripts = _companion_scripts_for(row.event, config, log, data)
    status = 0
    if device_scripts:
        from .per_device import run_before

        status, _, _ = run_before(row, config, log, name, uuid, data, device_scripts)
    if scripts and not status:
        from .sync import run_sync

        status, output = run_sync(row, config, log, name, uuid, data, scripts)
        if output and stdout is not None:
            stdout.write(output)
            stdout.flush()
    if status == 0 and call.op in ("migrate", "restore") and uuid and _is_read_later(config, call):
        _set_marker(config, log, call, uuid)
    return status


def _is_read_later(config: Config, call: HookCall) -> bool:
    """Whether a later call that reads what this call records will run the bridge.

    When none will, nothing is recorded: it would outlive the operation.
    """
    later = mapping.DECIDES.get((call.op, call.subop), ())
    return any(not fastpath.nothing_to_run(config, op, subop) for op, subop in later)


def _set_marker(config: Config, log: Log, call: HookCall, uuid: str) -> None:
    if posix.getppid() != call.daemon:
        # The daemon died while the scripts ran: its operation is gone, and a marker
        # would make the next cold boot of this domain look like a restore.
        log.error(f"{call}: libvirt's daemon went away during the hook; no {call.op} marker")
        return
    try:
        kind = MIGRATE if call.op == "migrate" else RESTORE
        State(config.state_dir).set_marker(uuid, kind, call.daemon)
    except OSError as exc:
        log.error(
            f"{call}: cannot write the {call.op} marker in {config.state_dir}: {exc.strerror}; "
            "the start that follows will look like a cold boot"
        )


def _queue(
    row: mapping.Row,
    call: HookCall,
    config: Config,
    log: Log,
    key: str,
    name: str,
    uuid: str,
    data: bytes,
    start_runner: RunnerStart | None,
) -> int:
    scripts = find_scripts(config.hooks_dirs, row.event, log)
    device_scripts = _companion_scripts_for(row.event, config, log, data)
    if not scripts and not device_scripts:
        return 0
    from .asyncq import Job, enqueue, spawn_runner

    queued = 0
    if scripts:
        try:
            enqueue(config.state_dir, key, Job(row.event, name, uuid, data, source=row.source))
            queued += 1
        except OSError as exc:
            log.error(
                f"{call}: cannot queue {row.event} in {config.state_dir}: {exc.strerror}; lost"
            )
    if device_scripts:
        queued += queue_companion(row.event, config, log, key, name, uuid, data, row.source)
    if queued:
        (start_runner or spawn_runner)(config, log, key)
    return 0


def companion_scripts(event: str, config: Config, log: Log | None) -> list[str]:
    """The scripts of ``event``'s per-device companion (``mapping.DEVICE_COMPANIONS``)."""
    device_event = mapping.DEVICE_COMPANIONS.get(event)
    return find_scripts(config.hooks_dirs, device_event, log) if device_event else []


def queue_companion(
    event: str,
    config: Config,
    log: Log,
    key: str,
    name: str,
    uuid: str,
    xml: bytes,
    source: str = "",
) -> int:
    """Queue ``event``'s per-device companion for the domain ``xml`` behind what is queued;
    how many jobs (0 or 1). The runner finds the devices (``per_device.run_after``)."""
    from .asyncq import Job, enqueue

    device_event = mapping.DEVICE_COMPANIONS[event]
    try:
        job = Job(device_event, name, uuid, xml, per_device=True, source=source)
        enqueue(config.state_dir, key, job)
    except OSError as exc:
        log.error(f"cannot queue {device_event} of {name!r}: {exc.strerror}; lost")
        return 0
    return 1


def _companion_scripts_for(event: str, config: Config, log: Log, xml: bytes) -> list[str]:
    """``companion_scripts``, none for a domain whose devices cannot have properties."""
    if not domxml.has_ovirt_metadata(xml):
        return []
    return companion_scripts(event, config, log)


def _record_daemon_call(config: Config, log: Log, call: HookCall, parent: str) -> None:
    """Note which daemon last looked for hooks: it does so at start and on SIGHUP only.

    ``libvirt-bridge status`` compares this with the launchers' age to tell whether the
    running daemon has picked them up.
    """
    if call.op not in ("start", "reload"):
        return
    try:
        directory = join(config.state_dir, "daemon")
        makedirs(directory, 0o700)
        with open(join(directory, parent), "w") as f:
            f.write(f"pid={posix.getppid()}\nop={call.op}\n")
    except OSError as exc:
        log.error(f"{call}: cannot record the daemon call in {config.state_dir}: {exc.strerror}")


def _parent_name() -> str:
    try:
        with open(f"/proc/{posix.getppid()}/comm") as f:
            return f.read().strip()
    except OSError:
        return "?"
