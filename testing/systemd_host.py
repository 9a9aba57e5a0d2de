"""Whole Debian hosts with systemd as PID 1, booted with ``systemd-nspawn -b``, for the
real-host suite (tests/realhost).

A *host root* is a Debian tree built once with ``mmdebstrap`` into the roots' cache
(``$LIBVIRT_BRIDGE_ROOTS``, else /var/cache/libvirt-bridge/roots): systemd, dbus, libvirt's
daemons and client, QEMU (TCG: there is no /dev/kvm in the container) and what the
bridge's package depends on, so that the package installs with no network. Its directory
name holds the recipe's digest; it is built beside its final place and renamed into it,
under a file lock, so a build that was interrupted leaves nothing a later one would use.

:class:`Host` boots one over a private overlay (the cached root is never written): in a
mount namespace of its own (``unshare -m``), so the overlay ends with it,
``SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1 systemd-nspawn -b --private-network --register=no
--keep-unit``. This machine's PID 1 is not systemd and there is no machined, so commands
run in the container through ``nsenter`` into its PID 1's namespaces. A reboot inside
ends nspawn with status 133; the host boots again over the same overlay.

``python -m testing.systemd_host build debian12 debian13`` builds (or finds) the roots and
prints their paths; scripts/setup.sh runs it.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from libvirt_bridge_lab.sandbox.roots import cache_dir, debian_mirror

# The file in a finished root that says which recipe built it.
MARK = ".libvirt-bridge-host"
BOOT_TIMEOUT = 120.0
# The status nspawn exits with when the container asked for a reboot.
REBOOT_STATUS = 133
HOST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class Recipe:
    """A Debian release as a host: its suite and what is installed on it."""

    name: str  # as tests name it
    suite: str
    packages: tuple[str, ...]

    def digest(self) -> str:
        text = json.dumps(self.__dict__, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


_PACKAGES = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "libvirt-daemon-system",  # libvirtd, its units and sockets, virtlogd
    "libvirt-clients",
    "qemu-system-x86",
    # The package's dependencies and recommendations, so that it installs offline.
    "python3",
    "python3-libvirt",
    "python3-lxml",
    "logrotate",
    # Cockpit's bridge, which lists the pages (packages) a host's Cockpit shows.
    "cockpit-bridge",
)

RECIPES = {
    "debian12": Recipe("debian12", "bookworm", _PACKAGES),  # libvirt 9.0, systemd 252
    "debian13": Recipe("debian13", "trixie", _PACKAGES),  # libvirt 11.3, systemd 257
}


class HostError(Exception):
    pass


def root_path(name: str) -> str:
    recipe = RECIPES[name]
    return os.path.join(cache_dir(), f"host-{name}-{recipe.digest()}")


def find(name: str) -> str | None:
    path = root_path(name)
    return path if os.path.isfile(os.path.join(path, MARK)) else None


def build(name: str, log: str | None = None) -> str:
    """Build the root of ``name`` unless it is built; return its path."""
    recipe = RECIPES[name]
    path = root_path(name)
    os.makedirs(cache_dir(), exist_ok=True)
    with open(os.path.join(cache_dir(), f".host-{name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if find(name):
            return path
        for leftover in Path(cache_dir()).glob(f".host-{name}-build-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        work = tempfile.mkdtemp(prefix=f".host-{name}-build-", dir=cache_dir())
        target = os.path.join(work, "root")
        argv = ["mmdebstrap", "--mode=root", "--variant=apt", "--format=directory"]
        argv += [f"--include={','.join(recipe.packages)}", recipe.suite, target, debian_mirror()]
        with open(log or os.path.join(work, "build.log"), "a") as out:
            result = subprocess.run(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={"PATH": HOST_PATH, "HOME": "/root", "LC_ALL": "C.UTF-8"},
                cwd="/",
                check=False,
            )
        if result.returncode != 0:
            tail = Path(log or os.path.join(work, "build.log")).read_text()[-4000:]
            shutil.rmtree(work, ignore_errors=True)
            raise HostError(f"mmdebstrap {recipe.suite} failed (exit {result.returncode}):\n{tail}")
        Path(target, MARK).write_text(json.dumps(recipe.__dict__) + "\n")
        shutil.rmtree(path, ignore_errors=True)
        os.rename(target, path)
        shutil.rmtree(work, ignore_errors=True)
        return path


def require(name: str) -> str:
    path = find(name)
    if path is None:
        raise HostError(
            f"the {name} host root is not built ({root_path(name)}): run scripts/setup.sh "
            f"(or python -m testing.systemd_host build {name})"
        )
    return path


class Host:
    """A booted Debian host with systemd as PID 1; see the module doc."""

    def __init__(self, root: str, workdir: Path, machine: str) -> None:
        self.root = root
        self.workdir = workdir
        self.machine = machine
        self.nspawn: subprocess.Popen[bytes] | None = None
        self.leader = 0
        self.boots = 0
        for part in ("upper", "work", "merged"):
            (workdir / part).mkdir(parents=True, exist_ok=True)

    # --- life ----------------------------------------------------------------------

    def boot(self) -> None:
        """Boot (again, over the same overlay) and wait until systemd says it is up."""
        q = shlex.quote
        options = f"lowerdir={self.root},upperdir={self.workdir}/upper,workdir={self.workdir}/work"
        merged = self.workdir / "merged"
        script = (
            f"mount -t overlay overlay -o {q(options)} {q(str(merged))} && exec systemd-nspawn "
            f"-b -D {q(str(merged))} -M {q(self.machine)} --private-network --register=no "
            "--keep-unit --console=passive"
        )
        self.boots += 1
        log = open(self.workdir / f"nspawn-{self.boots}.log", "wb")  # noqa: SIM115
        env = {"PATH": HOST_PATH, "SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "1"}
        self.nspawn = subprocess.Popen(
            ["unshare", "-m", "--propagation", "private", "sh", "-c", script],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd="/",
        )
        log.close()
        self.leader = self._wait_for_leader()
        state = ""
        deadline = time.monotonic() + BOOT_TIMEOUT
        while time.monotonic() < deadline:
            state = self.run(
                ["systemctl", "is-system-running", "--wait"], check=False, timeout=BOOT_TIMEOUT
            ).stdout.strip()
            if state in ("running", "degraded"):
                return
            time.sleep(0.5)
        raise HostError(f"{self.machine} did not boot ({state!r}):\n{self.journal_tail()}")

    def _wait_for_leader(self) -> int:
        assert self.nspawn is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.nspawn.poll() is not None:
                raise HostError(
                    f"systemd-nspawn exited {self.nspawn.returncode}: {self.nspawn_log()}"
                )
            children = Path(f"/proc/{self.nspawn.pid}/task/{self.nspawn.pid}/children")
            try:
                pids = children.read_text().split()
            except OSError:
                pids = []
            for pid in pids:
                try:
                    exe = os.readlink(f"/proc/{pid}/exe")
                except OSError:
                    continue
                if exe.endswith("/systemd"):
                    return int(pid)
            time.sleep(0.05)
        raise HostError(f"no PID 1 in {self.machine}: {self.nspawn_log()}")

    def reboot(self) -> None:
        """``systemctl reboot`` inside; wait for nspawn to end, then boot again."""
        assert self.nspawn is not None
        self.run(["systemctl", "reboot"], check=False)
        try:
            status = self.nspawn.wait(timeout=90)
        except subprocess.TimeoutExpired:
            raise HostError(f"{self.machine} did not reboot:\n{self.nspawn_log()}") from None
        if status != REBOOT_STATUS:
            raise HostError(f"nspawn exited {status} on reboot:\n{self.nspawn_log()}")
        self.boot()

    def shutdown(self) -> None:
        """Power the host off; kill the nspawn this object started if it does not end."""
        if self.nspawn is None or self.nspawn.poll() is not None:
            return
        self.run(["systemctl", "poweroff"], check=False, timeout=30)
        try:
            self.nspawn.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.nspawn.send_signal(signal.SIGKILL)
            self.nspawn.wait(timeout=30)

    # --- commands ------------------------------------------------------------------

    def run(
        self,
        argv: list[str],
        *,
        check: bool = True,
        input: str | None = None,
        timeout: float = 120.0,
    ) -> subprocess.CompletedProcess[str]:
        """``argv`` as root in the host (its PID 1's namespaces), in a root shell's env."""
        full = ["nsenter", "-t", str(self.leader), "-a", "env", "-i", f"PATH={HOST_PATH}"]
        full += ["HOME=/root", "LC_ALL=C.UTF-8", *argv]
        result = subprocess.run(
            full, input=input, capture_output=True, text=True, timeout=timeout, cwd="/"
        )
        if check and result.returncode != 0:
            raise HostError(
                f"{shlex.join(argv)} exited {result.returncode} in {self.machine}:\n"
                f"{result.stdout}{result.stderr}"
            )
        return result

    def sh(self, script: str, *, check: bool = True, timeout: float = 120.0) -> str:
        return self.run(["sh", "-c", script], check=check, timeout=timeout).stdout

    def put(self, source: Path, dest: str, mode: int = 0o644) -> None:
        """Copy a file of this machine into the host."""
        full = ["nsenter", "-t", str(self.leader), "-a", "sh", "-c"]
        q = shlex.quote
        full += [f"mkdir -p $(dirname {q(dest)}) && cat > {q(dest)} && chmod {mode:o} {q(dest)}"]
        with open(source, "rb") as f:
            subprocess.run(full, stdin=f, check=True, timeout=60, cwd="/")

    def write(self, dest: str, text: str, mode: int = 0o644) -> None:
        q = shlex.quote
        self.run(["sh", "-c", f"mkdir -p $(dirname {q(dest)}) && cat > {q(dest)}"], input=text)
        self.run(["chmod", f"{mode:o}", dest])

    def read(self, path: str) -> str:
        return self.run(["cat", path]).stdout

    def commands(self) -> list[str]:
        """The command line of every process in the host (procps is not installed)."""
        script = "for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < $f; echo; done 2>/dev/null"
        return [line for line in self.sh(script, check=False).splitlines() if line]

    def exists(self, path: str) -> bool:
        return self.run(["test", "-e", path], check=False).returncode == 0

    # --- what went on --------------------------------------------------------------

    def journal_tail(self, lines: int = 60) -> str:
        result = self.run(["journalctl", "-b", "--no-pager", "-n", str(lines)], check=False)
        return result.stdout + result.stderr

    def nspawn_log(self) -> str:
        return (self.workdir / f"nspawn-{self.boots}.log").read_text(errors="replace")[-3000:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m testing.systemd_host", description=__doc__.split("\n\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for command in ("build", "path"):
        p = sub.add_parser(command)
        p.add_argument("names", nargs="+", choices=sorted(RECIPES))
    args = parser.parse_args(argv)
    for name in args.names:
        if args.command == "build":
            print(build(name))
            continue
        path = find(name)
        if path is None:
            print(f"not built: {root_path(name)}", file=sys.stderr)
            return 1
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
