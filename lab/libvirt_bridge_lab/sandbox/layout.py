"""The sandbox's directories, and the mounts that make them the daemons' own.

The sandbox root holds one directory per libvirt directory (``etc/libvirt``,
``run/libvirt``, ...), bind-mounted over the real one in the sandbox's mount namespace.
When a real one (``/run/libvirt``) does not exist on the host, there is nothing to
bind-mount over: an overlay (or a tmpfs) goes on its parent (``/run``) inside the
namespace first, so the host's directory stays unchanged. Every ``mount`` runs with
``-n``: otherwise libmount records it in the host's ``/run/mount/utab``.

In a chrooted cell (another libvirt, from a cached root: ``roots``), the daemons' ``/`` is
the *view*: an overlay whose lower layer is the cached root and whose upper layer is the
sandbox's own, so the root stays unmodified and shared while each sandbox can make mount
points in its view. Into the view go ``/dev`` (with ``/dev/kvm``, ``/dev/pts``), a ``/proc``,
``/sys`` (with the cgroup mounts), the libvirt directories as above, and the sandbox root
and the ``shared_dirs`` at their own paths: the bridge's config, state, log and hook
scripts, and files given to the daemon (``virsh save FILE``), have one path in and out.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
from collections.abc import Mapping
from urllib.parse import quote

from .cells import Cell
from .errors import SandboxError
from .host import HOST_ETC

# (path inside the sandbox root, path the daemons see), in mount order.
TARGETS = (
    ("etc/libvirt", "/etc/libvirt"),
    ("run/libvirt", "/run/libvirt"),
    ("var/lib/libvirt", "/var/lib/libvirt"),
    ("var/log/libvirt", "/var/log/libvirt"),
    ("var/cache/libvirt", "/var/cache/libvirt"),
)
# Log what a hook call does (util.hook: which script, util.command: argv, exit status,
# stdout and stderr); everything else at warning level.
LOG_FILTERS = "1:util.hook 1:util.command 3:*"
# The view of a chrooted cell: what goes into it besides the libvirt directories.
VIEW_RBINDS = ("/dev", "/sys")

_SUN_PATH_MAX = 107
_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


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
    out += ["", "# Set by libvirt_bridge_lab.sandbox"]
    out += [f"{key} = {value}" for key, value in settings.items()]
    return "\n".join(out) + "\n"


class Layout:
    """Where everything of the sandbox named ``name`` lives under ``root``.

    ``hooks_root``, ``config_path``, ``state_dir``, ``log_file`` and ``properties_dir``
    are the bridge's: its hook scripts, config, state, log and property schema files, at
    paths that are the same inside the sandbox's namespace and out of it. ``cell`` says
    which libvirt runs (see ``cells``); in a chrooted one, ``shared_dirs`` are the host
    directories its daemons also see.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        name: str,
        cell: Cell | None = None,
        shared_dirs: tuple[str, ...] = (),
    ) -> None:
        if not _NAME_RE.match(name):
            raise SandboxError(f"sandbox name {name!r} is not a valid short hostname")
        self.root = os.path.realpath(os.fspath(root))
        self.name = name
        self.cell = cell or Cell()
        self.shared_dirs = tuple(os.path.realpath(d) for d in shared_dirs)
        # The cached root the daemons are chrooted into (None: the host's libvirt).
        self.libvirt_root: str | None = None
        if self.cell.chrooted:
            from .roots import require  # not at import: python -m libvirt_bridge_lab.sandbox.roots

            self.libvirt_root = require(self.cell.libvirt)
        self.etc_dir = self._path("etc/libvirt")
        self.run_dir = self._path("run/libvirt")
        self.lib_dir = self._path("var/lib/libvirt")
        self.log_dir = self._path("var/log/libvirt")
        self.cache_dir = self._path("var/cache/libvirt")
        self.hooks_dir = os.path.join(self.etc_dir, "hooks")
        self.hooks_root = os.path.join(self.hooks_dir, "vdsm.d")
        self.bridge_dir = self._path("bridge")
        self.config_path = os.path.join(self.bridge_dir, "libvirt-bridge.toml")
        self.state_dir = os.path.join(self.bridge_dir, "state")
        self.log_file = os.path.join(self.bridge_dir, "bridge.log")
        # The drop-in files of the property schema (never the host's /etc).
        self.properties_dir = os.path.join(self.bridge_dir, "properties.d")
        # Where install writes the bridge's logrotate entry: never the host's.
        self.logrotate_dir = self._path("etc/logrotate.d")
        # The log of the daemon that runs the qemu driver (libvirtd or virtqemud).
        self.daemon_log = os.path.join(self.log_dir, f"{self.cell.main_daemon}.log")
        self.libvirtd_log = self.daemon_log
        self.socket_path = os.path.join(self.run_dir, self.cell.socket_name)
        self.uri = f"qemu+unix:///system?socket={quote(self.socket_path, safe='/')}"
        self.private_dir = self._path(".sandbox")
        # A chrooted cell's view: its daemons' /.
        self.view_dir = os.path.join(self.private_dir, "view")
        # The bridge installed as a user would, in a venv (a chrooted cell's only).
        self.venv_dir = os.path.join(self.bridge_dir, "venv")
        self.namespaces_record = os.path.join(self.private_dir, "namespaces")
        self.domains_dir = self._path("domains")

    def _path(self, relative: str) -> str:
        return os.path.join(self.root, relative)

    def check(self) -> None:
        """Refuse a root the daemons could not use, or one that holds a sandbox already."""
        if len(self.socket_path.encode()) > _SUN_PATH_MAX:
            raise SandboxError(
                f"sandbox root {self.root} is too long: the socket path {self.socket_path} "
                f"exceeds {_SUN_PATH_MAX} bytes"
            )
        if any(char in self.root for char in ",:\\\n"):
            raise SandboxError(f"sandbox root {self.root!r} must not contain , : \\ or newline")
        hidden_dirs = [target for _, target in TARGETS]
        if not self.cell.chrooted:
            hidden_dirs += overlaid_dirs()
        for hidden in hidden_dirs:
            if self.root == hidden or self.root.startswith(hidden.rstrip("/") + "/"):
                raise SandboxError(f"sandbox root {self.root} must not be under {hidden}")
        if os.path.exists(self.etc_dir):
            raise SandboxError(f"{self.root} already holds a sandbox; use a fresh directory")

    @property
    def etc_source(self) -> str:
        """The /etc/libvirt the sandbox's starts as a copy of: the host's or the root's."""
        if self.libvirt_root is None:
            return HOST_ETC
        return os.path.join(self.libvirt_root, "etc/libvirt")

    def create(self, host_uuid: str) -> None:
        """Make the directories: a copy of the host's (or root's) /etc/libvirt, the rest empty."""
        os.makedirs(self.root, exist_ok=True)
        source = self.etc_source
        shutil.copytree(
            source,
            self.etc_dir,
            symlinks=True,
            ignore=lambda d, names: ["hooks"] if d == source else [],
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
        log_outputs = f"1:file:/var/log/libvirt/{os.path.basename(self.daemon_log)}"
        self.edit_conf(
            self.cell.conf_name,
            {
                "host_uuid": json.dumps(host_uuid),
                "log_filters": json.dumps(LOG_FILTERS),
                "log_outputs": json.dumps(log_outputs),
            },
        )
        # Otherwise libvirt creates machine/qemu-<id>-<name> cgroups in the host's tree,
        # and two sandboxes (domain ids start at 1 in each) share them during a migration.
        qemu_settings = {"cgroup_controllers": "[ ]"}
        if self.libvirt_root is not None:
            # Chrooted, the private /dev libvirt makes for each QEMU lacks /dev/kvm (seen
            # with 11.3: "Could not access KVM kernel module"): QEMU sees the daemon's /dev.
            qemu_settings["namespaces"] = "[ ]"
        kvm_gid = self._foreign_kvm_gid()
        if kvm_gid is not None:
            # QEMU runs as the root's libvirt-qemu:kvm, and the root's kvm group is not the
            # host's, which owns /dev/kvm: QEMU runs with the host's group instead.
            qemu_settings["group"] = json.dumps(f"+{kvm_gid}")
        self.edit_conf("qemu.conf", qemu_settings)
        for path in (self.hooks_dir, self.run_dir, self.lib_dir, self.log_dir, self.cache_dir):
            os.makedirs(path, exist_ok=True)
            os.chmod(path, 0o755)
        for path in (self.bridge_dir, self.logrotate_dir, self.private_dir):
            os.makedirs(path, exist_ok=True)

    def _foreign_kvm_gid(self) -> int | None:
        """The gid of the host's /dev/kvm if a chrooted cell's root names another kvm gid."""
        if self.libvirt_root is None:
            return None
        try:
            host_gid = os.stat("/dev/kvm").st_gid
            with open(os.path.join(self.libvirt_root, "etc/group")) as f:
                groups = [line.split(":") for line in f]
        except (OSError, ValueError):
            return None
        root_gids = [int(g[2]) for g in groups if len(g) > 2 and g[0] == "kvm"]
        return host_gid if root_gids and root_gids[0] != host_gid else None

    def edit_conf(self, name: str, settings: Mapping[str, str]) -> None:
        """Set ``settings`` in the sandbox's ``etc/libvirt/<name>`` (made if missing)."""
        path = os.path.join(self.etc_dir, name)
        try:
            with open(path) as f:
                text = f.read()
        except FileNotFoundError:
            text = ""
        with open(path, "w") as f:
            f.write(override_conf(text, settings))

    def mount_commands(self) -> list[str]:
        """Shell commands, run in the new mount namespace, that mount the directories."""
        if self.libvirt_root is not None:
            return self._view_mount_commands(self.libvirt_root)
        q = shlex.quote
        lines = []
        for index, directory in enumerate(overlaid_dirs()):
            upper = os.path.join(self.private_dir, f"overlay{index}", "upper")
            work = os.path.join(self.private_dir, f"overlay{index}", "work")
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
        return lines

    def _view_mount_commands(self, libvirt_root: str) -> list[str]:
        """Mount the view of a chrooted cell (see the module doc) at ``view_dir``."""
        q = shlex.quote
        view = self.view_dir
        upper = os.path.join(self.private_dir, "view-upper")
        work = os.path.join(self.private_dir, "view-work")
        for path in (view, upper, work):
            os.makedirs(path, exist_ok=True)
        options = f"lowerdir={libvirt_root},upperdir={upper},workdir={work}"
        lines = [f"mount -n -t overlay overlay -o {q(options)} {q(view)}"]
        for path in VIEW_RBINDS:
            lines.append(f"mount -n --rbind {q(path)} {q(view + path)}")
        lines.append(f"mount -n -t proc proc {q(view + '/proc')}")
        # The sandbox root and the shared dirs at their own paths; outer ones first.
        visible: list[str] = []
        for path in sorted([*self.shared_dirs, self.root], key=len):
            if not any(path == v or path.startswith(v.rstrip("/") + "/") for v in visible):
                visible.append(path)
        for path in visible:
            lines.append(f"mkdir -p {q(view + path)}")
            lines.append(f"mount -n --bind {q(path)} {q(view + path)}")
        for relative, target in TARGETS:
            lines.append(f"mkdir -p {q(view + target)}")
            lines.append(f"mount -n --bind {q(self._path(relative))} {q(view + target)}")
        return lines


def overlaid_dirs() -> list[str]:
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


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        os.unlink(path)
