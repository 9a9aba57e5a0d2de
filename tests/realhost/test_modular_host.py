"""A host that runs libvirt's modular daemon, virtqemud, instead of libvirtd: the listener
runs beside it and never brings libvirtd back.

Debian ships no modular daemons (12 and 13 alike), so the host is Debian 13 (libvirt 11.3)
with the ``virtqemud`` that the cached libvirt 11.3 root builds from Debian's own 11.3
source, under a unit with what matters of libvirt's own: ``Type=notify`` and
``Conflicts=libvirtd.service`` (so starting libvirtd stops virtqemud, as on Fedora, EL9 or
Arch). libvirtd's service and sockets are stopped and disabled, as an admin who switched
to the modular daemons leaves them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from libvirt_bridge_lab.sandbox import roots
from testing import systemd_host
from testing.bridge_on_host import GUEST, UNIT, fires, install_bridge, status
from testing.systemd_host import Host

VIRTQEMUD_UNIT = """[Unit]
Description=libvirt QEMU daemon (modular)
Conflicts=libvirtd.service
After=network.target dbus.service local-fs.target

[Service]
Type=notify
ExecStart=/usr/sbin/virtqemud
KillMode=process
Restart=on-failure

[Install]
WantedBy=multi-user.target
"""
LIBVIRTD_UNITS = (
    "libvirtd.service",
    "libvirtd.socket",
    "libvirtd-ro.socket",
    "libvirtd-admin.socket",
)


@pytest.fixture(scope="module")
def modular(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    try:
        root = systemd_host.require("debian13")
        libvirt_root = roots.require("11.3")
    except (systemd_host.HostError, roots.SandboxError) as exc:
        pytest.fail(str(exc), pytrace=False)
    host = Host(root, tmp_path_factory.mktemp("host-modular"), f"lb-modular-{os.getpid()}")
    host.boot()
    try:
        host.put(Path(libvirt_root, "usr/sbin/virtqemud"), "/usr/sbin/virtqemud", mode=0o755)
        host.write("/etc/systemd/system/virtqemud.service", VIRTQEMUD_UNIT)
        host.run(["systemctl", "disable", "--now", *LIBVIRTD_UNITS])
        host.run(["systemctl", "enable", "--now", "virtqemud.service"])
        yield host
    finally:
        host.shutdown()


def active(host: Host, unit: str) -> str:
    return host.run(["systemctl", "is-active", unit], check=False).stdout.strip()


def main_pid(host: Host, unit: str) -> str:
    return host.run(["systemctl", "show", "--property=MainPID", "--value", unit]).stdout.strip()


def test_the_listener_keeps_virtqemud_and_never_starts_libvirtd(
    modular: Host, debs: tuple[Path, Path]
) -> None:
    assert active(modular, "virtqemud.service") == "active"
    virtqemud = main_pid(modular, "virtqemud.service")
    install_bridge(modular, debs[0])
    assert "ok: the listener is connected qemu:///system" in status(modular)
    for _ in range(2):
        listener = main_pid(modular, UNIT)
        modular.run(["systemctl", "restart", UNIT])
        assert main_pid(modular, UNIT) != listener
        status(modular)
    assert active(modular, "libvirtd.service") != "active"
    assert not [c for c in modular.commands() if c.startswith("/usr/sbin/libvirtd")]
    assert main_pid(modular, "virtqemud.service") == virtqemud
    # The events come from virtqemud's hook calls and lifecycle events.
    modular.write("/srv/lb-test/g1.xml", GUEST)
    modular.run(["virsh", "-c", "qemu:///system", "define", "/srv/lb-test/g1.xml"])
    fires(modular, ["start", "g1"], ["before_vm_start", "after_vm_start"])
    fires(modular, ["suspend", "g1"], ["after_vm_pause"])
    fires(modular, ["resume", "g1"], ["after_vm_cont"])
    fires(modular, ["destroy", "g1"], ["before_vm_destroy", "after_vm_destroy"])
    assert active(modular, "libvirtd.service") != "active"
    assert main_pid(modular, "virtqemud.service") == virtqemud
