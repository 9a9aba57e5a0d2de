"""The async runner the listener execs: a small bootstrap, not the whole CLI."""

from __future__ import annotations

import subprocess

from libvirt_bridge.asyncq import Job, enqueue
from libvirt_bridge.launcher import import_path
from libvirt_bridge.listener import runner_argv
from libvirt_bridge.runner import COMPAT_DIR
from testing.harness import LIBVIRT_ENV, Bridge, domain_xml, uuid_of

# What a runner must never import: the CLI and what only its other commands need.
HEAVY = {"argparse", "libvirt", "libvirt_bridge.cli", "libvirt_bridge.commands", "lxml"}


def queue_pause(bridge: Bridge) -> str:
    xml = domain_xml("vm1", properties={"pincpu": "1-4"})
    uuid = uuid_of(xml)
    enqueue(str(bridge.state), uuid, Job("after_vm_pause", "vm1", uuid, xml))
    return uuid


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


def test_the_runner_drains_a_queue_given_a_config_path(bridge: Bridge) -> None:
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


def test_the_runner_imports_only_what_draining_needs(bridge: Bridge) -> None:
    bridge.probe("after_vm_pause")
    uuid = queue_pause(bridge)
    result = run_runner(bridge, uuid, "-X", "importtime")
    assert result.returncode == 0
    modules = imported(result.stderr)
    assert {"libvirt_bridge.asyncq", "libvirt_bridge.config", "libvirt_bridge.log"} <= modules
    assert "libvirt_bridge.events" in modules  # it did run the job
    assert not modules & HEAVY
    assert not [m for m in modules if m.startswith("libvirt_bridge.commands")]


def test_the_runner_with_no_queue_directory_runs_nothing(bridge: Bridge) -> None:
    bridge.probe("after_vm_pause")
    result = run_runner(bridge, uuid_of(domain_xml()))
    assert (result.returncode, result.stderr) == (0, "")
    assert bridge.read_records() == []
    assert not bridge.state.exists()


def test_the_runner_reports_a_bad_key_and_a_broken_config(bridge: Bridge) -> None:
    result = run_runner(bridge, "not-a-uuid")
    assert result.returncode == 2
    assert "'not-a-uuid' is neither a domain UUID nor 'daemon'" in result.stderr
    bridge.config.write_text("script_timeout = -1\n")
    result = run_runner(bridge, "daemon")
    assert result.returncode == 1
    assert "script_timeout must be a number of seconds >= 0" in result.stderr
