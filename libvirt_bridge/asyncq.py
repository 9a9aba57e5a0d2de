"""Async (after_*) events: a per-domain queue on disk, drained by a detached runner.

An async event must not hold libvirt's operation, and its scripts may call ``virsh`` on
their own domain (libvirt holds the domain's lock while a hook runs). So the hook writes
a job file into ``<state_dir>/queue/<key>/`` (``key``: the domain UUID, or ``daemon``)
and forks a runner in a new session with its stdio on ``/dev/null``; the hook then exits.

A queue's jobs run one at a time in the order they were queued: the runner holds an
exclusive ``flock`` on ``<key>.lock`` while it drains, and every runner drains the whole
queue, so a job queued while another runner holds the lock is taken by one of them. A job
is renamed ``.running`` while its scripts run; a ``.running`` left by a runner that died
(the lock went with it) is logged as interrupted and dropped, and the queue goes on.
"""

from __future__ import annotations

import posix
import time

from .files import write_atomic
from .jobs import Job
from .plainos import join, makedirs, split

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from .config import Config
    from .log import Log

JOB = ".job"
RUNNING = ".running"
DAEMON = "daemon"  # the queue of the daemon events; the others are named by domain UUID


def queue_dir(state_dir: str, key: str) -> str:
    return join(state_dir, "queue", key)


def enqueue(state_dir: str, key: str, job: Job) -> str:
    """Write ``job`` at the tail of queue ``key``; return its path. Raises OSError."""
    directory = queue_dir(state_dir, key)
    makedirs(directory, 0o700)
    # CLOCK_MONOTONIC is one clock for every process of the host, so the hook and the
    # listener queue into one order.
    stem = f"{time.monotonic_ns():020d}-{posix.getpid()}"
    path = join(directory, stem + JOB)
    write_atomic(path, job.encode(), 0o600)
    return path


def spawn_runner(config: Config, log: Log, key: str) -> None:
    """Fork a detached process that drains queue ``key``; return at once."""
    from .detached import fork_detached

    # A lambda, not functools.partial: functools costs the hook path an import.
    fork_detached(
        lambda: drain(config, log, key), log, f"the async runner for {key}", "queued jobs wait"
    )


def run_queue(config_path: str, key: str) -> int:
    """Drain queue ``key`` with the config at ``config_path``; the exit status.

    The body of the detached runner the listener execs when its drainer cannot start
    (``drainer``; the hook forks its runners instead): it
    imports only the config, log and state modules, so it starts about as fast as a bare
    interpreter.
    """
    from .config import ConfigError, load
    from .log import Log, say
    from .state import is_uuid

    try:
        config = load(config_path)
    except ConfigError as exc:
        say(str(exc))
        return 1
    if key != DAEMON and not is_uuid(key):
        say(f"drain: {key!r} is neither a domain UUID nor {DAEMON!r}")
        return 2
    drain(config, Log.of(config), key)
    return 0


def drain(config: Config, log: Log, key: str, stop: Callable[[], bool] | None = None) -> None:
    """Run every job of queue ``key`` in order, holding the queue's lock.

    ``stop``: asked before each job; when it says so, the jobs left stay queued.
    """
    import fcntl

    directory = queue_dir(config.state_dir, key)
    try:
        lock_fd = posix.open(
            directory + ".lock", posix.O_RDWR | posix.O_CREAT | posix.O_CLOEXEC, 0o600
        )
    except FileNotFoundError:
        # No queue directory: nothing was ever queued here (enqueue creates it), or the
        # state dir was wiped with its jobs. Nothing to run either way.
        return
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        while stop is None or not stop():
            job = _next_job(directory, log)
            if job is None:
                return
            _run_job(config, log, job)
    finally:
        posix.close(lock_fd)


def pending_keys(state_dir: str) -> list[str]:
    """The queues that hold a job, queued or left running by a runner that died."""
    root = join(state_dir, "queue")
    try:
        keys = posix.listdir(root)
    except OSError:
        return []
    pending = []
    for key in keys:
        try:
            names = posix.listdir(join(root, key))
        except OSError:
            continue  # a lock file, or a queue gone meanwhile
        if any(name.endswith((JOB, RUNNING)) for name in names):
            pending.append(key)
    return sorted(pending)


def _next_job(directory: str, log: Log) -> Job | None:
    try:
        names = sorted(n for n in posix.listdir(directory) if n.endswith((JOB, RUNNING)))
    except FileNotFoundError:
        return None
    for name in names:
        path = join(directory, name)
        if name.endswith(RUNNING):
            job = _load(path)
            what = f"{job.event} of {job.name!r} ({job.uuid})" if job else name
            log.error(f"async event {what} was interrupted: its runner died; not run again")
            _remove_job(path)
            continue
        running = path[: -len(JOB)] + RUNNING
        try:
            posix.rename(path, running)
        except FileNotFoundError:
            continue
        job = _load(running)
        if job is None:
            log.error(f"async job {running} is unreadable; dropped")
            _unlink(running)
            continue
        return job
    return None


def _load(path: str) -> Job | None:
    try:
        with open(path, "rb") as f:
            return Job.decode(f.read(), path)
    except (OSError, ValueError):
        return None


def _run_job(config: Config, log: Log, job: Job) -> None:
    from .discovery import find_scripts
    from .events import run_scripts_for

    try:
        # The hook already logged what it skipped in the event's directories.
        scripts = find_scripts(config.hooks_dirs, job.event)
        tmp_prefix = _stem(job.path) + "."
        if job.per_device:
            from .per_device import run_after

            run_after(config, log, job, scripts, tmp_prefix)
        else:
            run_scripts_for(
                config,
                log,
                job.event,
                job.name,
                job.uuid,
                job.xml,
                scripts,
                tmp_prefix,
                job.props,
                job.source,
            )
    finally:
        _unlink(job.path)


def _stem(path: str) -> str:
    return path.rsplit(".", 1)[0]


def _remove_job(path: str) -> None:
    """A job file and the XML file its runner was using, if any."""
    directory, stem = split(_stem(path))
    for name in posix.listdir(directory):
        if name.startswith(stem + ".") and name.endswith(".xml"):
            _unlink(join(directory, name))
    _unlink(path)


def _unlink(path: str) -> None:
    try:
        posix.unlink(path)
    except FileNotFoundError:
        pass
