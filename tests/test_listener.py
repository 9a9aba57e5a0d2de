"""The listener against libvirt's in-process test driver (test:///default)."""

from __future__ import annotations

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

from libvirt_bridge.config import load
from libvirt_bridge.listener import RUNNER_BOOTSTRAP, Listener, start_event_loop
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


def test_the_runner_is_the_small_bootstrap_not_the_cli(
    listening: tuple[Bridge, Listener, libvirt.virConnect], tmp_path: Path
) -> None:
    bridge, _, conn = listening
    cmdline = tmp_path / "runner-cmdline"
    bridge.script(
        "after_vm_pause",
        "60_runner",
        f"#!/bin/sh\ncat /proc/$PPID/cmdline > {cmdline}\n",
    )
    conn.lookupByName("test").suspend()
    bridge.wait_async(1)
    argv = cmdline.read_bytes().split(b"\0")[:-1]
    assert argv[1:7] == [
        b"-I",
        b"-S",
        b"-c",
        RUNNER_BOOTSTRAP.encode(),
        str(bridge.config).encode(),
        conn.lookupByName("test").UUIDString().encode(),
    ]


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
