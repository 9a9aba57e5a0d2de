"""Helpers for the command tests: a libvirt confdir and a bridge config in a temp dir.

Every command runs with ``--confdir`` and ``--config`` in the temp dir, never on the host's
/etc/libvirt. A fake daemon (a script named ``libvirtd``) runs in a private mount namespace
with the temp confdir bind-mounted over /etc/libvirt, as a sandboxed libvirtd would.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import sys
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from libvirt_bridge import cli
from testing.harness import LIBVIRT_ENV, Bridge


def run(*argv: str) -> tuple[int, str, str]:
    """``libvirt-bridge ARGV`` in this process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        status = cli.main(list(argv))
    return status, out.getvalue(), err.getvalue()


class Host:
    """A libvirt confdir and a bridge (config, hooks root, state dir) under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.confdir = root / "etc-libvirt"
        self.confdir.mkdir()
        self.hooks = self.confdir / "hooks"
        (root / "bridge").mkdir()
        self.bridge = Bridge(root / "bridge")
        self.config = self.bridge.config
        self.hooks_root = self.bridge.hooks
        # Stands for /etc/logrotate.d; a test removes it for a host without logrotate.
        self.logrotate_dir = root / "logrotate.d"
        self.logrotate_dir.mkdir()
        # Stands for /sys/fs/selinux; absent unless a test makes it.
        self.selinuxfs = root / "selinuxfs"
        # Stands for /usr/share/cockpit; absent (no Cockpit) unless a test makes it.
        self.cockpit_dir = root / "cockpit"

    def args(self) -> list[str]:
        return ["--confdir", str(self.confdir), "--config", str(self.config)]

    def command_args(self, command: str) -> list[str]:
        """``args()`` and, for the commands that read them, the stand-ins for host paths."""
        args = self.args()
        if command in ("install", "uninstall", "status"):
            args += ["--logrotate-dir", str(self.logrotate_dir)]
            args += ["--cockpit-dir", str(self.cockpit_dir)]
        if command == "status":
            args += ["--selinuxfs", str(self.selinuxfs)]
        return args

    def cmd(self, command: str, *extra: str) -> tuple[int, str, str]:
        return run(command, *self.command_args(command), *extra)

    def install(self, *extra: str, listener: bool = False) -> tuple[int, str, str]:
        # A listener would connect to the config's libvirt_uri: only where a test wants one.
        status, out, err = self.cmd("install", *extra, *([] if listener else ["--no-listener"]))
        # libvirt runs the launchers installed in the confdir from now on.
        self.bridge.launchers = self.hooks
        return status, out, err

    def foreign(self, driver: str, body: bytes, mode: int = 0o755) -> Path:
        """A hook that is not ours at ``hooks/<driver>``."""
        self.hooks.mkdir(exist_ok=True)
        path = self.hooks / driver
        path.write_bytes(body)
        path.chmod(mode)
        return path


def tree(root: Path) -> dict[str, tuple[int, int, str]]:
    """Every entry under ``root``: (mode, mtime_ns, sha256 of content or link target)."""
    result: dict[str, tuple[int, int, str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if os.path.islink(path):
                content = os.readlink(path)
            elif os.path.isfile(path):
                content = hashlib.sha256(Path(path).read_bytes()).hexdigest()
            else:
                content = ""
            result[os.path.relpath(path, root)] = (st.st_mode, st.st_mtime_ns, content)
    return result


FAKE_DAEMON = """\
#!{python}
# Named libvirtd: on SIGHUP it calls the daemon hook as libvirtd does, so that the hook
# records which daemon looked for hooks.
import os, signal, subprocess, time
hups = []
signal.signal(signal.SIGHUP, lambda signum, frame: hups.append(signum))
open({ready!r}, "w").close()
while True:
    time.sleep(0.02)
    while hups:
        hups.pop()
        with open({log!r}, "a") as f:
            f.write("SIGHUP\\n")
        if os.path.exists("/etc/libvirt/hooks/daemon"):
            subprocess.run(
                ["/etc/libvirt/hooks/daemon", "-", "reload", "begin", "SIGHUP"],
                env={env!r}, cwd="/", stdin=subprocess.DEVNULL,
            )
"""


class FakeDaemon:
    """A process named ``libvirtd`` whose /etc/libvirt is ``confdir`` (or the host's)."""

    def __init__(self, root: Path, confdir: Path | None) -> None:
        self.root = root
        root.mkdir()
        self.log = root / "sighup.log"
        ready = root / "ready"
        script = root / "libvirtd"
        script.write_text(
            FAKE_DAEMON.format(
                python=sys.executable, ready=str(ready), log=str(self.log), env=LIBVIRT_ENV
            )
        )
        script.chmod(0o755)
        if confdir is None:
            argv = [str(script)]
        else:
            unshare = shutil.which("unshare")
            assert unshare is not None
            # unshare execs the shell, which execs the daemon: one pid for all three.
            argv = [
                unshare,
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                'mount --bind "$1" /etc/libvirt && exec "$2"',
                "sh",
                str(confdir),
                str(script),
            ]
        self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
        self.pid = self.process.pid
        deadline = time.monotonic() + 20
        while not ready.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.skip("cannot start a fake libvirtd in a private mount namespace here")
            time.sleep(0.02)

    def sighups(self) -> int:
        return self.log.read_text().count("SIGHUP") if self.log.exists() else 0

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


def namespaces_usable() -> str | None:
    """Why a fake daemon in a private mount namespace cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (mount namespaces)"
    if shutil.which("unshare") is None:
        return "needs unshare"
    if not os.path.isdir("/etc/libvirt"):
        return "needs an /etc/libvirt directory to bind-mount over (in a private namespace)"
    return None
