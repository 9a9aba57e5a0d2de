"""Running one event's scripts under VDSM's contract.

- One 0600 temp file holds the XML; all scripts share it in sequence (edits chain); its
  path is in ``_hook_domxml``.
- argv is ``[script]``, stdin ``/dev/null``, cwd ``/``; the environment is the bridge's,
  then the VM's custom properties, then ``vmId``, then a PYTHONPATH that reaches the
  ``hooking`` compatibility module.
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

import os
import selectors
import signal
import subprocess
import tempfile
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .log import Log

CAPTURE_LIMIT = 64 * 1024
KILL_GRACE = 2.0
COMPAT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "compat")


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


def libvirt_hook_environment() -> dict[str, str]:
    """The environment libvirt would give a hook, made from this process's.

    For events the bridge fires outside a hook call (the verbs, ``run``): nothing of the
    caller's shell leaks in (LIBVIRT_BRIDGE_CONFIG, a virtualenv, ...), so a script
    behaves as it does under virsh.
    """
    env = {"LC_ALL": "C"}
    env.update((key, os.environ[key]) for key in LIBVIRT_PASSED_ENV if key in os.environ)
    return env


def script_environment(
    properties: dict[str, str], vm_id: str | None, base: dict[str, str] | None = None
) -> dict[str, str]:
    """The environment of every script of one event (``_hook_domxml`` is added later).

    ``base``: what it starts from, this process's environment unless given.
    """
    env = dict(os.environ if base is None else base)
    env.update(properties)
    if vm_id:
        env["vmId"] = vm_id
    existing = env.get("PYTHONPATH")
    env["PYTHONPATH"] = f"{existing}:{COMPAT_DIR}" if existing else COMPAT_DIR
    return env


def run_event(
    scripts: list[str],
    data: bytes,
    env: dict[str, str],
    timeout: float,
    log: Log,
    label: str,
    tmp_prefix: str = "",
) -> EventRun:
    """Run ``scripts`` in order on ``data``; ``label`` names the event in log lines.

    The XML file is ``<tmp_prefix>XXXX.xml`` when a prefix is given (the async runner puts
    it beside its job, so that a runner killed midway leaves nothing it cannot clean up),
    else a ``libvirt-bridge-XXXX.xml`` in $TMPDIR.
    """
    outcome = EventRun()
    _exit_on_sigterm()
    if tmp_prefix:
        directory, prefix = os.path.split(tmp_prefix)
        fd, path = tempfile.mkstemp(prefix=prefix, suffix=".xml", dir=directory)
    else:
        fd, path = tempfile.mkstemp(prefix="libvirt-bridge-", suffix=".xml")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        env = dict(env, _hook_domxml=path)
        before = data
        for script in scripts:
            result = run_script(script, env, timeout)
            outcome.results.append(result)
            _log_result(log, label, result)
            after = _read(path)
            if after != before:
                outcome.edits.append((script, before, after))
                before = after
            if result.rc == 2:
                log.info(f"{label}: {os.path.basename(script)} exited 2, later scripts skipped")
                break
        outcome.data = before
    finally:
        try:
            os.unlink(path)
        except OSError:
            pass
    return outcome


def run_script(script: str, env: dict[str, str], timeout: float) -> ScriptResult:
    """Run one script to its end (or its timeout) and collect what it said."""
    result = ScriptResult(script)
    started = time.monotonic()
    try:
        proc = subprocess.Popen(
            [script],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd="/",
            env=env,
            start_new_session=True,
        )
    except OSError as exc:
        result.error = _exec_error(exc)
        result.rc = 127
        result.duration = time.monotonic() - started
        return result
    try:
        stderr, stdout_size, result.timed_out = _collect(proc, timeout)
    except BaseException:
        _signal_group(proc.pid, signal.SIGKILL)  # the bridge is going: so is its script
        raise
    finally:
        for stream in (proc.stdout, proc.stderr):
            if stream:
                stream.close()
    result.rc = proc.wait()
    result.stderr = stderr
    result.stdout_size = stdout_size
    result.duration = time.monotonic() - started
    if result.timed_out and result.rc == 0:
        result.rc = -signal.SIGKILL
    return result


def _collect(proc: subprocess.Popen[bytes], timeout: float) -> tuple[bytes, int, bool]:
    """Read stderr (kept) and stdout (counted) until the script exits; kill it on timeout."""
    assert proc.stdout is not None and proc.stderr is not None
    out_fd, err_fd = proc.stdout.fileno(), proc.stderr.fileno()
    pidfd = os.pidfd_open(proc.pid)
    kept = bytearray()
    counted = 0
    timed_out = False
    deadline = time.monotonic() + timeout if timeout > 0 else None
    kill_at: float | None = None
    with selectors.DefaultSelector() as sel:
        sel.register(out_fd, selectors.EVENT_READ)
        sel.register(err_fd, selectors.EVENT_READ)
        sel.register(pidfd, selectors.EVENT_READ)
        exited = False
        while not exited:
            wait = None
            now = time.monotonic()
            if kill_at is not None:
                wait = max(0.0, kill_at - now)
            elif deadline is not None:
                wait = max(0.0, deadline - now)
            ready = sel.select(wait)
            if not ready:
                if kill_at is None:
                    timed_out = True
                    _signal_group(proc.pid, signal.SIGTERM)
                    kill_at = time.monotonic() + KILL_GRACE
                else:
                    _signal_group(proc.pid, signal.SIGKILL)
                    kill_at = time.monotonic() + 3600
                continue
            for key, _mask in ready:
                if key.fd == pidfd:
                    exited = True
                    continue
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    sel.unregister(key.fd)
                elif key.fd == err_fd:
                    kept += chunk[: max(0, CAPTURE_LIMIT - len(kept))]
                else:
                    counted += len(chunk)
        # The script is gone; take what it wrote before exiting, but never wait for
        # children that inherited the pipes.
        for fd in (out_fd, err_fd):
            os.set_blocking(fd, False)
            for _ in range(64):
                try:
                    chunk = os.read(fd, 65536)
                except BlockingIOError:
                    break
                if not chunk:
                    break
                if fd == err_fd:
                    kept += chunk[: max(0, CAPTURE_LIMIT - len(kept))]
                else:
                    counted += len(chunk)
    os.close(pidfd)
    if timed_out:
        _signal_group(proc.pid, signal.SIGKILL)
    return bytes(kept), counted, timed_out


def _exit_on_sigterm() -> None:
    """Make SIGTERM unwind (killing the running script, removing the XML file)."""

    def terminate(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    try:
        signal.signal(signal.SIGTERM, terminate)
    except ValueError:
        pass  # not the main thread: the process's owner decides


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
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


def _log_result(log: Log, label: str, result: ScriptResult) -> None:
    first = result.stderr_text().split("\n", 1)[0][:300]
    message = (
        f"{label} script={result.script} {result.describe()} "
        f"duration={result.duration:.3f}s stderr={first!r}"
    )
    if result.stdout_size:
        message += f" stdout_bytes={result.stdout_size}"
    if result.rc is not None and result.rc > 2 and not result.error:
        log.warning(f"{message} (exit codes above 2 are reserved; treated as 1)")
    elif result.failed:
        log.error(message)
    else:
        log.info(message)
