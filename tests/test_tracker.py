"""The listener's decisions, event by event, including bursts and gaps."""

from __future__ import annotations

from libvirt_bridge.tracker import Tracker

U = "uuid-1"
RUNNING_BOOTED = ("running", "booted")
RUNNING_UNPAUSED = ("running", "unpaused")
PAUSED_USER = ("paused", "user")
PAUSED_SAVE = ("paused", "save")
SHUTOFF = ("shutoff", "saved")


def play(tracker: Tracker, steps: list[tuple[str, str, tuple[str, str]]]) -> list[str]:
    """The events fired, the state read as ``current`` where the listener reads it."""
    fired = []
    for event, detail, current in steps:
        implied = tracker.implied_state(U, event, detail)
        result = tracker.observe(U, event, detail, implied or current)
        if result:
            fired.append(result)
    return fired


def test_boot_fires_nothing() -> None:
    steps = [("resumed", "unpaused", RUNNING_BOOTED), ("started", "booted", RUNNING_BOOTED)]
    assert play(Tracker({U: ("shutoff", "destroyed")}), steps) == []


def test_user_pause_and_resume() -> None:
    t = Tracker({U: RUNNING_BOOTED})
    assert play(t, [("suspended", "paused", PAUSED_USER)]) == ["after_vm_pause"]
    assert play(t, [("resumed", "unpaused", RUNNING_UNPAUSED)]) == ["after_vm_cont"]


def test_save_pause_fires_nothing_and_neither_does_a_cancelled_save() -> None:
    t = Tracker({U: RUNNING_BOOTED})
    assert play(t, [("suspended", "paused", PAUSED_SAVE), ("stopped", "saved", SHUTOFF)]) == []
    t = Tracker({U: RUNNING_BOOTED})
    steps = [
        ("suspended", "paused", PAUSED_SAVE),
        ("resumed", "unpaused", ("running", "save_canceled")),
    ]
    assert play(t, steps) == []


def test_restore_fires_nothing() -> None:
    t = Tracker({U: ("shutoff", "saved")})
    steps = [
        ("started", "restored", ("paused", "migration")),
        ("resumed", "from_snapshot", ("running", "restored")),
    ]
    assert play(t, steps) == []


def test_start_paused_then_resume() -> None:
    t = Tracker({U: ("shutoff", "destroyed")})
    steps = [("started", "booted", PAUSED_USER), ("suspended", "paused", PAUSED_USER)]
    assert play(t, steps) == []
    assert play(t, [("resumed", "unpaused", RUNNING_UNPAUSED)]) == ["after_vm_cont"]


def test_a_pause_right_after_a_boot_fires_though_the_boot_is_handled_late() -> None:
    # The boot's events are handled after the pause: state() already says paused/user.
    t = Tracker({U: ("shutoff", "destroyed")})
    steps = [
        ("resumed", "unpaused", PAUSED_USER),
        ("started", "booted", PAUSED_USER),
        ("suspended", "paused", PAUSED_USER),
    ]
    assert play(t, steps) == ["after_vm_pause"]


def test_a_pause_right_after_a_restore_fires_though_the_restore_is_handled_late() -> None:
    t = Tracker({U: ("shutoff", "saved")})
    steps = [
        ("started", "restored", PAUSED_USER),
        ("resumed", "from_snapshot", PAUSED_USER),
        ("suspended", "paused", PAUSED_USER),
    ]
    assert play(t, steps) == ["after_vm_pause"]
    # The test driver's restore has no RESUMED.
    t = Tracker({U: ("shutoff", "saved")})
    steps = [("started", "restored", PAUSED_USER), ("suspended", "paused", PAUSED_USER)]
    assert play(t, steps) == ["after_vm_pause"]


def test_burst_pause_resume_seen_late() -> None:
    t = Tracker({U: RUNNING_BOOTED})
    # Both events are handled after the resume: state() already says running/unpaused.
    steps = [("suspended", "paused", RUNNING_UNPAUSED), ("resumed", "unpaused", RUNNING_UNPAUSED)]
    assert play(t, steps) == ["after_vm_pause", "after_vm_cont"]


def test_burst_pause_resume_pause_seen_late() -> None:
    t = Tracker({U: RUNNING_BOOTED})
    steps = [
        ("suspended", "paused", PAUSED_USER),
        ("resumed", "unpaused", PAUSED_USER),
        ("suspended", "paused", PAUSED_USER),
    ]
    assert play(t, steps) == ["after_vm_pause", "after_vm_cont", "after_vm_pause"]


def test_ioerror_pause_fires_once_even_with_two_events() -> None:
    t = Tracker({U: RUNNING_BOOTED})
    steps = [
        ("suspended", "ioerror", ("paused", "ioerror")),
        ("suspended", "paused", ("paused", "ioerror")),
    ]
    assert play(t, steps) == ["after_vm_pause"]


def test_incoming_migration_completes_once() -> None:
    t = Tracker()
    steps = [
        ("started", "migrated", ("paused", "migration")),
        ("resumed", "migrated", ("running", "migrated")),
    ]
    assert play(t, steps) == ["after_vm_migrate_destination"]


def test_cancelled_outgoing_migration_fires_nothing() -> None:
    t = Tracker({U: RUNNING_BOOTED})
    steps = [
        ("suspended", "migrated", ("paused", "migration")),
        ("resumed", "migrated", ("running", "migration_canceled")),
    ]
    assert play(t, steps) == []


def test_migration_source_pause_fires_nothing() -> None:
    t = Tracker({U: RUNNING_BOOTED})
    steps = [
        ("suspended", "migrated", ("paused", "migration")),
        ("stopped", "migrated", ("shutoff", "migrated")),
    ]
    assert play(t, steps) == []


def test_resync_finds_what_changed_while_away() -> None:
    t = Tracker({U: RUNNING_BOOTED, "b": PAUSED_USER, "c": RUNNING_BOOTED})
    assert t.resync(U, PAUSED_USER) == "after_vm_pause"
    assert t.resync("b", RUNNING_UNPAUSED) == "after_vm_cont"
    assert t.resync("c", RUNNING_BOOTED) is None
    assert t.resync("new", PAUSED_USER) is None  # never seen: nothing can be said
    assert t.resync(U, PAUSED_USER) is None  # no duplicate


def test_pause_right_after_subscribing_is_not_mistaken_for_an_old_one() -> None:
    """The resync's snapshot already shows the pause whose event is still queued."""
    t = Tracker()
    assert t.resync(U, PAUSED_USER) is None
    assert play(t, [("suspended", "paused", PAUSED_USER)]) == ["after_vm_pause"]
    assert play(t, [("resumed", "unpaused", RUNNING_UNPAUSED)]) == ["after_vm_cont"]


def test_resume_right_after_subscribing_fires() -> None:
    t = Tracker()
    assert t.resync(U, RUNNING_UNPAUSED) is None
    assert play(t, [("resumed", "unpaused", RUNNING_UNPAUSED)]) == ["after_vm_cont"]


def test_pause_found_by_resync_is_not_fired_again_by_its_late_event() -> None:
    t = Tracker({U: RUNNING_BOOTED})
    assert t.resync(U, PAUSED_USER) == "after_vm_pause"
    assert play(t, [("suspended", "paused", PAUSED_USER)]) == []


RUNNING_MIGRATED = ("running", "migrated")


def test_resync_finds_a_migration_that_came_in_while_away() -> None:
    t = Tracker({U: ("paused", "migration"), "known": RUNNING_MIGRATED})
    assert t.resync(U, RUNNING_MIGRATED) == "after_vm_migrate_destination"
    assert t.resync("new", RUNNING_MIGRATED) == "after_vm_migrate_destination"
    assert t.resync("known", RUNNING_MIGRATED) is None  # came in before the gap
    # Its event, delivered after the resync that fired for it, fires nothing more.
    assert play(t, [("resumed", "migrated", RUNNING_MIGRATED)]) == []
    assert t.resync(U, RUNNING_MIGRATED) is None  # nor does the next gap


def test_a_first_look_fires_no_migration_but_a_following_event_does() -> None:
    t = Tracker()
    assert t.resync(U, RUNNING_MIGRATED, after_gap=False) is None
    assert play(t, [("resumed", "migrated", RUNNING_MIGRATED)]) == ["after_vm_migrate_destination"]


def test_only_the_resume_of_a_pause_needs_no_state_read() -> None:
    paused = Tracker({U: PAUSED_USER})
    assert paused.implied_state(U, "resumed", "unpaused") == RUNNING_UNPAUSED
    assert paused.implied_state(U, "resumed", "migrated") is None
    assert paused.implied_state(U, "suspended", "paused") is None
    # A boot's, a restore's, a cancelled save's resume: the state tells what it is.
    for known in (("shutoff", "destroyed"), PAUSED_SAVE, ("paused", "start"), RUNNING_BOOTED):
        assert Tracker({U: known}).implied_state(U, "resumed", "unpaused") is None, known
    assert Tracker().implied_state(U, "resumed", "unpaused") is None
