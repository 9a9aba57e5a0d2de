"""The sandbox's directories, and the mounts that make them the daemons' own.

The sandbox root holds one directory per libvirt directory (``etc/libvirt``,
``run/libvirt``, ...), bind-mounted over the real one in the sandbox's mount namespace.
When a real one (``/run/libvirt``) does not exist on the host, there is nothing to
bind-mount over: an overlay (or a tmpfs) goes on its parent (``/run``) inside the
namespace first, so the host's directory stays unchanged. Every ``mount`` runs with
``-n``: otherwise libmount records it in the host's ``/run/mount/utab``.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
from collections.abc import Mapping
from urllib.parse import quote

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
LOG_OUTPUTS = "1:file:/var/log/libvirt/libvirtd.log"

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
    out += ["", "# Set by libvirt_bridge.sandbox"]
    out += [f"{key} = {value}" for key, value in settings.items()]
    return "\n".join(out) + "\n"


class Layout:
    """Where everything of the sandbox named ``name`` lives under ``root``.

    ``hooks_root``, ``config_path``, ``state_dir`` and ``log_file`` are the bridge's: its
    hook scripts, config, state and log, at paths that are the same inside the sandbox's
    namespace and out of it.
    """

    def __init__(self, root: str | os.PathLike[str], name: str) -> None:
        if not _NAME_RE.match(name):
            raise SandboxError(f"sandbox name {name!r} is not a valid short hostname")
        self.root = os.path.realpath(os.fspath(root))
        self.name = name
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
        # Where install writes the bridge's logrotate entry: never the host's.
        self.logrotate_dir = self._path("etc/logrotate.d")
        self.libvirtd_log = os.path.join(self.log_dir, "libvirtd.log")
        self.socket_path = os.path.join(self.run_dir, "libvirt-sock")
        self.uri = f"qemu+unix:///system?socket={quote(self.socket_path, safe='/')}"
        self.private_dir = self._path(".sandbox")
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
        for hidden in [target for _, target in TARGETS] + overlaid_dirs():
            if self.root == hidden or self.root.startswith(hidden.rstrip("/") + "/"):
                raise SandboxError(f"sandbox root {self.root} must not be under {hidden}")
        if os.path.exists(self.etc_dir):
            raise SandboxError(f"{self.root} already holds a sandbox; use a fresh directory")

    def create(self, host_uuid: str) -> None:
        """Make the directories: a copy of the host's /etc/libvirt, the rest empty."""
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
                "host_uuid": json.dumps(host_uuid),
                "log_filters": json.dumps(LOG_FILTERS),
                "log_outputs": json.dumps(LOG_OUTPUTS),
            },
        )
        # Otherwise libvirt creates machine/qemu-<id>-<name> cgroups in the host's tree,
        # and two sandboxes (domain ids start at 1 in each) share them during a migration.
        self._edit_conf("qemu.conf", {"cgroup_controllers": "[ ]"})
        for path in (self.hooks_dir, self.run_dir, self.lib_dir, self.log_dir, self.cache_dir):
            os.makedirs(path, exist_ok=True)
            os.chmod(path, 0o755)
        for path in (self.bridge_dir, self.logrotate_dir, self.private_dir):
            os.makedirs(path, exist_ok=True)

    def _edit_conf(self, name: str, settings: Mapping[str, str]) -> None:
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
