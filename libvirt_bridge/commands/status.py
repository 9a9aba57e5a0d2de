"""``libvirt-bridge status``: is the bridge installed and picked up, and what is wrong."""

from __future__ import annotations

import argparse
import difflib
import json
import os
import shlex

from .. import (
    cockpit,
    confinement,
    daemons,
    discovery,
    installation,
    launcher,
    logrotate,
    mapping,
    service,
)
from ..config import Config, ConfigError, UnsafeFileError, dropin_files
from ..errors import UsageError
from ..hook import is_launcher
from ..installation import KNOWN_EVENTS
from . import options
from .options import AddParser

# Enough of a script to see its #! line and most CRLF damage.
_HEAD = 65536


class Report:
    """What is fine, notes, and each problem with its fix; counts the problems.

    Printed as it goes, or (``as_json``) kept for one JSON document at the end, the shape
    ``--json`` documents: {"ok", "problems", "checks": [{"level", "message", "fix"}],
    "listener": {"state", "pid", "detail"}, "cockpit_page"}.
    """

    def __init__(self, as_json: bool = False) -> None:
        self.problems = 0
        self.as_json = as_json
        self.checks: list[dict[str, str | None]] = []
        # The listener's state as check_listener found it: the page shows it on its own.
        self.listener: dict[str, object] = {"state": "unknown", "pid": None, "detail": ""}
        self.cockpit_page: str | None = None

    def _add(self, level: str, message: str, fix: str | None = None) -> None:
        self.checks.append({"level": level, "message": message, "fix": fix})
        if self.as_json:
            return
        if level == "problem":
            print(f"PROBLEM: {message}\n  fix: {fix}")
        else:
            print(f"{level}: {message}")

    def ok(self, message: str) -> None:
        self._add("ok", message)

    def info(self, message: str) -> None:
        self._add("note", message)

    def problem(self, message: str, fix: str) -> None:
        self.problems += 1
        self._add("problem", message, fix)

    def set_listener(self, state: str, pid: int | None = None, detail: str = "") -> None:
        self.listener = {"state": state, "pid": pid, "detail": detail}

    def to_json(self) -> str:
        document = {
            "ok": self.problems == 0,
            "problems": self.problems,
            "checks": self.checks,
            "listener": self.listener,
            "cockpit_page": self.cockpit_page,
        }
        return json.dumps(document, indent=2, ensure_ascii=False)


def add_parser(add: AddParser) -> None:
    parser = options.add_command(
        add,
        "status",
        summary="check the installation and the hook scripts; list each problem with its fix",
        description=(
            "Check that the launchers are installed in CONFDIR/hooks (and which earlier hooks "
            "they run first, and that none of those is itself a libvirt-bridge launcher), that "
            "the running libvirtd/virtqemud using CONFDIR has picked "
            "them up, that the config and hooks roots are readable and root's, and that every "
            "script would run: executable, owned by root and not writable by others, in "
            "directories only root may change, with a #! line and no CRLF line ends, in a "
            "directory named after a known event; whether a property schema is in force "
            "(libvirt-bridge check-props lists what the domains carry that scripts never "
            "get); that the state dir is root's; that SELinux, "
            "where it enforces, lets hooks run unconfined (virt_hooks_unconfined), and that "
            "something rotates a large log, and whether Cockpit's Hooks page is "
            "installed where Cockpit is. Each problem "
            "is printed with its fix. --json prints one object instead: "
            '{"ok": BOOL, "problems": N, "checks": [{"level": "ok"|"note"|"problem", '
            '"message": TEXT, "fix": TEXT|null}], "listener": {"state": "connected"|"not '
            'connected"|"not running"|"not installed"|"unknown", "pid": N|null, "detail": '
            'TEXT}, "cockpit_page": "packaged"|"installed"|"broken"|"foreign"|null}. '
            "Exit status: 0 when all is well, 1 when there is a problem, 2 when CONFDIR does "
            "not exist."
        ),
        epilog=options.examples(
            "sudo libvirt-bridge status",
            "sudo libvirt-bridge status --confdir /srv/lab/etc/libvirt "
            "--config /srv/lab/bridge.toml",
        ),
        parents=[options.LOGROTATE_DIR, options.COCKPIT_DIR],
        # Its --help has always split a hyphenated name at the end of a line.
        break_on_hyphens=True,
    )
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object (the shape above) instead"
    )
    # Where the kernel shows SELinux; another root only for tests.
    parser.add_argument("--selinuxfs", default=confinement.SELINUXFS, help=argparse.SUPPRESS)
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    confdir = os.path.abspath(options.confdir(args))
    config_path = options.config_path(args)
    try:
        installation.check_confdir(confdir)
    except installation.InstallError as exc:
        raise UsageError(str(exc)) from None
    report = Report(args.json)
    install = f"libvirt-bridge install --confdir {shlex.quote(confdir)} --config " + shlex.quote(
        config_path
    )
    cfg = check_config(report, config_path)
    launchers = check_launchers(report, confdir, config_path, install)
    if cfg is not None:
        check_property_schema(report, cfg)
        check_state_dir(report, cfg)
        check_daemons(report, confdir, cfg, launchers)
        confined = confinement.apparmor_confines_libvirt()
        for root in cfg.hooks_dirs:
            check_hooks_root(report, confdir, root, config_path, confined, install)
        check_log_rotation(report, cfg, args.logrotate_dir, install)
    check_selinux(report, args.selinuxfs)
    check_listener(report, cfg, config_path)
    check_cockpit_page(report, args.cockpit_dir, install)
    if args.json:
        print(report.to_json())
    elif report.problems:
        print(f"{report.problems} problem(s)")
    else:
        print("all is well")
    return 1 if report.problems else 0


def check_cockpit_page(report: Report, cockpit_dir: str, install: str) -> None:
    """Where Cockpit is installed, is its Hooks page? Never a problem without Cockpit."""
    if not os.path.isdir(cockpit_dir):
        return
    found, where = None, cockpit.destination(cockpit_dir)
    for directory in cockpit.package_dirs(cockpit_dir):
        found = cockpit.installed_page(directory)
        if found is not None:
            where = cockpit.destination(directory)
            break
    report.cockpit_page = found
    if found in ("packaged", "installed"):
        report.ok(f"Cockpit's Hooks page is installed ({where})")
    elif found == "broken":
        report.problem(f"Cockpit's Hooks page {where} names files that are gone", install)
    elif found == "foreign":
        report.info(f"{where} is not libvirt-bridge's Hooks page; install leaves it alone")
    else:
        report.info(f"Cockpit is installed and its Hooks page is not: {install} adds it")


def check_config(report: Report, path: str) -> Config | None:
    if not os.path.lexists(path):
        report.info(f"config {path} does not exist: the defaults apply")
    try:
        cfg = installation.read_config(path)
    except ConfigError as exc:
        fix = (
            exc.fix
            if isinstance(exc, UnsafeFileError)
            else f"fix {path} (the message names the key)"
        )
        report.problem(
            f"{exc}; every event that can veto refuses its libvirt operation",
            f"{fix}; the hooks roots are not checked until then",
        )
        return None
    if os.path.lexists(path):
        report.ok(f"config {path} is valid")
    return cfg


def check_property_schema(report: Report, cfg: Config) -> None:
    """Is a property schema in force, and what does it declare?"""
    try:
        files = dropin_files(cfg.properties_dir)
    except ConfigError as exc:
        report.problem(str(exc), f"check {shlex.quote(cfg.properties_dir)}")
        return
    where = f"[properties] in {cfg.path}"
    if files:
        where += f" and {len(files)} file(s) in {cfg.properties_dir}"
    if cfg.declared_properties is None:
        unread = (
            f"; the {len(files)} file(s) in {cfg.properties_dir} count once it has one"
            if files
            else ""
        )
        report.info(
            "no property schema is in force: every custom property reaches the scripts, "
            "except those whose names are not plain or change how a program runs "
            f"(docs/security.md); declare one with [properties] in {cfg.path}{unread}"
        )
        return
    declared = "; ".join(
        f"{scope}: {', '.join(sorted(names)) or '(none)'}"
        for scope, names in sorted(cfg.declared_properties.items())
    )
    report.ok(
        f"a property schema is in force ({where}): {declared or 'nothing declared'}; "
        "libvirt-bridge check-props lists what the domains carry that it refuses"
    )


def check_state_dir(report: Report, cfg: Config) -> None:
    """The state dir holds the queued events and the markers: root's only."""
    if not os.path.isdir(cfg.state_dir):
        return
    problem = discovery.path_problem(cfg.state_dir, inside=True)
    if problem is not None:
        report.problem(
            f"state dir {cfg.state_dir}: {problem.describe()}, so another user may queue "
            "events or change the bridge's records of the domains",
            root_fix(problem),
        )


def root_fix(problem: discovery.PathProblem) -> str:
    """The command that makes what ``problem`` names root's again."""
    where = shlex.quote(problem.where)
    if problem.symlink:
        return f"rm {where}  (a symlink another user placed; make it again as root if it is meant)"
    if problem.why.startswith("owned"):
        return f"chown root {where}"
    if problem.why.startswith("not readable"):
        return f"check {where}"
    return f"chmod go-w {where}  (or chmod +t {where}, if others must add files there)"


def check_launchers(report: Report, confdir: str, config_path: str, install: str) -> list[str]:
    """Check both launchers; the paths of those that are ours."""
    ours: list[str] = []
    for driver in launcher.DRIVERS:
        path = installation.launcher_path(confdir, driver)
        legacy = path + installation.LEGACY_SUFFIX
        if installation.kept_launcher(path):
            report.problem(
                f"{legacy} is a libvirt-bridge launcher kept as the earlier hook: run first, it "
                "would run the bridge again (every script twice, or without end), so the "
                "launcher skips it",
                f"{install} (it removes it, or puts back the foreign hook it ran first)",
            )
        if not os.path.lexists(path):
            report.problem(f"{path} is not installed", install)
            continue
        if not is_launcher(path):
            report.problem(
                f"{path} is not a libvirt-bridge launcher (a foreign hook, or unreadable)",
                f"{install} (it keeps a foreign hook as {legacy} and runs it first)",
            )
            continue
        ours.append(path)
        if check_launcher(report, path, config_path, install):
            expected = installation.expected_legacy(path)
            first = f"; it runs the earlier hook {expected} first" if expected else ""
            report.ok(f"{path} is the libvirt-bridge launcher{first}")
        if os.path.lexists(legacy) and not installation.runnable(legacy):
            report.info(f"{legacy} is kept but not run: it is not executable (nor was it before)")
    return ours


def check_launcher(report: Report, path: str, config_path: str, install: str) -> bool:
    """Whether our launcher at ``path`` can run as it should; report each problem."""
    call = installation.launcher_call(path)
    if call is None:
        report.problem(f"{path} is damaged: its interpreter or arguments cannot be read", install)
        return False
    problems = report.problems
    if not installation.runnable(path):
        report.problem(f"{path} is not executable, so libvirt does not run it", install)
    if not installation.runnable(call.interpreter):
        report.problem(
            f"{path} names the interpreter {call.interpreter}, which is gone: every hook call "
            "fails",
            f"{install} (from the libvirt-bridge you mean to use)",
        )
    if call.config_path != config_path:
        report.problem(
            f"{path} reads the config {call.config_path}, not {config_path}",
            f"{install}, or check that config: libvirt-bridge status --config "
            + shlex.quote(call.config_path),
        )
    expected = installation.expected_legacy(path)
    if installation.kept_launcher(path):
        pass  # reported with its fix by check_launchers
    elif call.legacy != expected and (call.legacy or expected):
        if expected:
            what = f"does not run the earlier hook {expected}"
        else:
            what = f"names the earlier hook {call.legacy}, which is gone or not executable"
        report.problem(f"{path} {what}", install)
    return report.problems == problems


def check_daemons(report: Report, confdir: str, cfg: Config, launchers: list[str]) -> None:
    running = daemons.daemons_using(confdir)
    if not running:
        report.info(daemons.no_daemon_message(confdir))
        return
    for daemon in running:
        who = f"{daemon.name} (pid {daemon.pid})"
        if not launchers:
            report.info(f"{who} uses {confdir}")
        elif daemons.picked_up(daemon, cfg.state_dir, launchers):
            report.ok(f"{who} has looked for hooks since the launchers were written")
        else:
            report.problem(
                f"{who} has not looked for hooks since the launchers were written (libvirt "
                "does so only at start and on SIGHUP), so it may not run them",
                f"kill -HUP {daemon.pid}",
            )


def check_hooks_root(
    report: Report, confdir: str, root: str, config_path: str, confined: bool, install: str
) -> None:
    host = installation.host_path(root, confdir)
    shown = host if host == os.path.normpath(root) else f"{host} (the daemon's {root})"
    if not os.path.isdir(host):
        report.problem(f"hooks root {shown} does not exist", install)
        return
    if not os.access(host, os.R_OK | os.X_OK):
        report.problem(f"hooks root {shown} cannot be read", f"chmod 755 {shlex.quote(host)}")
        return
    if confined and confinement.outside_apparmor_dir(root):
        report.problem(confinement.apparmor_risk(root), confinement.apparmor_fix(root, config_path))
    unsafe = discovery.directory_problem(host)
    if unsafe is not None:
        report.problem(
            f"hooks root {shown}: {unsafe.describe()}, so none of its scripts runs (they "
            "run as root)",
            root_fix(unsafe),
        )
        return
    problems = report.problems
    for entry in _entries(report, host):
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        if entry.name in KNOWN_EVENTS:
            check_event_dir(report, entry.path)
        elif entry.name in mapping.VDSM_ONLY_EVENTS:
            why = mapping.VDSM_ONLY_EVENTS[entry.name]
            report.info(f"{entry.path}: the bridge does not fire {entry.name} ({why})")
        else:
            report.problem(
                f"{entry.path} is not named after a VDSM event, so its scripts never run",
                _rename_fix(entry.path),
            )
    if report.problems == problems:
        report.ok(f"hooks root {shown}: every script would run")


def _rename_fix(path: str) -> str:
    name = os.path.basename(path)
    close = difflib.get_close_matches(name, KNOWN_EVENTS, n=1, cutoff=0.6)
    if close:
        target = os.path.join(os.path.dirname(path), close[0])
        return f"mv {shlex.quote(path)} {shlex.quote(target)}  (the nearest event: {close[0]})"
    return f"rename it to an event ({', '.join(mapping.EVENTS)}) or remove it"


def _entries(report: Report, directory: str) -> list[os.DirEntry[str]]:
    try:
        return sorted(os.scandir(directory), key=lambda e: e.name)
    except OSError as exc:
        report.problem(f"{directory} cannot be listed: {exc.strerror}", f"check {directory}")
        return []


# What status says of each reason the hook does not run a script (discovery's rules), and
# the fix; ``{path}`` is the script's, quoted for a shell.
_NOT_RUN: dict[str, tuple[str, str]] = {
    discovery.DANGLING: ("is a dangling symlink", "rm {path}, or fix its target"),
    discovery.CANNOT_STAT: ("cannot be read ({reason})", "check {path}"),
    discovery.NOT_EXECUTABLE: ("is not executable, so it does not run", "chmod +x {path}"),
    discovery.FOREIGN_OWNER: ("is {reason}", "chown root {path}"),
    discovery.WRITABLE: ("is {reason}", "chmod go-w {path}"),
}


def check_event_dir(report: Report, directory: str) -> None:
    unsafe = discovery.directory_problem(directory)
    if unsafe is not None:
        report.problem(
            f"{directory}: {unsafe.describe()}, so none of its scripts runs (they run as root)",
            root_fix(unsafe),
        )
        return
    for entry in _entries(report, directory):
        if entry.name.startswith("."):
            continue
        path = entry.path
        problem = discovery.why_not_run(path)
        if problem is not None and problem[0] == discovery.UNSAFE_PATH:
            found = discovery.path_problem(path)
            fix = root_fix(found) if found is not None else f"check {shlex.quote(path)}"
            report.problem(f"{path} is {problem[1]}", fix)
        elif problem is not None and problem[0] in _NOT_RUN:
            what, fix = _NOT_RUN[problem[0]]
            report.problem(
                f"{path} {what.format(reason=problem[1])}", fix.format(path=shlex.quote(path))
            )
        if problem is None or problem[0] in (
            discovery.FOREIGN_OWNER,
            discovery.WRITABLE,
            discovery.UNSAFE_PATH,
        ):
            check_script_text(report, path)


def check_script_text(report: Report, path: str) -> None:
    quoted = shlex.quote(path)
    try:
        with open(path, "rb") as f:
            head = f.read(_HEAD)
    except OSError as exc:
        report.problem(f"{path} cannot be read: {exc.strerror}", f"check {quoted}")
        return
    if head.startswith(b"\x7fELF"):
        return
    if not head.startswith(b"#!"):
        report.problem(
            f"{path} has no #! line, so it cannot be executed",
            f"make its first line name its interpreter, e.g. #!/bin/sh, in {quoted}",
        )
    elif b"\r\n" in head:
        report.problem(
            f"{path} has CRLF (Windows) line ends: the interpreter named by its #! line "
            "ends with a carriage return and is not found",
            f"sed -i 's/\\r$//' {quoted}",
        )


NO_LISTENER = (
    "no listener: the bridge was installed without one (install --no-listener), so "
    f"{mapping.listener_events_text()} do not fire; `libvirt-bridge install` adds it"
)


def check_listener(report: Report, cfg: Config | None, config_path: str) -> None:
    """Is the listener running, and connected to libvirt_uri?"""
    if cfg is None:
        return
    start = "libvirt-bridge install  (or: libvirt-bridge listen --background --pidfile " + (
        f"{shlex.quote(service.pidfile(cfg.state_dir))})"
    )
    why = f"the log {cfg.log_file} says why"
    without = os.path.lexists(service.no_listener_marker(config_path))
    if service.runs_as_unit():
        result = service.systemctl("is-active", service.UNIT_NAME)
        if result.stdout.strip() != "active" and without:
            report.set_listener("not installed", detail=NO_LISTENER)
            report.info(NO_LISTENER)
            return
        if result.stdout.strip() != "active":
            report.set_listener("not running", detail=result.stdout.strip() or "not active")
            report.problem(
                f"the listener ({service.UNIT_NAME}) is {result.stdout.strip() or 'not active'}:"
                f" {mapping.listener_events_text()} do not fire",
                f"systemctl enable --now {service.UNIT_NAME}; journalctl -u {service.UNIT_NAME}",
            )
            return
        pid = service.main_pid()
        report.ok(f"the listener ({service.UNIT_NAME}) is active (pid {pid})")
        why = f"journalctl -u {service.UNIT_NAME} says why"
    else:
        pid = service.running_pid(cfg.state_dir)
        if pid is None and without:
            report.set_listener("not installed", detail=NO_LISTENER)
            report.info(NO_LISTENER)
            return
        if pid is None:
            report.set_listener("not running")
            report.problem(
                f"the listener is not running: {mapping.listener_events_text()} do not fire",
                start,
            )
            return
        report.ok(f"the listener runs (pid {pid})")
    state = service.read_status(cfg.state_dir) or ""
    # A status file outlives its listener: only the running one's says anything.
    written_by = service.status_pid(state)
    if written_by != pid:
        report.set_listener("not connected", pid, "it has not said whether it is connected")
        earlier = (
            f"; {service.status_file(cfg.state_dir)} is an earlier listener's"
            if (written_by)
            else ""
        )
        report.problem(
            f"the listener (pid {pid}) has not said whether it is connected to "
            f"{cfg.libvirt_uri}{earlier}",
            f"wait a moment and run status again; if it stays so, {why}",
        )
    elif state.startswith("connected"):
        report.set_listener("connected", pid, state)
        report.ok(f"the listener is {state}")
    else:
        report.set_listener("not connected", pid, state)
        report.problem(
            f"the listener is not connected to {cfg.libvirt_uri} ({state})",
            f"check that libvirtd or virtqemud runs; {why}",
        )


def check_log_rotation(report: Report, cfg: Config, entry_dir: str, install: str) -> None:
    entry = logrotate.rotates(cfg.log_file, entry_dir)
    if entry is not None:
        report.ok(f"logrotate rotates the log {cfg.log_file} ({entry})")
        return
    try:
        size = os.path.getsize(cfg.log_file)
    except OSError:
        return
    if size > logrotate.LARGE_LOG:
        report.info(
            f"the log {cfg.log_file} is {size // (1024 * 1024)} MiB and no entry in "
            f"{entry_dir} rotates it; {install} writes one (with logrotate installed)"
        )


def check_selinux(report: Report, selinuxfs: str) -> None:
    """Since Fedora 40 the policy confines hooks unless virt_hooks_unconfined is on."""
    if not confinement.enforcing(selinuxfs):
        return
    unconfined = confinement.boolean(confinement.HOOKS_UNCONFINED, selinuxfs)
    if unconfined is None:
        report.info(
            f"SELinux enforces; its policy has no {confinement.HOOKS_UNCONFINED} boolean, so "
            "hooks run in libvirt's own domain"
        )
    elif unconfined:
        report.ok(
            f"SELinux enforces, and {confinement.HOOKS_UNCONFINED} is on: hooks run unconfined"
        )
    else:
        report.problem(
            f"SELinux enforces and {confinement.HOOKS_UNCONFINED} is off: the policy confines "
            "libvirt's hooks, so scripts fail to read, write or run what they need, in ways "
            "that look like bugs in them",
            f"setsebool -P {confinement.HOOKS_UNCONFINED} on",
        )
