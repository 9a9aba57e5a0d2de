"""What the bridge does on a booted host (``systemd_host.Host``): probe scripts that record
the events they run for, virsh actions checked against them, status, the unit, the journal.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from .probes import GUEST_CYCLE
from .systemd_host import Host
from .waits import wait_until

UNIT = "libvirt-bridge-listener.service"
HOOKS_ROOT = "/etc/libvirt/hooks/vdsm.d"
RECORD = "/var/lib/lb-probe/events"
PROBED = GUEST_CYCLE
PROBE = f'#!/bin/sh\nbasename "$(dirname "$0")" >> {RECORD}\n'
FOREIGN_HOOK = "#!/bin/sh\n# the admin's own hook, there before the bridge\nexit 0\n"
GUEST = """<domain type='qemu'>
  <name>g1</name>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <on_poweroff>destroy</on_poweroff>
  <devices><emulator>/usr/bin/qemu-system-x86_64</emulator></devices>
</domain>
"""
# Not /var/lib/libvirt/qemu/save/g1.save: that is the managed-save image, which the next
# `virsh start` would restore.
SAVED = "/var/lib/libvirt/images/g1.save"


def events(host: Host) -> list[str]:
    return host.sh(f"cat {RECORD} 2>/dev/null || true").split()


def fires(host: Host, action: list[str], expected: list[str], timeout: float = 60) -> None:
    """Run ``virsh ACTION``; the probes record exactly ``expected`` (a late duplicate
    shows up in the next call's share)."""
    before = len(events(host))
    host.run(["virsh", "-c", "qemu:///system", *action])

    def fired() -> list[str]:
        return events(host)[before:]

    def said() -> str:
        return f"virsh {' '.join(action)}: {fired()}\n{host.journal_tail(40)}"

    wait_until(lambda: len(fired()) >= len(expected), said, timeout, interval=0.1)
    assert fired() == expected, said()


def status(host: Host, *options: str) -> str:
    """``libvirt-bridge status``'s report, which must say all is well."""
    result = host.run(["libvirt-bridge", "status", *options], check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PROBLEM" not in result.stdout
    return result.stdout


def unit_property(host: Host, name: str) -> str:
    return host.run(["systemctl", "show", f"--property={name}", "--value", UNIT]).stdout.strip()


def wait_until_connected(host: Host, timeout: float = 30) -> None:
    """Return once ``libvirt-bridge status`` says all is well (the listener connected)."""

    def report() -> subprocess.CompletedProcess[str]:
        return host.run(["libvirt-bridge", "status"], check=False)

    wait_until(lambda: report().returncode == 0, lambda: report().stdout, timeout, interval=0.2)


def journal(host: Host, *matches: str) -> list[dict[str, str]]:
    out = host.run(["journalctl", "--no-pager", "-o", "json", *matches]).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def install_bridge(host: Host, deb: Path) -> str:
    """Install the package and the bridge, with a probe in each event of ``PROBED``;
    what ``libvirt-bridge install`` printed."""
    host.put(deb, "/srv/lb-test/first.deb")
    host.run(["apt-get", "install", "-y", "/srv/lb-test/first.deb"], timeout=300)
    out = host.run(["libvirt-bridge", "install"]).stdout
    host.run(["mkdir", "-p", RECORD.rsplit("/", 1)[0]])
    for event in PROBED:
        host.write(f"{HOOKS_ROOT}/{event}/50_probe", PROBE, mode=0o755)
    return out
