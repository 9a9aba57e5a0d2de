"""``libvirt-bridge run EVENT DOMAIN``: a trial of one event's scripts, outside libvirt."""

from __future__ import annotations

import argparse
import difflib
import json
import os
import sys

from .. import config
from ..errors import FAILED, OK, BridgeError, UsageError
from ..log import Log
from ..mapping import DAEMON_EVENTS, DEVICE_EVENTS, EVENTS
from . import options
from .options import AddParser

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..runner import EventProperties, ScriptResult

TRIAL = "trial run by `libvirt-bridge run`, nothing is applied to libvirt"


def add_parser(add: AddParser) -> None:
    parser = options.add_command(
        add,
        "run",
        summary=(
            "try one event's scripts on a domain's XML, outside libvirt, and show what they did"
        ),
        description=(
            "Run the scripts of one VDSM event, as the real event would (same scripts in the "
            "same order, same contract: the XML in $_hook_domxml, the VM's custom properties "
            "and vmId in an environment like the one libvirt gives hooks, the config's "
            "script_timeout), on the domain's current XML (virsh dumpxml) or on --xml FILE, "
            "outside any libvirt operation. Shows each script's exit status, duration and "
            "stderr, and a unified diff of the XML they left (both documents normalised, one "
            "element a line, so that a script that rewrites the whole document shows only "
            "what it changed). Nothing is applied to libvirt; "
            "the scripts' log lines go to the config's log_file, marked as a trial. With "
            "--xml, DOMAIN is only the name the trial uses and libvirt is not contacted; "
            "before_vdsm_start and after_vdsm_stop take no domain. A device event "
            "(after_nic_hotplug, ...) needs --device: its scripts get that device's element "
            "alone, and its custom properties then the VM's, as the listener gives them. "
            '--json prints one object instead of the text: {"event", "domain", '
            '"uuid", "xml_source", "properties": {NAME: VALUE}, "left_out": [TEXT], '
            '"notes": [TEXT], "hooks_dirs", "scripts": [{"script": PATH, "name", '
            '"rc": N|null, "outcome": "ok"|"failed"|"timed out"|"could not run", '
            '"status", "duration": SECONDS, "stderr", "stdout_size"}], "skipped": '
            '[PATH], "xml_changed": BOOL, "changed_by": [NAME], "diff": UNIFIED_DIFF, '
            '"xml_note": TEXT|null, "result": "ok"|"failed"|"no script", "failed": '
            '[NAME], "log": PATH}. '
            "Exit status: 0 when every "
            "script succeeded (or none would run), 1 when a script failed or the trial could "
            "not run, 2 for bad usage."
        ),
        epilog=options.examples(
            "libvirt-bridge run before_vm_start vm1",
            "libvirt-bridge run before_vm_migrate_destination vm1 --xml vm1.xml",
            "virsh dumpxml vm1 | libvirt-bridge run after_vm_start vm1 --xml -",
            "libvirt-bridge run after_nic_hotplug vm1 --device 52:54:00:12:34:56",
            "libvirt-bridge run before_vdsm_start",
        ),
        parents=[options.CONNECT],
    )
    parser.add_argument("event", metavar="EVENT", help=f"a VDSM event: {', '.join(EVENTS)}")
    parser.add_argument(
        "domain",
        metavar="DOMAIN",
        nargs="?",
        help="the domain's name, UUID or id (with --xml: any name)",
    )
    parser.add_argument(
        "--xml",
        metavar="FILE",
        help="run on the domain XML in FILE (- for stdin) instead of the domain's current XML",
    )
    parser.add_argument(
        "--device",
        metavar="ID",
        help="for a device event: the device, by its MAC, disk target (vda) or alias",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object (the shape above) instead of the text report",
    )
    parser.set_defaults(func=main)


def note(message: str) -> None:
    sys.stderr.write(f"libvirt-bridge run: {message}\n")


def check_event(event: str) -> str | None:
    """Why ``event`` cannot be run (with the nearest known one), or None."""
    if event in EVENTS:
        return None
    close = difflib.get_close_matches(event, EVENTS, n=1, cutoff=0.6)
    if close:
        return f"unknown event {event!r}; did you mean {close[0]}?"
    return f"unknown event {event!r}; the events are: {', '.join(EVENTS)}"


class _Source:
    """The XML a trial runs on, and the domain it stands for."""

    def __init__(
        self,
        name: str,
        uuid: str,
        xml: bytes,
        origin: str,
        properties: EventProperties | None = None,
    ) -> None:
        self.name = name
        self.uuid = uuid
        self.xml = xml
        self.origin = origin
        # A device event's; None: the domain XML's.
        self.properties = properties


def main(args: argparse.Namespace) -> int:
    reason = check_event(args.event)
    if reason:
        raise UsageError(reason)
    if args.event in DEVICE_EVENTS and not args.device:
        raise UsageError(
            f"{args.event} is a device event: name the device with --device MAC|TARGET|ALIAS"
        )
    if args.device and args.event not in DEVICE_EVENTS:
        raise UsageError(f"--device is for a device event, and {args.event} is none")
    cfg = options.load_config(args)
    source = _source(args, cfg)
    if args.device:
        source = _device_source(source, args.device)
    return trial(cfg, args.event, source, args.json)


def _source(args: argparse.Namespace, cfg: config.Config) -> _Source:
    if args.event in DAEMON_EVENTS:
        if (args.domain not in (None, "-")) or args.xml:
            note(
                f"{args.event} concerns no domain: its scripts get no XML; DOMAIN and --xml "
                "are ignored"
            )
        return _Source("-", "", b"", "none (a daemon event)")
    if not args.domain:
        raise UsageError(
            f"{args.event} needs a DOMAIN (usage: libvirt-bridge run {args.event} DOMAIN "
            "[--xml FILE])",
        )
    if args.xml:
        return _from_file(args.domain, args.xml)
    return _from_libvirt(args.domain, args.connect or cfg.libvirt_uri)


def _from_file(name: str, path: str) -> _Source:
    from .. import domxml

    try:
        if path == "-":
            data = sys.stdin.buffer.read()
            origin = "stdin"
        else:
            with open(path, "rb") as f:
                data = f.read()
            origin = f"the file {path}"
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    try:
        root = domxml.parse(data)
    except domxml.XMLError as exc:
        raise UsageError(f"{origin} is not well-formed XML: {exc}") from None
    if root.tag != "domain":
        raise UsageError(f"{origin} is not a domain XML (its root is <{root.tag}>)")
    uuid = (root.findtext("uuid") or "").strip()
    xml_name = (root.findtext("name") or "").strip()
    if xml_name and xml_name != name:
        note(f"the XML names the domain {xml_name!r}; the trial calls it {name!r}")
    return _Source(name, uuid, data, origin)


def _from_libvirt(ident: str, uri: str) -> _Source:
    import libvirt

    from ..connection import LibvirtFailure, find_domain, message, open_connection

    conn = open_connection(uri, readonly=True)
    try:
        dom = find_domain(conn, ident)
        try:
            xml = dom.XMLDesc(0).encode("utf-8")
            name, uuid = dom.name(), dom.UUIDString()
        except libvirt.libvirtError as exc:
            raise LibvirtFailure(
                f"cannot read the XML of domain {ident!r}: {message(exc)}"
            ) from None
    finally:
        conn.close()
    return _Source(name, uuid, xml, f"the current XML of {name} on {uri}")


def _device_source(domain: _Source, ident: str) -> _Source:
    """What a device event's scripts get of the device ``ident`` of ``domain``."""
    from .. import devices, domxml

    root = domxml.parse(domain.xml, remove_blank_text=True)
    try:
        element = devices.find(root, ident)
    except devices.DeviceError as exc:
        raise BridgeError(f"{exc} ({domain.origin})") from None
    return _Source(
        domain.name,
        domain.uuid,
        devices.event_xml(element),
        f"the <{element.tag}> {ident} of {domain.origin}",
        devices.event_properties(root, element),
    )


class Trial:
    """What a trial found and did: rendered as text, or (``--json``) as one object."""

    def __init__(self, event: str, source: _Source, log_file: str) -> None:
        self.event = event
        self.source = source
        self.log_file = log_file
        self.properties: dict[str, str] = {}
        self.left_out: list[str] = []
        self.notes: list[str] = []
        self.hooks_dirs: list[str] = []
        self.scripts: list[str] = []
        self.results: list[ScriptResult] = []
        self.after = b""
        self.editors: list[str] = []

    @property
    def skipped(self) -> list[str]:
        return self.scripts[len(self.results) :]

    @property
    def failed(self) -> list[str]:
        return [os.path.basename(r.script) for r in self.results if r.failed]


def trial(cfg: config.Config, event: str, source: _Source, as_json: bool = False) -> int:
    done = run_trial(cfg, event, source)
    if as_json:
        print(json.dumps(trial_json(done), indent=2, ensure_ascii=False))
    else:
        print_trial(done)
    return FAILED if done.failed else OK


def run_trial(cfg: config.Config, event: str, source: _Source) -> Trial:
    from .. import domxml, records
    from ..discovery import find_scripts
    from ..events import properties_of
    from ..reporting import Reporter
    from ..runner import (
        EventProperties,
        event_label,
        libvirt_hook_environment,
        run_event,
        script_environment,
    )
    from ..screening import screen

    done = Trial(event, source, cfg.log_file)
    log = _ShowingLog(cfg.log_file, cfg.log_target)
    try:
        properties = source.properties
        if properties is None:
            properties = EventProperties(properties_of(source.xml))
    except domxml.XMLError as exc:  # from libvirt: not expected
        raise BridgeError(f"the domain XML is not well-formed: {exc}") from None
    screened = screen(
        properties.vm, cfg.property_schema, properties.device, properties.device_scope
    )
    done.properties = dict(sorted(screened.accepted.items()))
    done.left_out = [refused.describe() for refused in screened.refused]
    done.hooks_dirs = list(cfg.hooks_dirs)
    done.scripts = find_scripts(cfg.hooks_dirs, event, log)
    done.notes = list(log.shown)
    del log.shown[:]
    if not done.scripts:
        return done
    label = f"{event_label(event, source.name, source.uuid)} [trial]"
    log.info(f"{label}: {TRIAL}; {len(done.scripts)} script(s)")
    env = script_environment(
        properties, source.uuid or None, cfg, log, label, libvirt_hook_environment()
    )
    # Its runs are on record too, marked as a trial (``history``).
    reporter = Reporter(cfg, log, event, source.name, source.uuid, records.TRIAL)
    outcome = run_event(
        done.scripts, source.xml, env, cfg.script_timeout, log, label, reporter=reporter
    )
    done.results = outcome.results
    done.after = outcome.data
    done.editors = [script for script, _, _ in outcome.edits]
    return done


def print_trial(done: Trial) -> None:
    source, event = done.source, done.event
    who = f"domain {source.name}" if source.name != "-" else "the daemon"
    vm_id = f" (vmId {source.uuid})" if source.uuid else ""
    print(f"trial of {event} for {who}{vm_id}: nothing is applied to libvirt")
    print(f"  XML: {source.origin}")
    if event not in DAEMON_EVENTS:
        print("  custom properties (in the scripts' environment):")
        for key, value in done.properties.items():
            print(f"    {key}={value}")
        if not done.properties:
            print("    (none)")
        for refused in done.left_out:
            print(f"  left out: {refused}")
    for message in done.notes:
        print(f"  note: {message}")
    if not done.scripts:
        print(f"no script would run for {event} (hooks roots: {', '.join(done.hooks_dirs)})")
        return
    print()
    for result in done.results:
        _show_result(result)
    for script in done.skipped:
        print(f"{os.path.basename(script)}: not run ({script})")
        print("  a script before it exited 2: later scripts are skipped, as in a real run")
    print()
    _show_xml_change(source, done.after, done.editors)
    print()
    failed, ran = done.failed, len(done.results)
    if failed:
        print(f"result: {len(failed)} of {ran} script(s) failed: {', '.join(failed)}")
    else:
        print(f"result: all {ran} script(s) succeeded")
    print(f"log: {done.log_file} (lines marked [trial])")


def outcome_word(result: ScriptResult) -> str:
    """A script's outcome in the words the hook runs' history uses."""
    if result.error:
        return "could not run"
    if result.timed_out:
        return "timed out"
    return "failed" if result.failed else "ok"


def trial_json(done: Trial) -> dict[str, object]:
    """The ``--json`` object (its shape is in the command's description)."""
    source = done.source
    scripts = [
        {
            "script": result.script,
            "name": os.path.basename(result.script),
            "rc": result.rc,
            "outcome": outcome_word(result),
            "status": result.describe(),
            "duration": round(result.duration, 3),
            "stderr": result.stderr_text(),
            "stdout_size": result.stdout_size,
        }
        for result in done.results
    ]
    changed = bool(done.scripts) and done.after != source.xml
    diff, xml_note = _xml_diff(source, done.after) if changed else ("", None)
    result = "failed" if done.failed else "ok"
    if not done.scripts:
        result = "no script"
    return {
        "event": done.event,
        "domain": None if source.name == "-" else source.name,
        "uuid": source.uuid or None,
        "xml_source": source.origin,
        "properties": done.properties,
        "left_out": done.left_out,
        "notes": done.notes,
        "hooks_dirs": done.hooks_dirs,
        "scripts": scripts,
        "skipped": done.skipped,
        "xml_changed": changed,
        "changed_by": list(dict.fromkeys(os.path.basename(s) for s in done.editors)),
        "diff": diff,
        "xml_note": xml_note,
        "result": result,
        "failed": done.failed,
        "log": done.log_file,
    }


def _show_result(result: ScriptResult) -> None:
    status = result.describe()
    if result.failed:
        status += ", failed"
        if result.rc is not None and result.rc > 2 and not result.error:
            status += " (exit codes above 2 are reserved; treated as 1)"
        if result.rc == 2:
            status += " (2: later scripts are skipped)"
    print(f"{os.path.basename(result.script)}: {status}, {result.duration:.3f}s ({result.script})")
    stderr = result.stderr_text()
    if stderr:
        print("  stderr:")
        for line in stderr.splitlines():
            print(f"  | {line}")
    else:
        print("  stderr: (empty)")
    if result.stdout_size:
        print(f"  stdout: {result.stdout_size} bytes (dropped, as in a real run)")


def _show_xml_change(source: _Source, after: bytes, editors: list[str]) -> None:
    before = source.xml
    if after == before:
        what = "the scripts left the XML unchanged" if before else "the scripts got no XML"
        print(what)
        return
    names = ", ".join(dict.fromkeys(os.path.basename(script) for script in editors))
    print(f"the XML the scripts produced (changed by {names}):")
    diff, xml_note = _xml_diff(source, after)
    if xml_note and xml_note.startswith(_NOT_WELL_FORMED):
        print(f"note: {xml_note}")
        sys.stdout.write(diff)
        return
    sys.stdout.write(diff)
    if xml_note:
        print(f"note: {xml_note}")


_NOT_WELL_FORMED = "the XML the scripts left is not well-formed"
_ONLY_BYTES = "the bytes changed, not the meaning (only a re-serialisation)"


def _xml_diff(source: _Source, after: bytes) -> tuple[str, str | None]:
    """The unified diff of the XML before and after the scripts, and a note on it."""
    from .. import domxml

    before = source.xml
    name = source.name if source.name != "-" else "domain"
    xml_note = None
    try:
        # Both documents as one serialiser writes them: a script that re-serialises the
        # whole document (minidom, hooking) shows only what it changed.
        old, new, how = domxml.normalised(before), domxml.normalised(after), ", normalised"
    except domxml.XMLError as exc:
        xml_note = f"{_NOT_WELL_FORMED}: {exc}"
        old, new, how = before, after, ""
    diff = difflib.unified_diff(
        _lines(old), _lines(new), f"{name}.xml (before{how})", f"{name}.xml (after{how})"
    )
    if how and old == new:
        xml_note = _ONLY_BYTES
    return "".join(diff), xml_note


def _lines(data: bytes) -> list[str]:
    lines = data.decode("utf-8", "replace").splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n\\ No newline at end of file\n"
    return lines


class _ShowingLog(Log):
    """The bridge's log, keeping its warnings and errors to show them too."""

    __slots__ = ("shown",)

    def __init__(self, path: str, target: str) -> None:
        super().__init__(path, target)
        self.shown: list[str] = []

    def line(self, level: str, message: str, fields: dict[str, str] | None = None) -> None:
        super().line(level, message, fields)
        if level != "INFO":
            self.shown.append(message)
