"""Sync events: run inside libvirt's hook call, where they can veto or rewrite the XML.

- An event that can veto fails libvirt's operation when any script failed; the error
  libvirt shows names every failing script and carries its stderr (not VDSM's quirk of
  reporting the last script's stderr).
- For ``migrate``/``restore`` the XML left by the scripts goes to stdout only when its
  meaning changed, so libvirt does not taint the domain for a mere re-serialisation; XML
  that is not well-formed refuses the operation and libvirt keeps its own.
- For ``prepare`` libvirt cannot take a changed XML: a change is logged, naming the
  scripts that made it.
"""

from __future__ import annotations

from . import domxml, mapping
from .log import say
from .plainos import basename
from .reporting import Reporter
from .runner import EventProperties, EventRun, event_label, run_event, script_environment

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .config import Config
    from .log import Log

STDERR_IN_ERROR = 4000


def run_sync(
    row: mapping.Row,
    config: Config,
    log: Log,
    name: str,
    uuid: str,
    data: bytes,
    scripts: list[str],
    properties: EventProperties | None = None,
) -> tuple[int, bytes]:
    """Run ``row``'s scripts now; return (exit status for libvirt, XML for stdout).

    The scripts' custom properties are ``properties``, else those of the domain ``data``;
    those ``screening`` refuses are left out.
    """
    label = event_label(row.event, name, uuid)
    props = properties or EventProperties()
    if row.xml != mapping.XML_NONE and properties is None:
        try:
            props = EventProperties(domxml.properties_of(data))
        except domxml.XMLError as exc:
            if row.veto:
                say(
                    f"{row.event} for domain {name!r}: the domain XML on stdin is not "
                    f"well-formed ({exc}); the operation is refused"
                )
                log.error(f"{label}: XML on stdin is not well-formed ({exc}); refused")
                return 1, b""
            log.error(
                f"{label}: XML on stdin is not well-formed ({exc}); running without properties"
            )
    env = script_environment(props, uuid or None, config, log, label)
    reporter = Reporter(config, log, row.event, name, uuid, row.source, row.veto)
    run = run_event(scripts, data, env, config.script_timeout, log, label, reporter=reporter)
    if row.veto and run.failures:
        for result in run.failures:
            detail = result.stderr_text()[:STDERR_IN_ERROR]
            say(f"{row.event} refused by {result.script} ({result.describe()}): {detail}")
        names = ", ".join(basename(r.script) for r in run.failures)
        log.error(f"{label}: operation vetoed by {names}")
        return 1, b""
    if row.xml in (mapping.XML_WRITABLE, mapping.XML_DEVICE_WRITABLE):
        return _writable_result(row, log, label, name, data, run)
    if row.xml in (mapping.XML_READ_ONLY, mapping.XML_DEVICE) and run.edits:
        changers = ", ".join(_semantic_editors(run))
        if changers and row.op == "prepare" and config.start_xml_changes == "refuse":
            say(
                f"{row.event} for domain {name!r}: {changers} changed the domain XML, which "
                f"libvirt cannot take at this point; start it with `libvirt-bridge start "
                f"{name}` to boot the changed XML (start_xml_changes = 'refuse' in {config.path})"
            )
            log.error(f"{label}: {changers} changed the XML; start refused (start_xml_changes)")
            return 1, b""
        if changers:
            # Only a start has a way to boot a changed XML: the verb.
            remedy = " (`libvirt-bridge start` applies it)" if row.op == "prepare" else ""
            log.warning(
                f"{label}: {changers} changed the domain XML, but libvirt cannot take a changed "
                f"XML at this point; the change is ignored{remedy}"
            )
    return 0, b""


def _writable_result(
    row: mapping.Row, log: Log, label: str, name: str, original: bytes, run: EventRun
) -> tuple[int, bytes]:
    if not run.edits:
        return 0, b""
    try:
        unchanged = domxml.same_meaning(original, run.data)
    except domxml.XMLError as exc:
        culprit = run.edits[-1][0]
        say(
            f"{row.event} for domain {name!r}: {culprit} left XML that is not well-formed "
            f"({exc}); the operation is refused and libvirt keeps its own XML"
        )
        log.error(f"{label}: {culprit} left XML that is not well-formed ({exc}); refused")
        return (1 if row.veto else 0), b""
    if unchanged:
        return 0, b""
    log.info(f"{label}: XML changed by {', '.join(_semantic_editors(run))}; given to libvirt")
    return 0, run.data


def _semantic_editors(run: EventRun) -> list[str]:
    """Base names of the scripts whose edit changed the XML's meaning (or broke it)."""
    names = []
    for script, before, after in run.edits:
        try:
            changed = not domxml.same_meaning(before, after)
        except domxml.XMLError:
            changed = True
        if changed:
            names.append(basename(script))
    return names
