"""Bookkeeping helpers: UUIDs from raw XML, status files, markers."""

from __future__ import annotations

import os
import time
from pathlib import Path

from libvirt_bridge import state

U = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"


def test_uuid_is_the_domains_own() -> None:
    xml = (
        f"<domain><name>x</name><uuid> {U.upper()} </uuid><metadata><a xmlns='n'>"
        "<uuid>ffffffff-ffff-ffff-ffff-ffffffffffff</uuid></a></metadata></domain>"
    ).encode()
    assert state.domain_uuid(xml) == U


def test_bad_uuids_are_refused() -> None:
    for text in ("", "<uuid>../../etc/passwd</uuid>", "<uuid>" + U[:-1] + "g</uuid>", "<uuid>x"):
        assert state.domain_uuid(text.encode()) is None


def test_stop_kinds_from_status() -> None:
    assert state.stop_kind_from_status(b"<domstatus state='paused' reason='save'>") == "saved"
    assert state.stop_kind_from_status(b'<domstatus state="running" reason="booted">') == "destroy"
    migrated = (
        b"<domstatus state='paused' reason='migration' pid='3'>\n"
        b"<job type='none' async='migration out' phase='perform3'/>"
    )
    assert state.stop_kind_from_status(migrated) == "migrated"
    incoming = migrated.replace(b"migration out", b"migration in")
    assert state.stop_kind_from_status(incoming) == "destroy"
    assert state.stop_kind_from_status(b"garbage") == "destroy"


def test_stop_kinds_from_a_libvirt_11_status() -> None:
    # libvirt 11.3 at `stopped end`: the state is already shutdown/unknown; the job says why.
    head = b"<domstatus state='shutdown' reason='unknown' pid='3'>\n"
    assert state.stop_kind_from_status(head + b"<job type='none' async='save'/>") == "saved"
    migrated = head + b"<job type='none' async='migration out' phase='perform3'/>"
    assert state.stop_kind_from_status(migrated) == "migrated"
    destroyed = head + b"<job type='destroy' async='none'/>"
    assert state.stop_kind_from_status(destroyed) == "destroy"


def test_start_kinds_from_status() -> None:
    # As libvirt 9.0 writes the file at `started begin` (seen on these machines).
    booted = (
        b"<domstatus state='running' reason='booted' pid='7'>\n<job type='none' async='start'/>"
    )
    restoring = (
        b"<domstatus state='paused' reason='migration' pid='7'>\n<job type='none' async='start'/>"
    )
    incoming = (
        b"<domstatus state='paused' reason='migration' pid='7'>\n"
        b"<job type='none' async='migration in' phase='prepare' flags='0x1'>"
    )
    assert state.start_kind_from_status(booted) == "fresh"
    assert state.start_kind_from_status(restoring) == "restore"
    assert state.start_kind_from_status(incoming) == "migrate"
    paused_by_user = b"<domstatus state='paused' reason='user'><job type='none' async='start'/>"
    assert state.start_kind_from_status(paused_by_user) == "fresh"
    assert state.start_kind_from_status(b"garbage") == "fresh"


def test_status_file_names_are_never_paths(tmp_path: Path) -> None:
    (tmp_path / "ok.xml").write_bytes(b"<domstatus/>")
    assert state.read_status_file("ok", str(tmp_path)) == b"<domstatus/>"
    for name in ("../ok", "a/b", "..", "."):
        assert state.read_status_file(name, str(tmp_path)) is None


def test_markers_expire(tmp_path: Path) -> None:
    s = state.State(str(tmp_path))
    s.set_marker(U, "restore")
    assert s.take_marker(U, ("migrate",)) is None  # another kind: kept
    assert s.take_marker(U, ("restore",)) == "restore"
    assert s.take_marker(U, ("restore",)) is None
    s.set_marker(U, "migrate")
    old = time.time() - 1000
    os.utime(tmp_path / "markers" / U, (old, old))
    assert s.remove_stale_markers(ttl=500) == [U]
    assert s.take_marker(U, ("migrate",)) is None


def test_marker_of_another_daemon_is_stale(tmp_path: Path) -> None:
    s = state.State(str(tmp_path))
    s.set_marker(U, "restore", daemon=100)
    assert s.take_marker(U, ("restore",), daemon=200) is None
    assert not (tmp_path / "markers" / U).exists()
    s.set_marker(U, "verb-start")  # left by a verb: for whichever daemon
    assert s.take_marker(U, ("verb-start",), daemon=200) == "verb-start"


def test_the_listeners_live_xml_is_kept_beside_its_known_states(tmp_path: Path) -> None:
    s = state.State(str(tmp_path))
    other = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f1"
    xml = "<domain type='kvm' id='7'><name>gäst</name><devices/></domain>\n"
    s.keep_known(U, ("running", "booted"))
    s.keep_live_xml(U, xml)
    s.keep_live_xml(other, "<domain id='2'/>")
    assert s.live_xmls() == {U: xml, other: "<domain id='2'/>"}
    assert (tmp_path / "listener" / f"{U}.xml").stat().st_mode & 0o777 == 0o600
    # Neither is taken for the other.
    assert s.known_states() == {U: ("running", "booted")}
    # What a write under way leaves (files.write_atomic's temp file) is no domain's.
    (tmp_path / "listener" / f".{U}.xml.99.tmp").write_text("<half")
    (tmp_path / "listener" / "not-a-uuid.xml").write_text("<domain/>")
    assert set(s.live_xmls()) == {U, other}
    s.keep_live_xml(other, None)
    s.keep_live_xml(other, None)  # forgetting twice is no error
    assert s.live_xmls() == {U: xml}
    assert s.known_states() == {U: ("running", "booted")}


def test_no_live_xml_before_a_listener_kept_one(tmp_path: Path) -> None:
    assert state.State(str(tmp_path / "none")).live_xmls() == {}
