"""Prometheus counters of script runs, in a text file for node_exporter's textfile collector.

Hooks run in many short-lived processes, so each event's runs are added to the counts the
file holds: under a lock (``<state_dir>/metrics.lock``) the file is read back, added to and
rewritten atomically (a scrape never reads half a file), once per event. The lock is in the
state dir, on /run: a reboot empties it, but the file keeps counting; remove the file to
start again (``rate()`` and ``increase()`` take that as a counter reset).
"""

from __future__ import annotations

import posix

from .files import write_atomic
from .plainos import join, makedirs

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .config import Config
    from .records import RunRecord

PREFIX = "libvirt_bridge_"
# Upper bounds (seconds) of the duration histogram's buckets; +Inf is implied.
BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
LOCK = "metrics.lock"
RUNS = f"{PREFIX}script_runs_total"
DURATION = f"{PREFIX}script_duration_seconds"
LAST_FAILURE = f"{PREFIX}last_failure_timestamp_seconds"
_BOUNDS = {str(bound): i for i, bound in enumerate(BUCKETS)}


class Counts:
    """The counters of every run so far: by (event, outcome), and per event its durations
    (count, sum, cumulative bucket counts) and the time of its last failure."""

    def __init__(self) -> None:
        self.runs: dict[tuple[str, str], int] = {}
        self.durations: dict[str, list[float]] = {}  # [count, sum, *buckets]
        self.last_failure: dict[str, float] = {}

    @classmethod
    def parse(cls, text: str) -> Counts:
        """The counts of a file :meth:`render` wrote; a line of another shape is skipped."""
        counts = cls()
        for line in text.splitlines():
            if line.startswith("#") or "{" not in line:
                continue
            name, _, rest = line.partition("{")
            labels_text, _, value = rest.partition("} ")
            labels = dict(
                pair.split("=", 1)
                for pair in labels_text.replace('"', "").split(",")
                if "=" in pair
            )
            try:
                counts._take(name, labels, float(value))
            except (KeyError, ValueError):
                continue
        return counts

    def _take(self, name: str, labels: dict[str, str], value: float) -> None:
        event = labels["event"]
        if name == RUNS:
            self.runs[(event, labels["outcome"])] = int(value)
        elif name == LAST_FAILURE:
            self.last_failure[event] = value
        elif name.startswith(DURATION):
            series = self.durations.setdefault(event, [0.0] * (2 + len(BUCKETS)))
            if name == f"{DURATION}_count":
                series[0] = value
            elif name == f"{DURATION}_sum":
                series[1] = value
            elif name == f"{DURATION}_bucket" and labels["le"] in _BOUNDS:
                series[2 + _BOUNDS[labels["le"]]] = value

    def add(self, record: RunRecord) -> None:
        key = (record.event, record.outcome)
        self.runs[key] = self.runs.get(key, 0) + 1
        series = self.durations.setdefault(record.event, [0.0] * (2 + len(BUCKETS)))
        series[0] += 1
        series[1] += record.duration
        for i, bound in enumerate(BUCKETS):
            if record.duration <= bound:
                series[2 + i] += 1
        if record.outcome != "ok":
            last = self.last_failure.get(record.event, 0.0)
            self.last_failure[record.event] = max(last, record.time)

    def render(self) -> str:
        """The Prometheus text exposition format."""
        runs, duration, failure = RUNS, DURATION, LAST_FAILURE
        out = [
            f"# HELP {runs} Hook script runs, by VDSM event and outcome.",
            f"# TYPE {runs} counter",
        ]
        for (event, outcome), n in sorted(self.runs.items()):
            out.append(f'{runs}{{event="{event}",outcome="{outcome}"}} {n}')
        out += [
            f"# HELP {duration} How long hook scripts ran, by VDSM event.",
            f"# TYPE {duration} histogram",
        ]
        for event, series in sorted(self.durations.items()):
            for bound, hits in zip(BUCKETS, series[2:], strict=True):
                out.append(f'{duration}_bucket{{event="{event}",le="{bound}"}} {_number(hits)}')
            out.append(f'{duration}_bucket{{event="{event}",le="+Inf"}} {_number(series[0])}')
            out.append(f'{duration}_sum{{event="{event}"}} {series[1]:.6f}')
            out.append(f'{duration}_count{{event="{event}"}} {_number(series[0])}')
        out += [
            f"# HELP {failure} When a hook script of the VDSM event last failed (Unix time).",
            f"# TYPE {failure} gauge",
        ]
        for event, at in sorted(self.last_failure.items()):
            out.append(f'{failure}{{event="{event}"}} {at:.3f}')
        return "\n".join(out) + "\n"


def _number(value: float) -> str:
    return str(int(value)) if value == int(value) else f"{value:.6f}"


def count(config: Config, records: list[RunRecord]) -> None:
    """Add ``records`` to the counters of the metrics file (the ``metrics`` sink). Raises
    OSError."""
    if not config.metrics_file or not records:
        return
    import fcntl

    makedirs(config.state_dir, 0o755)
    flags = posix.O_RDWR | posix.O_CREAT | posix.O_CLOEXEC
    fd = posix.open(join(config.state_dir, LOCK), flags, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        counts = Counts.parse(_read(config.metrics_file))
        for record in records:
            counts.add(record)
        write_atomic(config.metrics_file, counts.render(), 0o644)
    finally:
        posix.close(fd)


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return ""
