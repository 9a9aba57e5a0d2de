"""Async hook calls the launcher defers: saved by sh, queued later, in order, once."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from lxml import etree

from libvirt_bridge import config, firing, hook, inbox, launcher
from libvirt_bridge.log import Log
from testing.harness import Bridge, call_contained, domain_xml

STATUS_RESTORING = (
    b"<domstatus state='paused' reason='migration' pid='1'>\n"
    b"  <job type='none' async='start' flags='0x0'/>\n<domain/>\n"
)
STATUS_SAVE = b"<domstatus state='paused' reason='save' pid='1'>\n<domain type='kvm'/>\n"


class HoldingBridge(Bridge):
    """A bridge whose launchers save deferred calls, but whose background Python does not
    start: what they save stays in the inbox until the test takes it."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        wrapper = root / "python"
        wrapper.write_text(
            f'#!/bin/sh\ncase "$*" in *take_deferred*) exit 0 ;; esac\nexec {sys.executable} "$@"\n'
        )
        wrapper.chmod(0o755)
        for driver in launcher.DRIVERS:
            path = self.launchers / driver
            path.write_text(launcher.render(driver, str(self.config), str(wrapper)))
        # Through Python once: the fast-path file and the inbox exist from then on.
        assert self.qemu("warm", "prepare", "begin", domain_xml("warm")).returncode == 0
        assert self.inbox().is_dir()

    def inbox(self) -> Path:
        return self.state / inbox.INBOX

    def waiting(self) -> list[str]:
        return sorted(p.name for p in self.inbox().iterdir())

    def wait_records(self, count: int, timeout: float = 20) -> list[dict[str, object]]:
        """``count`` records, while calls still wait in the inbox (``wait_async`` would wait
        for them too)."""
        deadline = time.monotonic() + timeout
        while len(self.read_records()) < count:
            assert time.monotonic() < deadline, self.log_text()
            time.sleep(0.02)
        return self.read_records()

    def take(self) -> None:
        """What the launcher's background Python does."""
        code = "import sys\nfrom libvirt_bridge import hook\nhook.take_deferred(sys.argv[1], 0)"
        subprocess.run([sys.executable, "-c", code, str(self.config)], check=True)


def name_of(record: dict[str, object]) -> str:
    """The name of the domain whose XML a probe got."""
    return str(etree.fromstring(str(record["xml"]).encode()).findtext("name"))


@pytest.fixture
def bridge(tmp_path: Path) -> HoldingBridge:
    return HoldingBridge(tmp_path)


def test_an_async_call_is_saved_whole_and_its_scripts_run_when_taken(
    bridge: HoldingBridge,
) -> None:
    bridge.probe("after_vm_start")
    xml = domain_xml("vm1", properties={"pincpu": "0-1"})
    bridge.status_file("vm1", b"<domstatus state='running' reason='booted' pid='1'>\n")
    result = bridge.qemu("vm1", "started", "begin", xml)
    assert (result.returncode, result.stdout, result.stderr) == (0, b"", b"")
    assert bridge.waiting() == [
        "vm1#1000000001.call",
        "vm1#1000000001.status",
        "vm1#1000000001.xml",
    ]
    saved = bridge.inbox() / "vm1#1000000001"
    assert Path(f"{saved}.xml").read_bytes() == xml
    assert Path(f"{saved}.call").read_text() == "started\nbegin\n-\n"
    assert bridge.read_records() == []
    bridge.take()
    [record] = bridge.wait_async(1)
    assert record["event"] == "after_vm_start"
    assert record["stdin"] == "" and record["xml"] == xml.decode()
    assert record["env"]["pincpu"] == "0-1"  # type: ignore[index]
    assert bridge.waiting() == []


def test_a_domains_deferred_calls_go_in_order_before_its_next_call(
    bridge: HoldingBridge,
) -> None:
    for event in ("after_vm_start", "after_vm_destroy", "before_vm_start"):
        bridge.probe(event)
    xml = domain_xml("vm1")
    for op, subop in (("started", "begin"), ("release", "end")):
        assert bridge.qemu("vm1", op, subop, xml).returncode == 0
    assert [n for n in bridge.waiting() if n.endswith(".call")] == [
        "vm1#1000000001.call",
        "vm1#1000000002.call",
    ]
    # The next call that runs Python queues them first.
    assert bridge.qemu("vm1", "prepare", "begin", xml).returncode == 0
    records = bridge.wait_async(3)
    assert [r["event"] for r in records if r["event"] != "before_vm_start"] == [
        "after_vm_start",
        "after_vm_destroy",
    ]
    assert bridge.waiting() == []


def test_a_deferred_release_reads_what_stopped_recorded(bridge: HoldingBridge) -> None:
    bridge.probe("after_vm_hibernate")
    bridge.probe("after_vm_destroy")
    bridge.probe("before_vm_start")
    xml = domain_xml("vm1")
    bridge.status_file("vm1", STATUS_SAVE)
    assert bridge.qemu("vm1", "stopped", "end", xml).returncode == 0  # Python, in the call
    assert bridge.qemu("vm1", "release", "end", xml).returncode == 0  # deferred
    assert len(bridge.waiting()) == 2
    # A boot of the domain before the release was queued: the release goes first, as a
    # save, and forgets the stop.
    bridge.status_file("vm1", None)
    assert bridge.qemu("vm1", "prepare", "begin", xml).returncode == 0
    events = [r["event"] for r in bridge.wait_async(2)]
    assert sorted(events) == ["after_vm_hibernate", "before_vm_start"]
    assert not list((bridge.state / "domains").glob("*.stop"))
    assert bridge.qemu("vm1", "stopped", "end", xml).returncode == 0
    assert bridge.qemu("vm1", "release", "end", xml).returncode == 0
    bridge.take()
    assert [r["event"] for r in bridge.wait_async(3)][2:] == ["after_vm_destroy"]


def test_the_status_file_as_it_was_at_the_call_decides_the_event(
    bridge: HoldingBridge,
) -> None:
    bridge.probe("after_vm_start")
    bridge.probe("after_vm_dehibernate")
    bridge.status_file("vm1", STATUS_RESTORING)
    assert bridge.qemu("vm1", "started", "begin", domain_xml("vm1")).returncode == 0
    bridge.status_file("vm1", None)  # the restore is over before the call is queued
    bridge.take()
    assert [r["event"] for r in bridge.wait_async(1)] == ["after_vm_dehibernate"]


def test_names_that_sh_could_misread(bridge: HoldingBridge) -> None:
    bridge.probe("after_vm_start")
    names = ["a", "a#b", "we*ird 'vm' ?[x]", "new\nline"]
    for name in names:
        assert bridge.qemu(name, "started", "begin", domain_xml(name)).returncode == 0
    calls = [n for n in bridge.waiting() if n.endswith(".call")]
    assert len(calls) == len(names)
    bridge.take()
    assert sorted(name_of(r) for r in bridge.wait_async(len(names))) == sorted(names)


def test_a_dot_name_is_not_a_file_name_so_python_runs_the_call(bridge: HoldingBridge) -> None:
    bridge.probe("after_vm_start")
    assert bridge.qemu(".vm", "started", "begin", domain_xml(".vm")).returncode == 0
    assert bridge.waiting() == []
    assert [name_of(r) for r in bridge.wait_async(1)] == [".vm"]


def test_an_inbox_that_cannot_be_written_leaves_the_call_to_python(
    bridge: HoldingBridge,
) -> None:
    bridge.probe("after_vm_start")
    bridge.inbox().rmdir()
    bridge.inbox().write_text("")  # not a directory
    result = bridge.qemu("vm1", "started", "begin", domain_xml("vm1"))
    assert (result.returncode, result.stderr) == (0, b"")
    assert [r["event"] for r in bridge.wait_async(1)] == ["after_vm_start"]


def test_a_call_taken_by_a_process_that_died_is_dropped_loudly_once(
    bridge: HoldingBridge,
) -> None:
    bridge.probe("after_vm_start")
    bridge.probe("after_vm_destroy")
    xml = domain_xml("vm1")
    assert bridge.qemu("vm1", "started", "begin", xml).returncode == 0
    assert bridge.qemu("vm1", "release", "end", xml).returncode == 0
    first = bridge.inbox() / "vm1#1000000001"
    os.rename(f"{first}.call", f"{first}.taken")  # what take does before it queues
    bridge.take()
    assert [r["event"] for r in bridge.wait_async(1)] == ["after_vm_destroy"]
    log = bridge.log_text()
    assert "deferred hook call started begin - of 'vm1' was interrupted" in log
    assert bridge.waiting() == []


def test_a_call_still_being_written_waits_with_what_follows_it(bridge: HoldingBridge) -> None:
    bridge.probe("after_vm_start")
    bridge.probe("after_vm_destroy")
    for name in ("vm1", "vm2"):
        xml = domain_xml(name)
        assert bridge.qemu(name, "started", "begin", xml).returncode == 0
        assert bridge.qemu(name, "release", "end", xml).returncode == 0
    first = bridge.inbox() / "vm1#1000000001.call"
    first.write_text("started\nbeg")  # its writer is still at it
    bridge.take()
    assert [name_of(r) for r in bridge.wait_records(2)] == ["vm2", "vm2"]
    assert len(bridge.waiting()) == 5  # vm1's two calls, less the second's status
    first.write_text("started\nbegin\n-\n")
    bridge.take()
    vm1 = [r["event"] for r in bridge.wait_async(4) if name_of(r) == "vm1"]
    assert vm1 == ["after_vm_start", "after_vm_destroy"]


def test_what_a_writer_that_died_left_is_removed_after_a_while(bridge: HoldingBridge) -> None:
    bridge.probe("after_vm_start")
    assert bridge.qemu("vm1", "started", "begin", domain_xml("vm1")).returncode == 0
    saved = bridge.inbox() / "vm1#1000000001"
    Path(f"{saved}.call").unlink()  # the writer died before the last file
    bridge.take()
    assert len(bridge.waiting()) == 2  # it may still be writing
    old = time.time() - inbox.ABANDONED_AFTER - 5
    for path in bridge.inbox().iterdir():
        os.utime(path, (old, old))
    bridge.take()
    assert bridge.waiting() == []
    assert "deferred hook call vm1#1000000001 was never written whole" in bridge.log_text()
    assert bridge.read_records() == []


def test_a_damaged_call_file_is_dropped_once_old(bridge: HoldingBridge) -> None:
    bridge.probe("after_vm_start")
    assert bridge.qemu("vm1", "started", "begin", domain_xml("vm1")).returncode == 0
    call = bridge.inbox() / "vm1#1000000001.call"
    call.write_text("started\n")
    old = time.time() - inbox.ABANDONED_AFTER - 5
    os.utime(call, (old, old))
    bridge.take()
    assert bridge.waiting() == []
    assert "vm1#1000000001: its call file is damaged: lost" in bridge.log_text()


def test_the_hook_path_checks_the_inbox_without_locking_it(tmp_path: Path) -> None:
    cfg = config.load(str(Bridge(tmp_path).config))
    firing.take_deferred(cfg, Log(cfg.log_file))
    assert (Path(cfg.state_dir) / inbox.INBOX).is_dir()
    assert not (Path(cfg.state_dir) / f"{inbox.INBOX}.lock").exists()


def test_a_listener_or_verb_takes_only_its_own_domains_calls(bridge: HoldingBridge) -> None:
    bridge.probe("after_vm_start")
    for name in ("vm1", "vm2"):
        assert bridge.qemu(name, "started", "begin", domain_xml(name)).returncode == 0
    cfg = config.load(str(bridge.config))
    queued: list[str] = []
    firing.take_deferred(cfg, Log(cfg.log_file), lambda c, lg, key: queued.append(key), "vm2")
    assert len(queued) == 1
    assert [n for n in bridge.waiting() if n.endswith(".call")] == ["vm1#1000000001.call"]


def test_the_queueing_runs_niced_and_the_scripts_at_the_daemons_priority(tmp_path: Path) -> None:
    bridge = Bridge(tmp_path)
    queued_at, ran_at = tmp_path / "queued-at", tmp_path / "ran-at"
    wrapper = tmp_path / "python"
    wrapper.write_text(
        f'#!/bin/sh\ncase "$*" in *take_deferred*) nice > {queued_at} ;; esac\n'
        f'exec {sys.executable} "$@"\n'
    )
    wrapper.chmod(0o755)
    (bridge.launchers / "qemu").write_text(
        launcher.render("qemu", str(bridge.config), str(wrapper))
    )
    bridge.script("after_vm_start", "50_nice", f"#!/bin/sh\nnice > {ran_at}\n")
    xml = domain_xml("vm1")
    assert bridge.qemu("vm1", "prepare", "begin", xml).returncode == 0  # writes the fast path
    daemon = bridge.parent("libvirtd")  # the launcher's parent, as libvirt's daemon is
    argv = ["nice", "-n", "3", str(daemon), str(bridge.launchers / "qemu")]
    result = call_contained([*argv, "vm1", "started", "begin", "-"], xml, 20)
    assert result.returncode == 0, result.stderr
    bridge.wait_async()
    assert queued_at.read_text().strip() == str(3 + hook.DEFERRED_NICE)
    assert ran_at.read_text().strip() == "3"
