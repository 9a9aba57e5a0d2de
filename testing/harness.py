"""The test harness: a bridge installed in a temp dir, called the way libvirt calls it.

``Bridge.call`` runs the installed launcher file with libvirt's argv, the XML on stdin, an
environment of PATH, HOME and LC_ALL=C only, and cwd ``/``. Probe scripts record what they
saw (``probes.PROBE``: argv, environment, XML, cwd, stdin) as JSON lines, so tests assert
on behaviour.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
import uuid as uuidlib
from collections.abc import Iterator, Mapping
from pathlib import Path

from libvirt_bridge import asyncq, inbox, launcher

from .probes import Record, events_of, probe_script, read_records
from .waits import wait_for_file, wait_until

LIBVIRT_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/root", "LC_ALL": "C"}


def queues_empty(state_dir: str) -> bool:
    """No async job of the bridge is queued or running under ``state_dir``, and no hook
    call waits in its inbox."""
    waiting = inbox.inbox_dir(state_dir)
    if os.path.isdir(waiting) and os.listdir(waiting):
        return False
    for _, _, files in os.walk(os.path.join(state_dir, "queue")):
        if any(f.endswith((asyncq.JOB, asyncq.RUNNING)) for f in files):
            return False
    return True


def ovirt_vm(
    properties: Mapping[str, str] | None = None,
    *,
    nics: Mapping[str, Mapping[str, str]] | None = None,
    disks: Mapping[str, Mapping[str, str]] | None = None,
) -> str:
    """oVirt's ``ovirt-vm:vm`` metadata element: the VM's custom properties, and devices'
    (``nics`` by MAC, ``disks`` by target), as oVirt 4.2+ writes them."""

    def custom(props: Mapping[str, str]) -> str:
        items = "".join(f"<ovirt-vm:{k}>{v}</ovirt-vm:{k}>" for k, v in props.items())
        return f"<ovirt-vm:custom>{items}</ovirt-vm:custom>"

    entries = [
        f'<ovirt-vm:device mac_address="{mac}">{custom(props)}</ovirt-vm:device>'
        for mac, props in (nics or {}).items()
    ] + [
        f'<ovirt-vm:device devtype="disk" name="{target}">{custom(props)}</ovirt-vm:device>'
        for target, props in (disks or {}).items()
    ]
    vm = custom(properties) if properties is not None else ""
    return (
        f'<ovirt-vm:vm xmlns:ovirt-vm="http://ovirt.org/vm/1.0">{vm}{"".join(entries)}'
        "</ovirt-vm:vm>"
    )


def domain_xml(
    name: str = "vm1",
    uuid: str | None = None,
    properties: dict[str, str] | None = None,
    extra: str = "",
) -> bytes:
    """A libvirt-style domain XML with optional oVirt custom properties."""
    uuid = uuid or str(uuidlib.uuid4())
    metadata = f"<metadata>{ovirt_vm(properties)}</metadata>" if properties is not None else ""
    text = (
        f"<domain type='kvm' id='1'>\n  <name>{escape(name)}</name>\n  <uuid>{uuid}</uuid>\n"
        f"  {metadata}\n  <memory unit='KiB'>65536</memory>\n  <vcpu>1</vcpu>\n"
        f"  <os><type arch='x86_64' machine='pc'>hvm</type></os>{extra}\n</domain>\n"
    )
    return text.encode()


def escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def uuid_of(xml: bytes) -> str:
    start = xml.index(b"<uuid>") + 6
    return xml[start : xml.index(b"</uuid>")].decode()


def live_processes_mentioning(marks: tuple[bytes, ...]) -> set[int]:
    """Live processes (not zombies, not this one) whose command line, environment or open
    files name one of ``marks``."""
    pids = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                zombie = f.read().rsplit(")", 1)[1].split()[0] == "Z"
            if not zombie and any(mark in text for text in _traces(entry) for mark in marks):
                pids.add(int(entry))
        except OSError:
            continue
    return pids


def _traces(pid: str) -> Iterator[bytes]:
    """What names the files a process works with: its argv, its environment, its fds."""
    for name in ("cmdline", "environ"):
        with open(f"/proc/{pid}/{name}", "rb") as f:
            yield f.read()
    fd_dir = f"/proc/{pid}/fd"
    for fd in os.listdir(fd_dir):
        try:
            yield os.readlink(f"{fd_dir}/{fd}").encode()
        except OSError:
            pass


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def assert_a_left_process_never_holds_the_call(bridge: Bridge, tmp_path: Path, spawn: str) -> None:
    """A before_vm_start script runs the shell command ``spawn``, which leaves a process of
    120 s that writes its pid to ``{pidfile}``: libvirt's call returns, with the script's
    success, while that process still runs."""
    pidfile = tmp_path / "left.pid"
    body = spawn.format(pidfile=pidfile)
    bridge.script("before_vm_start", "10_daemonize", f"#!/bin/sh\n{body}\necho bye >&2\n")
    started = time.monotonic()
    result = bridge.qemu("vm1", "prepare", "begin", domain_xml())
    elapsed = time.monotonic() - started
    # A daemon writes its pid on its own, maybe after the script ended.
    wait_for_file(pidfile, "the pid of the process the script left", 10)
    left = int(pidfile.read_text())
    try:
        assert result.returncode == 0, result.stderr
        assert "10_daemonize rc=0" in bridge.log_text()
        assert elapsed < 60  # the call returned while the process (120 s) still ran
        assert alive(left)
    finally:
        os.kill(left, signal.SIGKILL)


def call_contained(
    argv: list[str], stdin: bytes, timeout: float
) -> subprocess.CompletedProcess[bytes]:
    """Run ``argv`` as libvirt runs a hook, in its own process group.

    A call that has not ended after ``timeout`` s is an AssertionError, and its whole
    group is killed first: a hook that recursed or hung leaves nothing behind.
    """
    pipe = subprocess.PIPE
    process = subprocess.Popen(
        argv, stdin=pipe, stdout=pipe, stderr=pipe, env=LIBVIRT_ENV, cwd="/", start_new_session=True
    )
    try:
        out, err = process.communicate(stdin, timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise AssertionError(f"{argv} did not end in {timeout} s") from None
    return subprocess.CompletedProcess(argv, process.returncode, out, err)


def write_hook_script(
    hooks_root: Path, event: str, name: str, body: str, mode: int = 0o755
) -> Path:
    """Write script ``name`` of ``event`` under ``hooks_root``, executable by ``mode``."""
    directory = hooks_root / event
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(body)
    path.chmod(mode)
    return path


class Bridge:
    """An installed bridge: config, hooks root, state dir, log, and the two launchers."""

    def __init__(self, root: Path, **config: object) -> None:
        self.root = root
        self.hooks = root / "hooks"
        self.state = root / "state"
        self.log = root / "bridge.log"
        self.records = root / "records.jsonl"
        self.config = root / "libvirt-bridge.toml"
        # Stands for libvirt's /run/libvirt/qemu: the hook reads a domain's status there.
        self.status = root / "qemu-status"
        self.hooks.mkdir()
        self.status.mkdir(exist_ok=True)
        self.write_config(**config)
        self.launchers = root / "launchers"
        self.launchers.mkdir()
        for driver in launcher.DRIVERS:
            launcher.write(str(self.launchers / driver), driver, str(self.config))
        # A parent named like the daemon, for the daemon hook's "who called me" check.
        self.daemon_parents = root / "parents"
        self.daemon_parents.mkdir()

    def status_file(self, name: str, status: bytes | None) -> None:
        """Write (None: remove) libvirt's status file of domain ``name``."""
        path = self.status / f"{name}.xml"
        if status is None:
            path.unlink(missing_ok=True)
        else:
            path.write_bytes(status)

    def write_config(self, **overrides: object) -> None:
        values: dict[str, object] = {
            "hooks_dirs": [str(self.hooks)],
            "state_dir": str(self.state),
            "log_file": str(self.log),
            "script_timeout": 20,
            "qemu_status_dir": str(self.status),
            "properties_dir": str(self.root / "properties.d"),
        }
        values.update(overrides)
        lines = [f"{k} = {json.dumps(v)}" for k, v in values.items()]
        self.config.write_text("\n".join(lines) + "\n")

    def script(
        self, event: str, name: str, body: str, mode: int = 0o755, root: Path | None = None
    ) -> Path:
        return write_hook_script(root or self.hooks, event, name, body, mode)

    def probe(
        self, event: str, name: str = "50_probe", tail: str = "", root: Path | None = None
    ) -> Path:
        """A script that records what it saw; ``tail`` is Python run after recording."""
        body = probe_script(sys.executable, self.records, tail)
        return self.script(event, name, body, root=root)

    def call(
        self,
        driver: str,
        obj: str,
        op: str,
        subop: str,
        extra: str = "-",
        xml: bytes = b"",
        parent: str | None = None,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[bytes]:
        argv = [str(self.launchers / driver), obj, op, subop, extra]
        if parent is not None:
            argv = [str(self.parent(parent)), *argv]
        return call_contained(argv, xml, timeout)

    def qemu(
        self, name: str, op: str, subop: str, xml: bytes, extra: str = "-"
    ) -> subprocess.CompletedProcess[bytes]:
        return self.call("qemu", name, op, subop, extra, xml)

    def daemon(
        self, op: str, extra: str, subop: str = "-", parent: str = "libvirtd"
    ) -> subprocess.CompletedProcess[bytes]:
        return self.call("daemon", "-", op, subop, extra, parent=parent)

    def parent(self, name: str) -> Path:
        """A shell script named ``name``: the hook it runs sees it as its parent process."""
        path = self.daemon_parents / name
        if not path.exists():
            path.write_text('#!/bin/sh\n"$@"\nexit $?\n')
            path.chmod(0o755)
        return path

    def read_records(self) -> list[Record]:
        return read_records(self.records)

    def events(self) -> list[str]:
        return events_of(self.read_records())

    def log_text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def wait_async(self, count: int = 0, timeout: float = 20) -> list[Record]:
        """The records, once every async queue is drained and ``count`` of them exist."""
        wait_until(
            lambda: (
                queues_empty(str(self.state))
                and len(self.read_records()) >= count
                and not self._runner_alive()
            ),
            lambda: f"async events done: records={self.events()} log={self.log_text()}",
            timeout,
        )
        return self.read_records()

    def _runner_alive(self) -> bool:
        queue_root = self.state / "queue"
        if not queue_root.exists():
            return False
        for lock in queue_root.glob("*.lock"):
            fd = os.open(lock, os.O_RDWR)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            finally:
                os.close(fd)
        return False
