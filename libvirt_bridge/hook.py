"""What the installed launchers (``hooks/qemu``, ``hooks/daemon``) call, and the earlier hook.

A foreign hook found at ``hooks/qemu`` when the bridge was installed is kept as
``qemu.legacy`` (``daemon.legacy``), and the launcher runs it first, with libvirt's argv
and stdin, the way pre-commit runs a repository's earlier git hook, so installing the
bridge changes nothing it did:
- its stderr is passed on, and its exit code is honoured: where a failure makes libvirt
  abort the operation or kill the VM, the bridge then does nothing more for that call;
- for ``migrate`` and ``restore`` its non-empty stdout is the XML the bridge works on,
  and what libvirt gets unless the bridge's scripts change it further.

A launcher is never run as an earlier hook: one that carries the launchers' mark is
skipped, and a launcher started while another runs its earlier hook runs nothing. Either
would run the bridge a second time per call, or without end when a copy names itself.
"""

from __future__ import annotations

import posix
import sys

from .config import ConfigError, load
from .dispatch import run
from .firing import take_deferred as queue_deferred
from .hookcall import HookCall
from .log import Log, say
from .plainos import environ, exists

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NoReturn

# How much a launcher nices the Python that queues a call it deferred (see take_deferred).
DEFERRED_NICE = 10
# Set in the environment of the earlier hook while a launcher runs it.
RUNNING_LEGACY = "LIBVIRT_BRIDGE_RUNNING_LEGACY"
# The second line of every launcher (install/launcher.in): how a launcher is recognised,
# whatever its name.
MARK = "# libvirt-bridge launcher"

# libvirt acts on a failure of these calls (aborts the operation, or kills the VM).
FAILURE_COUNTS = frozenset({"prepare", "start", "started", "migrate", "restore", "reconnect"})
XML_FILTERS = frozenset({"migrate", "restore"})


def launch(driver: str, argv: list[str], config_path: str, legacy: str = "") -> NoReturn:
    """What an installed launcher runs: ``run_launcher``, then an exit with its status.

    The exit skips the interpreter's teardown (freeing every object, module by module),
    which costs a hook call about a fifth of an interpreter start: everything this process
    writes is written by then (the log and the state with plain ``write`` calls, stdout
    and stderr flushed here), and it holds no thread nor any other resource to release.

    For the same reason the launcher turns the cyclic garbage collector off before the
    imports: this process lives for one call and frees its objects by reference counting,
    and the collector's passes over what the imports create cost it 0.3-0.6 ms. The
    runners it forks turn it back on (``asyncq.spawn_runner``).
    """
    try:
        status = run_launcher(driver, argv, config_path, legacy)
    except SystemExit as exc:  # a SIGTERM during a script (runner._exit_on_sigterm)
        if not isinstance(exc.code, int):
            raise
        status = exc.code
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    posix._exit(status)


def take_deferred(config_path: str, daemon: int) -> NoReturn:
    """What a launcher starts in the background, niced by ``DEFERRED_NICE``, once it has
    deferred an async call (its stdio on /dev/null): queue every deferred call, start their
    runners, and exit.

    ``daemon``: the pid of the libvirt daemon that made the call; the runners get its
    priority, which the scripts of a hook call have always had. A call it cannot queue (no
    config) stays in the inbox for the next hook call.
    """
    from .asyncq import spawn_runner

    status = 0
    try:
        posix.setsid()
    except OSError:
        pass  # a session leader already
    try:
        config = load(config_path)
        log = Log.of(config)
        keys: list[str] = []
        queue_deferred(config, log, lambda _config, _log, key: keys.append(key))
        _take_priority_of(daemon)
        for key in dict.fromkeys(keys):
            spawn_runner(config, log, key)
    except ConfigError:
        status = 1
    except Exception as exc:
        log_for(config_path).error(f"queueing the deferred hook calls failed: {exc!r}")
        status = 1
    posix._exit(status)


def _take_priority_of(pid: int) -> None:
    """This process's priority (its niceness) becomes process ``pid``'s, or, with ``pid``
    gone, what it was before the launcher niced it."""
    try:
        niceness = posix.getpriority(posix.PRIO_PROCESS, pid)
    except OSError:
        niceness = max(-20, posix.getpriority(posix.PRIO_PROCESS, 0) - DEFERRED_NICE)
    try:
        posix.setpriority(posix.PRIO_PROCESS, 0, niceness)
    except OSError:
        pass  # not allowed (not root): the scripts run niced


def run_launcher(driver: str, argv: list[str], config_path: str, legacy: str = "") -> int:
    """Called by an installed launcher with libvirt's argv (without the program name).

    ``legacy`` is the foreign hook the installer kept beside the launcher, if any.
    """
    outer = environ().get(RUNNING_LEGACY)
    if outer is not None:
        log_for(config_path).error(
            f"{describe(driver, argv)}: called as the earlier hook {outer} of a libvirt-bridge "
            "launcher, so from inside the bridge: nothing run here. A launcher is kept as an "
            "earlier hook; libvirt-bridge install repairs that"
        )
        return 0
    if legacy and exists(legacy):
        if not is_launcher(legacy):
            return run_with_legacy(driver, argv, config_path, legacy)
        log_for(config_path).error(
            f"{describe(driver, argv)}: the earlier hook {legacy} is itself a libvirt-bridge "
            "launcher: not run, so that every script runs once. libvirt-bridge install "
            "repairs that"
        )
    return run(driver, argv, config_path, sys.stdin.buffer, sys.stdout.buffer)


def is_launcher(path: str) -> bool:
    """Whether the file at ``path`` is a launcher written by this project."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return False
    return MARK.encode() in head


def run_with_legacy(driver: str, argv: list[str], config_path: str, legacy: str) -> int:
    """The earlier hook ``legacy`` first, then the bridge, as one hook call."""
    import io
    import subprocess

    data = sys.stdin.buffer.read()
    env = {**environ(), RUNNING_LEGACY: legacy}
    try:
        earlier = subprocess.run([legacy, *argv], input=data, capture_output=True, cwd="/", env=env)
    except OSError as exc:
        sys.stderr.write(f"libvirt-bridge: cannot run the earlier hook {legacy}: {exc}\n")
        return 1
    sys.stderr.buffer.write(earlier.stderr)
    sys.stderr.flush()
    op = argv[1] if len(argv) > 1 else ""
    if earlier.returncode != 0 and op in FAILURE_COUNTS:
        return earlier.returncode
    filtered = op in XML_FILTERS and bool(earlier.stdout.strip())
    xml = earlier.stdout if filtered else data
    out = io.BytesIO()
    status = run(driver, argv, config_path, io.BytesIO(xml), out)
    result = out.getvalue() or (xml if filtered else b"")
    if result and status == 0:
        sys.stdout.buffer.write(result)
        sys.stdout.flush()
    return earlier.returncode or status


def log_for(config_path: str) -> Log:
    """The log the config at ``config_path`` names; stderr alone when it cannot be read."""
    try:
        return Log.of(load(config_path))
    except ConfigError as exc:
        say(str(exc))
        return Log("")


def describe(driver: str, argv: list[str]) -> str:
    """A hook call as the log shows it."""
    if len(argv) == 4:
        obj, op, subop, extra = argv
        return str(HookCall(driver, obj, op, subop, extra))
    return " ".join([driver, *argv])
