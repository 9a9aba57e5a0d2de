"""Cockpit's Hooks page in a real browser: headless chromium on cockpit-ws 287, the page
talking to a private libvirt (a lab) through ``libvirt-bridge`` commands only.

Each view's screenshot is written to docs/cockpit/, which docs/cockpit.md shows.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement

from libvirt_bridge_lab import lab
from libvirt_bridge_lab.sandbox.client import virsh
from testing.cockpit import CockpitWs

pytestmark = [pytest.mark.cockpit, pytest.mark.libvirt]

SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "cockpit"
FRAME = "iframe[name='cockpit1:localhost/libvirt-bridge']"


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = condition()
        except Exception:  # the page is still rendering what the condition reads
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


def open_view(browser: webdriver.Chrome, ws: CockpitWs, path: str) -> None:
    """The shell at /libvirt-bridge#/PATH, then into the page's frame once it has loaded."""
    browser.switch_to.default_content()
    browser.get(f"{ws.url}/libvirt-bridge#/{path}")
    frame = wait_for(lambda: browser.find_element(By.CSS_SELECTOR, FRAME), "the page's frame")
    browser.switch_to.frame(frame)
    wait_for(
        lambda: browser.find_element(By.TAG_NAME, "body").get_attribute("data-loaded") == "true",
        "the page to load",
    )


def screenshot(browser: webdriver.Chrome, name: str) -> None:
    """The whole shell (its menu too) as docs/cockpit/NAME.png; back into the frame after."""
    browser.switch_to.default_content()
    SCREENSHOTS.mkdir(exist_ok=True)
    assert browser.save_screenshot(str(SCREENSHOTS / f"{name}.png"))
    browser.switch_to.frame(browser.find_element(By.CSS_SELECTOR, FRAME))


def page_errors(browser: webdriver.Chrome) -> list[str]:
    """The console's errors since the last call (the shell's and the page's)."""
    return [
        entry["message"]
        for entry in browser.get_log("browser")  # type: ignore[no-untyped-call]
        if entry["level"] == "SEVERE"
    ]


def text(browser: webdriver.Chrome, selector: str) -> str:
    return str(browser.find_element(By.CSS_SELECTOR, selector).text)


def bridge(running: lab.Lab, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "libvirt_bridge", *args, "--config", running.config_path],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_page_is_in_the_menu_and_shows_the_hosts_status(
    browser: webdriver.Chrome, cockpit_ws: CockpitWs, running_lab: lab.Lab
) -> None:
    page_errors(browser)
    open_view(browser, cockpit_ws, "host")
    assert wait_for(lambda: text(browser, "#status-summary") == "All is well", "the status")
    checks = text(browser, "#status-checks")
    assert f"config {running_lab.config_path} is valid" in checks
    assert "is the libvirt-bridge launcher" in checks
    assert text(browser, "#listener-state").startswith("Connected (pid ")
    # status, run by Cockpit's bridge, finds the page where that Cockpit does.
    assert "Cockpit's Hooks page is installed" in checks
    scripts = text(browser, "#scripts-table")
    assert "before_vm_start 50_pincpu" in scripts and "after_vm_pause 10_notify" in scripts
    assert page_errors(browser) == []
    screenshot(browser, "host")
    browser.switch_to.default_content()
    assert "Hooks" in [link.text for link in browser.find_elements(By.CSS_SELECTOR, "nav a")]


def test_the_page_follows_the_shells_dark_style(
    browser: webdriver.Chrome, cockpit_ws: CockpitWs
) -> None:
    open_view(browser, cockpit_ws, "host")
    browser.execute_script("localStorage.setItem('shell:style', 'dark')")
    try:
        open_view(browser, cockpit_ws, "host")
        wait_for(lambda: text(browser, "#status-summary") == "All is well", "the status")
        assert browser.execute_script(
            "return document.documentElement.classList.contains('pf-theme-dark')"
        )
        background = browser.execute_script(
            "return getComputedStyle(document.querySelector('.lb-card')).backgroundColor"
        )
        assert background == "rgb(27, 29, 33)"
        screenshot(browser, "host-dark")
    finally:
        browser.execute_script("localStorage.setItem('shell:style', 'light')")


def set_property(browser: webdriver.Chrome, form: WebElement, assignment: str) -> None:
    field = form.find_element(By.CSS_SELECTOR, "input")
    field.clear()
    field.send_keys(assignment)
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()


def test_a_property_set_in_the_page_lands_in_the_domains_metadata(
    browser: webdriver.Chrome, cockpit_ws: CockpitWs, running_lab: lab.Lab
) -> None:
    open_view(browser, cockpit_ws, f"vm/{running_lab.guest}")
    form = wait_for(lambda: browser.find_element(By.CSS_SELECTOR, "#vm-props form"), "the form")
    set_property(browser, form, "pincpu=0-1")
    wait_for(
        lambda: browser.find_element(By.CSS_SELECTOR, "#vm-props tr[data-name=pincpu]"),
        "the new property's row",
    )
    got = bridge(running_lab, "props", running_lab.guest, "get", "--json")
    assert json.loads(got.stdout) == {"pincpu": "0-1"}, got.stderr
    xml = virsh(running_lab.uri, "dumpxml", running_lab.guest).stdout
    assert "<ovirt-vm:pincpu>0-1</ovirt-vm:pincpu>" in xml

    # A name no script may get is refused by the command; the page shows its message.
    form = browser.find_element(By.CSS_SELECTOR, "#vm-props form")
    set_property(browser, form, "LD_PRELOAD=/tmp/x.so")
    error = wait_for(
        lambda: browser.find_element(By.CSS_SELECTOR, "#vm-props .lb-error:not([hidden])"),
        "the refusal",
    )
    assert "LD_PRELOAD" in error.text
    got = bridge(running_lab, "props", running_lab.guest, "get", "--json")
    assert json.loads(got.stdout) == {"pincpu": "0-1"}

    # A device's property: an entry for a disk that is not plugged yet.
    browser.find_element(By.ID, "device-add-id").send_keys("disk:vdb")
    browser.find_element(By.ID, "device-add-assignment").send_keys("iotune=fast")
    browser.find_element(By.CSS_SELECTOR, "#device-add button").click()
    device = wait_for(
        lambda: browser.find_element(By.CSS_SELECTOR, "#device-props .lb-device tr[data-name]"),
        "the device's property",
    )
    assert device.text.startswith("iotune fast")
    got = bridge(running_lab, "props", running_lab.guest, "devices", "--json")
    [entry] = json.loads(got.stdout)
    assert entry["present"] == {} and entry["properties"]["persistent"] == {"iotune": "fast"}
    screenshot(browser, "vm")


def test_a_dry_run_shows_the_scripts_and_the_xml_diff(
    browser: webdriver.Chrome, cockpit_ws: CockpitWs, running_lab: lab.Lab
) -> None:
    open_view(browser, cockpit_ws, "dryrun")
    event = browser.find_element(By.ID, "dryrun-event")
    event.clear()
    event.send_keys("before_vm_start")
    browser.find_element(By.ID, "dryrun-run").click()
    wait_for(
        lambda: not browser.find_element(By.ID, "dryrun-result").get_attribute("hidden"),
        "the result",
    )
    assert text(browser, "#dryrun-summary") == "The script succeeded"
    assert text(browser, "#dryrun-scripts tbody").startswith("50_pincpu rc=0")
    diff = text(browser, "#dryrun-diff")
    assert "+  <vcpu" in diff and ">2</vcpu>" in diff
    assert text(browser, "#dryrun-xml-note") == "Changed by 50_pincpu."
    screenshot(browser, "dry-run")
    # A trial applies nothing: the persistent definition keeps its vCPUs.
    xml = virsh(running_lab.uri, "dumpxml", "--inactive", running_lab.guest).stdout
    assert ">2</vcpu>" not in xml


def test_a_suspend_shows_up_in_the_timeline(
    browser: webdriver.Chrome, cockpit_ws: CockpitWs, running_lab: lab.Lab
) -> None:
    open_view(browser, cockpit_ws, f"vm/{running_lab.guest}")
    wait_for(lambda: text(browser, "#timeline-state") == "Following…", "the timeline")
    virsh(running_lab.uri, "start", running_lab.guest)
    try:
        virsh(running_lab.uri, "suspend", running_lab.guest)
        row = wait_for(
            lambda: [
                r
                for r in browser.find_elements(By.CSS_SELECTOR, "#timeline tr.lb-run")
                if "after_vm_pause" in r.text
            ],
            "after_vm_pause in the timeline",
        )[0]
        # The row is the command's record: its source (what fired it), script and outcome.
        got = bridge(
            running_lab, "history", running_lab.guest, "--json", "--event", "after_vm_pause"
        )
        record = json.loads(got.stdout.splitlines()[-1])
        cells = [cell.text for cell in row.find_elements(By.TAG_NAME, "td")]
        assert cells[1:4] == ["after_vm_pause", record["source"], "10_notify"]
        assert cells[4].startswith("ok") and record["outcome"] == "ok"
        assert browser.find_element(By.ID, "timeline-error").get_attribute("hidden")
        browser.execute_script("document.getElementById('timeline').scrollIntoView()")
        screenshot(browser, "timeline")
    finally:
        virsh(running_lab.uri, "destroy", running_lab.guest)
