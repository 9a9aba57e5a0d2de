"""One libvirt hook call: what the installed launchers run, mapped to its event and fired.

libvirt calls ``<driver> <object> <op> <subop> <extra>`` with the domain XML on stdin and
waits, holding the domain's lock. ``run`` takes the calls the launcher deferred first
(``firing.take_deferred``), finds the call's row of ``mapping.HOOK_TABLE`` (``hookcall``,
which keeps the bookkeeping that tells a cold boot from a restore or an incoming
migration), fires its event (``firing.fire``: sync scripts run here and can veto or
rewrite the XML; async ones are queued for a detached runner) and answers libvirt.

Nothing here calls libvirt. Nothing heavy is imported until a script is known to run: an
event with no scripts costs about one interpreter start, and when no qemu event has a
script the launcher does not start Python at all (``fastpath``).
"""

from __future__ import annotations

import posix

from . import fastpath, mapping
from .config import ConfigError, load
from .firing import Firing, fire, take_deferred
from .hookcall import HookCall, is_read_later, resolve
from .log import Log, say
from .mapping import MIGRATE, QEMU_DAEMONS, RESTORE
from .plainos import join, makedirs
from .state import State

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import BinaryIO

    from .config import Config


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
    firing = Firing(row, call.obj, "", b"", queue="daemon")
    return fire(firing, config, log, deferred_taken=True).status


def _qemu_call(call: HookCall, config: Config, log: Log, stdin: BinaryIO, stdout: BinaryIO) -> int:
    found = resolve(call, config, log, stdin.read)
    if found is None:
        return 0
    row, uuid, xml = found
    fired = fire(Firing(row, call.obj, uuid, xml), config, log, deferred_taken=True)
    if fired.output:
        stdout.write(fired.output)
        stdout.flush()
    marks = fired.status == 0 and call.op in ("migrate", "restore") and uuid
    if marks and is_read_later(config, call):
        _set_marker(config, log, call, uuid)
    return fired.status


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
