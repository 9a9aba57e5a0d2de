"""The mapping table: one table, read by the hook, the docs and the tests."""

from __future__ import annotations

from pathlib import Path

from libvirt_bridge import mapping

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_shows_the_code_table() -> None:
    assert mapping.markdown_table() in README.read_text()


def test_the_readme_lists_every_unfired_event_with_its_reason() -> None:
    assert mapping.unfired_markdown() in README.read_text()


def test_each_call_and_context_has_one_row() -> None:
    keys = [(r.driver, r.op, r.subop, r.context) for r in mapping.HOOK_TABLE]
    assert len(keys) == len(set(keys))


def test_only_before_events_run_sync_and_only_sync_events_veto() -> None:
    for row in mapping.HOOK_TABLE:
        assert (row.mode == mapping.SYNC) == row.event.startswith("before_"), row
        if row.veto:
            assert row.mode == mapping.SYNC, row
        if row.xml == mapping.XML_WRITABLE:
            assert (row.driver, row.op) in {
                ("qemu", "migrate"),
                ("qemu", "restore"),
                ("verb", "start"),
            }


def test_calls_where_failure_kills_the_vm_never_veto() -> None:
    for row in mapping.HOOK_TABLE:
        if (row.driver, row.op) in mapping.ALWAYS_SUCCEED:
            assert not row.veto, row


def test_find_row_uses_the_context() -> None:
    start = mapping.find_row("qemu", "started", "begin", "fresh")
    restored = mapping.find_row("qemu", "started", "begin", "restore")
    assert start is not None and start.event == "after_vm_start"
    assert restored is not None and restored.event == "after_vm_dehibernate"
    assert mapping.find_row("qemu", "started", "begin", "migrate") is None
    assert mapping.find_row("qemu", "nothing", "begin", "fresh") is None


def test_release_reasons_of_newer_libvirt() -> None:
    assert mapping.release_context("saved") == "saved"
    assert mapping.release_context("migrated") == "migrated"
    for reason in (
        "destroyed",
        "shutdown",
        "crashed",
        "failed",
        "daemon",
        "unknown",
        "from snapshot",
    ):
        assert mapping.release_context(reason) == "destroy"


def test_events_lists_every_event_once() -> None:
    assert len(mapping.EVENTS) == len(set(mapping.EVENTS)) == 41
    assert not set(mapping.EVENTS) & set(mapping.VDSM_ONLY_EVENTS)


def test_what_a_call_decides_is_a_firing_call_after_it() -> None:
    calls = mapping.QEMU_FIRING_CALLS
    for call, later in mapping.DECIDES.items():
        assert call in calls
        for decided in later:
            assert decided in calls and decided != call
            assert set(mapping.call_events(*decided)) <= set(mapping.served_events(*call))
    served = {e for call in calls for e in mapping.served_events(*call)}
    companions = {mapping.DEVICE_COMPANIONS.get(e) for e in mapping.QEMU_EVENTS} - {None}
    assert served == set(mapping.QEMU_EVENTS) | companions
    assert mapping.served_events("start", "begin") == ()


def test_every_text_that_lists_the_listener_s_events_lists_them_all() -> None:
    from libvirt_bridge.commands.status import NO_LISTENER

    docs = Path(__file__).parents[1] / "docs"
    # cli.md is every --help, kept current by test_docs.
    listen = (docs / "cli.md").read_text().split("usage: libvirt-bridge listen", 1)[1]
    operators = (docs / "operators.md").read_text()
    section = operators.split("## The listener", 1)[1].split("\n## ", 1)[0]
    for text in (listen.split("options:", 1)[0], NO_LISTENER, section):
        flat = " ".join(text.split())
        missing = [event for event in mapping.LISTENER_EVENTS if event not in flat]
        assert missing == [], flat
