"""The Debian package on a real host: Debian 12 and 13 booted with systemd as PID 1.

One host per release runs these tests in order, as an admin would go: install the package
and the bridge, drive a guest with plain virsh, restart the daemon, read the journal,
upgrade, reboot, switch to the modular daemon, remove the package.
"""

from __future__ import annotations

import json
from pathlib import Path

from testing.bridge_on_host import (
    FOREIGN_HOOK,
    GUEST,
    HOOKS_ROOT,
    SAVED,
    UNIT,
    fires,
    install_bridge,
    journal,
    status,
    unit_property,
    wait_until_connected,
)
from testing.systemd_host import Host


def test_install_then_status_is_clean_at_once(host: Host, debs: tuple[Path, Path]) -> None:
    host.write("/etc/libvirt/hooks/qemu", FOREIGN_HOOK, mode=0o755)
    host.put(debs[1], "/srv/lb-test/newer.deb")
    out = install_bridge(host, debs[0])
    assert f"enabled and started {UNIT}" in out, out
    status(host)
    # The package's unit, not a copy that would hide it from upgrades.
    assert unit_property(host, "FragmentPath") in (
        f"/lib/systemd/system/{UNIT}",
        f"/usr/lib/systemd/system/{UNIT}",
    )
    assert not host.exists(f"/etc/systemd/system/{UNIT}")
    assert unit_property(host, "Type") == "notify"
    assert host.run(["systemctl", "is-enabled", UNIT]).stdout.strip() == "enabled"
    # A restart returns once the new listener is connected: status is clean at once. (Three:
    # systemd refuses a fifth start within 10 s, StartLimitBurst.)
    for _ in range(3):
        before = unit_property(host, "MainPID")
        host.run(["systemctl", "restart", UNIT])
        assert unit_property(host, "MainPID") != before
        assert "ok: the listener is connected qemu:///system" in status(host)


def test_the_host_s_cockpit_shows_the_hooks_page_the_package_installed(host: Host) -> None:
    listed = host.run(["cockpit-bridge", "--packages"]).stdout.splitlines()
    [page] = [line for line in listed if line.startswith("libvirt-bridge ")]
    assert "Hooks" in page and "/usr/share/cockpit/libvirt-bridge" in page, page


def test_each_virsh_action_fires_its_events_once(host: Host) -> None:
    host.write("/srv/lb-test/g1.xml", GUEST)
    host.run(["virsh", "-c", "qemu:///system", "define", "/srv/lb-test/g1.xml"])
    fires(host, ["start", "g1"], ["before_vm_start", "after_vm_start"])
    fires(host, ["suspend", "g1"], ["after_vm_pause"])
    fires(host, ["resume", "g1"], ["after_vm_cont"])
    fires(host, ["save", "g1", SAVED], ["after_vm_hibernate"])
    fires(host, ["restore", SAVED], ["before_vm_dehibernate", "after_vm_dehibernate"])
    fires(host, ["destroy", "g1"], ["before_vm_destroy", "after_vm_destroy"])


def test_a_daemon_restart_keeps_events_firing(host: Host) -> None:
    host.run(["systemctl", "restart", "libvirtd.service"])
    wait_until_connected(host)
    fires(host, ["start", "g1"], ["before_vm_start", "after_vm_start"])
    fires(host, ["suspend", "g1"], ["after_vm_pause"])
    fires(host, ["resume", "g1"], ["after_vm_cont"])
    fires(host, ["destroy", "g1"], ["before_vm_destroy", "after_vm_destroy"])


def test_the_listener_s_lines_are_in_the_journal(host: Host) -> None:
    entries = journal(host, "-u", UNIT)
    connected = [e for e in entries if e.get("MESSAGE") == "listener: connected to qemu:///system"]
    assert connected, [e.get("MESSAGE") for e in entries][-20:]
    assert {e["PRIORITY"] for e in connected} == {"6"}
    assert {e["SYSLOG_IDENTIFIER"] for e in connected} == {"libvirt-bridge"}


def test_hook_lines_reach_the_journal_with_fields_when_asked(host: Host) -> None:
    config = "/etc/libvirt-bridge.toml"
    host.run(["sed", "-i", 's/^log_target = .*/log_target = "journal"/', config])
    assert 'log_target = "journal"' in host.read(config)
    try:
        fires(host, ["start", "g1"], ["before_vm_start", "after_vm_start"])
        entries = journal(host, "DOMAIN=g1", "EVENT=before_vm_start")
        runs = [e for e in entries if e.get("SCRIPT") == f"{HOOKS_ROOT}/before_vm_start/50_probe"]
        assert runs, entries[-5:]
        assert runs[-1]["RC"] == "0" and runs[-1]["PRIORITY"] == "6"
        assert runs[-1]["OUTCOME"] == "ok"
        assert runs[-1]["UUID"] and runs[-1]["SYSLOG_IDENTIFIER"] == "libvirt-bridge"
        fires(host, ["destroy", "g1"], ["before_vm_destroy", "after_vm_destroy"])
        # The same runs in the history, each with what fired it.
        history = host.run(["libvirt-bridge", "history", "g1", "--json"]).stdout.splitlines()
        records = [json.loads(line) for line in history]
        sources = {r["event"]: r["source"] for r in records if r["outcome"] == "ok"}
        assert sources["before_vm_start"] == "qemu prepare begin (fresh)"
        assert sources["after_vm_destroy"].startswith("qemu release end")
    finally:
        host.run(["sed", "-i", 's/^log_target = .*/log_target = "file"/', config])


def test_an_upgrade_leaves_the_listener_running_the_new_code(host: Host) -> None:
    # As an earlier version's install left it: a copy of the unit in /etc/systemd/system,
    # enabled, hiding the package's.
    copy = f"/etc/systemd/system/{UNIT}"
    host.sh(f"cp /lib/systemd/system/{UNIT} {copy} && systemctl reenable {UNIT} 2>&1")
    assert unit_property(host, "FragmentPath") == copy
    host.run(["systemctl", "restart", UNIT])
    before = unit_property(host, "MainPID")
    host.run(["apt-get", "install", "-y", "/srv/lb-test/newer.deb"], timeout=300)
    version = host.run(["dpkg-query", "-W", "-f=${Version}", "libvirt-bridge"]).stdout
    assert version.endswith("upgrade1")
    assert host.run(["systemctl", "is-active", UNIT], check=False).stdout.strip() == "active"
    assert unit_property(host, "MainPID") not in (before, "0")
    assert not host.exists(copy)
    assert unit_property(host, "FragmentPath").endswith(f"/lib/systemd/system/{UNIT}")
    assert host.run(["systemctl", "is-enabled", UNIT]).stdout.strip() == "enabled"
    status(host)
    fires(host, ["start", "g1"], ["before_vm_start", "after_vm_start"])
    fires(host, ["suspend", "g1"], ["after_vm_pause"])
    fires(host, ["resume", "g1"], ["after_vm_cont"])
    fires(host, ["destroy", "g1"], ["before_vm_destroy", "after_vm_destroy"])


def test_a_reboot_keeps_it_working(host: Host) -> None:
    host.reboot()
    assert host.run(["systemctl", "is-active", UNIT], check=False).stdout.strip() == "active"
    wait_until_connected(host)
    fires(host, ["start", "g1"], ["before_vm_start", "after_vm_start"])
    fires(host, ["suspend", "g1"], ["after_vm_pause"])
    fires(host, ["destroy", "g1"], ["before_vm_destroy", "after_vm_destroy"])


def test_a_config_elsewhere_is_a_drop_in_beside_the_package_s_unit(host: Host) -> None:
    dropin = f"/etc/systemd/system/{UNIT}.d/config.conf"
    out = host.run(["libvirt-bridge", "install", "--config", "/srv/bridge.toml"]).stdout
    assert f"wrote {dropin}" in out and f"enabled and restarted {UNIT}" in out, out
    assert "LIBVIRT_BRIDGE_CONFIG=/srv/bridge.toml" in unit_property(host, "Environment")
    assert unit_property(host, "FragmentPath").endswith(f"/lib/systemd/system/{UNIT}")
    assert not host.exists(f"/etc/systemd/system/{UNIT}")
    status(host, "--config", "/srv/bridge.toml")
    fires(host, ["start", "g1"], ["before_vm_start", "after_vm_start"])
    fires(host, ["suspend", "g1"], ["after_vm_pause"])
    fires(host, ["destroy", "g1"], ["before_vm_destroy", "after_vm_destroy"])
    # Back to the default config: the drop-in goes.
    out = host.run(["libvirt-bridge", "install", "--config", "/etc/libvirt-bridge.toml"]).stdout
    assert f"removed {dropin}" in out, out
    assert "LIBVIRT_BRIDGE_CONFIG=/etc/libvirt-bridge.toml" in unit_property(host, "Environment")
    status(host)


def test_removing_the_package_restores_the_earlier_hook_and_stops_everything(
    host: Host,
) -> None:
    host.run(["apt-get", "remove", "-y", "libvirt-bridge"], timeout=300)
    assert host.read("/etc/libvirt/hooks/qemu") == FOREIGN_HOOK
    assert not host.exists("/etc/libvirt/hooks/qemu.legacy")
    assert host.run(["systemctl", "is-active", UNIT], check=False).stdout.strip() != "active"
    assert not [c for c in host.commands() if "libvirt-bridge" in c or "libvirt_bridge" in c]
