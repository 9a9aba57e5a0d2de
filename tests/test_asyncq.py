"""Async (after_*) events: detached, ordered per domain, never blocking libvirt."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from libvirt_bridge.asyncq import Job
from libvirt_bridge.runner import EventProperties
from testing.harness import Bridge, domain_xml
from testing.probes import events_of
from testing.waits import wait_for_file, wait_until


def slow_probe(bridge: Bridge, event: str, seconds: float, name: str = "50_slow") -> None:
    bridge.probe(event, name=name, tail=f"import time; time.sleep({seconds})")


def marks(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def test_async_event_returns_before_its_script_ends(bridge: Bridge, tmp_path: Path) -> None:
    done = tmp_path / "done"
    bridge.probe("after_vm_start", tail=f"import time; time.sleep(3); open({str(done)!r}, 'w')")
    result = bridge.qemu("vm1", "started", "begin", domain_xml("vm1"))
    # capture_output waited for EOF on both pipes: the runner does not hold them.
    assert result.returncode == 0
    assert result.stdout == b"" and result.stderr == b""
    assert not done.exists()
    [record] = bridge.wait_async(1)
    assert done.exists()
    assert record["stdin"] == ""
    assert record["cwd"] == "/"


def test_runner_is_detached_from_the_hook(bridge: Bridge) -> None:
    bridge.probe(
        "after_vm_start",
        tail="import json; print(json.dumps([os.getsid(0), os.getpgid(0)]), file=sys.stderr)",
    )
    bridge.qemu("vm1", "started", "begin", domain_xml("vm1"))
    [record] = bridge.wait_async(1)
    # The script's session is its own; its parent (the runner) is in another session
    # than the test process that played libvirt.
    runner_sid = os.getsid(int(record["ppid"])) if _exists(int(record["ppid"])) else None
    assert runner_sid != os.getsid(0)


def _exists(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}")


def test_events_of_one_domain_run_in_libvirt_order(bridge: Bridge, tmp_path: Path) -> None:
    slow_probe(bridge, "after_vm_start", 1.0)
    bridge.probe("after_vm_destroy")
    bridge.probe("after_vm_hibernate")
    xml = domain_xml("vm1")
    bridge.qemu("vm1", "started", "begin", xml)
    bridge.qemu("vm1", "release", "end", xml, extra="destroyed")
    bridge.qemu("vm1", "prepare", "begin", xml)
    bridge.qemu("vm1", "started", "begin", xml)
    bridge.qemu("vm1", "release", "end", xml, extra="saved")
    # In libvirt's order, though the first script is slow.
    expected = ["after_vm_start", "after_vm_destroy", "after_vm_start", "after_vm_hibernate"]
    assert events_of(bridge.wait_async(4)) == expected


def test_domains_do_not_wait_for_each_other(bridge: Bridge, tmp_path: Path) -> None:
    ends = tmp_path / "ends"
    bridge.probe(
        "after_vm_start",
        tail=(
            "import time\n"
            "time.sleep(3 if os.environ.get('slow') else 0)\n"
            f"open({str(ends)!r}, 'a').write(os.environ.get('slow', 'fast') + '\\n')\n"
        ),
    )
    bridge.qemu("slow", "started", "begin", domain_xml("slow", properties={"slow": "1"}))
    bridge.qemu("fast", "started", "begin", domain_xml("fast"))
    bridge.wait_async(2)
    assert marks(ends) == ["fast", "1"]


def test_sync_events_never_wait_for_async_runners(bridge: Bridge, tmp_path: Path) -> None:
    done = tmp_path / "done"
    bridge.probe("after_vm_start", tail=f"import time; time.sleep(4); open({str(done)!r}, 'w')")
    bridge.probe("before_vm_start")
    xml = domain_xml("vm1")
    bridge.qemu("vm1", "started", "begin", xml)
    assert bridge.qemu("vm1", "prepare", "begin", xml).returncode == 0
    assert not done.exists()
    assert "before_vm_start" in bridge.events()
    bridge.wait_async()


def test_after_script_may_outlive_a_killed_runner_and_the_queue_goes_on(
    bridge: Bridge, tmp_path: Path
) -> None:
    ready = tmp_path / "ready"
    bridge.probe("after_vm_start", tail=f"import time; open({str(ready)!r}, 'w'); time.sleep(30)")
    bridge.probe("after_vm_destroy")
    xml = domain_xml("vm1")
    bridge.qemu("vm1", "started", "begin", xml)
    wait_for_file(ready, "the slow after_vm_start script", 20)
    [start_record] = bridge.read_records()
    runner = int(start_record["ppid"])
    bridge.qemu("vm1", "release", "end", xml, extra="destroyed")
    os.kill(runner, signal.SIGKILL)
    os.killpg(int(start_record["pid"]), signal.SIGKILL)
    assert events_of(bridge.wait_async(2)) == ["after_vm_start", "after_vm_destroy"]
    assert "after_vm_start of 'vm1'" in bridge.log_text()
    assert "was interrupted" in bridge.log_text()


def test_unwritable_state_dir_loses_async_events_loudly_but_sync_still_decides(
    tmp_path: Path,
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    bridge = Bridge(tmp_path, state_dir=str(blocker / "state"))
    bridge.probe("after_vm_start")
    bridge.script("before_vm_start", "10_veto", "#!/bin/sh\necho vetoed >&2\nexit 1\n")
    xml = domain_xml("vm1")
    vetoed = bridge.qemu("vm1", "prepare", "begin", xml)
    assert vetoed.returncode == 1
    assert b"vetoed" in vetoed.stderr
    assert bridge.qemu("vm1", "started", "begin", xml).returncode == 0
    log = bridge.log_text()
    assert f"cannot queue after_vm_start in {blocker / 'state'}: Not a directory; lost" in log


def test_job_round_trips_any_name() -> None:
    name = "odd\nname = ü/'\""
    job = Job("after_vm_start", name, "u", b"<domain>\n\n</domain>")
    back = Job.decode(job.encode(), "p")
    assert (back.event, back.name, back.uuid, back.xml) == (job.event, name, "u", job.xml)
    assert back.props is None


def test_what_fired_a_job_round_trips_for_its_runs_records() -> None:
    job = Job("after_vm_pause", "g1", "u", b"<domain/>", source="event SUSPENDED/PAUSED")
    assert Job.decode(job.encode(), "p").source == "event SUSPENDED/PAUSED"
    # A job an earlier version queued names no source.
    assert Job.decode(b"event=after_vm_start\nname=6731\nuuid=u\n\n<domain/>", "p").source == ""


def test_a_device_jobs_properties_round_trip() -> None:
    props = EventProperties({"pincpu": "1"}, {"extnet": "br-ext", "odd": "a\nb = ü"}, "interface")
    job = Job("after_nic_hotplug", "g1", "u", b"<interface/>", props=props)
    back = Job.decode(job.encode(), "p")
    assert (back.event, back.xml, back.props) == ("after_nic_hotplug", b"<interface/>", props)


def test_a_job_an_earlier_version_queued_keeps_its_properties_as_the_vms() -> None:
    # Earlier versions queued a device event's properties merged, as "props".
    blob = b"event=after_nic_hotplug\nname=6731\nuuid=u\nprops=%s\n\n<interface/>" % (
        b'{"extnet": "br-ext"}'.hex().encode()
    )
    back = Job.decode(blob, "p")
    assert back.props == EventProperties({"extnet": "br-ext"})


def test_a_runner_forked_from_the_hooks_process_collects_garbage_again(
    bridge: Bridge, tmp_path: Path
) -> None:
    # The launcher starts the hook's Python with the collector off (hook.launch); a runner
    # forked from it may drain a long queue.
    import subprocess
    import sys

    from libvirt_bridge.launcher import import_path

    seen = tmp_path / "seen"
    code = (
        "import gc, sys\n"
        "gc.disable()\n"
        f"sys.path[:0] = {import_path()!r}\n"
        "from libvirt_bridge import asyncq, config\n"
        "from libvirt_bridge.log import Log\n"
        "def drain(cfg, log, key):\n"
        f"    open({str(seen)!r}, 'w').write(f'{{key}} {{gc.isenabled()}}')\n"
        "asyncq.drain = drain\n"
        f"cfg = config.load({str(bridge.config)!r})\n"
        "asyncq.spawn_runner(cfg, Log(cfg.log_file), 'daemon')\n"
        "print(gc.isenabled())\n"
    )
    result = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [b"False"]
    wait_until(lambda: seen.exists() and seen.read_text() != "", "the runner's drain", 10)
    assert seen.read_text() == "daemon True"
