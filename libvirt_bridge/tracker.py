"""Deciding which lifecycle events are a real pause, continue or finished incoming migration.

libvirt's event details cannot tell a user's pause from a save's, nor a user's resume from
the resume of every boot and restore; the domain's state reason can. The reason is read
when the event is handled, which may be after later changes (events come in bursts), so
the tracker also remembers, per domain, the last state it settled on:

- a pause fires ``after_vm_pause`` when the domain is paused for a pause reason (user,
  I/O error, watchdog), or already running again with reason ``unpaused`` (a user's
  resume ended it before we looked), unless it is already known to be paused that way;
- a resume fires ``after_vm_cont`` only when the domain was known paused for a pause
  reason, so the resume of a boot, a restore or a cancelled save fires nothing;
- ``RESUMED/MIGRATED`` fires ``after_vm_migrate_destination`` when the domain came in by
  migration (``STARTED/MIGRATED`` seen, or running with reason ``migrated``), not when
  a failed outgoing migration resumes the source (reason ``migration_canceled``); after a
  gap, a domain found running with reason ``migrated`` that was not so before came in
  meanwhile.

Pure logic, no libvirt: states, reasons, events and details are libvirt's constant names,
lower-cased (``paused``/``user``, ``suspended``/``paused``).
"""

from __future__ import annotations

from . import mapping

# The state reasons of a real pause: the contexts of the table's pause rows.
PAUSE_REASONS = frozenset(
    row.context
    for row in mapping.HOOK_TABLE
    if (row.driver, row.op, row.subop) == ("listener", "suspended", "paused")
)
SHUTOFF = ("shutoff", "unknown")
RUNNING_MIGRATED = ("running", "migrated")


def _event(op: str, subop: str, context: str) -> str:
    """The event of the listener's row for this lifecycle event and state reason."""
    row = mapping.find_row("listener", op, subop, context)
    assert row is not None, (op, subop, context)
    return row.event


PAUSED = _event("suspended", "paused", "user")
CONTINUED = _event("resumed", "unpaused", "unpaused")
CAME_IN = _event("resumed", "migrated", "migrated")

DomainState = tuple[str, str]
# A domain started with its vCPUs paused (virsh start --paused): the SUSPENDED/PAUSED that
# follows its STARTED/BOOTED is no one's pause.
STARTED_PAUSED = ("paused", "start")


def _is_pause(state: DomainState) -> bool:
    return state[0] == "paused" and state[1] in PAUSE_REASONS


class Tracker:
    """What the listener knows of each domain, keyed by UUID."""

    def __init__(self, known: dict[str, DomainState] | None = None) -> None:
        self.known: dict[str, DomainState] = dict(known or {})
        self.incoming: set[str] = set()
        # Domains whose known state is a resync's snapshot, with no event handled since.
        # An event that follows was emitted after the callbacks were registered, so it is
        # news even when the snapshot (read later) already shows its effect.
        self.snapshot_only: set[str] = set()
        # Domains that had a RESUMED since they last stopped: a boot resumes its vCPUs
        # before its STARTED/BOOTED; a start --paused does not.
        self.resumed: set[str] = set()

    def paused_for_pause(self, uuid: str) -> bool:
        state = self.known.get(uuid)
        return state is not None and _is_pause(state)

    def implied_state(self, uuid: str, event: str, detail: str) -> DomainState | None:
        """The state this event alone shows, so that none need be read; None: read it.

        A RESUMED/UNPAUSED of a domain known paused for a pause reason is a resume of that
        pause: libvirt's other resumes (a boot's, a restore's, a cancelled save's) come to
        a domain not paused that way, or with another detail. Reading the state in a burst
        of resumes waits for the daemon's workers, which the resumes themselves keep busy.
        """
        if event == "resumed" and detail == "unpaused" and self.paused_for_pause(uuid):
            return ("running", "unpaused")
        return None

    def observe(self, uuid: str, event: str, detail: str, current: DomainState) -> str | None:
        """The VDSM event that this lifecycle event fires (or None); remembers the result."""
        state, reason = current
        fired: str | None = None
        settled = current
        if event == "suspended":
            context = reason if state == "paused" else ""
            if current == ("running", "unpaused"):
                context = "user"
            row = mapping.find_row("listener", event, detail, context)
            if row is not None:
                started_paused = self.known.get(uuid) == STARTED_PAUSED
                if (not self.paused_for_pause(uuid) or uuid in self.snapshot_only) and not (
                    started_paused
                ):
                    fired = row.event
                settled = ("paused", context or detail)
        elif event == "resumed" and detail == "unpaused":
            was_paused = self.paused_for_pause(uuid) or (
                uuid in self.snapshot_only and current == ("running", "unpaused")
            )
            if was_paused and (reason == "unpaused" or state == "paused"):
                row = mapping.find_row("listener", event, detail, "unpaused")
                fired = row.event if row else None
                if state == "paused":
                    # Paused again before we looked: the next SUSPENDED says how.
                    settled = ("running", "unpaused")
        elif event == "resumed" and detail == "migrated":
            # Running with reason "migrated" shows it came in, unless a resync already
            # fired for that (its snapshot showed it and nothing was handled since).
            fired_on_resync = (
                self.known.get(uuid) == RUNNING_MIGRATED and uuid not in self.snapshot_only
            )
            came_in = uuid in self.incoming or (current == RUNNING_MIGRATED and not fired_on_resync)
            if came_in and reason != "migration_canceled":
                row = mapping.find_row("listener", event, detail, "migrated")
                fired = row.event if row else None
            self.incoming.discard(uuid)
        elif event == "started" and detail == "migrated":
            self.incoming.add(uuid)
        elif event in ("stopped", "undefined"):
            self.incoming.discard(uuid)
            self.resumed.discard(uuid)
            settled = SHUTOFF
        if event == "resumed":
            self.resumed.add(uuid)
        if event != "suspended" and _is_pause(settled):
            settled = self._not_learnt_from(uuid, event, detail)
        self.known[uuid] = settled
        self.snapshot_only.discard(uuid)
        return fired

    def _not_learnt_from(self, uuid: str, event: str, detail: str) -> DomainState:
        """The state to keep when a non-SUSPENDED event finds the domain paused for a pause.

        The state is read when the event is handled, maybe after a pause that came next (a
        start, then a pause at once): that pause is made known by its own SUSPENDED event,
        still to come, which must fire.
        """
        if event == "started" and detail == "booted" and uuid not in self.resumed:
            return STARTED_PAUSED
        if event in ("started", "resumed"):
            return ("running", detail)
        return self.known.get(uuid, ("running", "unknown"))

    def resync(self, uuid: str, current: DomainState, after_gap: bool = True) -> str | None:
        """After a gap (reconnect, restart): the event a changed state shows was missed.

        ``after_gap`` is False for the listener's first look at the host, when every state
        is new and says nothing of what happened before.
        """
        before = self.known.get(uuid)
        self.known[uuid] = current
        if current[0] == "running":
            self.resumed.add(uuid)
        missed = None
        if after_gap and current == RUNNING_MIGRATED and before != current:
            # Only an incoming migration leaves a domain running with reason "migrated".
            missed = CAME_IN
        elif before is not None:
            was_paused, now_paused = _is_pause(before), _is_pause(current)
            if now_paused and not was_paused and before[0] == "running":
                missed = PAUSED
            elif was_paused and current == ("running", "unpaused"):
                missed = CONTINUED
        if missed is None:
            self.snapshot_only.add(uuid)
        else:
            self.snapshot_only.discard(uuid)
        return missed

    def forget(self, uuid: str) -> None:
        self.known.pop(uuid, None)
        self.incoming.discard(uuid)
        self.resumed.discard(uuid)
        self.snapshot_only.discard(uuid)
