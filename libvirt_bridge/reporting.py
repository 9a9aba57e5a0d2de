"""One record per script run, published to the sinks the config names.

As cloud-init's reporting does: the runner makes one :class:`RunRecord` for each script
it ran, and once the event's scripts have run hands them to :func:`publish`, which gives
them to each sink (:func:`_sinks`): the history store (``history``; on unless
``history_size = 0``) and the Prometheus text file (``metrics``; when ``metrics_file`` is
set), and the webhook (``notify``; when ``notify_url`` is set). One event's records go at
once: a sink pays its file operations once per event,
not once per script. The journal gets the same run's fields
(``OUTCOME`` among them) with its log line (``log_target``). A sink never raises and never
holds up the work it reports on: one that fails says so in the log and the run goes on.

Imported on the hook path once a script has run: ``time`` and the record (``records``).
"""

from __future__ import annotations

import time

from .records import FAILED, NOT_RUN, OK, TIMED_OUT, VETOED, RunRecord

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from .config import Config
    from .log import Log
    from .runner import ScriptResult

# What a failed run's record keeps of its stderr: its end, where the error usually is.
STDERR_TAIL_LINES = 5
STDERR_TAIL_CHARS = 2000


def outcome_of(result: ScriptResult, veto: bool) -> str:
    """How a run ended, as its record says: a failure of an event that can veto refused
    the operation."""
    if result.error:
        return NOT_RUN
    if result.timed_out:
        return TIMED_OUT
    if not result.failed:
        return OK
    return VETOED if veto else FAILED


def stderr_tail(result: ScriptResult) -> str:
    """The last lines of a failed run's stderr (or why it could not run); "" otherwise."""
    if not result.failed:
        return ""
    if result.error:
        return result.error
    lines = result.stderr_text().splitlines()[-STDERR_TAIL_LINES:]
    return "\n".join(lines)[-STDERR_TAIL_CHARS:]


class Reporter:
    """Publishes a record of each script run of one event (``label``: its domain, UUID
    and event; ``source``: what fired it; ``veto``: whether a failure refuses the
    operation)."""

    __slots__ = ("config", "domain", "event", "log", "records", "source", "uuid", "veto")

    def __init__(
        self,
        config: Config,
        log: Log,
        event: str,
        domain: str,
        uuid: str,
        source: str,
        veto: bool = False,
    ) -> None:
        self.config = config
        self.log = log
        self.event = event
        self.domain = domain
        self.uuid = uuid
        self.source = source
        self.veto = veto
        self.records: list[RunRecord] = []

    def outcome(self, result: ScriptResult) -> str:
        return outcome_of(result, self.veto)

    def script_ran(self, result: ScriptResult, xml_changed: bool) -> None:
        """Take the record of one run (published by :meth:`done`)."""
        self.records.append(self._record(result, xml_changed))

    def done(self) -> None:
        """Publish the records of the event's runs."""
        if self.records:
            publish(self.config, self.log, self.records)
            self.records = []

    def _record(self, result: ScriptResult, xml_changed: bool) -> RunRecord:
        return RunRecord(
            time.time() - result.duration,
            self.domain,
            self.uuid,
            self.event,
            self.source,
            result.script,
            result.rc,
            self.outcome(result),
            result.duration,
            xml_changed,
            stderr_tail(result),
        )


def publish(config: Config, log: Log, records: list[RunRecord]) -> None:
    """Give ``records`` to every sink; a sink that fails is logged, never raised."""
    for name, sink in _sinks():
        try:
            sink(config, records)
        except Exception as exc:
            scripts = ", ".join(r.script for r in records)
            log.error(f"{name}: cannot record the runs of {scripts}: {exc!r}")


def _sinks() -> tuple[tuple[str, Callable[[Config, list[RunRecord]], None]], ...]:
    # Imported here: each sink module imports what it needs only when a run is published.
    from . import history, metrics, notify

    return (("history", history.append), ("metrics", metrics.count), ("notify", notify.queue))
