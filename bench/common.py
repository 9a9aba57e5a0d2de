"""What every benchmark part shares: timing a process, statistics, markdown tables."""

from __future__ import annotations

import os
import pwd
import statistics
import sys
import time
import uuid as uuidlib
from collections.abc import Callable, Iterable, Sequence

from libvirt_bridge import asyncq, inbox

# What libvirt gives a hook: PATH, HOME and LC_ALL=C only (cwd /).
HOOK_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": pwd.getpwuid(os.getuid()).pw_dir,
    "LC_ALL": "C",
}
PYTHON = sys.executable


def spawn_wait(
    argv: Sequence[str], stdin_data: bytes = b"", env: dict[str, str] | None = None
) -> float:
    """Seconds from spawning ``argv`` to its exit, stdin a pipe holding ``stdin_data``.

    Run in the caller's cwd; stdout and stderr go to /dev/null. The pipe is filled and
    closed before the clock starts (libvirt writes the XML to a pipe the same way).
    """
    read_fd, write_fd = os.pipe()
    try:
        if stdin_data:
            os.write(write_fd, stdin_data)  # <= 64 KiB: fits in the pipe's buffer
    finally:
        os.close(write_fd)
    actions = [
        (os.POSIX_SPAWN_DUP2, read_fd, 0),
        (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
        (os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0),
    ]
    try:
        started = time.perf_counter()
        pid = os.posix_spawn(
            argv[0], list(argv), HOOK_ENV if env is None else env, file_actions=actions
        )
        _, status = os.waitpid(pid, 0)
        elapsed = time.perf_counter() - started
    finally:
        os.close(read_fd)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{list(argv)} exited {os.waitstatus_to_exitcode(status)}")
    return elapsed


def interleave(
    variants: dict[str, Callable[[], float]], rounds: int, warmup: int = 0
) -> dict[str, list[float]]:
    """Run every variant once per round, round-robin, so that drift hits each alike."""
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for index in range(warmup + rounds):
        for name, measure in variants.items():
            value = measure()
            if index >= warmup:
                samples[name].append(value)
    return samples


def median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


def quantile(values: Sequence[float], q: float) -> float:
    """The q-quantile (0..1), linear between order statistics."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f}"


def spread(values: Sequence[float]) -> str:
    """The interquartile range in ms: ``p25-p75``."""
    return f"{ms(quantile(values, 0.25))}-{ms(quantile(values, 0.75))}"


def ratio(value: float, reference: float) -> str:
    return f"{value / reference:.2f}"


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def bridge_idle(state_dir: str) -> bool:
    """No hook call waits in the bridge's inbox under ``state_dir``, and no async job is
    queued or running."""
    for _, _, names in os.walk(inbox.inbox_dir(state_dir)):
        if names:
            return False
    for _, _, names in os.walk(os.path.join(state_dir, "queue")):
        if any(name.endswith((asyncq.JOB, asyncq.RUNNING)) for name in names):
            return False
    return True


def domain_xml(name: str = "bench1", size: int = 10 * 1024) -> bytes:
    """A libvirt-style live domain XML of about ``size`` bytes, with one custom property."""
    head = f"""<domain type='kvm' id='7'>
  <name>{name}</name>
  <uuid>{uuidlib.uuid4()}</uuid>
  <metadata>
    <ovirt-vm:vm xmlns:ovirt-vm="http://ovirt.org/vm/1.0">
      <ovirt-vm:custom><ovirt-vm:pincpu>0-1</ovirt-vm:pincpu></ovirt-vm:custom>
    </ovirt-vm:vm>
  </metadata>
  <memory unit='KiB'>4194304</memory>
  <currentMemory unit='KiB'>4194304</currentMemory>
  <vcpu placement='static'>2</vcpu>
  <resource><partition>/machine</partition></resource>
  <os><type arch='x86_64' machine='pc-q35-7.2'>hvm</type><boot dev='hd'/></os>
  <features><acpi/><apic/><vmport state='off'/></features>
  <cpu mode='host-passthrough' check='none' migratable='on'/>
  <clock offset='utc'><timer name='rtc' tickpolicy='catchup'/></clock>
  <on_poweroff>destroy</on_poweroff><on_reboot>restart</on_reboot><on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
"""
    tail = """  </devices>
  <seclabel type='dynamic' model='apparmor' relabel='yes'/>
</domain>
"""
    devices: list[str] = []
    index = 0
    while len(head) + len(tail) + sum(map(len, devices)) < size:
        letter = chr(ord("a") + index % 26)
        devices.append(
            f"""    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2' cache='none' io='native' discard='unmap'/>
      <source file='/var/lib/libvirt/images/{name}-{index}.qcow2' index='{index + 1}'/>
      <backingStore/>
      <target dev='vd{letter}' bus='virtio'/>
      <alias name='virtio-disk{index}'/>
      <address type='pci' domain='0x0000' bus='0x{index + 4:02x}' slot='0x00' function='0x0'/>
    </disk>
    <interface type='network'>
      <mac address='52:54:00:12:34:{index % 256:02x}'/>
      <source network='default' portid='{uuidlib.uuid4()}' bridge='virbr0'/>
      <target dev='vnet{index}'/>
      <model type='virtio'/>
      <alias name='net{index}'/>
      <address type='pci' domain='0x0000' bus='0x{index + 40:02x}' slot='0x00' function='0x0'/>
    </interface>
"""
        )
        index += 1
    return (head + "".join(devices) + tail).encode()
