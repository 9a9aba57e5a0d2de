"""Fixtures of the browser tests of Cockpit's Hooks page: a lab (a private libvirt with the
bridge, its listener and the guest ``lab1``), cockpit-ws serving the page installed as
``libvirt-bridge install`` installs it, in a temp dir, and headless chromium.

One of each per module: starting them takes seconds, and the tests use the page as one
admin would, view after view. On a machine without Cockpit, chromium or libvirt, the
fixtures fail with what is missing (scripts/setup.sh installs it), never skip.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver

from libvirt_bridge import cockpit, service
from libvirt_bridge.installation import Plan
from libvirt_bridge_lab import lab
from libvirt_bridge_lab.sandbox import check_host_can_run_libvirt
from testing.cockpit import CockpitWs, chromium, missing_tools

# The lab's scripts: one that changes the XML at a start (the dry run's diff), and one
# for the pause a suspend brings (the timeline).
PINCPU = """#!/bin/sh
# Pins the guest to 2 vCPUs: what a dry run of before_vm_start shows as a diff.
sed -i 's|<vcpu\\([^>]*\\)>[0-9]*</vcpu>|<vcpu\\1>2</vcpu>|' "$_hook_domxml"
"""
NOTIFY = """#!/bin/sh
echo "paused: $vmId" >&2
"""


@pytest.fixture(scope="module")
def running_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[lab.Lab]:
    missing = missing_tools()
    if missing:
        pytest.fail(f"cannot run the browser tests: missing {', '.join(missing)}", pytrace=False)
    reason = check_host_can_run_libvirt()
    if reason is not None:
        pytest.fail(f"cannot run the browser tests here: {reason}", pytrace=False)
    directory = tmp_path_factory.mktemp("cockpit-lab") / "lab"
    started, _ = lab.up(str(directory), "system-monolithic")
    try:
        for event, name, text in (
            ("before_vm_start", "50_pincpu", PINCPU),
            ("after_vm_pause", "10_notify", NOTIFY),
        ):
            path = Path(started.hooks_root) / event / name
            path.write_text(text)
            path.chmod(0o755)
        yield started
    finally:
        lab.down(str(directory))


def lab_confdir(running: lab.Lab) -> str:
    """The lab's libvirt configuration directory, as the host sees it."""
    return os.path.dirname(os.path.dirname(running.hooks_root))


@pytest.fixture(scope="module")
def cockpit_ws(
    running_lab: lab.Lab, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CockpitWs]:
    """cockpit-ws with the page installed by install's own plan into a temp package dir."""
    data_dir = tmp_path_factory.mktemp("cockpit-data")
    packages = data_dir / "cockpit"
    packages.mkdir()
    plan = Plan("install")
    confdir = lab_confdir(running_lab)
    cockpit.plan_install(
        plan, str(packages), service.bridge_command(), running_lab.config_path, confdir
    )
    plan.execute(dry_run=False, out=lambda line: None)
    assert (packages / "libvirt-bridge" / "manifest.json").is_file()
    env = {"LIBVIRT_BRIDGE_CONFIG": running_lab.config_path, "LIBVIRT_BRIDGE_CONFDIR": confdir}
    ws = CockpitWs(data_dir, env, data_dir / "cockpit-ws.log")
    try:
        yield ws
    finally:
        ws.close()


@pytest.fixture(scope="module")
def browser(
    cockpit_ws: CockpitWs, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[webdriver.Chrome]:
    driver = chromium(tmp_path_factory.mktemp("chromium-profile"))
    try:
        yield driver
    finally:
        driver.quit()
