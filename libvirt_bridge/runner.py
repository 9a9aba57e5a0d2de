"""Running one event's scripts under VDSM's contract.

- One 0600 temp file holds the XML; all scripts share it in sequence (edits chain); its
  path is in ``_hook_domxml``.
- argv is ``[script]``, stdin ``/dev/null``, cwd ``/``; the environment is the bridge's,
  then the custom properties that pass ``screening`` (a device's, then the VM's), then
  ``vmId``, then a PYTHONPATH that reaches the ``hooking`` compatibility module.
- Exit codes: 0 ok; 1 error, go on; 2 error, stop here; anything else (or a signal) error,
  go on, with a warning.
- stderr is captured and logged; stdout is read and dropped (only its size is logged).

Beyond VDSM: each script runs in its own session and its whole process group is killed
past ``script_timeout``. The bridge stops reading a script's pipes as soon as the script
itself exits, so a background child that keeps them open never holds up the event (nor,
through the bridge, libvirt), and only the first ``CAPTURE_LIMIT`` bytes of each stream are
kept in memory.
"""

from __future__ import annotations

# signal's C core: ``signal`` itself imports enum, a cost every hook call with a script
# would pay. typeshed has no stub for it; the names used are those of ``signal``.
import _signal  # type: ignore[import-not-found]
import _thread
import posix
import time

from .log import FILE
from .plainos import abspath, basename, dirname, environ, join, split

TYPE_CHECKING = False
if TYPE_CHECKING:
    import select
    from collections.abc import Callable, Mapping
    from typing import Protocol

    from .config import Config
    from .log import Log

    class Reporter(Protocol):
        """What publishes the records of an event's runs (``reporting.Reporter``)."""

        def outcome(self, result: ScriptResult) -> str: ...
        def script_ran(self, result: ScriptResult, xml_changed: bool) -> None: ...
        def done(self) -> None: ...


CAPTURE_LIMIT = 64 * 1024
KILL_GRACE = 2.0
COMPAT_DIR = join(dirname(abspath(__file__)), "compat")


class ScriptResult:
    """How one script ended."""

    __slots__ = ("duration", "error", "rc", "script", "stderr", "stdout_size", "timed_out")

    def __init__(self, script: str) -> None:
        self.script = script
        self.rc: int | None = None
        self.duration = 0.0
        self.stderr = b""
        self.stdout_size = 0
        self.timed_out = False
        self.error: str | None = None

    @property
    def failed(self) -> bool:
        return self.rc != 0

    def describe(self) -> str:
        """``rc=1`` / ``killed after 30s timeout`` / ``could not run: ...``."""
        if self.error:
            return f"could not run: {self.error}"
        if self.timed_out:
            return f"killed after timeout ({self.duration:.1f}s)"
        if self.rc is not None and self.rc < 0:
            return f"killed by signal {-self.rc}"
        return f"rc={self.rc}"

    def stderr_text(self) -> str:
        return self.stderr.decode("utf-8", "replace").strip()


class EventRun:
    """The outcome of one event: each script's result and the XML left in the file."""

    __slots__ = ("data", "edits", "results")

    def __init__(self) -> None:
        self.results: list[ScriptResult] = []
        self.data = b""
        # (script, before, after) for each script that rewrote the file, in order; these
        # are byte changes: callers judge whether the meaning changed.
        self.edits: list[tuple[str, bytes, bytes]] = []

    @property
    def failures(self) -> list[ScriptResult]:
        return [r for r in self.results if r.failed]


# What libvirt passes to a hook from its own environment, besides LC_ALL=C
# (virCommandAddEnvPassCommon): a real event's scripts get these and nothing else of it.
LIBVIRT_PASSED_ENV = ("LD_PRELOAD", "LD_LIBRARY_PATH", "PATH", "HOME", "USER", "LOGNAME", "TMPDIR")
# How the help texts name that environment.
LIBVIRT_ENV_TEXT = f"LC_ALL=C and, when libvirt's daemon has them, {', '.join(LIBVIRT_PASSED_ENV)}"


def libvirt_hook_environment() -> dict[str, str]:
    """The environment libvirt would give a hook, made from this process's.

    For events the bridge fires outside a hook call (the verbs, ``run``): nothing of the
    caller's shell leaks in (LIBVIRT_BRIDGE_CONFIG, a virtualenv, ...), so a script
    behaves as it does under virsh.
    """
    env = {"LC_ALL": "C"}
    current = environ()
    env.update((key, current[key]) for key in LIBVIRT_PASSED_ENV if key in current)
    return env


class EventProperties:
    """The custom properties of one event: the VM's, and a device event's device's."""

    __slots__ = ("device", "device_scope", "vm")

    def __init__(
        self,
        vm: Mapping[str, str] | None = None,
        device: Mapping[str, str] | None = None,
        device_scope: str = "",
    ) -> None:
        self.vm = dict(vm or {})
        self.device = dict(device or {})
        self.device_scope = device_scope  # the device's element: interface, disk, ...

    def __bool__(self) -> bool:
        return bool(self.vm or self.device)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, EventProperties):
            return NotImplemented
        mine = (self.vm, self.device, self.device_scope)
        return mine == (other.vm, other.device, other.device_scope)

    def __repr__(self) -> str:
        return f"EventProperties({self.vm!r}, {self.device!r}, {self.device_scope!r})"

    def to_json(self) -> dict[str, object]:
        return {"vm": self.vm, "device": self.device, "device_scope": self.device_scope}

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> EventProperties:
        def strings(value: object) -> dict[str, str]:
            return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}

        scope = data.get("device_scope")
        return cls(
            strings(data.get("vm")),
            strings(data.get("device")),
            scope if isinstance(scope, str) else "",
        )


def script_environment(
    properties: EventProperties,
    vm_id: str | None,
    config: Config,
    log: Log,
    label: str,
    base: dict[str, str] | None = None,
) -> dict[str, str]:
    """The environment of every script of one event (``_hook_domxml`` is added later).

    Of ``properties``, only what ``screening`` lets through, under the config's property
    schema; what it refuses is logged, naming the event (``label``). ``base``: what it
    starts from, this process's environment unless given.
    """
    env = dict(environ() if base is None else base)
    if properties:
        # Only here: a domain without custom properties costs no import of the rules.
        from .screening import screen

        screened = screen(
            properties.vm, config.property_schema, properties.device, properties.device_scope
        )
        screened.log(log, label)
        env.update(screened.accepted)
    if vm_id:
        env["vmId"] = vm_id
    existing = env.get("PYTHONPATH")
    env["PYTHONPATH"] = f"{existing}:{COMPAT_DIR}" if existing else COMPAT_DIR
    return env


class EventLabel(str):
    """How log lines name one event of one domain, and the journal fields that say it."""

    fields: dict[str, str]


def event_label(event: str, name: str, uuid: str) -> EventLabel:
    label = EventLabel(f"{event} domain={name!r} uuid={uuid or '-'}")
    label.fields = {"EVENT": event, "DOMAIN": name, "UUID": uuid or "-"}
    return label


def run_event(
    scripts: list[str],
    data: bytes,
    env: dict[str, str],
    timeout: float,
    log: Log,
    label: str,
    tmp_prefix: str = "",
    reporter: Reporter | None = None,
) -> EventRun:
    """Run ``scripts`` in order on ``data``; ``label`` names the event in log lines, and
    ``reporter`` (``reporting``) publishes a record of each run.

    The XML file is ``<tmp_prefix>XXXX.xml`` when a prefix is given (the async runner puts
    it beside its job, so that a runner killed midway leaves nothing it cannot clean up),
    else a ``libvirt-bridge-XXXX.xml`` in $TMPDIR.
    """
    outcome = EventRun()
    _exit_on_sigterm()
    _no_inherited_fds()
    fd, path = _xml_file(tmp_prefix)
    try:
        try:
            _write_all(fd, data)
        finally:
            posix.close(fd)
        env = dict(env, _hook_domxml=path)
        before = data
        for script in scripts:
            result = run_script(script, env, timeout)
            outcome.results.append(result)
            _log_result(log, label, result, reporter.outcome(result) if reporter else "")
            after = _read(path)
            if reporter is not None:
                reporter.script_ran(result, after != before)
            if after != before:
                outcome.edits.append((script, before, after))
                before = after
            if result.rc == 2:
                log.info(f"{label}: {basename(script)} exited 2, later scripts skipped")
                break
        outcome.data = before
    finally:
        try:
            posix.unlink(path)
        except OSError:
            pass
        if reporter is not None:
            reporter.done()
    return outcome


# Where $TMPDIR is not usable, the places ``tempfile`` would try next (not the cwd).
_TMP_DIRS = ("/tmp", "/var/tmp", "/usr/tmp")
_XML_FLAGS = posix.O_RDWR | posix.O_CREAT | posix.O_EXCL | posix.O_NOFOLLOW | posix.O_CLOEXEC


def _xml_file(tmp_prefix: str) -> tuple[int, str]:
    """A new 0600 file for the XML, as ``tempfile.mkstemp`` makes one: (fd, path).

    Not ``tempfile`` itself: it imports ``random``, ``shutil`` and compression modules, a
    cost every hook call with a script would pay.
    """
    if tmp_prefix:
        directory, prefix = split(tmp_prefix)
        return _create_in(directory or ".", prefix)
    candidates = [environ().get(name, "") for name in ("TMPDIR", "TEMP", "TMP")]
    candidates += _TMP_DIRS
    error: OSError | None = None
    for directory in candidates:
        if directory:
            try:
                return _create_in(directory, "libvirt-bridge-")
            except OSError as exc:
                error = error or exc
    assert error is not None
    raise error


def _create_in(directory: str, prefix: str) -> tuple[int, str]:
    for _ in range(100):
        path = join(directory, f"{prefix}{posix.urandom(6).hex()}.xml")
        try:
            return posix.open(path, _XML_FLAGS, 0o600), path
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temp file name in {directory}")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[posix.write(fd, view) :]


# Whether this process has made the descriptors it was given close-on-exec.
_given_fds_closed = False


def _no_inherited_fds() -> None:
    """Make every descriptor above stderr close-on-exec, as ``close_fds`` did.

    The bridge opens its own that way; this catches those it was given (by a shell that
    ran a verb, say), so that no script holds them, nor keeps its caller waiting on one.
    Those are there from the process's start, so once per process is enough: Python opens
    every descriptor close-on-exec (PEP 446), and the drainer, whose threads run many
    events at once, would otherwise list and test all its pipes for each of them.
    """
    global _given_fds_closed
    if _given_fds_closed:
        return
    try:
        names = posix.listdir("/proc/self/fd")
    except OSError:
        return
    for name in names:
        fd = int(name)
        if fd > 2:
            try:
                if posix.get_inheritable(fd):
                    posix.set_inheritable(fd, False)
            except OSError:
                pass  # the listing's own descriptor, closed since
    # Only now: another thread that spawns meanwhile scans too (harmless), rather than
    # spawning before this scan is done.
    _given_fds_closed = True


# Held while this process's cwd is not its own (threads run scripts in the listener).
_CWD_LOCK = _thread.allocate_lock()


def _spawn(script: str, env: dict[str, str], out_w: int, err_w: int) -> int:
    """Start ``script`` in a new session, stdin /dev/null, stdout and stderr to the pipes,
    cwd ``/``; return its pid.

    A spawn cannot set the child's cwd alone: when this process's is not ``/`` already
    (libvirt runs hooks there; a verb may run anywhere), the spawn happens in ``/`` and
    the cwd comes back, under a lock that the other threads' spawns respect.
    """
    with _CWD_LOCK:
        if not _at_root():
            back = _enter_root()
            try:
                return _posix_spawn(script, env, out_w, err_w)
            finally:
                _leave_root(back)
    # At / for good: no thread ever leaves it, so no lock is held while the child starts.
    return _posix_spawn(script, env, out_w, err_w)


# What spawns: os.posix_spawn, or the one of spawn_nogil (see spawn_without_gil).
_SPAWN: Callable[..., int] = posix.posix_spawn


def spawn_without_gil() -> None:
    """Spawn scripts with the GIL released, for a process whose threads run scripts side
    by side (``spawn_nogil`` says why); a hook call's single thread has no use for it."""
    global _SPAWN
    from .spawn_nogil import posix_spawn

    _SPAWN = posix_spawn


def _posix_spawn(script: str, env: dict[str, str], out_w: int, err_w: int) -> int:
    return _SPAWN(
        script,
        [script],
        env,
        file_actions=[
            (posix.POSIX_SPAWN_OPEN, 0, "/dev/null", posix.O_RDONLY, 0),
            (posix.POSIX_SPAWN_DUP2, out_w, 1),
            (posix.POSIX_SPAWN_DUP2, err_w, 2),
        ],
        setsid=True,
        setsigdef=_DEFAULT_SIGNALS,
    )


def _at_root() -> bool:
    try:
        here, root = posix.stat("."), posix.stat("/")
    except OSError:
        return False
    return (here.st_dev, here.st_ino) == (root.st_dev, root.st_ino)


def _enter_root() -> int:
    """chdir to ``/``; a descriptor of the cwd left (-1 when it cannot be opened)."""
    try:
        back = posix.open(".", posix.O_PATH | posix.O_DIRECTORY | posix.O_CLOEXEC)
    except OSError:
        back = -1
    posix.chdir("/")
    return back


def _leave_root(back: int) -> None:
    if back < 0:
        return
    try:
        posix.fchdir(back)
    except OSError:
        pass
    finally:
        posix.close(back)


# Signals Python ignores, which an exec'd program would otherwise inherit ignored.
_DEFAULT_SIGNALS = (_signal.SIGPIPE, _signal.SIGXFSZ)


def run_script(script: str, env: dict[str, str], timeout: float) -> ScriptResult:
    """Run one script to its end (or its timeout) and collect what it said.

    Its stdin is ``/dev/null``, its stdout and stderr pipes to this process, its cwd
    ``/``, in a new session (so its whole process group can be killed).
    """
    import select

    result = ScriptResult(script)
    started = time.monotonic()
    out_r, out_w = _pipe()
    err_r, err_w = _pipe()
    try:
        try:
            pid = _spawn(script, env, out_w, err_w)
        except OSError as exc:
            result.error = _exec_error(exc)
            result.rc = 127
            result.duration = time.monotonic() - started
            return result
        finally:
            posix.close(out_w)
            posix.close(err_w)
        try:
            poller = select.poll()
            stderr, stdout_size, result.timed_out = _collect(poller, pid, out_r, err_r, timeout)
        except BaseException:
            _signal_group(pid, _signal.SIGKILL)  # the bridge is going: so is its script
            raise
        result.rc = _wait(pid)
    finally:
        posix.close(out_r)
        posix.close(err_r)
    result.stderr = stderr
    result.stdout_size = stdout_size
    result.duration = time.monotonic() - started
    if result.timed_out and result.rc == 0:
        result.rc = -_signal.SIGKILL
    return result


def _pipe() -> tuple[int, int]:
    """A close-on-exec pipe whose ends are above stderr (so a spawn's dup2 moves them)."""
    read_fd, write_fd = posix.pipe()
    if read_fd > 2 and write_fd > 2:
        return read_fd, write_fd
    # This process runs with a standard stream closed: keep clear of 0-2.
    import fcntl

    moved = []
    for fd in (read_fd, write_fd):
        moved.append(fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3))
        posix.close(fd)
    return moved[0], moved[1]


def _wait(pid: int) -> int:
    """The exit code of child ``pid`` as ``Popen.returncode`` gives it (-N: signal N)."""
    try:
        _, status = posix.waitpid(pid, 0)
    except ChildProcessError:
        return 0  # reaped elsewhere (SIGCHLD ignored): its status is lost, as for Popen
    return posix.waitstatus_to_exitcode(status)


def _collect(
    poller: select.poll, pid: int, out_fd: int, err_fd: int, timeout: float
) -> tuple[bytes, int, bool]:
    """Read stderr (kept) and stdout (counted) until the script exits; kill it on timeout."""
    from select import POLLIN

    pidfd = posix.pidfd_open(pid)
    kept = bytearray()
    counted = 0
    timed_out = False
    deadline = time.monotonic() + timeout if timeout > 0 else None
    kill_at: float | None = None
    try:
        poller.register(out_fd, POLLIN)
        poller.register(err_fd, POLLIN)
        poller.register(pidfd, POLLIN)
        exited = False
        while not exited:
            wait = -1
            now = time.monotonic()
            until = kill_at if kill_at is not None else deadline
            if until is not None:
                # Rounded up: a wait that ends early would only poll again.
                wait = max(0, int((until - now) * 1000) + 1)
            ready = poller.poll(wait)
            if not ready:
                if until is not None and time.monotonic() < until:
                    continue
                if kill_at is None:
                    timed_out = True
                    _signal_group(pid, _signal.SIGTERM)
                    kill_at = time.monotonic() + KILL_GRACE
                else:
                    _signal_group(pid, _signal.SIGKILL)
                    kill_at = time.monotonic() + 3600
                continue
            for fd, _mask in ready:
                if fd == pidfd:
                    exited = True
                    continue
                chunk = posix.read(fd, 65536)
                if not chunk:
                    poller.unregister(fd)
                elif fd == err_fd:
                    kept += chunk[: max(0, CAPTURE_LIMIT - len(kept))]
                else:
                    counted += len(chunk)
        # The script is gone; take what it wrote before exiting, but never wait for
        # children that inherited the pipes.
        for fd in (out_fd, err_fd):
            posix.set_blocking(fd, False)
            for _ in range(64):
                try:
                    chunk = posix.read(fd, 65536)
                except BlockingIOError:
                    break
                if not chunk:
                    break
                if fd == err_fd:
                    kept += chunk[: max(0, CAPTURE_LIMIT - len(kept))]
                else:
                    counted += len(chunk)
    finally:
        posix.close(pidfd)
    if timed_out:
        _signal_group(pid, _signal.SIGKILL)
    return bytes(kept), counted, timed_out


def _exit_on_sigterm() -> None:
    """Make SIGTERM unwind (killing the running script, removing the XML file)."""

    def terminate(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    try:
        _signal.signal(_signal.SIGTERM, terminate)
    except ValueError:
        pass  # not the main thread: the process's owner decides


def _signal_group(pid: int, sig: int) -> None:
    try:
        posix.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _exec_error(exc: OSError) -> str:
    import errno

    if exc.errno == errno.ENOEXEC:
        return "not an executable format (does it start with a #! line?)"
    if exc.errno == errno.ENOENT:
        return "not found, or its #! interpreter is missing (CRLF line ends?)"
    return exc.strerror or str(exc)


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _log_result(log: Log, label: str, result: ScriptResult, outcome: str = "") -> None:
    first = result.stderr_text().split("\n", 1)[0][:300]
    message = (
        f"{label} script={result.script} {result.describe()} "
        f"duration={result.duration:.3f}s stderr={first!r}"
    )
    if result.stdout_size:
        message += f" stdout_bytes={result.stdout_size}"
    fields = None
    if log.target != FILE:
        fields = dict(getattr(label, "fields", ()), SCRIPT=result.script)
        fields["RC"] = "-" if result.rc is None else str(result.rc)
        if outcome:
            fields["OUTCOME"] = outcome
    if result.rc is not None and result.rc > 2 and not result.error:
        log.warning(f"{message} (exit codes above 2 are reserved; treated as 1)", fields)
    elif result.failed:
        log.error(message, fields)
    else:
        log.info(message, fields)
