"""The helpers of the end-to-end tests, one set for every file in ``tests/e2e``: probe
scripts in a sandbox (or a lab), waits on what they recorded, guests defined from XML,
and the bridge's command line run against a sandbox.

A probe (``probes.PROBE``) appends one JSON line per run to ``records.jsonl`` in the
sandbox's bridge dir; ``probes`` has the readers of those records (``events_of``,
``env_of``, ``element_of``).

Waits end on a condition, never after a fixed sleep (``waits.wait_until``):
:meth:`ProbeRecords.new` returns once the expected number of new records is there *and*
the bridge's async queues and its inbox are empty. The hook calls of a ``virsh`` command
have all returned when the command has, and each queues its async events, or saves its
call in the inbox, before it returns, so once both are empty every script that command
caused has run: an extra event is in the records, not still on its way. Events that only
the listener fires come later than that: :class:`ListenedProbe` ends each wait with a
sentinel guest's own event instead.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

from lxml import etree

from libvirt_bridge import mapping
from libvirt_bridge_lab.lab import Lab
from libvirt_bridge_lab.sandbox import Sandbox, process_alive
from libvirt_bridge_lab.sandbox.cells import Cell

from .harness import queues_empty, write_hook_script
from .probes import (
    DESTROYED,
    GUEST_CYCLE,
    STARTED,
    Record,
    element_of,
    env_of,
    events_of,
    probe_script,
    read_records,
)
from .waits import wait_for_file, wait_until

__all__ = [
    "DESTROYED",
    "GUEST_CYCLE",
    "STARTED",
    "ListenedProbe",
    "Probe",
    "ProbeRecords",
    "Record",
    "bridge_cli",
    "define_with_devices",
    "define_xml",
    "element_of",
    "env_of",
    "events_of",
    "kill_listener",
    "lab_probe",
    "listened",
    "migrate_verb",
    "probed",
    "queues_empty",
    "read_records",
    "resynced",
    "sentinel_script",
    "verb",
    "wait_for_file",
    "wait_until",
]

PROBE_NAME = "50_probe"


def bridge_cli(
    sandbox: Sandbox, *args: str, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``libvirt-bridge ARGS`` with the sandbox's config, in ``env`` (default: this process's)."""
    env = dict(os.environ if env is None else env, LIBVIRT_BRIDGE_CONFIG=sandbox.config_path)
    argv = [sys.executable, "-m", "libvirt_bridge", *args]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)


def verb(
    sandbox: Sandbox, name: str, *args: str, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``libvirt-bridge NAME --connect URI ARGS``: a verb (or props, run...) on ``sandbox``."""
    return bridge_cli(sandbox, name, "--connect", sandbox.uri, *args, env=env)


def migrate_verb(
    source: Sandbox, destination: Sandbox, domain: str = "g1"
) -> subprocess.CompletedProcess[str]:
    """``libvirt-bridge migrate --live`` of ``domain`` from ``source`` to ``destination``."""
    over_tcp = ("--migrateuri", "tcp://127.0.0.1")
    return verb(source, "migrate", "--live", domain, destination.uri, *over_tcp)


def define_xml(sandbox: Sandbox, xml: str) -> str:
    """Define the domain of ``xml`` in ``sandbox``; its UUID."""
    root = etree.fromstring(xml.encode())
    path = Path(sandbox.bridge_dir) / f"{root.findtext('name')}.xml"
    path.write_text(xml)
    sandbox.virsh("define", str(path))
    return str(root.findtext("uuid"))


def define_with_devices(sandbox: Sandbox, name: str, *devices: str, metadata: str = "") -> str:
    """Define the sandbox's tiny guest ``name`` with ``devices`` (elements) and
    ``metadata``; its UUID."""
    added = "".join(f"    {device}\n" for device in devices)
    xml = sandbox.domain_xml(name, metadata=metadata).replace(
        "  </devices>", added + "  </devices>"
    )
    return define_xml(sandbox, xml)


class ProbeRecords:
    """The records of probe scripts in ``path``, read once the bridge (``state_dir``) is idle."""

    def __init__(self, path: Path, state_dir: str, log_file: str) -> None:
        self.path = path
        self.state_dir = state_dir
        self.log_file = log_file
        self.seen = 0
        self.hidden: set[str] = set()  # names of domains whose records all() leaves out

    def all(self) -> list[Record]:
        """Every record so far, but those of the domains in ``hidden``."""
        return [r for r in self.raw() if r["name"] not in self.hidden]

    def raw(self) -> list[Record]:
        return read_records(self.path)

    def at_least(self, total: int, timeout: float = 60) -> list[Record]:
        """All the records, once there are ``total`` and the bridge is idle."""
        try:
            wait_until(
                lambda: len(self.all()) >= total and queues_empty(self.state_dir),
                f"{total} probe records",
                timeout,
            )
        except AssertionError:
            got = events_of(self.all())
            idle = queues_empty(self.state_dir)
            raise AssertionError(
                f"{len(got)} of {total} probe records after {timeout} s "
                f"(async queues {'empty' if idle else 'busy'}): {got}"
            ) from None
        return self.all()

    def settled(self, timeout: float = 60) -> list[Record]:
        """All the records, once the bridge's queues are empty (the listener not asked)."""
        return ProbeRecords.at_least(self, 0, timeout)

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
        return events_of(self.new(expected, timeout))

    def log(self) -> str:
        """The bridge's log."""
        return Path(self.log_file).read_text()


class Probe(ProbeRecords):
    """Probe scripts for ``events`` in ``sandbox`` (named ``50_probe``), and their records.

    ``tail`` is more Python, run by each probe after its record is written; ``python``
    runs the probes (default: the interpreter the sandbox's daemons can run, the root's in
    a chrooted cell).
    """

    def __init__(
        self,
        sandbox: Sandbox,
        events: Iterable[str] = mapping.EVENTS,
        *,
        tail: str = "",
        python: str | None = None,
    ) -> None:
        records = Path(sandbox.bridge_dir) / "records.jsonl"
        super().__init__(records, sandbox.state_dir, sandbox.log_file)
        self.sandbox = sandbox
        # Its text, for a test that installs it elsewhere (the Ansible role's hooks).
        self.script = probe_script(python or sandbox.python, records, tail)
        for event in events:
            sandbox.add_hook_script(event, PROBE_NAME, self.script)


class ListenedProbe(Probe):
    """A :class:`Probe` where the listener runs, with a sentinel guest to tell it caught up.

    The listener handles each domain's events in the order they came, so once the
    sentinel's own pause (or continue) has run its scripts, the sentinel's earlier events
    have all run, and another domain's event that came before it has been handled or is
    being handled side by side (:meth:`at_least` waits for those by count). The sentinel's
    records are hidden from :meth:`all`, but it is a domain: a resync counts it.
    """

    SENTINEL = "sentinel"
    SENTINEL_EVENTS = ("after_vm_pause", "after_vm_cont")

    def __init__(self, sandbox: Sandbox, events: Iterable[str] = mapping.EVENTS) -> None:
        events = tuple(events)
        assert set(self.SENTINEL_EVENTS) <= set(events), "the sentinel needs both"
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
                lambda: len(self._sentinel_marks()) >= self._marks and queues_empty(self.state_dir),
                "the sentinel's event",
                timeout,
            )
        except AssertionError:
            raise AssertionError(
                f"the listener did not fire the sentinel's event {self._marks} in {timeout} s "
                f"(it fired {self._sentinel_marks()}); the others: {events_of(self.all())}"
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
            event
            for event in events_of([r for r in self.raw() if r["name"] == self.SENTINEL])
            if event in self.SENTINEL_EVENTS
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
    """The bridge installed in ``sandbox``, probes, the listener and its sentinel guest.

    ``events`` must include the sentinel's (``ListenedProbe.SENTINEL_EVENTS``).
    """
    sandbox.install_bridge()
    sandbox.start_listener()
    return ListenedProbe(sandbox, events)


def lab_probe(lab: Lab, records: Path, events: Iterable[str]) -> ProbeRecords:
    """Probe scripts for ``events`` in ``lab`` (``libvirt-bridge lab``), recording to
    ``records`` (a file its daemons can reach)."""
    # On the host's libvirt the lab's daemons run this interpreter too; in a chrooted
    # cell's root it is not there.
    assert not Cell.parse(lab.libvirt).chrooted, f"a probe in a {lab.libvirt} lab"
    script = probe_script(sys.executable, records)
    for event in events:
        write_hook_script(Path(lab.hooks_root), event, PROBE_NAME, script)
    return ProbeRecords(records, lab.state_dir, lab.log_file)


def kill_listener(sandbox: Sandbox) -> None:
    """SIGKILL the sandbox's listener, and return once it is gone (a zombie counts)."""
    pid = sandbox.listener_pid()
    os.kill(pid, signal.SIGKILL)
    # Until then start_listener() would find it running and start none.
    wait_until(lambda: not process_alive(pid), f"the killed listener {pid} gone", 10)


def sentinel_script(sentinel: Path, then: str) -> str:
    """A hook script that creates ``sentinel`` once it runs (for :func:`wait_for_file`),
    then runs the shell command ``then``."""
    return f"#!/bin/sh\ntouch {sentinel}\n{then}\n"


def resynced(probe: ProbeRecords, line: str) -> None:
    """Return once the listener's log has its resync ``line`` (it names the domains it
    found and the events it fired)."""
    wait_until(lambda: line in probe.log(), f"{line!r} in the log")
