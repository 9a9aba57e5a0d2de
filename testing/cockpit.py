"""Helpers of the browser tests of Cockpit's Hooks page (``tests/cockpit``).

:class:`CockpitWs` runs Debian's ``cockpit-ws`` on 127.0.0.1 and a free port, without TLS
and with ``--local-session=cockpit-bridge``: no PAM login, the bridge runs as the user of
the test (root). ``cockpit-bridge`` 287 looks for packages in ``$XDG_DATA_DIRS/cockpit``,
so a temp dir first in that list holds the page and ``/usr/share`` the shell and base1;
nothing is installed into ``/usr/share/cockpit``. :func:`chromium` is Debian's headless
chromium, driven by Debian's chromedriver through selenium.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

COCKPIT_WS = "/usr/lib/cockpit/cockpit-ws"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# What the tests need of the machine (scripts/setup.sh installs them).
REQUIRED = (
    COCKPIT_WS,
    "/usr/bin/cockpit-bridge",
    "/usr/share/cockpit/shell",
    CHROMIUM,
    CHROMEDRIVER,
)


def missing_tools() -> list[str]:
    return [path for path in REQUIRED if not os.path.exists(path)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class CockpitWs:
    """cockpit-ws with the packages of ``data_dir``/cockpit first, and ``env`` added to
    the environment of its bridge (and so of the commands the page spawns)."""

    def __init__(self, data_dir: Path, env: Mapping[str, str], log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        environment = dict(os.environ, **env)
        environment["XDG_DATA_DIRS"] = f"{data_dir}:/usr/share"
        # The page runs the command its manifest names; this PATH is for anything else.
        environment["PATH"] = f"{os.path.dirname(sys.executable)}:{environment.get('PATH', '')}"
        argv = [COCKPIT_WS, "--no-tls", "--address", "127.0.0.1", "--port", str(self.port)]
        argv.append("--local-session=cockpit-bridge")
        with open(log, "wb") as out:
            # A session of its own: its bridge and what the bridge spawns end with it.
            self.process = subprocess.Popen(
                argv,
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.log = log
        self._wait_ready()

    def _wait_ready(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"cockpit-ws exited: {self.log.read_text(errors='replace')}")
            try:
                with urllib.request.urlopen(f"{self.url}/cockpit/login", timeout=2):
                    return
            except urllib.error.HTTPError:
                return  # it answers
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"cockpit-ws did not answer in {timeout}s")

    def close(self) -> None:
        """End cockpit-ws and everything of its session (the bridge, the commands)."""
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        # The bridge and its children may outlive cockpit-ws by a moment.
        deadline = time.monotonic() + 10
        while _session_alive(self.process.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _session_alive(self.process.pid):
            os.killpg(self.process.pid, signal.SIGKILL)


def _session_alive(sid: int) -> bool:
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # fields: state ppid pgrp session ...; a zombie is gone but for its parent's wait.
        if int(fields[3]) == sid and fields[0] != "Z":
            return True
    return False


def chromium(profile: Path, width: int = 1280, height: int = 860) -> webdriver.Chrome:
    """Headless chromium (its profile in ``profile``), with the console kept for the test."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        # Root may not use chromium's sandbox; the page is the test's own.
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--window-size={width},{height}",
        f"--user-data-dir={profile}",
        "--lang=en-US",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
