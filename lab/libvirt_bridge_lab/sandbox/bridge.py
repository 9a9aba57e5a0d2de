"""The bridge in a sandbox, installed and run as an operator installs and runs it.

:meth:`Bridge.install` writes the config, then runs ``libvirt-bridge install`` in the
sandbox's namespaces, where /etc/libvirt is the sandbox's: the real installer writes the
launchers, the fast-path file and the event directories, and sends SIGHUP to the one
libvirtd (or virtqemud) whose /etc/libvirt that is, the sandbox's. Three of its host paths
are redirected: its logrotate entry goes to the sandbox's ``etc/logrotate.d``
(``--logrotate-dir``), no Cockpit page is installed (``--cockpit-dir``, a directory that
does not exist), and no systemd unit is written (``--no-listener``): the listener
starts as ``install`` starts it on a host without systemd (``service.start_background``),
in the namespaces too.

In a chrooted cell (another libvirt, from a cached root), the host's installation of the
bridge means nothing to the root's Python: the bridge is installed there as a user of
that system installs it, ``pip install`` into a venv made with the root's ``python3``
(``--system-site-packages``: lxml is Debian's ``python3-lxml``), from a wheel of this source
tree and the root's wheel of libvirt-python built against its libvirt (``roots``). The venv
is the sandbox's (``venv_dir``), seen at the same path inside and out; ``install``, the
launchers it writes and the listener all run its ``libvirt-bridge``, chrooted.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping

import libvirt_bridge
from libvirt_bridge import config, service
from libvirt_bridge.files import write_atomic

from .daemons import Daemons
from .errors import SandboxError, tails
from .layout import Layout

# The sandbox's etc/libvirt, as its daemons (and install, run beside them) see it.
CONFDIR = "/etc/libvirt"
# The bridge's source tree, when it runs from one (a wheel is built from it).
_SOURCE = os.path.dirname(os.path.dirname(os.path.abspath(libvirt_bridge.__file__)))
# What of the source tree a wheel is made of (pyproject.toml's packages and readme).
_WHEEL_INPUTS = ("pyproject.toml", "README.md", "libvirt_bridge", "install", "hooks.d", "cockpit")
_WHEEL_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")


def _tree_digest(source: str) -> str:
    """A digest of what of ``source`` goes into the wheel: names, modes and contents."""
    digest = hashlib.sha256()
    for top in _WHEEL_INPUTS:
        path = os.path.join(source, top)
        files = [path] if os.path.isfile(path) else []
        for dirpath, dirnames, filenames in os.walk(path):
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
            files += [os.path.join(dirpath, n) for n in sorted(filenames) if n[-4:] != ".pyc"]
        for file in files:
            digest.update(os.path.relpath(file, source).encode() + b"\0")
            with open(file, "rb") as f:
                digest.update(f.read())
            digest.update(b"\0%o\0" % (os.stat(file).st_mode & 0o777))
    return digest.hexdigest()[:16]


def bridge_wheel(source: str = _SOURCE) -> str:
    """A wheel of the bridge built from the source tree ``source``; cached by its content.

    The cache is the roots' (``cache_dir()/wheels/<digest>``): built once per change.
    """
    from .roots import cache_dir  # not at import: python -m libvirt_bridge_lab.sandbox.roots

    if not os.path.isfile(os.path.join(source, "pyproject.toml")):
        raise SandboxError(f"no source tree at {source}: a chrooted cell installs from one")
    directory = os.path.join(cache_dir(), "wheels", _tree_digest(source))
    os.makedirs(os.path.dirname(directory), mode=0o755, exist_ok=True)
    with open(directory + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        found = sorted(os.listdir(directory)) if os.path.isdir(directory) else []
        if found:
            return os.path.join(directory, found[-1])
        with tempfile.TemporaryDirectory(dir=os.path.dirname(directory)) as tmp:
            tree = os.path.join(tmp, "src")
            os.makedirs(tree)
            for top in _WHEEL_INPUTS:
                path = os.path.join(source, top)
                if os.path.isdir(path):
                    shutil.copytree(path, os.path.join(tree, top), ignore=_WHEEL_IGNORE)
                else:
                    shutil.copy2(path, tree)
            out = os.path.join(tmp, "out")
            result = subprocess.run(
                [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", out, tree],
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
            wheels = os.listdir(out) if os.path.isdir(out) else []
            if result.returncode != 0 or len(wheels) != 1:
                raise SandboxError(
                    f"building the bridge's wheel failed (exit {result.returncode}):\n"
                    f"{result.stdout}{result.stderr}"
                )
            os.rename(out, directory)
        return os.path.join(directory, wheels[0])


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
        install runs in its namespaces. Returns once a daemon that install sent SIGHUP
        has looked for hook files again.
        """
        values: dict[str, object] = {
            "hooks_dirs": [self.layout.hooks_root],
            "state_dir": self.layout.state_dir,
            "log_file": self.layout.log_file,
            "properties_dir": self.layout.properties_dir,
        }
        values.update(config_overrides or {})
        os.makedirs(self.layout.state_dir, mode=0o755, exist_ok=True)
        # Install never changes an existing config: this one is written first.
        write_atomic(self.layout.config_path, toml_text(values))
        offset = self.daemons.log_size()
        output = self._run_install()
        if self.daemons.running():
            sighup = f"sent SIGHUP to {self.daemons.main} (pid {self.daemons.daemon_pid()})"
            if sighup in output:
                self.daemons.wait_reloaded(offset)

    def command(self) -> list[str]:
        """How to run the ``libvirt-bridge`` installed for the sandbox's daemons."""
        if self.layout.libvirt_root is None:
            return service.bridge_command()
        return [os.path.join(self.layout.venv_dir, "bin", "libvirt-bridge")]

    def _install_venv(self) -> None:
        """In a chrooted cell: pip-install the bridge into the sandbox's venv (module doc)."""
        from .roots import WHEELHOUSE  # not at import: python -m libvirt_bridge_lab.sandbox.roots

        venv = self.layout.venv_dir
        if os.path.exists(os.path.join(venv, "bin", "libvirt-bridge")):
            return
        wheels = os.path.join(self.layout.private_dir, "wheels")
        os.makedirs(wheels, exist_ok=True)
        shutil.copy2(bridge_wheel(), wheels)
        python = os.path.join(venv, "bin", "python")
        steps = [
            # pip comes from the root's python3-pip: the venv sees the system site.
            ["python3", "-m", "venv", "--system-site-packages", "--without-pip", venv],
            [
                *(python, "-m", "pip", "install", "-q", "--no-index", "--no-cache-dir"),
                *("--find-links", WHEELHOUSE, "--find-links", wheels, "libvirt-bridge"),
            ],
        ]
        for argv in steps:
            self._run_logged(argv, 300.0, "installing the bridge in the root")

    def _run_install(self) -> str:
        """Run ``libvirt-bridge install`` in the namespaces; return what it printed."""
        if self.layout.libvirt_root is not None:
            self._install_venv()
        argv = [*self.command(), "install", "--confdir", CONFDIR]
        argv += ["--config", self.layout.config_path]
        argv += ["--logrotate-dir", self.layout.logrotate_dir, "--no-listener"]
        # No Cockpit there: the host's /usr/share/cockpit is never the sandbox's to change.
        argv += ["--cockpit-dir", os.path.join(self.layout.private_dir, "no-cockpit")]
        return self._run_logged(argv, 120.0, "libvirt-bridge install").stdout

    def _run_logged(
        self, argv: list[str], timeout: float, what: str
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` in the namespaces, its output added to ``install.out``; SandboxError
        (naming ``what``) when it fails."""
        result = self.daemons.run_in_namespace(argv, check=False, timeout=timeout)
        with open(self.install_output, "a") as f:
            f.write(f"$ {shlex.join(argv)}\n{result.stdout}{result.stderr}")
            f.write(f"(exit {result.returncode})\n")
        if result.returncode != 0:
            raise SandboxError(
                f"{what} failed (exit {result.returncode}): {shlex.join(argv)}\n"
                f"{result.stdout}{result.stderr}"
            )
        return result

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
                self.layout.config_path,
                cfg.state_dir,
                argv_prefix=self.daemons.nsenter(),
                command=self.command(),
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
