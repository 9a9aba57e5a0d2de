"""Firing a VDSM event: the one way the hook call, the listener and the verbs run one.

``fire`` takes a ``Firing`` (the table's row of the event, the domain, its XML and what
fired it) and does what VDSM does for it, in this order:

1. the async hook calls the launcher deferred for the domain (``inbox``) go first: they
   happened before, so their bookkeeping and jobs precede this event's;
2. its per-device companion (``mapping.DEVICE_COMPANIONS``), for a domain whose devices
   can have custom properties: a "before" one runs now, on each such device, and may veto
   or (before_device_create) rewrite the device; an "after" one is queued;
3. the event's own scripts: a sync event's run now (given the XML the companion left, and
   able to veto or rewrite it), an async event's are queued behind the domain's earlier
   jobs, for a detached runner (``asyncq``) or the listener's drainer.

Nothing here calls libvirt: the hook call holds the domain's lock. Nothing heavy is
imported until a script is known to run.
"""

from __future__ import annotations

from . import domxml, inbox, mapping
from .discovery import find_scripts
from .hookcall import HookCall, resolve

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from .config import Config
    from .log import Log
    from .runner import EventProperties

    # Starts what drains queue ``key``: a forked runner (default), the listener's drainer.
    RunnerStart = Callable[[Config, Log, str], None]


class Firing:
    """One VDSM event to fire for one domain.

    ``xml``: the XML its scripts get (the domain's, or a device event's element), or what
    reads it, called only once a script is to run. ``queue``: the async queue it joins
    (the domain's UUID; "daemon" for the daemon's events). ``source``: what fired it, as
    the runs' records say (default: the row's). ``props``: the scripts' custom properties
    when the XML is not the domain's (a device event's).
    """

    __slots__ = ("name", "props", "queue", "row", "source", "uuid", "xml")

    def __init__(
        self,
        row: mapping.Row,
        name: str,
        uuid: str,
        xml: bytes | Callable[[], bytes],
        queue: str = "",
        source: str = "",
        props: EventProperties | None = None,
    ) -> None:
        self.row, self.name, self.uuid, self.xml = row, name, uuid, xml
        self.queue = queue or uuid or name
        self.source = source or row.source
        self.props = props

    def __str__(self) -> str:
        return f"{self.row.event} domain={self.name!r}"


class Fired:
    """What firing did.

    ``scripts`` and ``device_scripts``: how many the event and its companion have;
    ``given``: the XML read for them; ``xml``: what the event's own scripts were given (the
    companion's changes applied); ``devices``: how many devices a sync companion ran for;
    ``ran_last``: the event whose scripts ran last, the one that refused when ``status`` is
    non-zero; ``output``: the XML a sync event's scripts left, for libvirt's stdout.
    """

    __slots__ = (
        "device_scripts",
        "devices",
        "given",
        "output",
        "ran_last",
        "scripts",
        "status",
        "xml",
    )

    def __init__(self, scripts: int, device_scripts: int) -> None:
        self.scripts, self.device_scripts = scripts, device_scripts
        self.given = self.xml = self.output = b""
        self.status, self.devices, self.ran_last = 0, 0, ""


def fire(
    firing: Firing,
    config: Config,
    log: Log,
    start_runner: RunnerStart | None = None,
    deferred_taken: bool = False,
) -> Fired:
    """Fire ``firing``'s event (module doc). ``start_runner``: what starts the runner of an
    async event's queue; ``deferred_taken``: the caller took every deferred call already."""
    row = firing.row
    scripts = find_scripts(config.hooks_dirs, row.event, log)
    device_event = mapping.DEVICE_COMPANIONS.get(row.event)
    device_scripts = find_scripts(config.hooks_dirs, device_event, log) if device_event else []
    fired = Fired(len(scripts), len(device_scripts))
    if not scripts and not device_scripts:
        return fired
    if not deferred_taken:
        take_deferred(config, log, start_runner, firing.name)
    data = firing.xml() if callable(firing.xml) else firing.xml
    fired.given = fired.xml = data = data if row.xml != mapping.XML_NONE else b""
    if not domxml.has_ovirt_metadata(data):
        device_scripts = []  # no device of it can have custom properties
    if row.mode == mapping.ASYNC:
        _queue(firing, config, log, data, bool(scripts), bool(device_scripts), start_runner)
        return fired
    if device_scripts:
        from .per_device import run_before

        fired.ran_last = mapping.DEVICE_COMPANIONS[row.event]
        fired.status, fired.xml, fired.devices = run_before(
            row, config, log, firing.name, firing.uuid, data, device_scripts
        )
    if scripts and not fired.status:
        from .sync import run_sync

        fired.ran_last = row.event
        fired.status, fired.output = run_sync(
            row, config, log, firing.name, firing.uuid, fired.xml, scripts, firing.props
        )
    return fired


def _queue(
    firing: Firing,
    config: Config,
    log: Log,
    data: bytes,
    scripts: bool,
    device_scripts: bool,
    start_runner: RunnerStart | None,
) -> None:
    """Queue the event's job and, with ``device_scripts``, its companion's behind it (the
    runner finds the devices, ``per_device.run_after``: nothing is parsed here)."""
    from .asyncq import enqueue, spawn_runner
    from .jobs import Job

    jobs = []
    if scripts:
        jobs.append(Job(firing.row.event, firing.name, firing.uuid, data, props=firing.props))
    if device_scripts:
        event = mapping.DEVICE_COMPANIONS[firing.row.event]
        jobs.append(Job(event, firing.name, firing.uuid, data, per_device=True))
    queued = 0
    for job in jobs:
        job.source = firing.source
        try:
            enqueue(config.state_dir, firing.queue, job)
            queued += 1
        except OSError as exc:
            log.error(
                f"{firing}: cannot queue {job.event} in {config.state_dir}: {exc.strerror}; lost"
            )
    if queued:
        (start_runner or spawn_runner)(config, log, firing.queue)


def take_deferred(
    config: Config, log: Log, start_runner: RunnerStart | None = None, name: str | None = None
) -> None:
    """Fire the async calls the launcher deferred (``inbox``), each domain's in order.

    ``start_runner``: as for ``fire``; ``name``: only that domain's calls (the others are
    left to the hook's processes, whose environment their scripts get).
    """
    if not inbox.has_calls(config.state_dir):
        return
    import io

    try:
        for deferred in inbox.take(config.state_dir, log, name):
            call = HookCall(
                "qemu", deferred.name, deferred.op, deferred.subop, deferred.extra, 0, deferred
            )
            try:
                found = resolve(call, config, log, io.BytesIO(deferred.xml).read)
                if found is not None:
                    row, uuid, xml = found
                    firing = Firing(row, call.obj, uuid, xml)
                    fire(firing, config, log, start_runner, deferred_taken=True)
            except Exception:
                import traceback

                log.error(f"{call} (deferred): internal error: {traceback.format_exc()}")
    except OSError as exc:
        log.error(f"cannot read the deferred hook calls in {config.state_dir}: {exc}")
