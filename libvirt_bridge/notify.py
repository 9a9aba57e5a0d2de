"""The webhook: one JSON POST per failed run (or per run, with ``notify = "all"``).

The sink never sends: inside libvirt's hook call a slow or dead server would hold the
domain's lock. It writes the event's records to send into ``<state_dir>/notify/`` and forks
a detached sender, which posts each record to ``notify_url`` and removes the file: a
bounded retry (``DELAYS``), then the record is dropped and the log says so. One sender at a
time holds the outbox's lock; one that finds it held leaves the files to the holder, which
looks again before it lets go. The outbox keeps at most ``OUTBOX_LIMIT`` files.
"""

from __future__ import annotations

import posix

from .files import write_atomic
from .plainos import join, makedirs

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .config import Config
    from .log import Log
    from .records import RunRecord

OUTBOX = "notify"
SUFFIX = ".jsonl"
# Seconds to wait before each retry of a POST that failed.
DELAYS = (0.5, 2.0)
TIMEOUT = 5.0
OUTBOX_LIMIT = 1000


def queue(config: Config, records: list[RunRecord]) -> None:
    """The ``notify`` sink: put what is to be sent in the outbox, start a sender."""
    from .log import Log

    if not config.notify_url:
        return
    wanted = [r for r in records if config.notify == "all" or r.outcome != "ok"]
    if not wanted:
        return
    import time

    outbox = join(config.state_dir, OUTBOX)
    makedirs(outbox, 0o700)
    name = f"{time.time_ns():020d}-{posix.getpid()}{SUFFIX}"
    write_atomic(join(outbox, name), "".join(r.to_json() + "\n" for r in wanted), 0o600)
    _spawn_sender(config, Log.of(config))


def _spawn_sender(config: Config, log: Log) -> None:
    """Fork a detached process that sends the outbox; return at once."""
    from .detached import fork_detached

    work = lambda: send_outbox(config, log)  # noqa: E731
    fork_detached(work, log, "the webhook's sender", "the records wait in the outbox")


def send_outbox(config: Config, log: Log) -> None:
    """Send every file of the outbox, unless another sender holds it."""
    import fcntl

    outbox = join(config.state_dir, OUTBOX)
    while _pending(outbox):
        fd = posix.open(outbox + ".lock", posix.O_RDWR | posix.O_CREAT | posix.O_CLOEXEC, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return  # its holder looks again before it lets go
            while names := _pending(outbox):
                for name in names[: max(0, len(names) - OUTBOX_LIMIT)]:
                    log.error(f"notify: the outbox is full; dropped {name}")
                    _unlink(join(outbox, name))
                for name in names[-OUTBOX_LIMIT:]:
                    _send_file(config, log, join(outbox, name))
        finally:
            posix.close(fd)


def _pending(outbox: str) -> list[str]:
    try:
        return sorted(n for n in posix.listdir(outbox) if n.endswith(SUFFIX))
    except FileNotFoundError:
        return []


def _send_file(config: Config, log: Log, path: str) -> None:
    try:
        with open(path, "rb") as f:
            lines = [line for line in f.read().splitlines() if line.strip()]
    except FileNotFoundError:
        return
    for line in lines:
        _post(config.notify_url, line, log)
    _unlink(path)


def _post(url: str, body: bytes, log: Log) -> bool:
    """POST one record, retrying; whether the server took it (a 2xx answer)."""
    import time
    import urllib.error
    import urllib.request

    problem = ""
    for delay in (0.0, *DELAYS):
        time.sleep(delay)
        request = urllib.request.Request(
            url, data=body, method="POST", headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT) as answer:
                if 200 <= answer.status < 300:
                    return True
                problem = f"HTTP {answer.status}"
        except urllib.error.HTTPError as exc:
            problem = f"HTTP {exc.code}"
        except (OSError, ValueError) as exc:
            problem = str(getattr(exc, "reason", exc))
    log.error(
        f"notify: {url} did not take a record after {1 + len(DELAYS)} tries ({problem}); dropped"
    )
    return False


def _unlink(path: str) -> None:
    try:
        posix.unlink(path)
    except FileNotFoundError:
        pass
