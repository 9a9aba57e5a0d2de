"""The listener against libvirt's in-process test driver (test:///default)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from libvirt_bridge.asyncq import Job, enqueue
from libvirt_bridge.config import load
from libvirt_bridge.listener import Listener, start_event_loop
from libvirt_bridge.log import Log
from testing.harness import Bridge


@pytest.fixture
def listening(bridge: Bridge) -> Iterator[tuple[Bridge, Listener, libvirt.virConnect]]:
    bridge.write_config(libvirt_uri="test:///default")
    for event in ("after_vm_pause", "after_vm_cont", "after_vm_migrate_destination"):
        bridge.probe(event)
    conn = libvirt.open("test:///default")
    running(conn.lookupByName("test"))
    config = load(str(bridge.config))
    listener = Listener(config, Log(config.log_file))
    thread = threading.Thread(target=listener.run, daemon=True)
    thread.start()
    assert listener.connected.wait(10)
    yield bridge, listener, conn
    listener.stop()
    thread.join(10)
    conn.close()


def settle(listener: Listener) -> None:
    """Return once the listener has handled all it was given (its resync, at least)."""
    joined = threading.Thread(target=listener.queue.join, daemon=True)
    joined.start()
    joined.join(10)
    assert not joined.is_alive(), "the listener's queue was not handled within 10 s"


def sentinel(bridge: Bridge, dom: libvirt.virDomain, before: int) -> list[str]:
    """Pause and resume ``dom``, wait for their two events; the events recorded until then.

    The listener handles a domain's lifecycle events in order, and its queue runs them in
    order: an extra event of what came before would be recorded before these. The domain
    is left running, as the next test expects it.
    """
    dom.suspend()
    dom.resume()
    return [str(r["event"]) for r in bridge.wait_async(before + 2)]


def test_pause_and_resume_fire_once_each(
    listening: tuple[Bridge, Listener, libvirt.virConnect],
) -> None:
    bridge, _, conn = listening
    dom = conn.lookupByName("test")
    dom.suspend()
    dom.resume()
    records = bridge.wait_async(2)
    assert [r["event"] for r in records] == ["after_vm_pause", "after_vm_cont"]
    assert records[0]["env"]["vmId"] == dom.UUIDString()
    assert "<name>test</name>" in str(records[0]["xml"])
    assert sentinel(bridge, dom, 2) == ["after_vm_pause", "after_vm_cont"] * 2


def test_a_changed_config_applies_to_the_next_event_without_a_restart(
    listening: tuple[Bridge, Listener, libvirt.virConnect],
) -> None:
    bridge, listener, conn = listening
    dom = conn.lookupByName("test")
    # Events run through the drainer: it has read the config as it was.
    assert sentinel(bridge, dom, 0) == ["after_vm_pause", "after_vm_cont"]
    bridge.script("after_vm_pause", "60_hang", "#!/bin/sh\nsleep 60\n")
    # As an admin would: a shorter timeout, a wrong URI (only at a restart), saved.
    bridge.write_config(libvirt_uri="qemu:///nowhere", script_timeout=1)
    dom.suspend()
    dom.resume()
    records = bridge.wait_async(4, timeout=60)
    assert [r["event"] for r in records] == ["after_vm_pause", "after_vm_cont"] * 2
    log = bridge.log_text()
    assert "60_hang killed after timeout (1." in log, log
    assert (
        f"listener: read the changed config {bridge.config}; libvirt_uri only when it restarts"
    ) in log
    assert listener.config.libvirt_uri == "test:///default" and listener.config.script_timeout == 1


def test_the_resume_of_a_known_pause_reads_no_state(
    listening: tuple[Bridge, Listener, libvirt.virConnect],
) -> None:
    bridge, listener, conn = listening
    settle(listener)  # its first resync reads every state
    read = listener._state
    reads: list[str] = []

    def counted(dom: libvirt.virDomain) -> tuple[str, str]:
        reads.append(dom.name())
        return read(dom)

    listener._state = counted  # type: ignore[method-assign]
    dom = conn.lookupByName("test")
    assert sentinel(bridge, dom, 0) == ["after_vm_pause", "after_vm_cont"]
    assert reads == ["test"]  # the pause's: its reason tells a user's pause from a save's


def test_one_drainer_process_runs_the_scripts_not_one_process_per_event(
    listening: tuple[Bridge, Listener, libvirt.virConnect],
) -> None:
    bridge, listener, conn = listening
    started = listener.drainer.process
    assert started is not None  # as the listener started: no event waits for its start
    dom = conn.lookupByName("test")
    dom.suspend()
    bridge.wait_async(1)
    dom.resume()
    records = bridge.wait_async(2)
    assert [r["event"] for r in records] == ["after_vm_pause", "after_vm_cont"]
    # The listener runs in this process here; its drainer, a child, spawned both, in /.
    assert listener.drainer.process is started
    assert {r["ppid"] for r in records} == {started.pid}
    assert started.pid != os.getpid()
    assert {r["cwd"] for r in records} == {"/"}


def test_save_and_restore_fire_nothing(
    listening: tuple[Bridge, Listener, libvirt.virConnect], tmp_path: object
) -> None:
    bridge, _, conn = listening
    image = f"{tmp_path}/test.save"
    conn.lookupByName("test").save(image)
    conn.restore(image)
    assert sentinel(bridge, conn.lookupByName("test"), 0) == ["after_vm_pause", "after_vm_cont"]


def run_briefly(bridge: Bridge) -> Listener:
    config = load(str(bridge.config))
    listener = Listener(config, Log(config.log_file))
    thread = threading.Thread(target=listener.run, daemon=True)
    thread.start()
    assert listener.connected.wait(10)
    settle(listener)
    listener.stop()
    thread.join(10)
    return listener


def test_a_pause_made_while_no_listener_ran_fires_once(bridge: Bridge) -> None:
    bridge.write_config(libvirt_uri="test:///default")
    bridge.probe("after_vm_pause")
    conn = libvirt.open("test:///default")
    dom = conn.lookupByName("test")
    running(dom)
    try:
        run_briefly(bridge)
        assert bridge.wait_async() == []
        dom.suspend()
        run_briefly(bridge)
        assert [r["event"] for r in bridge.wait_async()] == ["after_vm_pause"]
        run_briefly(bridge)
        assert [r["event"] for r in bridge.wait_async()] == ["after_vm_pause"]
    finally:
        running(dom)
        conn.close()


@contextlib.contextmanager
def running_test_domain() -> Iterator[tuple[str, bytes]]:
    """The test driver's domain ``test``, running: its (UUID, XML), while the connection lasts."""
    conn = libvirt.open("test:///default")
    try:
        dom = conn.lookupByName("test")
        running(dom)
        yield dom.UUIDString(), dom.XMLDesc(0).encode()
    finally:
        conn.close()


def running(dom: libvirt.virDomain) -> None:
    """Make ``dom`` run, and return once its event has been dispatched.

    A listener that subscribes before the test driver dispatches that event would take it
    for news (an after_vm_cont no test asked for).
    """
    state = dom.state()[0]
    if state not in (libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_SHUTOFF):
        return
    start_event_loop()
    dispatched = threading.Event()
    awaited = (libvirt.VIR_DOMAIN_EVENT_RESUMED, libvirt.VIR_DOMAIN_EVENT_STARTED)

    def seen(_conn: object, _dom: object, event: int, _detail: int, _opaque: object) -> None:
        if event in awaited:
            dispatched.set()

    conn = dom.connect()
    callback = conn.domainEventRegisterAny(dom, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, seen, None)
    try:
        if state == libvirt.VIR_DOMAIN_PAUSED:
            dom.resume()
        else:
            dom.create()
        assert dispatched.wait(10), "the test driver dispatched no event"
    finally:
        conn.domainEventDeregisterAny(callback)


def test_listen_command_pidfile_and_clean_stop(bridge: Bridge, tmp_path: Path) -> None:
    bridge.write_config(libvirt_uri="test:///default")
    pidfile = tmp_path / "run" / "listener.pid"
    env = dict(os.environ, LIBVIRT_BRIDGE_CONFIG=str(bridge.config))
    cmd = [
        sys.executable,
        "-m",
        "libvirt_bridge",
        "listen",
        "--background",
        "--pidfile",
        str(pidfile),
    ]
    assert subprocess.run(cmd, env=env, timeout=30).returncode == 0
    deadline = time.monotonic() + 10
    while not ("connected to test:///default" in bridge.log_text() and pidfile.exists()):
        assert time.monotonic() < deadline, bridge.log_text()
        time.sleep(0.05)
    pid = int(pidfile.read_text())
    os.kill(pid, signal.SIGTERM)
    while pidfile.exists():
        assert time.monotonic() < deadline + 10
        time.sleep(0.05)


def test_listen_refuses_a_broken_config(bridge: Bridge) -> None:
    bridge.config.write_text("libvirt_uri = 3\n")
    env = dict(os.environ, LIBVIRT_BRIDGE_CONFIG=str(bridge.config))
    result = subprocess.run(
        [sys.executable, "-m", "libvirt_bridge", "listen"], env=env, capture_output=True, timeout=30
    )
    assert result.returncode == 1
    assert b"libvirt_uri must be a non-empty string" in result.stderr


def test_a_listener_runs_what_a_killed_one_left_queued_and_nothing_twice(bridge: Bridge) -> None:
    bridge.write_config(libvirt_uri="test:///default")
    bridge.probe("after_vm_pause")
    bridge.probe("after_vm_cont")
    with running_test_domain() as (uuid, xml):
        # What a listener killed mid-job leaves: the job it was running, and one queued.
        was_running = enqueue(str(bridge.state), uuid, Job("after_vm_pause", "test", uuid, xml))
        os.rename(was_running, was_running.removesuffix(".job") + ".running")
        enqueue(str(bridge.state), uuid, Job("after_vm_cont", "test", uuid, xml))
        run_briefly(bridge)
        assert [r["event"] for r in bridge.wait_async(1)] == ["after_vm_cont"]
        assert "after_vm_pause of 'test'" in bridge.log_text()
        assert "was interrupted: its runner died; not run again" in bridge.log_text()


def test_a_stopping_listener_leaves_its_drainer_to_finish_what_it_was_handed(
    bridge: Bridge, tmp_path: Path
) -> None:
    bridge.write_config(libvirt_uri="test:///default")
    started = tmp_path / "started"
    bridge.probe(
        "after_vm_pause", tail=f"import time\nopen({str(started)!r}, 'w').close()\ntime.sleep(2)\n"
    )
    bridge.probe("after_vm_cont")
    with running_test_domain() as (uuid, xml):
        enqueue(str(bridge.state), uuid, Job("after_vm_pause", "test", uuid, xml))
        enqueue(str(bridge.state), uuid, Job("after_vm_cont", "test", uuid, xml))
        config = load(str(bridge.config))
        listener = Listener(config, Log(config.log_file))
        thread = threading.Thread(target=listener.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not started.exists():
            assert time.monotonic() < deadline, "the queued pause did not start"
            time.sleep(0.02)
        drainer = listener.drainer.process
        assert drainer is not None
        listener.stop()
        thread.join(10)
        assert not thread.is_alive()
        # The listener is gone; its drainer runs the pause to its end, then the continue.
        records = bridge.wait_async(2)
        assert [r["event"] for r in records] == ["after_vm_pause", "after_vm_cont"]
        assert {r["ppid"] for r in records} == {drainer.pid}
        assert drainer.wait(10) == 0
        assert "interrupted" not in bridge.log_text()
