"""A private libvirtd for the end-to-end tests and the ``demo`` command.

A :class:`Sandbox` runs ``virtlogd`` and ``libvirtd`` inside new mount and UTS namespaces
(``unshare --mount --uts --propagation private``), with the sandbox's own directories
bind-mounted over ``/etc/libvirt``, ``/run/libvirt``, ``/var/lib/libvirt``,
``/var/log/libvirt`` and ``/var/cache/libvirt`` and its own hostname, so two sandboxes can
run at once and migrate guests between each other, and nothing of the host's libvirt is
touched. Clients reach a sandbox through its socket (:attr:`Sandbox.uri`).

Facts this relies on (libvirt 9.0, QEMU 7.2, observed):

- libvirt starts QEMU in a mount namespace of its own (``namespaces = ["mount"]`` in
  ``qemu.conf``), so QEMU does not share the sandbox's mount namespace. It does share its
  UTS namespace: a process belongs to the sandbox if its mount *or* UTS namespace is the
  sandbox's.
- libvirt probes each QEMU binary's capabilities (about 2 s per accelerator, kvm and tcg)
  when it first needs them: the first guest defined probes ``qemu-system-x86_64``, ``virsh
  capabilities`` also ``qemu-system-i386``. The result is cached under
  ``/var/cache/libvirt/qemu/capabilities`` and reused only if the host CPUID that libvirtd
  read at its start is identical, and on some virtual machines CPUID differs between
  CPUs. So libvirtd starts pinned to one CPU (its threads are unpinned once it answers),
  and the cache files of one sandbox seed the sandboxes started later by this process.
- Without ``cgroup_controllers = [ ]`` libvirt creates ``machine/qemu-<id>-<name>``
  cgroups in the host's cgroup tree, and two sandboxes (domain ids start at 1 in each)
  would share them during a migration. The sandbox's ``qemu.conf`` disables cgroups.
- PID 1 may not reap orphans: an exited daemon stays a zombie (state ``Z``), which counts
  as gone here. A zombie has no namespaces left, so it never looks like a member.
- When ``/run/libvirt`` does not exist on the host, there is nothing to bind-mount over:
  the sandbox then mounts an overlay (or a tmpfs) on ``/run`` inside its namespace first,
  so the host's ``/run`` stays unchanged. Every ``mount`` runs with ``-n``: otherwise
  libmount records it in the host's ``/run/mount/utab``.
- A namespace's inode number is reused as soon as the namespace is gone, so the sandbox
  holds its namespaces open (and so does its watchdog) while it matches processes by them.
- If the owning process dies without :meth:`Sandbox.close` (SIGKILL), a small watchdog
  process, which holds the read end of a pipe only the owner writes to, sees EOF and
  kills every process of the sandbox.

Only the standard library is used, so the tests can run it before anything else works.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid as uuidlib
from collections.abc import Iterable, Mapping, Sequence
from functools import cache
from types import TracebackType
from typing import ClassVar
from urllib.parse import quote
from xml.sax.saxutils import escape

from libvirt_bridge import launcher, service

# (path inside the sandbox root, path the daemons see), in mount order.
TARGETS = (
    ("etc/libvirt", "/etc/libvirt"),
    ("run/libvirt", "/run/libvirt"),
    ("var/lib/libvirt", "/var/lib/libvirt"),
    ("var/log/libvirt", "/var/log/libvirt"),
    ("var/cache/libvirt", "/var/cache/libvirt"),
)
HOST_ETC = "/etc/libvirt"
DAEMON_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Log what a hook call does (util.hook: which script, util.command: argv, exit status,
# stdout and stderr); everything else at warning level.
LOG_FILTERS = "1:util.hook 1:util.command 3:*"
LOG_OUTPUTS = "1:file:/var/log/libvirt/libvirtd.log"
REQUIRED_BINARIES = ("unshare", "nsenter", "virtlogd", "libvirtd", "virsh", "qemu-system-x86_64")
OVIRT_VM_NS = "http://ovirt.org/vm/1.0"

_KVM_GET_API_VERSION = 0xAE00
_KVM_CREATE_VM = 0xAE01
_SUN_PATH_MAX = 107
_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_GRACE = 5.0
# "2026-01-01 10:00:00.000+0000: 1234: debug : virRunScript:279 : Calling hook ..."
_LOG_LINE = re.compile(r"^\S+ \S+: (\d+): \w+ : (\w+):\d+ : (.*)$")


class SandboxError(Exception):
    """The sandbox could not do what was asked; the message says what and why."""


class VirshError(SandboxError):
    """A ``virsh`` command failed (``returncode`` is None when it timed out)."""

    def __init__(self, argv: Sequence[str], returncode: int | None, stdout: str, stderr: str):
        self.argv = list(argv)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        status = "timed out" if returncode is None else f"exited {returncode}"
        super().__init__(
            f"{shlex.join(self.argv)} {status}\nstdout: {stdout.strip()}\nstderr: {stderr.strip()}"
        )


# ---------------------------------------------------------------------------------------
# Host checks


def _which(name: str) -> str | None:
    search = os.pathsep.join([os.environ.get("PATH", ""), DAEMON_PATH])
    return shutil.which(name, path=search)


def _binary(name: str) -> str:
    path = _which(name)
    if path is None:
        raise SandboxError(f"{name} not found (searched PATH and {DAEMON_PATH})")
    return path


def check_host_can_run_libvirt() -> str | None:
    """Why this machine cannot run a sandbox, or None if it can."""
    if os.geteuid() != 0:
        return "the libvirt sandbox needs root (mount namespaces, libvirtd, virtlogd)"
    missing = [name for name in REQUIRED_BINARIES if _which(name) is None]
    if missing:
        return (
            f"missing {', '.join(missing)}: install util-linux, libvirt-daemon-system, "
            "libvirt-clients and qemu-system-x86"
        )
    if not os.path.isfile(os.path.join(HOST_ETC, "libvirtd.conf")):
        return f"{HOST_ETC}/libvirtd.conf not found: install libvirt-daemon-system"
    try:
        probe = subprocess.run(
            [_binary("unshare"), "--mount", "--uts", "--propagation", "private", "true"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot run unshare: {exc}"
    if probe.returncode != 0:
        return f"unshare --mount --uts failed here: {probe.stderr.strip()}"
    return None


@cache
def kvm_usable() -> bool:
    """Whether /dev/kvm can really run a guest (open it, check the API, create a VM)."""
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        if fcntl.ioctl(fd, _KVM_GET_API_VERSION, 0) != 12:
            return False
        vm = fcntl.ioctl(fd, _KVM_CREATE_VM, 0)
        os.close(vm)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------
# Processes and namespaces


def process_alive(pid: int) -> bool:
    """Whether ``pid`` runs; a zombie (state Z, never reaped here) counts as gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    state = stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3]
    return state not in (b"Z", b"X", b"")


def _ns_ino(pid: int | str, kind: str) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/{kind}").st_ino
    except OSError:
        return None


def _is_member(pid: int | str, inos: tuple[int, int]) -> bool:
    """Whether ``pid`` lives in the mount or the UTS namespace identified by ``inos``."""
    mnt, uts = inos
    return _ns_ino(pid, "mnt") == mnt or _ns_ino(pid, "uts") == uts


def member_pids(inos: tuple[int, int]) -> list[int]:
    """Live processes in the namespaces ``inos`` = (mount ns inode, UTS ns inode)."""
    own = (_ns_ino("self", "mnt"), _ns_ino("self", "uts"))
    if inos[0] == own[0] or inos[1] == own[1]:
        # Never treat this process's own namespaces as the sandbox's: that is everything.
        raise SandboxError(f"namespace {inos} is this process's own; refusing to match it")
    me = os.getpid()
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != me and _is_member(entry, inos):
            pids.append(int(entry))
    return sorted(pids)


def _signal_member(pid: int, inos: tuple[int, int], sig: int) -> None:
    """Send ``sig`` to ``pid`` if it is (still) a member; immune to pid reuse."""
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return
    try:
        if _is_member(pid, inos):
            signal.pidfd_send_signal(pidfd, sig)
    except OSError:
        pass
    finally:
        os.close(pidfd)


def kill_namespace(inos: tuple[int, int], grace: float = _GRACE) -> list[int]:
    """SIGTERM every member, SIGKILL what remains after ``grace`` s; return survivors.

    Members that appear meanwhile (a hook run by a daemon shutting down) get the same.
    """
    for sig in (signal.SIGTERM, signal.SIGKILL):
        deadline = time.monotonic() + grace
        signalled: set[int] = set()
        while True:
            pids = member_pids(inos)
            if not pids:
                return []
            for pid in pids:
                if pid not in signalled:
                    _signal_member(pid, inos, sig)
                    signalled.add(pid)
            if time.monotonic() >= deadline:
                break
            time.sleep(0.05)
    return member_pids(inos)


def mounts_mentioning(path: str) -> list[str]:
    """Lines of this process's /proc/self/mountinfo that mention ``path``."""
    escaped = path.replace("\\", "\\134").replace(" ", "\\040")
    escaped = escaped.replace("\t", "\\011").replace("\n", "\\012")
    with open("/proc/self/mountinfo") as f:
        return [line.rstrip("\n") for line in f if escaped in line]


def _watchdog_main() -> None:
    """Kill the sandbox if its owner dies: run as ``python -c`` with three fds in argv.

    argv: the read end of a pipe whose write end only the owner holds, and fds of the
    sandbox's mount and UTS namespaces (held open, so their inodes cannot be reused). The
    owner writes ``q`` before closing to dismiss the watchdog; EOF without it means the
    owner died, and every process of the sandbox is killed.
    """
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_IGN)
    pipe_fd, mnt_fd, uts_fd = (int(arg) for arg in sys.argv[1:4])
    received = b""
    while True:
        try:
            chunk = os.read(pipe_fd, 64)
        except InterruptedError:
            continue
        if not chunk:
            break
        received += chunk
    if b"q" in received:
        return
    kill_namespace((os.fstat(mnt_fd).st_ino, os.fstat(uts_fd).st_ino))


# ---------------------------------------------------------------------------------------
# Config file helpers


def override_conf(text: str, settings: Mapping[str, str]) -> str:
    """libvirt-style conf ``text`` with ``settings`` (raw values) replacing any existing."""
    key_re = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*=(.*)$")
    out: list[str] = []
    in_list = False
    for line in text.splitlines():
        if in_list:
            out.append("#" + line)
            in_list = "]" not in line
            continue
        match = key_re.match(line)
        if match and match.group(1) in settings:
            out.append("#" + line)
            value = match.group(2).strip()
            in_list = value.startswith("[") and "]" not in value
            continue
        out.append(line)
    out += ["", "# Set by libvirt_bridge.sandbox"]
    out += [f"{key} = {value}" for key, value in settings.items()]
    return "\n".join(out) + "\n"


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


def _tail(path: str, lines: int = 40) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16384))
            data = f.read().decode("utf-8", "replace")
    except OSError as exc:
        return f"({path}: {exc.strerror})"
    return "\n".join(data.splitlines()[-lines:])


# ---------------------------------------------------------------------------------------
# The sandbox


class Sandbox:
    """A private libvirtd (with virtlogd) in its own mount and UTS namespaces.

    ``Sandbox(root, name)`` lays out ``root`` (a fresh directory the caller owns);
    :meth:`start` starts the daemons; :meth:`close` (or leaving the ``with`` block) kills
    everything the sandbox started. ``__enter__`` does not start the daemons.
    """

    # QEMU capabilities cache files, shared by the sandboxes of this process (see module doc).
    _caps_seed: ClassVar[dict[str, bytes]] = {}

    def __init__(
        self,
        root: str | os.PathLike[str],
        name: str,
        *,
        start_timeout: float = 60.0,
        domain_type: str | None = None,
    ) -> None:
        if not _NAME_RE.match(name):
            raise SandboxError(f"sandbox name {name!r} is not a valid short hostname")
        if domain_type not in (None, "kvm", "qemu"):
            raise SandboxError(f"domain_type must be 'kvm', 'qemu' or None, not {domain_type!r}")
        self.root = os.path.realpath(os.fspath(root))
        self.name = name
        self.start_timeout = start_timeout
        self._domain_type = domain_type
        self.host_uuid = str(uuidlib.uuid4())
        self.etc_dir = self._path("etc/libvirt")
        self.run_dir = self._path("run/libvirt")
        self.lib_dir = self._path("var/lib/libvirt")
        self.log_dir = self._path("var/log/libvirt")
        self.cache_dir = self._path("var/cache/libvirt")
        self.hooks_dir = os.path.join(self.etc_dir, "hooks")
        self.bridge_dir = self._path("bridge")
        self.hooks_root = os.path.join(self.hooks_dir, "vdsm.d")
        self.config_path = os.path.join(self.bridge_dir, "libvirt-bridge.toml")
        self.state_dir = os.path.join(self.bridge_dir, "state")
        self.log_file = os.path.join(self.bridge_dir, "bridge.log")
        self.libvirtd_log = os.path.join(self.log_dir, "libvirtd.log")
        self.socket_path = os.path.join(self.run_dir, "libvirt-sock")
        self.uri = f"qemu+unix:///system?socket={quote(self.socket_path, safe='/')}"
        self._private = self._path(".sandbox")
        self._ns_file = os.path.join(self._private, "namespaces")
        self._inos: tuple[int, int] | None = None
        self._ns_fds: list[int] = []
        self._watchdog: subprocess.Popen[bytes] | None = None
        self._watchdog_fd = -1
        self._setup: subprocess.Popen[str] | None = None
        self._listener: subprocess.Popen[bytes] | None = None
        self._cpus = os.sched_getaffinity(0)
        self._started = False
        self._closed = False
        self._check_root()
        self._layout()

    # -- layout ---------------------------------------------------------------------------

    def _path(self, relative: str) -> str:
        return os.path.join(self.root, relative)

    def _check_root(self) -> None:
        if len(self.socket_path.encode()) > _SUN_PATH_MAX:
            raise SandboxError(
                f"sandbox root {self.root} is too long: the socket path {self.socket_path} "
                f"exceeds {_SUN_PATH_MAX} bytes"
            )
        if any(char in self.root for char in ",:\\\n"):
            raise SandboxError(f"sandbox root {self.root!r} must not contain , : \\ or newline")
        for hidden in [target for _, target in TARGETS] + self._overlaid_dirs():
            if self.root == hidden or self.root.startswith(hidden.rstrip("/") + "/"):
                raise SandboxError(f"sandbox root {self.root} must not be under {hidden}")
        if os.path.exists(self.etc_dir):
            raise SandboxError(f"{self.root} already holds a sandbox; use a fresh directory")

    def _layout(self) -> None:
        os.makedirs(self.root, exist_ok=True)
        shutil.copytree(
            HOST_ETC,
            self.etc_dir,
            symlinks=True,
            ignore=lambda d, names: ["hooks"] if d == HOST_ETC else [],
        )
        # No guests, networks or pools of the host: nothing to autostart in a sandbox.
        qemu_etc = os.path.join(self.etc_dir, "qemu")
        if os.path.isdir(qemu_etc):
            for entry in os.listdir(qemu_etc):
                if entry.endswith(".xml") or entry == "autostart":
                    _remove(os.path.join(qemu_etc, entry))
        for autostart in ("qemu/networks/autostart", "storage/autostart"):
            path = os.path.join(self.etc_dir, autostart)
            if os.path.isdir(path):
                for entry in os.listdir(path):
                    _remove(os.path.join(path, entry))
        self._edit_conf(
            "libvirtd.conf",
            {
                "host_uuid": json.dumps(self.host_uuid),
                "log_filters": json.dumps(LOG_FILTERS),
                "log_outputs": json.dumps(LOG_OUTPUTS),
            },
        )
        self._edit_conf("qemu.conf", {"cgroup_controllers": "[ ]"})
        for path in (self.hooks_dir, self.run_dir, self.lib_dir, self.log_dir, self.cache_dir):
            os.makedirs(path, exist_ok=True)
            os.chmod(path, 0o755)
        os.makedirs(self.bridge_dir, exist_ok=True)
        os.makedirs(self._private, exist_ok=True)

    def _edit_conf(self, name: str, settings: Mapping[str, str]) -> None:
        path = os.path.join(self.etc_dir, name)
        try:
            with open(path) as f:
                text = f.read()
        except FileNotFoundError:
            text = ""
        with open(path, "w") as f:
            f.write(override_conf(text, settings))

    def _overlaid_dirs(self) -> list[str]:
        """Host directories that get an overlay in the namespace to hold a mount point."""
        dirs: list[str] = []
        for _, target in TARGETS:
            if os.path.isdir(target):
                continue
            parent = os.path.dirname(target)
            while not os.path.isdir(parent):
                parent = os.path.dirname(parent)
            if parent == "/":
                raise SandboxError(f"cannot make a mount point for {target}")
            if parent not in dirs:
                dirs.append(parent)
        return sorted(dirs, key=len)

    # -- starting ---------------------------------------------------------------------------

    def _daemon_env(self) -> dict[str, str]:
        return {"PATH": DAEMON_PATH, "HOME": pwd.getpwuid(0).pw_dir}

    def _libvirtd_command(self) -> str:
        command = f"{shlex.quote(_binary('libvirtd'))} -d -p /run/libvirt/libvirtd.pid"
        taskset = _which("taskset")
        if taskset is not None:
            # Pinned while it reads the host CPUID (see module doc); unpinned when ready.
            command = f"{shlex.quote(taskset)} -c {min(self._cpus)} {command}"
        return f"{command} </dev/null >>/var/log/libvirt/libvirtd.out 2>&1"

    def _setup_script(self) -> str:
        q = shlex.quote
        lines = [
            "set -e",
            f"readlink /proc/$$/ns/mnt /proc/$$/ns/uts > {q(self._ns_file)}",
        ]
        for index, directory in enumerate(self._overlaid_dirs()):
            upper = os.path.join(self._private, f"overlay{index}", "upper")
            work = os.path.join(self._private, f"overlay{index}", "work")
            os.makedirs(upper, exist_ok=True)
            os.makedirs(work, exist_ok=True)
            options = f"lowerdir={directory},upperdir={upper},workdir={work}"
            overlay = f"mount -n -t overlay overlay -o {q(options)} {q(directory)}"
            if directory == "/run":
                overlay += " 2>/dev/null || mount -n -t tmpfs -o mode=0755 tmpfs /run"
            lines.append(overlay)
        for relative, target in TARGETS:
            lines.append(f"mkdir -p {q(target)}")
            lines.append(f"mount -n --bind {q(self._path(relative))} {q(target)}")
        lines += [
            f"printf %s {q(self.name)} > /proc/sys/kernel/hostname",
            f"{q(_binary('virtlogd'))} -d -p /run/libvirt/virtlogd.pid"
            " </dev/null >>/var/log/libvirt/virtlogd.out 2>&1",
            self._libvirtd_command(),
        ]
        return "\n".join(lines) + "\n"

    def start(self) -> Sandbox:
        """Start virtlogd and libvirtd in new namespaces; return when libvirtd answers."""
        if self._closed:
            raise SandboxError("this sandbox was closed; create a new one")
        if self._started:
            return self
        reason = check_host_can_run_libvirt()
        if reason is not None:
            raise SandboxError(reason)
        self._started = True
        try:
            self._start()
        except BaseException as exc:
            try:
                self.close()
            except Exception as close_exc:
                exc.add_note(f"and cleaning up failed too: {close_exc}")
            raise
        return self

    def _start(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        self._seed_caps()
        argv = [_binary("unshare"), "--mount", "--uts", "--propagation", "private"]
        argv += ["/bin/sh", "-c", self._setup_script()]
        self._setup = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self._daemon_env(),
            cwd="/",
            text=True,
            start_new_session=True,
        )
        try:
            out, err = self._setup.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self._setup.kill()
            out, err = self._setup.communicate()
            raise SandboxError(
                f"sandbox setup did not finish in {self.start_timeout} s\n{err}"
                + self._diagnostics()
            ) from None
        self._read_namespaces()
        if self._setup.returncode != 0:
            output = (err + out).strip()
            raise SandboxError(
                f"sandbox setup failed (exit {self._setup.returncode})"
                + (f": {output}" if output else "")
                + self._diagnostics()
            )
        self._hold_namespaces()
        self._start_watchdog()
        self._wait_ready(deadline)

    def _read_namespaces(self) -> None:
        try:
            with open(self._ns_file) as f:
                text = f.read()
        except OSError:
            return
        numbers = [int(n) for n in re.findall(r"\[(\d+)\]", text)]
        if len(numbers) == 2:
            inos = (numbers[0], numbers[1])
            if inos[0] == _ns_ino("self", "mnt") or inos[1] == _ns_ino("self", "uts"):
                raise SandboxError(f"the sandbox did not get namespaces of its own: {text}")
            self._inos = inos

    def _hold_namespaces(self) -> None:
        """Open the namespaces (through virtlogd), so their identity stays unique."""
        if self._inos is None:
            raise SandboxError("the sandbox setup did not record its namespaces")
        pid = self.virtlogd_pid()
        for kind, ino in zip(("mnt", "uts"), self._inos, strict=True):
            fd = os.open(f"/proc/{pid}/ns/{kind}", os.O_RDONLY | os.O_CLOEXEC)
            self._ns_fds.append(fd)
            if os.fstat(fd).st_ino != ino:
                raise SandboxError(f"virtlogd {pid} is not in the sandbox's {kind} namespace")

    def _start_watchdog(self) -> None:
        read_fd, write_fd = os.pipe()
        package_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        code = (
            f"import sys; sys.path.insert(0, {package_parent!r}); "
            "from libvirt_bridge.sandbox import _watchdog_main; _watchdog_main()"
        )
        fds = [read_fd, *self._ns_fds]
        try:
            self._watchdog = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", code, *map(str, fds)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                pass_fds=fds,
                cwd="/",
                start_new_session=True,
            )
        except BaseException:
            os.close(write_fd)
            raise
        finally:
            os.close(read_fd)
        self._watchdog_fd = write_fd

    def _wait_ready(self, deadline: float) -> None:
        """Wait until the socket accepts connections and libvirtd answers a call."""
        since = time.monotonic()
        while True:
            pid = self._pid_from_file("libvirtd")
            if pid is None:
                if time.monotonic() - since < 3.0:
                    time.sleep(0.02)
                    continue
                raise SandboxError("libvirtd is not running" + self._diagnostics())
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                try:
                    sock.connect(self.socket_path)
                    break
                except OSError:
                    pass
            if time.monotonic() > deadline:
                raise SandboxError(
                    f"libvirtd socket {self.socket_path} not ready after {self.start_timeout} s"
                    + self._diagnostics()
                )
            time.sleep(0.02)
        # The socket accepts before the drivers are up; a call returns once they are.
        try:
            self.virsh("uri", timeout=max(1.0, deadline - time.monotonic()))
        except VirshError as exc:
            raise SandboxError(f"libvirtd does not answer: {exc}" + self._diagnostics()) from None
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                os.sched_setaffinity(int(task), self._cpus)

    def _diagnostics(self) -> str:
        parts = []
        for name in ("libvirtd.out", "virtlogd.out", "libvirtd.log"):
            path = os.path.join(self.log_dir, name)
            if os.path.exists(path) and os.path.getsize(path):
                parts.append(f"\n--- tail of {path} ---\n{_tail(path)}")
        return "".join(parts)

    def _caps_dir(self) -> str:
        return os.path.join(self.cache_dir, "qemu", "capabilities")

    def _seed_caps(self) -> None:
        if not Sandbox._caps_seed:
            return
        directory = self._caps_dir()
        os.makedirs(directory, mode=0o755, exist_ok=True)
        for name, data in Sandbox._caps_seed.items():
            path = os.path.join(directory, name)
            if not os.path.exists(path):
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(data)

    def _save_caps(self) -> None:
        directory = self._caps_dir()
        try:
            names = [n for n in os.listdir(directory) if n.endswith(".xml")]
            seed = {}
            for name in names:
                with open(os.path.join(directory, name), "rb") as f:
                    seed[name] = f.read()
        except OSError:
            return
        Sandbox._caps_seed.update(seed)

    # -- processes --------------------------------------------------------------------------

    def _pid_from_file(self, daemon: str) -> int | None:
        try:
            with open(os.path.join(self.run_dir, f"{daemon}.pid")) as f:
                pid = int(f.read().strip())
        except (OSError, ValueError):
            return None
        if self._inos is not None and not _is_member(pid, self._inos):
            return None
        return pid if process_alive(pid) else None

    def libvirtd_pid(self) -> int:
        """The pid of the running libvirtd (SandboxError if it does not run)."""
        pid = self._pid_from_file("libvirtd")
        if pid is None:
            raise SandboxError(f"libvirtd of sandbox {self.name} is not running")
        return pid

    def virtlogd_pid(self) -> int:
        """The pid of the running virtlogd (SandboxError if it does not run)."""
        pid = self._pid_from_file("virtlogd")
        if pid is None:
            raise SandboxError(f"virtlogd of sandbox {self.name} is not running")
        return pid

    def pids(self) -> list[int]:
        """Every live process of the sandbox: daemons, QEMU, hook processes."""
        if self._inos is None:
            return []
        return member_pids(self._inos)

    def running(self) -> bool:
        """Whether libvirtd runs."""
        return self._pid_from_file("libvirtd") is not None

    def run_in_namespace(
        self,
        argv: Sequence[str],
        *,
        check: bool = True,
        timeout: float = 60.0,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` in the sandbox's mount and UTS namespaces (``nsenter``)."""
        command = [_binary("nsenter"), "--target", str(self.virtlogd_pid()), "--mount", "--uts"]
        command += ["--", *argv]
        return subprocess.run(
            command,
            input=input,
            capture_output=True,
            text=True,
            env=self._daemon_env(),
            cwd="/",
            timeout=timeout,
            check=check,
        )

    # -- clients ----------------------------------------------------------------------------

    def virsh(
        self, *args: str, check: bool = True, timeout: float = 60.0, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run ``virsh -c <uri> ARGS``; VirshError on failure (if ``check``) or timeout."""
        argv = [_binary("virsh"), "-c", self.uri, *args]
        try:
            result = subprocess.run(
                argv,
                input=input,
                capture_output=True,
                text=True,
                env=_client_env(),
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
            err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else exc.stderr or ""
            raise VirshError(argv, None, out, err) from None
        if check and result.returncode != 0:
            raise VirshError(argv, result.returncode, result.stdout, result.stderr)
        return result

    def domstate(self, name: str) -> str:
        """``virsh domstate NAME``, e.g. ``running`` or ``shut off``."""
        return self.virsh("domstate", name).stdout.strip()

    def running_guests(self) -> list[str]:
        """Names of the active guests."""
        return self.virsh("list", "--name").stdout.split()

    @property
    def domain_type(self) -> str:
        """``kvm`` when /dev/kvm works, else ``qemu`` (TCG), unless set at construction."""
        return self._domain_type or ("kvm" if kvm_usable() else "qemu")

    def domain_xml(
        self,
        name: str,
        *,
        uuid: str | None = None,
        metadata: str = "",
        description: str | None = None,
    ) -> str:
        """A tiny diskless guest: 64 MiB, 1 vCPU, no disk, no NIC, no graphics."""
        emulator = _binary("qemu-system-x86_64")
        parts = [
            f"<domain type='{self.domain_type}'>",
            f"  <name>{escape(name)}</name>",
            f"  <uuid>{uuid or uuidlib.uuid4()}</uuid>",
        ]
        if description is not None:
            parts.append(f"  <description>{escape(description)}</description>")
        if metadata:
            parts.append(f"  <metadata>{metadata}</metadata>")
        parts += [
            "  <memory unit='MiB'>64</memory>",
            "  <vcpu>1</vcpu>",
            "  <os><type arch='x86_64' machine='pc'>hvm</type></os>",
            "  <on_poweroff>destroy</on_poweroff>",
            "  <devices>",
            f"    <emulator>{escape(emulator)}</emulator>",
            "  </devices>",
            "</domain>",
        ]
        return "\n".join(parts) + "\n"

    def define_guest(self, name: str, *, metadata: str = "", description: str | None = None) -> str:
        """Define a tiny diskless guest (see :meth:`domain_xml`); return its UUID."""
        if "/" in name or not name:
            raise SandboxError(f"bad guest name {name!r}")
        guest_uuid = str(uuidlib.uuid4())
        directory = self._path("domains")
        os.makedirs(directory, exist_ok=True)
        path = os.path.join(directory, f"{name}.xml")
        with open(path, "w") as f:
            f.write(
                self.domain_xml(name, uuid=guest_uuid, metadata=metadata, description=description)
            )
        self.virsh("define", path)
        self._save_caps()  # defining a guest made libvirtd probe QEMU, if nothing had yet
        return guest_uuid

    def migrate(
        self,
        name: str,
        dest: Sandbox,
        *,
        live: bool = True,
        extra_args: Iterable[str] = (),
        timeout: float = 120.0,
    ) -> subprocess.CompletedProcess[str]:
        """Migrate guest ``name`` to ``dest`` over TCP on 127.0.0.1; not checked."""
        args = ["migrate", *(["--live"] if live else []), *extra_args]
        args += [name, dest.uri, "--migrateuri", "tcp://127.0.0.1"]
        return self.virsh(*args, check=False, timeout=timeout)

    # -- the bridge -------------------------------------------------------------------------

    def install_bridge(self, config_overrides: Mapping[str, object] | None = None) -> None:
        """Write the bridge's config and the ``qemu`` and ``daemon`` launchers.

        libvirt notices new hook files only at start and on SIGHUP, so a running daemon
        is reloaded. A None value in ``config_overrides`` leaves that key out.
        """
        values: dict[str, object] = {
            "hooks_dirs": [self.hooks_root],
            "state_dir": self.state_dir,
            "log_file": self.log_file,
        }
        values.update(config_overrides or {})
        os.makedirs(self.hooks_root, mode=0o755, exist_ok=True)
        os.makedirs(self.state_dir, mode=0o755, exist_ok=True)
        tmp = f"{self.config_path}.tmp"
        with open(tmp, "w") as f:
            f.write(toml_text(values))
        os.replace(tmp, self.config_path)
        for driver in ("qemu", "daemon"):
            launcher.write(os.path.join(self.hooks_dir, driver), driver, self.config_path)
        if self.running():
            self.reload()

    def add_hook_script(self, event: str, name: str, text: str) -> str:
        """Write an executable (0755, root-owned) script ``<hooks_root>/<event>/<name>``."""
        for part in (event, name):
            if not part or "/" in part or part in (".", ".."):
                raise SandboxError(f"bad hook event or script name {part!r}")
        directory = os.path.join(self.hooks_root, event)
        os.makedirs(directory, mode=0o755, exist_ok=True)
        path = os.path.join(directory, name)
        with open(path, "w") as f:
            f.write(text)
        if os.geteuid() == 0:
            os.chown(path, 0, 0)
        os.chmod(path, 0o755)
        return path

    def start_listener(self, timeout: float = 30.0) -> int:
        """Run ``libvirt-bridge listen`` in the sandbox's namespaces; return its pid.

        Call :meth:`install_bridge` first: the listener reads that config, and its default
        ``libvirt_uri`` (``qemu:///system``) reaches this sandbox's daemon from inside.
        Returns once the bridge log says it connected. :meth:`close` stops it with the rest.
        """
        if self._listener is not None and self._listener.poll() is None:
            return self._listener.pid
        if not os.path.exists(self.config_path):
            raise SandboxError("no bridge config: call install_bridge() before start_listener()")
        try:
            offset = os.path.getsize(self.log_file)
        except OSError:
            offset = 0
        package_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = self._daemon_env()
        env.update(LIBVIRT_BRIDGE_CONFIG=self.config_path, PYTHONPATH=package_parent)
        output_path = os.path.join(self.bridge_dir, "listener.out")
        argv = [_binary("nsenter"), "--target", str(self.virtlogd_pid()), "--mount", "--uts"]
        argv += ["--", sys.executable, "-m", "libvirt_bridge", "listen"]
        argv += ["--pidfile", service.pidfile(self.state_dir)]
        with open(output_path, "ab") as output:
            self._listener = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                env=env,
                cwd="/",
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while True:
            try:
                with open(self.log_file, "rb") as f:
                    f.seek(offset)
                    if b"listener: connected" in f.read():
                        return self._listener.pid
            except OSError:
                pass
            if self._listener.poll() is not None or time.monotonic() > deadline:
                status = self._listener.poll()
                what = "did not connect in time" if status is None else f"exited {status}"
                raise SandboxError(
                    f"the listener {what}\n--- {output_path} ---\n{_tail(output_path)}"
                    f"\n--- {self.log_file} ---\n{_tail(self.log_file)}"
                )
            time.sleep(0.02)

    def listener_pid(self) -> int:
        """The pid of the listener started by :meth:`start_listener` (SandboxError if none)."""
        if self._listener is None or not process_alive(self._listener.pid):
            raise SandboxError(f"no listener runs in sandbox {self.name}")
        return self._listener.pid

    # -- daemon control -----------------------------------------------------------------------

    def reload(self, timeout: float = 10.0) -> None:
        """SIGHUP libvirtd; return once it has looked for hook files again.

        If a ``daemon`` hook is installed, also wait until its ``reload`` call returned.
        Gives up silently after ``timeout`` s (the wait reads libvirtd's debug log).
        """
        pid = self.libvirtd_pid()
        try:
            offset = os.path.getsize(self.libvirtd_log)
        except OSError:
            offset = 0
        daemon_scripts = self._daemon_hook_scripts()
        os.kill(pid, signal.SIGHUP)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with open(self.libvirtd_log, "rb") as f:
                    f.seek(offset)
                    text = f.read().decode("utf-8", "replace")
            except OSError:
                text = ""
            if _reload_finished(text, daemon_scripts):
                return
            time.sleep(0.02)

    def _daemon_hook_scripts(self) -> int:
        """How many scripts libvirt runs for a daemon hook call (main file + daemon.d)."""
        paths = [os.path.join(self.hooks_dir, "daemon")]
        directory = os.path.join(self.hooks_dir, "daemon.d")
        if os.path.isdir(directory):
            paths += [os.path.join(directory, name) for name in os.listdir(directory)]
        return sum(1 for p in paths if os.path.isfile(p) and os.access(p, os.X_OK))

    def stop_daemon(self, timeout: float = 30.0) -> None:
        """SIGTERM libvirtd and wait until it has exited (running guests keep running)."""
        pid = self._pid_from_file("libvirtd")
        if pid is None:
            return
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while process_alive(pid):
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                raise SandboxError(
                    f"libvirtd {pid} did not exit {timeout} s after SIGTERM; killed"
                    + self._diagnostics()
                )
            time.sleep(0.02)

    def start_daemon(self, timeout: float | None = None) -> None:
        """Start libvirtd again in the sandbox's namespaces and wait until it answers."""
        deadline = time.monotonic() + (self.start_timeout if timeout is None else timeout)
        self._seed_caps()
        result = self.run_in_namespace(
            ["/bin/sh", "-c", self._libvirtd_command()],
            check=False,
            timeout=max(1.0, deadline - time.monotonic()),
        )
        if result.returncode != 0:
            raise SandboxError(
                f"libvirtd did not start (exit {result.returncode}): {result.stderr.strip()}"
                + self._diagnostics()
            )
        self._wait_ready(deadline)

    def restart_daemon(self) -> None:
        """Stop libvirtd and start it again; guests keep running and are reconnected."""
        self.stop_daemon()
        self.start_daemon()

    # -- teardown -------------------------------------------------------------------------------

    def _destroy_guests(self, timeout: float) -> None:
        if not self.running():
            return
        deadline = time.monotonic() + timeout
        try:
            names = self.virsh("list", "--name", timeout=timeout).stdout.split()
        except SandboxError:
            return
        # In parallel: each destroy waits for its QEMU to exit (1-2 s).
        destroys = [
            subprocess.Popen(
                [_binary("virsh"), "-c", self.uri, "destroy", name],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=_client_env(),
            )
            for name in names
        ]
        try:
            for destroy in destroys:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    destroy.wait(timeout=max(0.0, deadline - time.monotonic()))
        finally:
            for destroy in destroys:
                if destroy.poll() is None:
                    destroy.kill()
                    destroy.wait()

    def close(self) -> None:
        """Tear down everything the sandbox started; idempotent.

        Running guests are destroyed (so hooks see their end) if libvirtd answers, then
        every process in the sandbox's namespaces gets SIGTERM, and SIGKILL after a grace
        period. Raises SandboxError if a process survives or a mount is left on the host.
        """
        if self._closed:
            return
        if not self._started:
            self._closed = True
            return
        interrupted: BaseException | None = None
        try:
            self._save_caps()
            self._destroy_guests(timeout=30.0)
        except KeyboardInterrupt as exc:  # still kill what runs, then let it propagate
            interrupted = exc
        except Exception:
            pass
        if self._inos is None:
            self._read_namespaces()
        if self._setup is not None and self._setup.poll() is None:
            self._setup.kill()
            self._setup.wait()
        survivors = kill_namespace(self._inos) if self._inos is not None else []
        if self._listener is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._listener.wait(timeout=_GRACE)  # reap it: it is this process's child
        if survivors:
            raise SandboxError(f"sandbox {self.name}: processes {survivors} survived SIGKILL")
        for fd in self._ns_fds:
            os.close(fd)
        self._ns_fds = []
        self._dismiss_watchdog()
        self._closed = True
        if interrupted is not None:
            raise interrupted
        leftovers = mounts_mentioning(self.root)
        if leftovers:
            raise SandboxError(f"mounts of sandbox {self.name} remain:\n" + "\n".join(leftovers))

    def _dismiss_watchdog(self) -> None:
        if self._watchdog_fd >= 0:
            with contextlib.suppress(OSError):
                os.write(self._watchdog_fd, b"q")
            os.close(self._watchdog_fd)
            self._watchdog_fd = -1
        if self._watchdog is not None:
            try:
                self._watchdog.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._watchdog.kill()
                self._watchdog.wait()
            self._watchdog = None

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Sandbox({self.root!r}, {self.name!r})"


def _client_env() -> dict[str, str]:
    """This process's environment for virsh, without variables that pick another URI."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIBVIRT_", "VIRSH_"))}
    env["LC_ALL"] = "C"
    return env


def _reload_finished(log: str, daemon_scripts: int) -> bool:
    """Whether libvirtd's log (from the SIGHUP on) shows the reload's hook work done."""
    # virHookInitialize checks the drivers in a fixed order, bhyve last.
    if "/etc/libvirt/hooks/bhyve" not in log:
        return False
    if daemon_scripts == 0:
        return True
    thread, calls, results = "", 0, 0
    for line in log.splitlines():
        match = _LOG_LINE.match(line)
        if match is None:
            continue
        tid, function, message = match.groups()
        if function == "virRunScript" and "hooks/daemon" in message and "op=reload" in message:
            thread = tid
            calls += 1
        elif tid == thread and function == "virCommandRun" and message.startswith("Result"):
            results += 1
    return calls >= daemon_scripts and results >= calls


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        os.unlink(path)
