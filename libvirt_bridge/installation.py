"""Installing the launchers into libvirt's hooks directory, and what ``install``,
``uninstall``, ``status`` and ``list`` share.

A *confdir* is what a libvirt daemon sees as ``/etc/libvirt``: the host's own, or a
sandbox's directory bind-mounted there in a private mount namespace. So paths under
``/etc/libvirt`` in the config are taken under the confdir (:func:`host_path`), and the
daemons that use a confdir are found through ``/proc/PID/root``, which resolves paths in each
process's own mount namespace: a sandboxed daemon is matched by its sandbox's confdir, and
the host's daemons are not.

Install and uninstall first build a :class:`Plan` (every check done, nothing changed), so a
refusal changes nothing and ``--dry-run`` prints exactly what a real run does.
"""

from __future__ import annotations

import hashlib
import os
import stat
import sys
from collections.abc import Callable
from functools import partial
from importlib import resources

from . import config as configmod
from . import fastpath, launcher, logrotate, mapping, service
from .config import Config, ConfigError
from .confinement import (
    apparmor_confines_libvirt,
    apparmor_fix,
    apparmor_risk,
    outside_apparmor_dir,
)
from .daemons import Daemon, daemons_using, no_daemon_message, picked_up, send_sighup
from .discovery import find_scripts
from .errors import BridgeError
from .files import temp_path, write_atomic
from .hook import is_launcher
from .log import Log

LEGACY_SUFFIX = ".legacy"
DEFAULT_CONFIG_ASSET = "libvirt-bridge.toml"

# The VDSM VM events that libvirt has no hook call for (pause, continue, the start of an
# outgoing migration, the end of an incoming one, the start of a save): the hook never
# fires them; the listener or the CLI wrappers do, so some are in mapping.EVENTS too. A
# directory with one of these names is not a typo.
KNOWN_EVENTS: tuple[str, ...] = mapping.EVENTS


class InstallError(BridgeError):
    """Install or uninstall refused or failed; the message says why and what to do."""


# -- config, paths ------------------------------------------------------------------------


def read_config(path: str) -> Config:
    """The config at ``path`` (defaults when missing), without writing the parse cache."""
    if not os.path.lexists(path):
        return Config(configmod.seen_from_here(configmod.DEFAULTS), path)
    if not os.path.exists(path):
        raise ConfigError(f"cannot read config {path}: it is a dangling symlink")
    return configmod.read(path)


def default_config_text() -> str:
    return resources.files("libvirt_bridge.assets").joinpath(DEFAULT_CONFIG_ASSET).read_text()


def host_path(path: str, confdir: str) -> str:
    """Where ``path``, as a daemon using ``confdir`` sees it, is for this process."""
    return configmod.host_path(os.path.normpath(path), os.path.abspath(confdir))


def check_confdir(confdir: str) -> None:
    if not os.path.isdir(confdir):
        what = "is not a directory" if os.path.lexists(confdir) else "does not exist"
        raise InstallError(
            f"confdir {confdir} {what}; is libvirt installed (apt-get install "
            "libvirt-daemon-system)? Give libvirt's configuration directory with --confdir"
        )


def launcher_path(confdir: str, driver: str) -> str:
    return os.path.join(confdir, "hooks", driver)


def runnable(path: str) -> bool:
    """Whether libvirt would execute ``path`` (a regular file with an execute bit)."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and bool(st.st_mode & 0o111)


def expected_legacy(path: str) -> str:
    """The legacy argument the launcher at ``path`` should carry.

    A kept hook that is not executable never ran under libvirt either, and the launcher
    would fail every call trying to run it, so it is kept but not run. A launcher of ours
    kept there is never run (see :func:`kept_launcher`).
    """
    legacy = path + LEGACY_SUFFIX
    return legacy if runnable(legacy) and not is_launcher(legacy) else ""


def kept_launcher(path: str) -> bool:
    """Whether a launcher of ours is kept as the earlier hook of ``path``.

    A configuration tool's backup step, a hand copy or a half-finished reinstall puts it
    there; run as the earlier hook it would run the bridge a second time per call.
    """
    legacy = path + LEGACY_SUFFIX
    return os.path.lexists(legacy) and is_launcher(legacy)


def earlier_of_kept_launcher(path: str) -> str:
    """The foreign hook that the launcher kept as ``path``'s earlier hook runs first, or "".

    When that launcher goes, this hook takes its place, so nothing the host ran is lost.
    """
    legacy = path + LEGACY_SUFFIX
    call = launcher_call(legacy)
    if call is None or not call.legacy:
        return ""
    earlier = os.path.normpath(call.legacy)
    if earlier in (os.path.normpath(path), os.path.normpath(legacy)):
        return ""
    if not os.path.lexists(earlier) or is_launcher(earlier) or os.path.isdir(earlier):
        return ""
    return earlier


LauncherCall = launcher.LauncherCall


def launcher_call(path: str) -> LauncherCall | None:
    """What our launcher at ``path`` runs: its interpreter, config file and legacy hook."""
    try:
        with open(path) as f:
            return launcher.read_call(f.read())
    except (OSError, UnicodeDecodeError):
        return None


def launchers_installed(confdir: str) -> bool:
    """Whether a launcher of this project is in ``confdir``'s hooks directory."""
    return any(is_launcher(launcher_path(confdir, driver)) for driver in launcher.DRIVERS)


def launchers_config(confdir: str) -> str | None:
    """The config file the launchers installed in ``confdir`` read, or None without one."""
    for driver in launcher.DRIVERS:
        path = launcher_path(confdir, driver)
        call = launcher_call(path) if is_launcher(path) else None
        if call is not None and call.config_path:
            return call.config_path
    return None


# -- the plan -------------------------------------------------------------------------------


class Plan:
    """What install or uninstall does: actions with their message, and notes, in order."""

    def __init__(self, command: str) -> None:
        self.command = command
        self.items: list[tuple[str, Callable[[], object] | None]] = []
        self.warnings: list[str] = []

    def do(self, message: str, action: Callable[[], object]) -> None:
        self.items.append((message, action))

    def note(self, message: str) -> None:
        self.items.append((message, None))

    def changes(self) -> int:
        return sum(1 for _, action in self.items if action is not None)

    def execute(self, dry_run: bool, out: Callable[[str], None] = print) -> None:
        """Print one line per thing done (with ``dry_run``: that would be done)."""
        for message, action in self.items:
            if action is None:
                out(message)
            elif dry_run:
                out("\n".join(f"[dry run] {line}" for line in message.splitlines()))
            else:
                try:
                    action()
                except OSError as exc:
                    hint = " (run it as root)" if isinstance(exc, PermissionError) else ""
                    raise InstallError(
                        f"{exc.filename or ''}: {exc.strerror}{hint}; the lines above were "
                        f"done, and running {self.command} again finishes the job"
                    ) from None
                out(message)
        for warning in self.warnings:
            sys.stderr.write(f"warning: {warning}\n")
        if dry_run:
            out(f"dry run: nothing was changed ({self.changes()} change(s) planned)")


def plan_install(
    confdir: str,
    config_path: str,
    listener: bool = True,
    logrotate_dir: str = logrotate.ENTRY_DIR,
    record_listener_choice: bool = True,
) -> Plan:
    """Everything install does; raise InstallError (having changed nothing) to refuse.

    ``record_listener_choice``: whether ``listener`` is the admin's choice, to remember
    (not an upgrade's ``--if-installed --no-listener``, which keeps the listener as it is).
    """
    confdir = os.path.abspath(confdir)
    check_confdir(confdir)
    plan = Plan("install")
    cfg = _plan_config(plan, config_path)
    hooks = os.path.join(confdir, "hooks")
    if not os.path.isdir(hooks):
        if os.path.lexists(hooks):
            raise InstallError(f"{hooks} exists and is not a directory; move it away")
        plan.do(f"created {hooks}", partial(os.makedirs, hooks, 0o755))
    changed = False
    for driver in launcher.DRIVERS:
        changed |= _plan_launcher(plan, confdir, driver, config_path)
    _plan_fastpath(plan, config_path)
    for root in cfg.hooks_dirs:
        _plan_hooks_root(plan, confdir, root)
    if apparmor_confines_libvirt():
        for root in cfg.hooks_dirs:
            if outside_apparmor_dir(root):
                plan.warnings.append(f"{apparmor_risk(root)}; {apparmor_fix(root, config_path)}")
    plan_logrotate_install(plan, cfg, logrotate_dir)
    if record_listener_choice:
        _plan_listener_choice(plan, config_path, listener)
    if listener:
        plan_listener_install(plan, cfg, config_path)
    elif service.runs_as_unit() and service.packaged_unit() and _unit_in_use():
        # An upgrade (install --if-installed --no-listener) replaces an earlier copy of
        # the unit; the package's postinst restarts the listener.
        plan_unit_files(plan, config_path)
    launchers = [launcher_path(confdir, d) for d in launcher.DRIVERS]
    _plan_sighup(plan, confdir, lambda d: changed or not picked_up(d, cfg.state_dir, launchers))
    return plan


def plan_uninstall(
    confdir: str, config_path: str, logrotate_dir: str = logrotate.ENTRY_DIR
) -> Plan:
    """Everything uninstall does: our launchers go, the kept hooks come back."""
    confdir = os.path.abspath(confdir)
    check_confdir(confdir)
    plan = Plan("uninstall")
    changed = False
    for driver in launcher.DRIVERS:
        path = launcher_path(confdir, driver)
        legacy = path + LEGACY_SUFFIX
        ours = os.path.lexists(path) and is_launcher(path)
        if kept_launcher(path):
            changed |= _plan_uninstall_kept_launcher(plan, path, ours)
            continue
        if os.path.lexists(path) and not ours:
            plan.note(f"left {path} alone: it is not a libvirt-bridge launcher")
            if os.path.lexists(legacy):
                plan.note(f"left {legacy} alone: restoring it would overwrite {path}")
            continue
        if os.path.lexists(legacy):
            removed = f"removed {path}\n" if ours else ""
            # One rename replaces the launcher, so libvirt never finds no hook between the two.
            plan.do(
                f"{removed}restored the earlier hook {path} from {legacy}",
                partial(os.replace, legacy, path),
            )
        elif ours:
            plan.do(f"removed {path}", partial(os.unlink, path))
        else:
            plan.note(f"not installed: {path}")
            continue
        changed = True
    try:
        roots = [host_path(r, confdir) for r in read_config(config_path).hooks_dirs]
    except ConfigError:
        roots = []
    fast = fastpath.fastpath_path(config_path)
    if os.path.lexists(fast):
        plan.do(f"removed {fast}", partial(fastpath.remove, config_path))
    kept = f"the hooks roots ({', '.join(roots)}) and their scripts, " if roots else ""
    plan.note(f"left alone: {kept}the config {config_path}; remove them by hand if unneeded")
    plan_logrotate_uninstall(plan, config_path, logrotate_dir)
    plan_listener_uninstall(plan, config_path)
    marker = service.no_listener_marker(config_path)
    if os.path.lexists(marker):
        plan.do(f"removed {marker}", partial(os.unlink, marker))
    _plan_sighup(plan, confdir, lambda d: changed)
    return plan


def _plan_uninstall_kept_launcher(plan: Plan, path: str, ours: bool) -> bool:
    """Uninstall where a launcher of ours is kept as ``.legacy``: it is never restored.

    The foreign hook it ran first, if any, is what comes back. Whether ``path`` changes.
    """
    legacy = path + LEGACY_SUFFIX
    why = "a libvirt-bridge launcher, not an earlier hook"
    earlier = earlier_of_kept_launcher(path)
    plan.do(f"removed {legacy}: {why}", partial(os.unlink, legacy))
    if os.path.lexists(path) and not ours:
        plan.note(f"left {path} alone: it is not a libvirt-bridge launcher")
        return False
    if earlier:
        removed = f"removed {path}\n" if ours else ""
        plan.do(
            f"{removed}restored the earlier hook {path} from {earlier} (the hook {legacy} ran)",
            partial(os.replace, earlier, path),
        )
        return True
    if ours:
        plan.do(f"removed {path}", partial(os.unlink, path))
        return True
    return False


def plan_logrotate_install(plan: Plan, cfg: Config, entry_dir: str) -> None:
    """The logrotate entry for the log, where logrotate is installed."""
    if not os.path.isdir(entry_dir):
        plan.note(
            f"no {entry_dir} (logrotate is not installed): nothing rotates {cfg.log_file}; "
            "install logrotate, then run install again"
        )
        return
    path = logrotate.entry_path(cfg.log_file, entry_dir)
    try:
        text = logrotate.render(cfg.log_file)
    except logrotate.EntryError as exc:
        plan.warnings.append(f"{exc}: no logrotate entry written, so nothing rotates the log")
        return
    if logrotate.is_packaged(path):
        plan.note(f"up to date: {path} (shipped by the libvirt-bridge package)")
    elif os.path.lexists(path) and not logrotate.is_ours(path):
        plan.note(f"left {path} alone: it was not written by libvirt-bridge")
    elif _is_current(path, text, mode=0o644):
        plan.note(f"up to date: {path}")
    else:
        why = f"logrotate rotates {cfg.log_file} by renaming it, which loses no line"
        plan.do(f"wrote {path} ({why})", partial(_write_text, path, text))


def plan_logrotate_uninstall(plan: Plan, config_path: str, entry_dir: str) -> None:
    try:
        log_file = read_config(config_path).log_file
    except ConfigError:
        return
    path = logrotate.entry_path(log_file, entry_dir)
    if os.path.lexists(path) and logrotate.is_ours(path):
        plan.do(f"removed {path}", partial(os.unlink, path))


def plan_listener_install(plan: Plan, cfg: Config, config_path: str) -> None:
    """Install and start the listener: a systemd unit, else a background process."""
    if service.runs_as_unit():
        changed = plan_unit_files(plan, config_path)
        # A changed unit applies at the next start; one that runs now must restart for it.
        # With Type=notify, both return once the listener is connected.
        start = ("restart",) if changed else ("start",)
        plan.do(
            f"enabled and {start[0]}ed {service.UNIT_NAME} (ready once connected to libvirt)",
            partial(_systemctl_checked, ("enable", service.UNIT_NAME), (*start, service.UNIT_NAME)),
        )
        return
    pid = service.running_pid(cfg.state_dir)
    if pid:
        plan.note(f"the listener runs already (pid {pid}, {service.pidfile(cfg.state_dir)})")
        return
    plan.do(
        "started the listener in the background (no systemd here; pid file "
        f"{service.pidfile(cfg.state_dir)})",
        partial(_start_listener, config_path, cfg.state_dir),
    )


def _plan_listener_choice(plan: Plan, config_path: str, listener: bool) -> None:
    marker = service.no_listener_marker(config_path)
    if listener and os.path.lexists(marker):
        plan.do(f"removed {marker} (the listener is installed again)", partial(os.unlink, marker))
    elif not listener and not os.path.lexists(marker):
        text = "libvirt-bridge install --no-listener: this host runs no listener\n"
        plan.do(
            f"wrote {marker} (status takes the missing listener for this choice)",
            partial(_write_text, marker, text),
        )


def plan_unit_files(plan: Plan, config_path: str) -> bool:
    """The listener's unit files for this installation; whether any changes.

    From the Debian package, the unit is the package's: an earlier install's copy in
    /etc/systemd/system, which would hide it (and every fix an upgrade brings to it), goes,
    and only a config other than the default gets a drop-in. From a venv, install writes
    the whole unit, naming the venv's ``libvirt-bridge``.
    """
    copy = os.path.join(service.UNIT_DIR, service.UNIT_NAME)
    packaged = service.packaged_unit()
    if packaged is None:
        text = service.render_unit(config_path)
        if _is_current(copy, text, mode=0o644):
            return False
        plan.do(f"installed {copy}", partial(_write_text, copy, text))
        return True
    changed = False
    if os.path.lexists(copy):
        if service.is_ours(copy):
            plan.do(
                f"removed {copy}, an earlier install's copy of the unit that hid the "
                f"package's {packaged}",
                partial(_remove_unit_copy, copy),
            )
            changed = True
        else:
            plan.warnings.append(
                f"{copy} was not written by libvirt-bridge and hides the package's "
                f"{packaged}; move it away unless you mean it"
            )
    dropin = service.DROPIN
    if os.path.abspath(config_path) == configmod.DEFAULT_PATH:
        if _dropin_is_ours(dropin):
            plan.do(f"removed {dropin} (the config is the default one)", partial(os.unlink, dropin))
            changed = True
        return changed
    text = service.render_dropin(config_path)
    if not _is_current(dropin, text, mode=0o644):
        plan.do(
            f"wrote {dropin} (the listener reads {config_path}, not the default config)",
            partial(_write_dropin, dropin, text),
        )
        changed = True
    return changed


def _dropin_is_ours(path: str) -> bool:
    try:
        with open(path) as f:
            return f.readline().startswith(service.DROPIN_HEADER)
    except (OSError, UnicodeDecodeError):
        return False


def _write_dropin(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    _write_text(path, text)


def _remove_unit_copy(copy: str) -> None:
    """Remove a copy of the unit, keeping the unit enabled if it was (its symlinks name
    the copy, so it is disabled first and enabled again on the package's unit)."""
    enabled = service.systemctl("is-enabled", service.UNIT_NAME).stdout.strip() == "enabled"
    if enabled:
        service.systemctl("disable", service.UNIT_NAME)
    os.unlink(copy)
    steps = [("enable", service.UNIT_NAME)] if enabled else []
    _systemctl_checked(*steps)


def _start_listener(config_path: str, state_dir: str) -> None:
    try:
        service.start_background(config_path, state_dir)
    except RuntimeError as exc:
        raise InstallError(str(exc)) from None


def plan_listener_uninstall(plan: Plan, config_path: str) -> None:
    """Stop the listener and remove its unit (a packaged unit stays, stopped and disabled)."""
    unit = os.path.join(service.UNIT_DIR, service.UNIT_NAME)
    if service.runs_as_unit():
        if os.path.exists(unit):
            plan.do(
                f"stopped and disabled {service.UNIT_NAME}, removed {unit}",
                partial(_remove_unit, unit),
            )
        elif service.packaged_unit() and _unit_in_use():
            plan.do(
                f"stopped and disabled {service.UNIT_NAME}",
                partial(_systemctl_checked, ("disable", "--now", service.UNIT_NAME)),
            )
        if _dropin_is_ours(service.DROPIN):
            plan.do(f"removed {service.DROPIN}", partial(_remove_dropin, service.DROPIN))
    try:
        state_dir = read_config(config_path).state_dir
    except ConfigError:
        return
    pid = service.running_pid(state_dir)
    if pid:
        plan.do(f"stopped the listener (pid {pid})", partial(service.stop_background, state_dir))


def _unit_in_use() -> bool:
    enabled = service.systemctl("is-enabled", service.UNIT_NAME).stdout.strip()
    active = service.systemctl("is-active", service.UNIT_NAME).stdout.strip()
    return enabled == "enabled" or active in ("active", "activating", "reloading")


def _remove_dropin(path: str) -> None:
    os.unlink(path)
    try:
        os.rmdir(os.path.dirname(path))
    except OSError:
        pass  # other drop-ins, the admin's, stay
    service.systemctl("daemon-reload")


def _write_text(path: str, text: str) -> None:
    write_atomic(path, text, 0o644)


def _systemctl_checked(*commands: tuple[str, ...]) -> None:
    """``systemctl daemon-reload``, then each command; InstallError at the first failure."""
    for command in (("daemon-reload",), *commands):
        result = service.systemctl(*command)
        if result.returncode != 0:
            raise InstallError(f"systemctl {' '.join(command)} failed: {result.stderr.strip()}")


def _remove_unit(unit: str) -> None:
    service.systemctl("disable", "--now", service.UNIT_NAME)
    os.unlink(unit)
    service.systemctl("daemon-reload")


def _plan_fastpath(plan: Plan, config_path: str) -> None:
    """The file that lets the qemu launcher skip Python when nothing is to run."""
    try:
        if fastpath.is_current(read_config(config_path)):
            return
    except ConfigError:
        pass  # the config is written by this plan (or refused before it runs)
    path = fastpath.fastpath_path(config_path)
    why = "lets the qemu launcher skip Python when there is nothing to run"
    plan.do(f"wrote {path} ({why})", partial(_write_fastpath, config_path))


def _write_fastpath(config_path: str) -> None:
    fastpath.write(configmod.load(config_path))


def _plan_config(plan: Plan, config_path: str) -> Config:
    if not os.path.lexists(config_path):
        text = default_config_text()
        plan.do(f"wrote default config {config_path}", partial(_write_config, config_path, text))
        return Config(configmod.seen_from_here(configmod.DEFAULTS), config_path)
    try:
        return read_config(config_path)
    except ConfigError as exc:
        raise InstallError(f"{exc}; fix it (install never changes an existing config)") from None


def _write_config(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    tmp = temp_path(path)
    write_atomic(tmp, text, 0o644)
    # os.link fails if the file appeared meanwhile: an existing config is never replaced.
    try:
        os.link(tmp, path)
    finally:
        os.unlink(tmp)


def _plan_launcher(plan: Plan, confdir: str, driver: str, config_path: str) -> bool:
    """Plan the launcher for ``driver``; whether it changes."""
    path = launcher_path(confdir, driver)
    legacy = path + LEGACY_SUFFIX
    # What .legacy holds once the plan has run: None for nothing.
    kept: str | None = legacy if os.path.lexists(legacy) else None
    if kept is not None and kept_launcher(path):
        kept = _plan_kept_launcher_repair(plan, path)
    if os.path.lexists(path) and not is_launcher(path):
        if os.path.isdir(path):
            raise InstallError(f"{path} is a directory, not a hook file; move it away")
        if kept is not None:
            raise InstallError(
                f"{path} is not a libvirt-bridge launcher, and {legacy} exists already: "
                f"install keeps a foreign hook as {legacy} and runs it first, so it cannot "
                "keep both. Merge or move one of them away, then run install again"
            )
        if runnable(path):
            message, arg = f"kept the earlier hook as {legacy}; it runs first", legacy
        else:
            message, arg = f"kept the earlier hook as {legacy}; not executable, it does not run", ""
        plan.do(message, partial(os.rename, path, legacy))
        plan.do(f"installed {path}", partial(launcher.write, path, driver, config_path, arg))
        return True
    arg = legacy if kept is not None and runnable(kept) else ""
    write = partial(launcher.write, path, driver, config_path, arg)
    first = f"; it runs the earlier hook {arg} first" if arg else ""
    if not os.path.lexists(path):
        plan.do(f"installed {path}{first}", write)
        return True
    if _is_current(path, launcher.render(driver, config_path, legacy=arg)):
        plan.note(f"up to date: {path}")
        return False
    plan.do(f"updated {path}{first}", write)
    return True


def _plan_kept_launcher_repair(plan: Plan, path: str) -> str | None:
    """Take a launcher of ours out of ``path``'s ``.legacy``; what is kept there after.

    The foreign hook it ran first, if any, takes its place (one rename); else it goes.
    """
    legacy = path + LEGACY_SUFFIX
    why = "a libvirt-bridge launcher, not an earlier hook: run first, it ran the bridge again"
    earlier = earlier_of_kept_launcher(path)
    if earlier:
        plan.do(
            f"replaced {legacy} ({why}) with the earlier hook it ran first, {earlier}",
            partial(os.replace, earlier, legacy),
        )
        return earlier
    plan.do(f"removed {legacy}: {why}", partial(os.unlink, legacy))
    return None


def _is_current(path: str, text: str, mode: int = 0o755) -> bool:
    try:
        with open(path) as f:
            same = f.read() == text
        return same and stat.S_IMODE(os.stat(path).st_mode) == mode
    except (OSError, UnicodeDecodeError):
        return False


def _plan_hooks_root(plan: Plan, confdir: str, root: str) -> None:
    host = host_path(root, confdir)
    dirs = [host] + [os.path.join(host, event) for event in mapping.EVENTS]
    missing = [d for d in dirs if not os.path.isdir(d)]
    for directory in missing:
        if os.path.lexists(directory):
            raise InstallError(f"{directory} exists and is not a directory; move it away")
    if not missing:
        plan.note(f"up to date: hooks root {host}")
    for directory in missing:
        plan.do(f"created {directory}", partial(os.makedirs, directory, 0o755, exist_ok=True))


def _plan_sighup(plan: Plan, confdir: str, needed: Callable[[Daemon], bool]) -> None:
    daemons = daemons_using(confdir)
    if not daemons:
        plan.note(no_daemon_message(confdir))
    for daemon in daemons:
        if needed(daemon):
            plan.do(
                f"sent SIGHUP to {daemon.name} (pid {daemon.pid}): it looks for hooks again",
                partial(send_sighup, daemon, confdir),
            )
        else:
            plan.note(f"{daemon.name} (pid {daemon.pid}) already uses the launchers")


# -- installed scripts (VDSM's installed()) -----------------------------------------------


def checksum(path: str) -> str:
    """The sha256 of the file at ``path``; "" when it cannot be read (as VDSM)."""
    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except OSError:
        return ""


def installed(roots: list[str], log: Log | None = None) -> dict[str, dict[str, dict[str, str]]]:
    """Per event that has a runnable script: its scripts in run order, with their sha256.

    Keyed by script name like VDSM's report; a name present in two roots runs twice, and
    its second entry is keyed by its full path so that none is lost.
    """
    report: dict[str, dict[str, dict[str, str]]] = {}
    for event in mapping.EVENTS:
        entries: dict[str, dict[str, str]] = {}
        for path in find_scripts(roots, event, log):
            key = os.path.basename(path)
            entries[path if key in entries else key] = {"checksum": checksum(path), "path": path}
        if entries:
            report[event] = entries
    return report
