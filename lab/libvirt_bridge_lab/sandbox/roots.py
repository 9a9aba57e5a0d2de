"""Cached Debian roots that carry another libvirt than the host's, for the sandbox.

The host keeps its own libvirt (Debian 12: 9.0, monolithic ``libvirtd`` only). A *root* is
a Debian bookworm tree built with ``mmdebstrap`` under a cache directory, with libvirt and
QEMU from ``bookworm-backports`` in it (libvirt 11.3, QEMU 10.0), the modular daemons
Debian does not ship (``virtqemud``, ``virtnetworkd``) built from Debian's source of that
libvirt, Python 3 with ``venv``, ``pip`` and lxml, and a wheel of libvirt-python built
against that libvirt (its source is downloaded by this host's pip, whose configuration
reaches PyPI here, and built offline in the root). A sandbox runs the root's daemons
chrooted into a private overlay of it (``layout``), so one cached root serves every
sandbox and is never written to.

Building is idempotent and atomic: the tree is built in a temp directory beside its final
place, checked (the daemons say the expected version), marked with the recipe it was built
from, then renamed into place; a build that was interrupted leaves only a temp directory,
which the next build removes. A root's directory name holds its recipe's digest: a new
recipe's root is built beside the old one, never over it, since running sandboxes use the
old one as their overlay's lower layer; ``prune`` removes old roots no mount names. A file
lock serialises concurrent builds of one root.

``python -m libvirt_bridge_lab.sandbox.roots build 11.3`` builds (or finds) it and prints its
path; ``path 11.3`` prints where it is, and exits 1 if it is not built; ``prune 11.3``
removes the roots of older recipes that no sandbox uses.
The cache directory is ``$LIBVIRT_BRIDGE_ROOTS`` if set, else ``/var/cache/libvirt-bridge/roots``.
"""

from __future__ import annotations

import argparse
import fcntl
import glob
import hashlib
import json
import os
import pwd
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass

from .errors import SandboxError

CACHE_ENV = "LIBVIRT_BRIDGE_ROOTS"
DEFAULT_CACHE = "/var/cache/libvirt-bridge/roots"
MIRROR_ENV = "LIBVIRT_BRIDGE_DEBIAN_MIRROR"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
# The file in a finished root that says which recipe built it.
MARK = ".libvirt-bridge-root"
# Where a root keeps the wheels a venv in it installs from (libvirt-python).
WHEELHOUSE = "/usr/local/share/libvirt-bridge/wheels"


# What the build of virtqemud turns off: the other drivers, storage backends and features.
_MESON_DISABLED = (
    "driver_lxc",
    "driver_libxl",
    "driver_vbox",
    "driver_ch",
    "driver_esx",
    "driver_hyperv",
    "driver_openvz",
    "driver_vmware",
    "driver_vz",
    "driver_bhyve",
    "driver_test",
    "driver_secrets",
    "driver_interface",
    "storage_dir",
    "storage_fs",
    "storage_disk",
    "storage_lvm",
    "storage_iscsi",
    "storage_mpath",
    "storage_scsi",
    "storage_rbd",
    "storage_gluster",
    "storage_zfs",
    "storage_vstorage",
    "storage_iscsi_direct",
    "apparmor",
    "sanlock",
    "wireshark_dissector",
    "sasl",
    "polkit",
    "firewalld",
    "libssh",
    "libssh2",
    "curl",
    "readline",
    "bash_completion",
    "libiscsi",
    "glusterfs",
    "fuse",
    "nbdkit",
)


@dataclass(frozen=True)
class Recipe:
    """What goes into the root of one libvirt version."""

    version: str  # the libvirt version, as cells name it ("11.3")
    suite: str  # the Debian suite of the base
    backports: str  # the suite libvirt and QEMU come from
    # From ``backports`` (apt-get -t): libvirt's daemons, both kinds, its client, QEMU.
    backported: tuple[str, ...]
    # From the base suite: Python for the bridge, and what builds libvirt-python.
    packages: tuple[str, ...]
    libvirt_python: str  # the libvirt-python release built into the wheelhouse
    # The modular daemons, which Debian does not ship, built from Debian's source of the
    # same libvirt: the archive (a path in the Debian mirror) and its sha256, ...
    source: str
    source_sha256: str
    # ... what builds it (installed in a throwaway overlay of the root, never in the root),
    build_deps: tuple[str, ...]
    # ... the modular daemons built (virtnetworkd too: a modular daemon that is not qemu's),
    daemons: tuple[str, ...]
    # ... and meson's options: the daemons' drivers only, no docs, no tests.
    meson_options: tuple[str, ...]

    def digest(self) -> str:
        text = json.dumps(self.__dict__, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


RECIPES = {
    "11.3": Recipe(
        version="11.3",
        suite="bookworm",
        backports="bookworm-backports",
        backported=(
            "libvirt-daemon",  # libvirtd (Debian ships no modular daemons, not even in 11.3)
            "libvirt-daemon-driver-qemu",  # the qemu driver
            "libvirt-daemon-driver-network",  # the network driver, for virtnetworkd
            "libvirt-daemon-log",  # virtlogd
            "libvirt-clients",  # virsh, for scripts run in the root
            "libvirt-dev",  # to build libvirt-python
            "qemu-system-x86",
        ),
        packages=(
            "ca-certificates",  # pip reaches PyPI over https
            "python3",
            "python3-venv",
            "python3-pip",
            "python3-lxml",
            "python3-dev",
            "python3-setuptools",
            "python3-wheel",
            "gcc",
            "pkg-config",
        ),
        libvirt_python="11.3.0",
        source="pool/main/libv/libvirt/libvirt_11.3.0.orig.tar.xz",
        source_sha256="6bcb0c42c4580436fea262ced56f68a6afe20f7390b1bea2116718cc034a0283",
        build_deps=(
            "meson",
            "ninja-build",
            "gcc",
            "pkg-config",
            "xz-utils",
            "xsltproc",
            "libxml2-utils",
            "libxml2-dev",
            "libglib2.0-dev",
            "libgnutls28-dev",
            "libtirpc-dev",
            "libjson-c-dev",
        ),
        daemons=("virtqemud", "virtnetworkd"),
        meson_options=(
            # Debian's paths: the daemon finds Debian's driver modules and config.
            "--prefix=/usr",
            "--sysconfdir=/etc",
            "--localstatedir=/var",
            "--libdir=lib/x86_64-linux-gnu",
            "-Drunstatedir=/run",
            "-Ddocs=disabled",
            "-Dtests=disabled",
            "-Dnls=disabled",
            "-Ddriver_qemu=enabled",
            "-Ddriver_remote=enabled",
            "-Ddriver_libvirtd=enabled",
            "-Ddriver_network=enabled",
            *(f"-D{option}=disabled" for option in _MESON_DISABLED),
        ),
    ),
}


def cache_dir() -> str:
    return os.environ.get(CACHE_ENV) or DEFAULT_CACHE


def recipe(version: str) -> Recipe:
    try:
        return RECIPES[version]
    except KeyError:
        known = ", ".join(sorted(RECIPES))
        raise SandboxError(f"no root recipe for libvirt {version!r} (known: {known})") from None


def root_path(version: str, directory: str | None = None) -> str:
    """Where the root of libvirt ``version`` is (or would be) in the cache.

    The name holds the recipe's digest: a root of a new recipe is built beside the old one,
    which the sandboxes that run on it (its overlay's lower layer) keep using; ``prune``
    removes it once none does.
    """
    return os.path.join(directory or cache_dir(), f"libvirt-{version}-{recipe(version).digest()}")


def is_built(path: str, wanted: Recipe) -> bool:
    """Whether ``path`` is a finished root of ``wanted``."""
    try:
        with open(os.path.join(path, MARK)) as f:
            return bool(json.load(f).get("digest") == wanted.digest())
    except (OSError, ValueError, AttributeError):
        return False


def find(version: str, directory: str | None = None) -> str | None:
    """The finished root of libvirt ``version``, or None when it is not built."""
    path = root_path(version, directory)
    return path if is_built(path, recipe(version)) else None


def require(version: str, directory: str | None = None) -> str:
    """The finished root of libvirt ``version``; SandboxError saying how to build it."""
    path = find(version, directory)
    if path is None:
        raise SandboxError(
            f"the libvirt {version} root is not built at {root_path(version, directory)}: "
            f"run `python -m libvirt_bridge_lab.sandbox.roots build {version}` (as root)"
        )
    return path


def debian_mirror() -> str:
    """The Debian archive this machine's apt uses (``$LIBVIRT_BRIDGE_DEBIAN_MIRROR`` first)."""
    override = os.environ.get(MIRROR_ENV)
    if override:
        return override.rstrip("/")
    texts = []
    for path in ["/etc/apt/sources.list", *sorted(glob.glob("/etc/apt/sources.list.d/*"))]:
        if path.endswith((".list", ".sources")):
            try:
                with open(path) as f:
                    texts.append(f.read())
            except OSError:
                pass
    for text in texts:
        # one-line style: deb [opts] URI SUITE ...; deb822 style: URIs: URI
        for match in re.finditer(
            r"^\s*(?:deb(?:\s+\[[^\]]*\])?\s+|URIs:\s*)(\S+)", text, re.MULTILINE
        ):
            uri = match.group(1).rstrip("/")
            if uri.endswith("/debian"):
                return uri
    return DEFAULT_MIRROR


def sources_list(wanted: Recipe, mirror: str) -> str:
    security = mirror[: -len("/debian")] + "/debian-security"
    return "".join(
        [
            f"deb {mirror} {wanted.suite} main\n",
            f"deb {mirror} {wanted.suite}-updates main\n",
            f"deb {security} {wanted.suite}-security main\n",
            f"deb {mirror} {wanted.backports} main\n",
        ]
    )


def _customize_hooks(wanted: Recipe, sdist: str, source: str, work: str) -> list[str]:
    """The commands mmdebstrap runs in the finished tree (``$1``), in order.

    ``sdist``: libvirt-python's source archive, on the host; ``source``: libvirt's;
    ``work``: an empty directory for the build of the modular daemons (``_daemons_hook``).
    """
    q = shlex.quote
    env = "env DEBIAN_FRONTEND=noninteractive"
    backported = " ".join(wanted.backported)
    inside = f"/tmp/{os.path.basename(sdist)}"
    wheel = (
        f"pip wheel -q --no-deps --no-index --no-build-isolation --no-cache-dir "
        f"-w {WHEELHOUSE} {q(inside)}"
    )
    return [
        f'chroot "$1" {env} apt-get install -y -q --no-install-recommends '
        f"-t {wanted.backports} {backported}",
        f'cp {q(sdist)} "$1"{q(inside)}',
        f'chroot "$1" {env} sh -c {q(f"mkdir -p {WHEELHOUSE} && {wheel}")}',
        _daemons_hook(wanted, source, work),
        # What the build leaves that a sandbox never needs.
        f'rm -rf "$1"{q(inside)} "$1"/var/cache/apt/archives/*.deb',
    ]


def _daemons_hook(wanted: Recipe, source: str, work: str) -> str:
    """The hook that builds the modular daemons from ``source`` and installs them in ``$1``.

    Built in a throwaway overlay of the tree (upper layer under ``work``), in a private
    mount namespace: the build dependencies and the build tree never reach the root; only
    ``/usr/sbin/<daemon>`` and ``/etc/libvirt/<daemon>.conf`` do. Of libvirt's tree only
    the daemons' own objects and the admin driver they embed are compiled (ninja's object
    targets, about 30 commands of 320); they are linked against the root's libvirt
    libraries (Debian's, of the same version, whose private symbols they use) instead of
    libvirt's in-tree ones, and they load Debian's driver modules.
    """
    q = shlex.quote
    lib = "/usr/lib/x86_64-linux-gnu"
    libs = " ".join(f"{lib}/{name}.so.0" for name in ("libvirt", "libvirt-qemu", "libvirt-lxc"))
    link = (
        "cc -o src/$d -pie -Wl,--as-needed -Wl,--no-undefined -Wl,-z,relro -Wl,-z,now "
        f"-Wl,-export-dynamic $objs src/admin/libvirt_admin_driver.a {libs} "
        "$(pkg-config --libs glib-2.0 gobject-2.0 gio-2.0 gnutls libxml-2.0 libtirpc)"
    )
    inside = "\n".join(
        [
            "set -e",
            "apt-get install -y -q --no-install-recommends "
            f"-t {wanted.backports} {' '.join(wanted.build_deps)}",
            "mkdir /tmp/libvirt-src",
            f"tar xJf /tmp/{q(os.path.basename(source))} -C /tmp/libvirt-src --strip-components=1",
            "cd /tmp/libvirt-src",
            f"meson setup build {' '.join(q(o) for o in wanted.meson_options)}",
            "cd build",
            f"for d in {' '.join(wanted.daemons)}; do",
            '  objs=$(sed -n "s|^build \\(src/$d\\.p/[^:]*\\.o\\): .*|\\1|p" build.ninja)',
            '  test -n "$objs"',
            "  ninja src/admin/libvirt_admin_driver.a $objs",
            f"  {link}",
            "done",
        ]
    )
    install = [
        f'install -m 0755 "$build/src/{d}" "$root/usr/sbin/{d}"\n'
        f'install -m 0644 "$build/src/{d}.conf" "$root/etc/libvirt/{d}.conf"'
        for d in wanted.daemons
    ]
    script = "\n".join(
        [
            "set -e",
            "root=$1 scratch=$2 merged=$2/merged build=$2/merged/tmp/libvirt-src/build",
            'mkdir -p "$scratch/upper" "$scratch/overlay-work" "$merged"',
            "mount -n -t overlay overlay "
            '-o "lowerdir=$root,upperdir=$scratch/upper,workdir=$scratch/overlay-work" "$merged"',
            'mount -n --rbind /dev "$merged/dev"',
            'mount -n -t proc proc "$merged/proc"',
            f'cp {q(source)} "$merged/tmp/"',
            f'chroot "$merged" env DEBIAN_FRONTEND=noninteractive sh -c {q(inside)}',
            *install,
        ]
    )
    return f'unshare --mount --propagation private sh -c {q(script)} sh "$1" {q(work)}'


def _download_source(wanted: Recipe, mirror: str, directory: str) -> str:
    """libvirt's source archive from the Debian mirror, into ``directory``; checked."""
    url = f"{mirror}/{wanted.source}"
    path = os.path.join(directory, os.path.basename(wanted.source))
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=120) as response, open(path, "wb") as f:
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                f.write(chunk)
    except OSError as exc:
        raise SandboxError(f"could not download {url}: {exc}") from None
    if digest.hexdigest() != wanted.source_sha256:
        raise SandboxError(
            f"{url} has sha256 {digest.hexdigest()}, not the recipe's {wanted.source_sha256}"
        )
    return path


def _download_sdist(wanted: Recipe, directory: str) -> str:
    """libvirt-python's source archive, downloaded into ``directory`` by this host's pip."""
    argv = [sys.executable, "-m", "pip", "download", "-q", "--no-deps"]
    argv += ["--no-binary", ":all:", "-d", directory, f"libvirt-python=={wanted.libvirt_python}"]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    found = [n for n in os.listdir(directory) if n.startswith("libvirt")]
    if result.returncode != 0 or len(found) != 1:
        raise SandboxError(
            f"pip could not download libvirt-python {wanted.libvirt_python} "
            f"(exit {result.returncode}): {result.stderr.strip()}"
        )
    return os.path.join(directory, found[0])


def _check(path: str, wanted: Recipe) -> dict[str, str]:
    """The versions the built tree's daemons report; SandboxError unless ``wanted``'s."""
    versions: dict[str, str] = {}
    for daemon in ("libvirtd", "virtlogd", *wanted.daemons):
        result = subprocess.run(
            ["chroot", path, f"/usr/sbin/{daemon}", "--version"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        version = result.stdout.split()[-1] if result.stdout.split() else ""
        if result.returncode != 0 or not version.startswith(wanted.version + "."):
            raise SandboxError(
                f"{daemon} in the new root says {result.stdout.strip()!r} "
                f"{result.stderr.strip()!r}, not libvirt {wanted.version}"
            )
        versions[daemon] = version
    qemu = subprocess.run(
        ["chroot", path, "/usr/bin/qemu-system-x86_64", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    versions["qemu"] = qemu.stdout.splitlines()[0] if qemu.stdout else ""
    wheels = glob.glob(os.path.join(path + WHEELHOUSE, "libvirt_python-*.whl"))
    if not wheels:
        raise SandboxError(f"no libvirt-python wheel in {path}{WHEELHOUSE}")
    versions["libvirt-python"] = os.path.basename(wheels[0])
    return versions


def build(
    version: str,
    directory: str | None = None,
    *,
    mirror: str | None = None,
    log: str | None = None,
) -> str:
    """Build the root of libvirt ``version`` unless it is there; return its path.

    ``log``: a file for mmdebstrap's output (default: a temp file, shown on failure).
    """
    wanted = recipe(version)
    path = root_path(version, directory)
    if is_built(path, wanted):
        return path
    if os.geteuid() != 0:
        raise SandboxError("building a root needs root (mmdebstrap, chroot)")
    if shutil.which("mmdebstrap") is None:
        raise SandboxError("mmdebstrap not found: apt-get install mmdebstrap")
    parent = os.path.dirname(path)
    os.makedirs(parent, mode=0o755, exist_ok=True)
    with open(os.path.join(parent, f".libvirt-{version}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if is_built(path, wanted):  # another process built it meanwhile
            return path
        _remove_leftovers(parent, version)
        tmp = tempfile.mkdtemp(prefix=f".libvirt-{version}.building.", dir=parent)
        os.chmod(tmp, 0o755)
        try:
            started = time.monotonic()
            mirror = mirror or debian_mirror()
            sdist_dir = tmp + ".sdist"
            work = tmp + ".daemons"
            os.makedirs(sdist_dir)
            os.makedirs(work)
            try:
                sdist = _download_sdist(wanted, sdist_dir)
                source = _download_source(wanted, mirror, sdist_dir)
                _mmdebstrap(wanted, tmp, mirror, sdist, source, work, log)
            finally:
                shutil.rmtree(sdist_dir, ignore_errors=True)
                shutil.rmtree(work, ignore_errors=True)
            versions = _check(tmp, wanted)
            mark = {
                "digest": wanted.digest(),
                "recipe": wanted.__dict__,
                "versions": versions,
                "built": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "seconds": round(time.monotonic() - started, 1),
            }
            with open(os.path.join(tmp, MARK), "w") as f:
                json.dump(mark, f, indent=1)
            if os.path.lexists(path):  # a root of another recipe: replaced
                old = tempfile.mkdtemp(prefix=f".libvirt-{version}.old.", dir=parent)
                os.rename(path, os.path.join(old, "root"))
            os.rename(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _remove_leftovers(parent, version)
    return path


def in_use(path: str) -> bool:
    """Whether a mount in any process's namespace names ``path`` (a sandbox's view on it)."""
    needle = path.rstrip("/")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/mountinfo") as f:
                text = f.read()
        except OSError:
            continue
        if re.search(re.escape(needle) + r"(?=[/,\s]|$)", text, re.MULTILINE):
            return True
    return False


def prune(version: str, directory: str | None = None) -> tuple[list[str], list[str]]:
    """Remove the roots of ``version`` built from other recipes that no sandbox uses.

    Returns (removed, kept because in use). A root in use is a running sandbox's lower
    layer: removing its files would break that sandbox, so it stays for a later prune.
    """
    current = root_path(version, directory)
    parent = os.path.dirname(current)
    removed: list[str] = []
    kept: list[str] = []
    if not os.path.isdir(parent):
        return removed, kept
    with open(os.path.join(parent, f".libvirt-{version}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for name in sorted(os.listdir(parent)):
            path = os.path.join(parent, name)
            old_name = name == f"libvirt-{version}" or name.startswith(f"libvirt-{version}-")
            if not old_name or path == current or not os.path.isdir(path):
                continue
            if in_use(path):
                kept.append(path)
                continue
            old = tempfile.mkdtemp(prefix=f".libvirt-{version}.old.", dir=parent)
            os.rename(path, os.path.join(old, "root"))
            shutil.rmtree(old, ignore_errors=True)
            removed.append(path)
    return removed, kept


def _remove_leftovers(parent: str, version: str) -> None:
    """Remove what interrupted or replaced builds of ``version`` left in ``parent``."""
    for leftover in glob.glob(os.path.join(parent, f".libvirt-{version}.*.*")):
        if os.path.isdir(leftover) and not os.path.ismount(leftover):
            shutil.rmtree(leftover, ignore_errors=True)


def _mmdebstrap(
    wanted: Recipe, target: str, mirror: str, sdist: str, source: str, work: str, log: str | None
) -> None:
    argv = ["mmdebstrap", "--mode=root", "--variant=apt", "--format=directory"]
    argv += [f"--include={','.join(wanted.packages)}"]
    argv += [f"--customize-hook={hook}" for hook in _customize_hooks(wanted, sdist, source, work)]
    argv += [wanted.suite, target, "-"]
    # Beside the build in the cache dir (removed with its leftovers), not in /tmp.
    with tempfile.NamedTemporaryFile("w+", suffix=".log", dir=work) as tmp:
        out = open(log, "a") if log else tmp  # noqa: SIM115
        try:
            result = subprocess.run(
                argv,
                input=sources_list(wanted, mirror),
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
                env={
                    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "HOME": pwd.getpwuid(0).pw_dir,
                    "LC_ALL": "C.UTF-8",
                },
                cwd="/",
                check=False,
            )
        finally:
            if log:
                out.close()
        if result.returncode != 0:
            with open(log or tmp.name) as f:
                text = f.read()[-6000:]
            raise SandboxError(f"mmdebstrap failed (exit {result.returncode}):\n{text}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m libvirt_bridge_lab.sandbox.roots",
        description="Build or find the cached Debian roots that carry another libvirt.",
    )
    parser.add_argument("--cache-dir", help=f"default: ${CACHE_ENV} or {DEFAULT_CACHE}")
    sub = parser.add_subparsers(dest="command", required=True)
    build_parser = sub.add_parser("build", help="build the root unless it is there; print it")
    build_parser.add_argument("version", choices=sorted(RECIPES))
    build_parser.add_argument("--mirror", help="the Debian archive (default: this host's)")
    build_parser.add_argument("--log", help="append mmdebstrap's output to this file")
    path_parser = sub.add_parser("path", help="print the root's path; exit 1 if not built")
    path_parser.add_argument("version", choices=sorted(RECIPES))
    prune_parser = sub.add_parser(
        "prune", help="remove the roots of older recipes that no running sandbox uses"
    )
    prune_parser.add_argument("version", choices=sorted(RECIPES))
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            started = time.monotonic()
            path = build(args.version, args.cache_dir, mirror=args.mirror, log=args.log)
            seconds = time.monotonic() - started
            print(f"{path} ({seconds:.1f} s)", file=sys.stderr)
            print(path)
            return 0
        if args.command == "prune":
            removed, kept = prune(args.version, args.cache_dir)
            for path in removed:
                print(f"removed {path}")
            for path in kept:
                print(f"kept {path}: a sandbox uses it")
            return 0
        found = find(args.version, args.cache_dir)
        if found is None:
            print(f"not built: {root_path(args.version, args.cache_dir)}", file=sys.stderr)
            return 1
        print(found)
        return 0
    except SandboxError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
