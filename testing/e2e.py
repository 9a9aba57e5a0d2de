"""Helpers of the end-to-end tests: probe scripts in a sandbox, waits on what they
recorded, and the bridge's command line run against a sandbox.

A probe appends one JSON line per run to ``records.jsonl`` in the sandbox's bridge dir:
the event (its directory's name), ``vmId``, the domain's name, the XML it got, its
environment, its pid and parent pid, and the time.

Waits end on a condition, never after a fixed sleep: :meth:`Probe.new` returns once the
expected number of new records is there *and* the bridge's async queues and its inbox are
empty. The hook calls of a ``virsh`` command have all returned when the command has, and
each queues its async events, or saves its call in the inbox, before it returns, so once
both are empty every script that command caused has run: an extra event is in the
records, not still on its way. Events
that only the listener fires come later than that; the listener tests end their actions
with a sentinel event instead (see ``tests/e2e/test_listener_events.py``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from libvirt_bridge import mapping
from libvirt_bridge_lab.sandbox import Sandbox, process_alive

from .harness import queues_empty

PROBE = """#!{python}
import json, os, re, sys, time
event = os.path.basename(os.path.dirname(os.path.abspath(sys.argv[0])))
path = os.environ.get("_hook_domxml")
xml = open(path, "rb").read().decode("utf-8", "replace") if path else ""
name = re.search(r"<name>([^<]*)</name>", xml)
record = {{
    "event": event,
    "vmId": os.environ.get("vmId"),
    "name": name.group(1) if name else None,
    "xml": xml,
    "env": dict(os.environ),
    "pid": os.getpid(),
    "ppid": os.getppid(),
    "time": time.time(),
}}
# One write of the whole line, so that records of concurrent scripts never interleave.
fd = os.open({records!r}, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
os.write(fd, (json.dumps(record) + "\\n").encode())
os.close(fd)
"""

Record = dict[str, object]


def bridge_cli(
    sandbox: Sandbox, *args: str, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``libvirt-bridge ARGS`` with the sandbox's config, in ``env`` (default: this process's)."""
    env = dict(os.environ if env is None else env, LIBVIRT_BRIDGE_CONFIG=sandbox.config_path)
    argv = [sys.executable, "-m", "libvirt_bridge", *args]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)


def wait_until(
    condition: Callable[[], bool], what: str | Callable[[], str], timeout: float = 30
) -> None:
    """Return once ``condition()`` holds; else an AssertionError after ``timeout`` s.

    ``what`` names what was awaited; a callable is asked at the timeout, to say what is.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            said = what() if callable(what) else what
            raise AssertionError(f"timed out after {timeout} s waiting for {said}")
        time.sleep(0.05)


class Probe:
    """Probe scripts for ``events`` in ``sandbox`` (named ``50_probe``), and their records."""

    def __init__(
        self,
        sandbox: Sandbox,
        events: Iterable[str] = mapping.EVENTS,
        *,
        tail: str = "",
    ) -> None:
        self.sandbox = sandbox
        self.records = Path(sandbox.bridge_dir) / "records.jsonl"
        self.seen = 0
        self.hidden: set[str] = set()  # names of domains whose records all() leaves out
        for event in events:
            sandbox.add_hook_script(event, "50_probe", self.script(tail))

    def script(self, tail: str = "") -> str:
        """The probe's text, then ``tail`` (more Python, run after the record is written)."""
        # The interpreter the sandbox's daemons can run (the root's, in a chrooted cell).
        return PROBE.format(python=self.sandbox.python, records=str(self.records)) + tail

    def all(self) -> list[Record]:
        """Every record so far, but those of the domains in ``hidden``."""
        return [r for r in self.raw() if r["name"] not in self.hidden]

    def raw(self) -> list[Record]:
        if not self.records.exists():
            return []
        # A line still being written has no newline yet: not a record so far.
        complete = self.records.read_text().split("\n")[:-1]
        return [json.loads(line) for line in complete]

    def at_least(self, total: int, timeout: float = 60) -> list[Record]:
        """All the records, once there are ``total`` and the bridge is idle."""
        try:
            wait_until(
                lambda: len(self.all()) >= total and queues_empty(self.sandbox.state_dir),
                f"{total} probe records",
                timeout,
            )
        except AssertionError:
            got = [r["event"] for r in self.all()]
            idle = queues_empty(self.sandbox.state_dir)
            raise AssertionError(
                f"{len(got)} of {total} probe records after {timeout} s "
                f"(async queues {'empty' if idle else 'busy'}): {got}"
            ) from None
        return self.all()

    def settled(self, timeout: float = 60) -> list[Record]:
        """All the records, once the bridge's queues are empty (the listener not asked)."""
        return Probe.at_least(self, 0, timeout)

    def new(self, expected: int, timeout: float = 60) -> list[Record]:
        """The records since the last call, once there are ``expected`` and the bridge is idle.

        More than ``expected`` are returned when more came, so an equality assertion on
        the result also catches an event fired twice.
        """
        records = self.at_least(self.seen + expected, timeout)[self.seen :]
        self.seen += len(records)
        return records

    def events(self, expected: int, timeout: float = 60) -> list[str]:
        """The events of :meth:`new`."""
        return [str(r["event"]) for r in self.new(expected, timeout)]

    def log(self) -> str:
        return Path(self.sandbox.log_file).read_text()


class ListenedProbe(Probe):
    """A :class:`Probe` where the listener runs, with a sentinel guest to tell it caught up.

    The listener handles each domain's events in the order they came, so once the
    sentinel's own pause (or continue) has run its scripts, the sentinel's earlier events
    have all run, and another domain's event that came before it has been handled or is
    being handled side by side (:meth:`at_least` waits for those by count). The sentinel's
    records are hidden from :meth:`all`, but it is a domain: a resync counts it.
    """

    SENTINEL = "sentinel"

    def __init__(self, sandbox: Sandbox, events: Iterable[str] = mapping.EVENTS) -> None:
        events = tuple(events)
        assert {"after_vm_pause", "after_vm_cont"} <= set(events), "the sentinel needs both"
        super().__init__(sandbox, events)
        self.hidden.add(self.SENTINEL)
        sandbox.define_guest(self.SENTINEL)
        sandbox.virsh("start", self.SENTINEL)
        self._marks = 0

    def caught_up(self, timeout: float = 60) -> list[Record]:
        """All the records, once the listener has dispatched what libvirt sent until now."""
        self.sandbox.virsh("resume" if self._marks % 2 else "suspend", self.SENTINEL)
        self._marks += 1
        try:
            wait_until(
                lambda: (
                    len(self._sentinel_marks()) >= self._marks
                    and queues_empty(self.sandbox.state_dir)
                ),
                "the sentinel's event",
                timeout,
            )
        except AssertionError:
            raise AssertionError(
                f"the listener did not fire the sentinel's event {self._marks} in {timeout} s "
                f"(it fired {self._sentinel_marks()}); the others: "
                f"{[r['event'] for r in self.all()]}"
            ) from None
        return self.all()

    def at_least(self, total: int, timeout: float = 60) -> list[Record]:
        """:meth:`Probe.at_least`, once the listener caught up: a late or doubled event shows.

        The listener handles domains side by side, so another domain's event that came
        just before the sentinel's may still be on its way: ``total`` covers that.
        """
        self.caught_up(timeout)
        return super().at_least(total, timeout)

    def _sentinel_marks(self) -> list[str]:
        return [
            str(r["event"])
            for r in self.raw()
            if r["name"] == self.SENTINEL and r["event"] in ("after_vm_pause", "after_vm_cont")
        ]


def probed(
    sandbox: Sandbox,
    *,
    listener: bool = False,
    events: Iterable[str] = mapping.EVENTS,
    **config: object,
) -> Probe:
    """The bridge installed in ``sandbox`` (with ``config``), probes, and the listener if asked."""
    sandbox.install_bridge(config or None)
    probe = Probe(sandbox, events)
    if listener:
        sandbox.start_listener()
    return probe


def listened(sandbox: Sandbox, events: Iterable[str] = mapping.EVENTS) -> ListenedProbe:
    """The bridge installed in ``sandbox``, probes, the listener and its sentinel guest."""
    sandbox.install_bridge()
    sandbox.start_listener()
    return ListenedProbe(sandbox, events)


def kill_listener(sandbox: Sandbox) -> None:
    """SIGKILL the sandbox's listener, and return once it is gone (a zombie counts)."""
    pid = sandbox.listener_pid()
    os.kill(pid, signal.SIGKILL)
    # Until then start_listener() would find it running and start none.
    wait_until(lambda: not process_alive(pid), f"the killed listener {pid} gone", 10)


def events_of(records: list[Record], uuid: str) -> list[str]:
    """The events in ``records`` of the domain with UUID ``uuid``, in order."""
    return [str(r["event"]) for r in records if r["vmId"] == uuid]
