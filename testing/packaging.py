"""Helpers of the packaging tests: the .deb built once, and dpkg run in a private world.

:class:`PackageWorld` runs a command with this machine's ``/usr`` and dpkg database (the
package really is installed and removed here) but a private ``/etc`` and ``/run`` (overlays
whose changes land under the world's directory, so nothing a maintainer script writes
there reaches the host's), inside a sandbox's namespaces, with the sandbox's libvirt
directories and its ``etc/logrotate.d`` where the host's are, and no systemd. So the
package's scripts meet a running libvirtd, the sandbox's, and never the host's.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Sequence
from pathlib import Path

from libvirt_bridge_lab.sandbox import Sandbox

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "libvirt-bridge"
# The package's interpreter and where it puts the code: the distribution's, not a venv's.
PYTHON = "/usr/bin/python3"
SITE = "/usr/lib/python3/dist-packages"
BRIDGE = "/usr/bin/libvirt-bridge"
# What a root shell on a host has; no venv, no PYTHONPATH.
HOST_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root"}
# Files the package puts outside /usr/lib/python3/dist-packages/libvirt_bridge.
SHIPPED = (
    BRIDGE,
    "/lib/systemd/system/libvirt-bridge-listener.service",
    "/usr/share/man/man8/libvirt-bridge.8.gz",
    "/usr/share/doc/libvirt-bridge",
    f"{SITE}/libvirt_bridge",
    f"{SITE}/libvirt_bridge-0.1.0.dist-info",
)


def build_deb(outdir: Path, version: str = "") -> Path:
    """``scripts/build-deb.sh OUTDIR`` (with ``DEB_VERSION=version`` if given): the path of
    the .deb it built."""
    env = dict(os.environ, DEB_VERSION=version) if version else None
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / "build-deb.sh"), str(outdir)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert result.returncode == 0, f"build-deb.sh failed:\n{result.stdout}{result.stderr}"
    return Path(result.stdout.strip().splitlines()[-1])


def status() -> str:
    """dpkg's status of the package ("" when dpkg knows nothing of it)."""
    result = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", PACKAGE], capture_output=True, text=True
    )
    return result.stdout.strip() if result.returncode == 0 else ""


def installed() -> bool:
    return status().endswith(" installed")


def host_leftovers() -> list[str]:
    """The package's files still on this machine, dpkg's records of it included."""
    left = [path for path in SHIPPED if os.path.lexists(path)]
    for directory in ("/var/lib/dpkg/info", "/var/lib/systemd/deb-systemd-helper-enabled"):
        for dirpath, _, filenames in os.walk(directory):
            left += [os.path.join(dirpath, n) for n in filenames if PACKAGE in n]
    return sorted(left)


def run(argv: Sequence[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``argv`` in a root shell's environment (no venv), cwd /."""
    result = subprocess.run(
        list(argv), capture_output=True, text=True, env=HOST_ENV, cwd="/", timeout=300
    )
    if check:
        assert result.returncode == 0, (
            f"{shlex.join(argv)} exited {result.returncode}:\n{result.stdout}{result.stderr}"
        )
    return result


class PackageWorld:
    """Commands run with the host's /usr and dpkg database; see the module doc."""

    OVERLAID = ("/etc", "/run")

    def __init__(self, sandbox: Sandbox, root: Path) -> None:
        self.sandbox = sandbox
        self.root = root
        for index, _ in enumerate(self.OVERLAID):
            for part in ("upper", "work"):
                (root / f"overlay{index}" / part).mkdir(parents=True, exist_ok=True)

    def upper(self, path: str) -> Path:
        """Where the world's own copy of ``path`` (under /etc or /run) is, on the host."""
        for index, top in enumerate(self.OVERLAID):
            if path.startswith(top + "/"):
                return self.root / f"overlay{index}" / "upper" / path[len(top) + 1 :]
        raise ValueError(f"{path} is not under {self.OVERLAID}")

    def own_files(self) -> list[str]:
        """Every file and symlink the world's /etc and /run got, as the world sees them."""
        found = []
        for index, top in enumerate(self.OVERLAID):
            upper = self.root / f"overlay{index}" / "upper"
            for dirpath, _, filenames in os.walk(upper):
                for name in filenames:
                    found.append(top + str(Path(dirpath, name))[len(str(upper)) :])
        return sorted(found)

    def script(self) -> str:
        q = shlex.quote
        lines = ["set -e"]
        for index, top in enumerate(self.OVERLAID):
            base = self.root / f"overlay{index}"
            options = f"lowerdir={top},upperdir={base}/upper,workdir={base}/work"
            lines.append(f"mount -n -t overlay overlay -o {q(options)} {top}")
        # Whatever systemd runs here, the package's scripts do not see it: they start,
        # enable and reload nothing.
        lines.append("if [ -d /run/systemd ]; then mount -n -t tmpfs tmpfs /run/systemd; fi")
        # The overlays hide the sandbox's mounts under /etc and /run: put them back.
        binds = [
            (self.sandbox.etc_dir, "/etc/libvirt"),
            (self.sandbox.run_dir, "/run/libvirt"),
            (self.sandbox.logrotate_dir, "/etc/logrotate.d"),
        ]
        for source, target in binds:
            lines.append(f"mkdir -p {q(target)}")
            lines.append(f"mount -n --bind {q(source)} {q(target)}")
        lines.append('exec "$@"')
        return "\n".join(lines)

    def run(self, argv: Sequence[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
        """``argv`` in the world (a root shell's environment, cwd /)."""
        unshare = ["unshare", "--mount", "--propagation", "private"]
        inner = [*unshare, "/bin/sh", "-c", self.script(), "sh", *argv]
        return run([*self.sandbox.daemons.nsenter(), *inner], check=check)
