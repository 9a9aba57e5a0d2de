"""Running a queued VDSM event's scripts for one domain (or one of its devices): find
them, build their environment, run them and report each run.

What the async runner and the listener's drainer run for each job (``asyncq``); a sync
event runs through ``sync``, which the hook call, the verbs and ``firing`` use.
"""

from __future__ import annotations

from . import domxml
from .discovery import find_scripts
from .reporting import Reporter
from .runner import EventProperties, EventRun, event_label, run_event, script_environment

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .config import Config
    from .log import Log


def properties_of(xml: bytes) -> dict[str, str]:
    """Custom properties of the domain XML (raises domxml.XMLError if it is malformed)."""
    return domxml.properties_of(xml) if xml else {}


def run_scripts_for(
    config: Config,
    log: Log,
    event: str,
    name: str,
    uuid: str,
    xml: bytes,
    scripts: list[str] | None = None,
    tmp_prefix: str = "",
    properties: EventProperties | None = None,
    source: str = "",
) -> EventRun | None:
    """Run ``event``'s scripts on ``xml``; None when the event has no script.

    ``source`` names what fired it in the runs' records. The scripts' custom properties
    are ``properties``, else those of the domain ``xml``;
    those ``screening`` refuses are left out. A malformed XML is logged and the scripts
    still run, without custom properties: callers that may veto check the XML before
    they get here.
    """
    if scripts is None:
        scripts = find_scripts(config.hooks_dirs, event, log)
    if not scripts:
        return None
    label = event_label(event, name, uuid)
    props = properties
    if props is None:
        try:
            props = EventProperties(properties_of(xml))
        except domxml.XMLError as exc:
            log.error(f"{label}: domain XML is not well-formed ({exc}); running without properties")
            props = EventProperties()
    env = script_environment(props, uuid or None, config, log, label)
    reporter = Reporter(config, log, event, name, uuid, source)
    return run_event(scripts, xml, env, config.script_timeout, log, label, tmp_prefix, reporter)
