"""The listener's drainer: one long-lived process that runs the listener's async events.

The listener queues each event it fires into the domain's async queue (``asyncq``) and
hands the queue's key to its drainer, a child process that reads keys on its stdin, one a
line, and drains each queue on a thread of its own (a domain's jobs in order, domains
side by side). Its scripts' spawns and their output cost the listener nothing, as a
process of their own, with a GIL of their own: under a burst of events, the listener's
threads keep handling events while the drainer starts scripts.

- The listener starts its drainer as it starts, and starts a new one when it has a key
  to hand over and the last is gone; a new drainer is handed every queue that holds a job,
  so a drainer killed midway loses nothing (its running job is logged as interrupted by
  the next drain, as for any runner; ``asyncq``).
- A listener that stops closes its drainer's stdin: the drainer drains what it was handed
  and exits. It runs in a session of its own, so it outlives the listener.
- When no drainer can be started, the key goes to a detached runner (``asyncq.run_queue``),
  as the listener's queues did before it had a drainer.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import threading

from .asyncq import DAEMON, drain, pending_keys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .log import Log

# The process bodies the listener execs. Not the CLI: it imports every command (argparse,
# libvirt, lxml). The import path comes in argv, not in the environment, which the hook
# scripts inherit.
DRAINER_BOOTSTRAP = """import sys
sys.path[:0] = sys.argv[2:]
from libvirt_bridge.drainer import serve
sys.exit(serve(sys.argv[1]))
"""
RUNNER_BOOTSTRAP = """import sys
sys.path[:0] = sys.argv[3:]
from libvirt_bridge.asyncq import run_queue
sys.exit(run_queue(sys.argv[1], sys.argv[2]))
"""


def drainer_argv(config_path: str, paths: list[str]) -> list[str]:
    """The command of a drainer for the config at ``config_path``, importing from ``paths``."""
    return [sys.executable, "-I", "-S", "-c", DRAINER_BOOTSTRAP, config_path, *paths]


def runner_argv(config_path: str, key: str, paths: list[str]) -> list[str]:
    """The command of a detached runner that drains queue ``key``, importing from ``paths``."""
    return [sys.executable, "-I", "-S", "-c", RUNNER_BOOTSTRAP, config_path, key, *paths]


class Drainer:
    """The listener's side: hands keys to its drainer process, (re)starting it as needed."""

    def __init__(self, config_path: str, state_dir: str, paths: list[str], log: Log) -> None:
        self.config_path = os.path.abspath(config_path)
        self.state_dir = state_dir
        self.paths = paths
        self.log = log
        self.lock = threading.Lock()
        self.process: subprocess.Popen[bytes] | None = None
        self.detached: list[subprocess.Popen[bytes]] = []

    def hand_over(self, key: str) -> None:
        """Have queue ``key`` drained (its jobs are on disk already)."""
        with self.lock:
            alive = self.process is not None and self.process.poll() is None
            if alive and self._write([key]):
                return
            # None yet, or gone: a new one takes every queue with a job, ``key``'s too.
            if not self._start():
                self._detach(key)

    def start(self) -> None:
        """Start the drainer, handed every queue that holds a job (a listener's start)."""
        with self.lock:
            if not self._start():
                for key in pending_keys(self.state_dir):
                    self._detach(key)

    def close(self) -> None:
        """No more keys: the drainer drains what it has and exits (not waited for).

        A drainer already gone leaves its queues to detached runners.
        """
        with self.lock:
            process, self.process = self.process, None
            if process is not None and process.poll() is None and process.stdin is not None:
                try:
                    process.stdin.close()
                    return
                except OSError:
                    pass
            for key in pending_keys(self.state_dir):
                self._detach(key)

    def reap(self) -> None:
        """Collect the detached runners that have exited."""
        with self.lock:
            self.detached = [p for p in self.detached if p.poll() is None]

    def _start(self) -> bool:
        try:
            self.process = _session_child(
                drainer_argv(self.config_path, self.paths), subprocess.PIPE
            )
        except OSError as exc:
            self.log.error(f"listener: cannot start its drainer: {exc.strerror}")
            self.process = None
            return False
        return self._write(pending_keys(self.state_dir))

    def _write(self, keys: list[str]) -> bool:
        assert self.process is not None and self.process.stdin is not None
        try:
            self.process.stdin.write("".join(f"{key}\n" for key in keys).encode())
            self.process.stdin.flush()
        except OSError:
            return False  # it died (EPIPE): the caller starts another
        return True

    def _detach(self, key: str) -> None:
        try:
            self.detached.append(
                _session_child(runner_argv(self.config_path, key, self.paths), subprocess.DEVNULL)
            )
        except OSError as exc:
            self.log.error(
                f"listener: cannot start the async runner for {key}: {exc.strerror}; "
                "its jobs wait for the domain's next event"
            )


def _session_child(argv: list[str], stdin: int) -> subprocess.Popen[bytes]:
    """``argv`` in a session of its own, at ``/``, its output on /dev/null. Raises OSError."""
    # A fork of this multi-threaded process must exec at once: Popen does.
    return subprocess.Popen(
        argv,
        cwd="/",
        stdin=stdin,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def serve(config_path: str) -> int:
    """The drainer process: drain each queue whose key comes on stdin; the exit status."""
    from .config import ConfigError, load
    from .log import Log, say
    from .runner import spawn_without_gil
    from .serial import Serial
    from .state import is_uuid

    try:
        config = load(config_path)
    except ConfigError as exc:
        say(str(exc))
        return 1
    log = Log.of(config)
    spawn_without_gil()
    queues = Serial(log, "drainer")
    refused = False
    for line in sys.stdin.buffer:
        key = line.decode("utf-8", "replace").strip()
        # The config as it is now (script_timeout, hooks_dirs, ...), for what comes from
        # now on; its cache makes this a stat when the file has not changed.
        try:
            config, refused = load(config_path), False
        except ConfigError as exc:
            if not refused:
                log.error(f"drainer: {exc}; keeping the config read before")
            refused = True
        if key == DAEMON or is_uuid(key):
            queues.submit(key, functools.partial(drain, config, log, key))
        else:
            log.error(f"drainer: {key!r} is neither a domain UUID nor {DAEMON!r}; ignored")
    queues.wait_idle()
    return 0
