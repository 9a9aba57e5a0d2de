"""One libvirt hook call, and the row of the table it fires.

libvirt calls ``<driver> <object> <op> <subop> <extra>``. Which row of
``mapping.HOOK_TABLE`` applies can depend on what came before: a ``prepare`` after a
``restore`` or an incoming ``migrate`` is no cold boot, and a ``release`` after a save is no
destroy. ``resolve`` finds the row and keeps that bookkeeping (``state``); it runs nothing
and calls no libvirt, so the hook call (``dispatch``) and the deferred calls replayed later
(``firing.take_deferred``) share it.
"""

from __future__ import annotations

from . import fastpath, mapping
from .mapping import DESTROY, FRESH, MIGRATE, RESTORE
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

    from . import inbox
    from .config import Config
    from .log import Log


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
        # The pid of the libvirt daemon that called; 0 when the call was deferred.
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


def resolve(
    call: HookCall, config: Config, log: Log, read_xml: Callable[[], bytes]
) -> tuple[mapping.Row, str, bytes] | None:
    """The row a qemu call fires, the domain's UUID ("" when its XML has none) and its XML;
    None when it fires nothing. ``read_xml`` is called only once a script may run."""
    key = ("qemu", call.op, call.subop)
    if key in mapping.SILENT_CALLS:
        return None
    if not mapping.has_rows(*key):
        log.info(f"{call}: no VDSM event for this call")
        return None
    if fastpath.nothing_to_run(config, call.op, call.subop):
        return None
    xml = read_xml()
    uuid = domain_uuid(xml)
    if uuid is None:
        log.error(f"{call}: no domain UUID in the XML on stdin; bookkeeping skipped")
    row = mapping.find_row(*key, _context(call, config, log, uuid or ""))
    return None if row is None else (row, uuid or "", xml)


def _context(call: HookCall, config: Config, log: Log, uuid: str) -> str:
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
            if is_read_later(config, call):
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


def is_read_later(config: Config, call: HookCall) -> bool:
    """Whether a later call that reads what this call records will run the bridge.

    When none will, nothing is recorded: it would outlive the operation.
    """
    later = mapping.DECIDES.get((call.op, call.subop), ())
    return any(not fastpath.nothing_to_run(config, op, subop) for op, subop in later)
