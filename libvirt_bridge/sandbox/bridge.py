"""The bridge in a sandbox, installed and run as an operator installs and runs it.

:meth:`Bridge.install` writes the config, then runs ``libvirt-bridge install`` in the
sandbox's namespaces, where /etc/libvirt is the sandbox's: the real installer writes the
launchers, the fast-path file and the event directories, and sends SIGHUP to the one
libvirtd whose /etc/libvirt that is, the sandbox's. Two of its host paths are redirected:
its logrotate entry goes to the sandbox's ``etc/logrotate.d`` (``--logrotate-dir``), and
no systemd unit is written (``--no-listener``): the listener starts as ``install`` starts
it on a host without systemd (``service.start_background``), in the namespaces too.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import time
from collections.abc import Mapping

from .. import config, service
from ..files import write_atomic
from .daemons import Daemons
from .errors import SandboxError, tails
from .layout import Layout

# The sandbox's etc/libvirt, as its daemons (and install, run beside them) see it.
CONFDIR = "/etc/libvirt"


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} {value!r} as a TOML value")


def toml_text(values: Mapping[str, object]) -> str:
    """A flat TOML document (strings, numbers, booleans, lists); None values are left out."""
    lines = []
    for key, value in values.items():
        if value is None:
            continue
        name = key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)
        lines.append(f"{name} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


class Bridge:
    """The bridge of the sandbox laid out by ``layout``, whose daemons are ``daemons``."""

    def __init__(self, layout: Layout, daemons: Daemons) -> None:
        self.layout = layout
        self.daemons = daemons
        self.install_output = os.path.join(layout.bridge_dir, "install.out")
        # The state dir of the listener started here, where its pid file is.
        self._listener_state_dir: str | None = None

    # -- installation ---------------------------------------------------------------------

    def install(self, config_overrides: Mapping[str, object] | None = None) -> None:
        """Write the config, then run ``libvirt-bridge install``; see the module doc.

        A None value in ``config_overrides`` leaves that key out. The sandbox must run:
        install runs in its namespaces. Returns once a libvirtd that install sent SIGHUP
        has looked for hook files again.
        """
        values: dict[str, object] = {
            "hooks_dirs": [self.layout.hooks_root],
            "state_dir": self.layout.state_dir,
            "log_file": self.layout.log_file,
        }
        values.update(config_overrides or {})
        os.makedirs(self.layout.state_dir, mode=0o755, exist_ok=True)
        # Install never changes an existing config: this one is written first.
        write_atomic(self.layout.config_path, toml_text(values))
        offset = self.daemons.log_size()
        output = self._run_install()
        if self.daemons.running():
            sighup = f"sent SIGHUP to libvirtd (pid {self.daemons.libvirtd_pid()})"
            if sighup in output:
                self.daemons.wait_reloaded(offset)

    def _run_install(self) -> str:
        """Run ``libvirt-bridge install`` in the namespaces; return what it printed."""
        argv = [*service.bridge_command(), "install", "--confdir", CONFDIR]
        argv += ["--config", self.layout.config_path]
        argv += ["--logrotate-dir", self.layout.logrotate_dir, "--no-listener"]
        result = self.daemons.run_in_namespace(argv, check=False, timeout=120.0)
        with open(self.install_output, "a") as f:
            f.write(f"$ {shlex.join(argv)}\n{result.stdout}{result.stderr}")
            f.write(f"(exit {result.returncode})\n")
        if result.returncode != 0:
            raise SandboxError(
                f"libvirt-bridge install failed (exit {result.returncode}):\n"
                f"{result.stdout}{result.stderr}"
            )
        return result.stdout

    def add_hook_script(self, event: str, name: str, text: str) -> str:
        """Write an executable (0755, root-owned) script ``<hooks_root>/<event>/<name>``."""
        for part in (event, name):
            if not part or "/" in part or part in (".", ".."):
                raise SandboxError(f"bad hook event or script name {part!r}")
        directory = os.path.join(self.layout.hooks_root, event)
        os.makedirs(directory, mode=0o755, exist_ok=True)
        path = os.path.join(directory, name)
        write_atomic(path, text, 0o755, root_owned=True)
        return path

    # -- the listener ---------------------------------------------------------------------

    def start_listener(self, timeout: float = 30.0) -> int:
        """Start ``libvirt-bridge listen --background`` in the namespaces; return its pid.

        Its default ``libvirt_uri`` (``qemu:///system``) reaches the sandbox's daemon from
        inside. Returns once the listener says (in its status file) that it connected.
        """
        cfg = self._config()
        running = service.running_pid(cfg.state_dir)
        if running is not None:
            self._listener_state_dir = cfg.state_dir
            return running
        try:
            pid = service.start_background(
                self.layout.config_path, cfg.state_dir, argv_prefix=self.daemons.nsenter()
            )
        except (OSError, RuntimeError) as exc:
            raise SandboxError(f"{exc}" + tails([cfg.log_file])) from None
        self._listener_state_dir = cfg.state_dir
        deadline = time.monotonic() + timeout
        while not _says_connected(service.read_status(cfg.state_dir), pid):
            if service.running_pid(cfg.state_dir) != pid:
                raise SandboxError(f"the listener {pid} exited" + tails([cfg.log_file]))
            if time.monotonic() > deadline:
                raise SandboxError(
                    f"the listener {pid} did not connect in {timeout} s" + tails([cfg.log_file])
                )
            time.sleep(0.02)
        return pid

    def listener_pid(self) -> int:
        """The pid of the listener started by :meth:`start_listener` (SandboxError if none)."""
        state_dir = self._listener_state_dir
        pid = None if state_dir is None else service.running_pid(state_dir)
        if pid is None:
            raise SandboxError(f"no listener runs in sandbox {self.layout.name}")
        return pid

    def stop_listener(self) -> None:
        """Stop the listener as ``uninstall`` does: the pid in its pid file, and only it."""
        if self._listener_state_dir is not None:
            service.stop_background(self._listener_state_dir)

    def _config(self) -> config.Config:
        path = self.layout.config_path
        if not os.path.exists(path):
            raise SandboxError("no bridge config: call install_bridge() before start_listener()")
        try:
            return config.Config(config.parse(path), path)
        except config.ConfigError as exc:
            raise SandboxError(str(exc)) from None


def _says_connected(status: str | None, pid: int) -> bool:
    """Whether the listener status ``status`` is listener ``pid``'s, connected."""
    return status is not None and status.startswith("connected ") and status.endswith(f" pid={pid}")
