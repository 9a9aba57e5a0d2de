"""``libvirt-bridge demo``: the bridge at work on a real, private libvirt.

Boots two sandboxes (private libvirtd or virtqemud daemons in their own namespaces, of the
host's libvirt or a cached root's: ``sandbox.cells``; the host's libvirt is not touched),
installs the bridge and a probe script for every VDSM event in each, runs the listener in
each, then drives one guest through the actions below and prints, after each ``virsh``
action, the VDSM events it fired (sync or async, script, rc, time), read from the bridge's
log. Exits non-zero if an expected event is missing.
"""

from __future__ import annotations

import functools
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

from libvirt_bridge import log, mapping

from .sandbox import Sandbox
from .sandbox.cells import Cell

PROBE = "#!/bin/sh\n# Does nothing: the bridge logs each run (rc, duration).\nexit 0\n"
MODES = {row.event: row.mode for row in mapping.HOOK_TABLE}
# The libvirt call (or event) behind each VDSM event the demo's virsh actions fire: what
# someone who knows libvirt but not VDSM reads the table by. The first row of an event
# that several rows fire (the listener's pause reasons) stands for them.
CAUSES = {
    row.event: row.libvirt_argv if row.driver == "listener" else row.trigger
    for row in reversed(mapping.HOOK_TABLE)
    if row.driver in ("qemu", "daemon", "listener")
}
COLUMNS = f"    {'host':8} {'mode':5}  {'VDSM event':30} {'script':10} {'result':6} {'time':>9}"
GUEST = "demo1"


@dataclass
class Fired:
    host: str
    event: str
    script: str
    result: str
    duration: float


@dataclass
class Step:
    title: str
    action: Callable[[], object]
    expected: dict[str, list[str]]  # sandbox name -> events, in order


def fired_since(sandbox: Sandbox, offset: int) -> tuple[list[Fired], int]:
    entries, offset = log.read(sandbox.log_file, offset)
    fired = []
    for entry in entries:
        run = entry.script_run()
        if run is not None:
            event, script, result, seconds = run
            fired.append(Fired(sandbox.name, event, os.path.basename(script), result, seconds))
    return fired, offset


def run_demo(out: TextIO = sys.stdout, workdir: str | None = None, cell: Cell | None = None) -> int:
    """Run the whole demo on ``cell`` (default: the host's libvirt, monolithic); return 0
    when every expected event fired."""
    started = time.monotonic()
    cell = cell or Cell()
    with tempfile.TemporaryDirectory(prefix="libvirt-bridge-demo-", dir=workdir) as tmp:
        a = Sandbox(os.path.join(tmp, "a"), "lbdemo1", cell=cell)
        b = Sandbox(os.path.join(tmp, "b"), "lbdemo2", cell=cell)
        with a, b:
            say = _printer(out)
            say(f"starting two private {cell.main_daemon} daemons ({cell}) under {tmp} ...")
            for sandbox in (a, b):
                sandbox.start()
                sandbox.install_bridge()
                for event in mapping.EVENTS:
                    sandbox.add_hook_script(event, "50_probe", PROBE)
                sandbox.start_listener()
            say(f"guests run as {a.domain_type!r} domains; hooks roots: {a.hooks_root}")
            a.define_guest(GUEST)
            image = os.path.join(tmp, f"{GUEST}.save")
            devices = _device_files(a, tmp)
            missing = run_steps(_steps(a, b, image, devices), (a, b), say)
        say(f"finished in {time.monotonic() - started:.0f}s")
    if missing:
        say(f"FAILED: {len(missing)} expected event(s) did not fire: {', '.join(missing)}")
        return 1
    say("every expected VDSM event fired")
    return 0


# Devices QEMU plugs and unplugs without the guest's help (it has no operating system):
# USB ones. The disk's image is in the sandbox's /var/lib/libvirt, which QEMU can reach.
DISK_IMAGE = "/var/lib/libvirt/images/demo-extra.img"
DEVICES = {
    "disk": (
        f"<disk type='file' device='disk'><driver name='qemu' type='raw'/>"
        f"<source file='{DISK_IMAGE}'/><target dev='sdb' bus='usb'/>"
        "<alias name='ua-disk1'/></disk>\n"
    ),
    "nic": (
        "<interface type='user'><mac address='52:54:00:de:00:01'/><model type='usb-net'/>"
        "<alias name='ua-nic1'/></interface>\n"
    ),
}


def _device_files(sandbox: Sandbox, tmp: str) -> dict[str, str]:
    """The device files of the attach and detach steps (and the disk's image)."""
    images = os.path.join(sandbox.lib_dir, "images")
    os.makedirs(images, exist_ok=True)
    with open(os.path.join(images, os.path.basename(DISK_IMAGE)), "wb") as f:
        f.truncate(1 << 20)
    files = {}
    for kind, xml in DEVICES.items():
        files[kind] = os.path.join(tmp, f"{kind}.xml")
        with open(files[kind], "w") as f:
            f.write(xml)
    return files


def _steps(a: Sandbox, b: Sandbox, image: str, devices: dict[str, str]) -> list[Step]:
    g = GUEST
    return [
        Step(
            f"virsh start {g}",
            lambda: a.virsh("start", g),
            {a.name: ["before_vm_start", "after_vm_start"]},
        ),
        Step(f"virsh suspend {g}", lambda: a.virsh("suspend", g), {a.name: ["after_vm_pause"]}),
        Step(f"virsh resume {g}", lambda: a.virsh("resume", g), {a.name: ["after_vm_cont"]}),
        *(
            Step(
                f"virsh {verb} {g} {kind}.xml --live  (a USB {kind})",
                functools.partial(a.virsh, verb, g, devices[kind], "--live"),
                {a.name: [event]},
            )
            for kind, verb, event in (
                ("disk", "attach-device", "after_disk_hotplug"),
                ("disk", "detach-device", "after_disk_hotunplug"),
                ("nic", "attach-device", "after_nic_hotplug"),
                ("nic", "detach-device", "after_nic_hotunplug"),
            )
        ),
        Step(
            f"virsh save {g} FILE",
            lambda: a.virsh("save", g, image),
            {a.name: ["after_vm_hibernate"]},
        ),
        Step(
            "virsh restore FILE",
            lambda: a.virsh("restore", image),
            {a.name: ["before_vm_dehibernate", "after_vm_dehibernate"]},
        ),
        Step(
            f"virsh managedsave {g}",
            lambda: a.virsh("managedsave", g),
            {a.name: ["after_vm_hibernate"]},
        ),
        Step(
            f"virsh start {g}  (from the managed save)",
            lambda: a.virsh("start", g),
            {a.name: ["before_vm_dehibernate", "after_vm_dehibernate"]},
        ),
        Step(
            f"virsh migrate --live {g} {b.name}",
            lambda: _migrate(a, b),
            {
                b.name: ["before_vm_migrate_destination", "after_vm_migrate_destination"],
                a.name: ["after_vm_migrate_source"],
            },
        ),
        Step(
            f"virsh migrate --live {g} {a.name}  (and back)",
            lambda: _migrate(b, a),
            {
                a.name: ["before_vm_migrate_destination", "after_vm_migrate_destination"],
                b.name: ["after_vm_migrate_source"],
            },
        ),
        Step(
            f"virsh destroy {g}",
            lambda: a.virsh("destroy", g),
            {a.name: ["before_vm_destroy", "after_vm_destroy"]},
        ),
        Step(
            f"restart {a.cell.main_daemon} on {a.name}",
            a.restart_daemon,
            {a.name: ["after_vdsm_stop", "before_vdsm_start"]},
        ),
    ]


def _migrate(source: Sandbox, destination: Sandbox) -> None:
    result = source.migrate(GUEST, destination)
    if result.returncode != 0:
        raise RuntimeError(f"migration failed: {result.stderr.strip()}")


def run_steps(
    steps: list[Step], sandboxes: tuple[Sandbox, ...], say: Callable[[str], None]
) -> list[str]:
    offsets = {s.name: _log_size(s) for s in sandboxes}
    missing: list[str] = []
    say("")
    say(f"{COLUMNS}  libvirt call")
    for step in steps:
        say("")
        say(f"$ {step.title}")
        t0 = time.monotonic()
        try:
            step.action()
        except Exception as exc:
            say(f"    ERROR: {exc}")
        elapsed = time.monotonic() - t0
        fired = _collect(step, sandboxes, offsets)
        for f in fired:
            say(
                f"    {f.host:8} {MODES.get(f.event, '?'):5}  {f.event:30} {f.script:10} "
                f"{f.result:6} {f.duration * 1000:6.0f} ms  {CAUSES.get(f.event, '')}".rstrip()
            )
        say(f"    ({elapsed:.2f}s)")
        for host, events in step.expected.items():
            got = [f.event for f in fired if f.host == host]
            for event in events:
                if event not in got:
                    missing.append(f"{event} on {host} after '{step.title}'")
                    say(f"    MISSING: {event} on {host}")
    return missing


def _collect(step: Step, sandboxes: tuple[Sandbox, ...], offsets: dict[str, int]) -> list[Fired]:
    """Wait (bounded) until the step's expected events are logged; return what fired."""
    fired: list[Fired] = []
    deadline = time.monotonic() + 15
    by_name = {s.name: s for s in sandboxes}
    while True:
        for name, sandbox in by_name.items():
            new, offsets[name] = fired_since(sandbox, offsets[name])
            fired += new
        wanted = sum(len(v) for v in step.expected.values())
        if len(fired) >= wanted or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    time.sleep(0.3)  # anything fired beyond what was expected shows too
    for name, sandbox in by_name.items():
        new, offsets[name] = fired_since(sandbox, offsets[name])
        fired += new
    return fired


def _log_size(sandbox: Sandbox) -> int:
    try:
        return os.path.getsize(sandbox.log_file)
    except OSError:
        return 0


def _printer(out: TextIO) -> Callable[[str], None]:
    def say(text: str) -> None:
        out.write(text + "\n")
        out.flush()

    return say
