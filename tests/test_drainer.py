"""The listener's drainer process, and the detached runner it falls back on: small
bootstraps, not the whole CLI."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from libvirt_bridge import drainer as drainer_module
from libvirt_bridge.asyncq import Job, enqueue
from libvirt_bridge.config import load
from libvirt_bridge.drainer import Drainer, drainer_argv, runner_argv
from libvirt_bridge.launcher import import_path
from libvirt_bridge.log import Log
from libvirt_bridge.runner import COMPAT_DIR
from testing.harness import LIBVIRT_ENV, Bridge, domain_xml, uuid_of

# What a drainer or runner must never import: the CLI and what only its other commands need.
HEAVY = {"argparse", "libvirt", "libvirt_bridge.cli", "libvirt_bridge.commands", "lxml"}


def queue_pause(bridge: Bridge, name: str = "vm1") -> str:
    xml = domain_xml(name, properties={"pincpu": "1-4"})
    uuid = uuid_of(xml)
    enqueue(str(bridge.state), uuid, Job("after_vm_pause", name, uuid, xml))
    return uuid


def new_drainer(bridge: Bridge) -> Drainer:
    config = load(str(bridge.config))
    return Drainer(str(bridge.config), config.state_dir, import_path(), Log(config.log_file))


def vm_id(record: dict[str, object]) -> str:
    env = record["env"]
    assert isinstance(env, dict)
    return str(env["vmId"])


def wait_gone(process: subprocess.Popen[bytes] | None) -> int:
    assert process is not None
    return process.wait(timeout=30)


def test_the_drainer_drains_every_key_it_is_handed_then_exits_at_eof(bridge: Bridge) -> None:
    bridge.probe("after_vm_pause")
    keys = [queue_pause(bridge, f"vm{n}") for n in range(3)]
    process = subprocess.Popen(
        [
            *drainer_argv(str(bridge.config), import_path())[:1],
            "-X",
            "importtime",
            *drainer_argv(str(bridge.config), import_path())[1:],
        ],
        env=LIBVIRT_ENV,
        cwd="/",
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    _, stderr = process.communicate("".join(f"{key}\n" for key in keys).encode(), timeout=60)
    assert process.returncode == 0
    records = bridge.read_records()
    assert sorted(vm_id(r) for r in records) == sorted(keys)
    # One process ran them all; the scripts' environment keeps none of its import path.
    assert {r["ppid"] for r in records} == {process.pid}
    assert {str(r["env"]["PYTHONPATH"]) for r in records} == {COMPAT_DIR}  # type: ignore[index]
    assert not imported(stderr.decode()) & HEAVY


def test_the_drainer_logs_a_bad_key_and_goes_on(bridge: Bridge) -> None:
    bridge.probe("after_vm_pause")
    uuid = queue_pause(bridge)
    result = subprocess.run(
        drainer_argv(str(bridge.config), import_path()),
        input=f"../etc\n{uuid}\n",
        env=LIBVIRT_ENV,
        cwd="/",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (result.returncode, result.stderr) == (0, "")
    assert "drainer: '../etc' is neither a domain UUID nor 'daemon'; ignored" in bridge.log_text()
    assert [vm_id(r) for r in bridge.read_records()] == [uuid]


def test_the_drainer_refuses_a_broken_config(bridge: Bridge) -> None:
    bridge.config.write_text("script_timeout = -1\n")
    result = subprocess.run(
        drainer_argv(str(bridge.config), import_path()),
        input="",
        env=LIBVIRT_ENV,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "script_timeout must be a number of seconds >= 0" in result.stderr


def test_one_drainer_takes_every_key_and_a_new_one_what_a_killed_one_left(
    bridge: Bridge, tmp_path: Path
) -> None:
    started = tmp_path / "started"
    bridge.probe(
        "after_vm_pause", tail=f"import time\nopen({str(started)!r}, 'w').close()\ntime.sleep(30)\n"
    )
    bridge.probe("after_vm_cont")
    drainer = new_drainer(bridge)
    uuid = queue_pause(bridge)
    xml = domain_xml("vm1", properties={"pincpu": "1-4"})
    enqueue(str(bridge.state), uuid, Job("after_vm_cont", "vm1", uuid, xml))
    drainer.hand_over(uuid)
    first = drainer.process
    assert first is not None
    deadline = time.monotonic() + 30
    while not started.exists():
        assert time.monotonic() < deadline, "the drainer did not start the pause's script"
        time.sleep(0.02)
    os.kill(first.pid, signal.SIGKILL)
    wait_gone(first)
    [sleeping] = bridge.read_records()
    os.kill(int(str(sleeping["pid"])), signal.SIGKILL)  # the script, in a session of its own
    # The next key starts a new drainer, which is handed every queue with a job.
    other = queue_pause(bridge, "vm2")
    bridge.probe("after_vm_pause")  # no longer sleeps
    drainer.hand_over(other)
    assert drainer.process is not None and drainer.process.pid != first.pid
    drainer.close()
    records = bridge.wait_async(3)[1:]
    assert sorted((vm_id(r), str(r["event"])) for r in records) == sorted(
        [(uuid, "after_vm_cont"), (other, "after_vm_pause")]
    )
    assert "after_vm_pause of 'vm1'" in bridge.log_text()
    assert "was interrupted: its runner died; not run again" in bridge.log_text()


def test_with_no_drainer_a_detached_runner_drains_the_queue(
    bridge: Bridge, monkeypatch: pytest.MonkeyPatch
) -> None:
    bridge.probe("after_vm_pause")
    monkeypatch.setattr(
        drainer_module, "drainer_argv", lambda *_: ["/nonexistent/libvirt-bridge-drainer"]
    )
    drainer = new_drainer(bridge)
    uuid = queue_pause(bridge)
    drainer.hand_over(uuid)
    assert drainer.process is None
    [record] = bridge.wait_async(1)
    assert vm_id(record) == uuid
    assert "listener: cannot start its drainer: No such file or directory" in bridge.log_text()


def run_runner(bridge: Bridge, key: str, *options: str) -> subprocess.CompletedProcess[str]:
    # libvirt's bare environment: the import path must come from the argv alone.
    argv = runner_argv(str(bridge.config), key, import_path())
    argv[1:1] = options
    return subprocess.run(
        argv, env=LIBVIRT_ENV, cwd="/", capture_output=True, text=True, timeout=60
    )


def imported(stderr: str) -> set[str]:
    """The modules named in ``-X importtime`` output."""
    return {
        line.rsplit("|", 1)[1].strip()
        for line in stderr.splitlines()
        if line.startswith("import time:") and not line.endswith("| imported package")
    }


def test_the_detached_runner_drains_a_queue_given_a_config_path(bridge: Bridge) -> None:
    bridge.probe("after_vm_pause")
    uuid = queue_pause(bridge)
    result = run_runner(bridge, uuid)
    assert (result.returncode, result.stderr) == (0, "")
    [record] = bridge.read_records()
    assert record["event"] == "after_vm_pause"
    env = record["env"]
    assert isinstance(env, dict)
    assert (env["vmId"], env["pincpu"]) == (uuid, "1-4")
    # The runner's import path stays out of the scripts' environment.
    assert env["PYTHONPATH"] == COMPAT_DIR
    assert not list((bridge.state / "queue" / uuid).iterdir())


def test_the_detached_runner_imports_only_what_draining_needs(bridge: Bridge) -> None:
    bridge.probe("after_vm_pause")
    uuid = queue_pause(bridge)
    result = run_runner(bridge, uuid, "-X", "importtime")
    assert result.returncode == 0
    modules = imported(result.stderr)
    assert {"libvirt_bridge.asyncq", "libvirt_bridge.config", "libvirt_bridge.log"} <= modules
    assert "libvirt_bridge.events" in modules  # it did run the job
    assert not modules & HEAVY
    assert not [m for m in modules if m.startswith("libvirt_bridge.commands")]


def test_the_detached_runner_with_no_queue_directory_runs_nothing(bridge: Bridge) -> None:
    bridge.probe("after_vm_pause")
    result = run_runner(bridge, uuid_of(domain_xml()))
    assert (result.returncode, result.stderr) == (0, "")
    assert bridge.read_records() == []
    assert not bridge.state.exists()


def test_the_detached_runner_reports_a_bad_key_and_a_broken_config(bridge: Bridge) -> None:
    result = run_runner(bridge, "not-a-uuid")
    assert result.returncode == 2
    assert "'not-a-uuid' is neither a domain UUID nor 'daemon'" in result.stderr
    bridge.config.write_text("script_timeout = -1\n")
    result = run_runner(bridge, "daemon")
    assert result.returncode == 1
    assert "script_timeout must be a number of seconds >= 0" in result.stderr
