"""Cached Debian roots that carry another libvirt than the host's, for the sandbox.

The host keeps its own libvirt (Debian 12: 9.0, monolithic ``libvirtd`` only). A *root* is
a Debian bookworm tree built with ``mmdebstrap`` under a cache directory, with libvirt and
QEMU from ``bookworm-backports`` in it (libvirt 11.3 with its modular daemons, QEMU 10.0),
Python 3 with ``venv``, ``pip`` and lxml, and a wheel of libvirt-python built against
that libvirt (its source is downloaded by this host's pip, whose configuration reaches
PyPI here, and built offline in the root). A sandbox runs the root's daemons chrooted into
a private overlay of it (``layout``), so one cached root serves every sandbox and is never
written to.

Building is idempotent and atomic: the tree is built in a temp directory beside its final
place, checked (the daemons say the expected version), marked with the recipe it was built
from, then renamed into place; a build that was interrupted leaves only a temp directory,
which the next build removes. A root whose mark is missing or names another recipe is
rebuilt. A file lock serialises concurrent builds of one root.

``python -m libvirt_bridge.sandbox.roots build 11.3`` builds (or finds) it and prints its
path; ``path 11.3`` prints where it is, and exits 1 if it is not built.
The cache directory is ``$LIBVIRT_BRIDGE_ROOTS`` if set, else ``/var/cache/libvirt-bridge/roots``.
"""

from __future__ import annotations

import argparse
import fcntl
import glob
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
    """Where the root of libvirt ``version`` is (or would be) in the cache."""
    recipe(version)
    return os.path.join(directory or cache_dir(), f"libvirt-{version}")


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
            f"run `python -m libvirt_bridge.sandbox.roots build {version}` (as root)"
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


def _customize_hooks(wanted: Recipe, sdist: str) -> list[str]:
    """The commands mmdebstrap runs in the finished tree (``$1``), in order.

    ``sdist``: libvirt-python's source archive, on the host.
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
        # What the build leaves that a sandbox never needs.
        f'rm -rf "$1"{q(inside)} "$1"/var/cache/apt/archives/*.deb "$1"/root/.cache',
    ]


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
    for daemon in ("libvirtd", "virtlogd"):
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
            sdist_dir = os.path.join(tmp + ".sdist")
            os.makedirs(sdist_dir)
            try:
                sdist = _download_sdist(wanted, sdist_dir)
                _mmdebstrap(wanted, tmp, mirror or debian_mirror(), sdist, log)
            finally:
                shutil.rmtree(sdist_dir, ignore_errors=True)
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


def _remove_leftovers(parent: str, version: str) -> None:
    """Remove what interrupted or replaced builds of ``version`` left in ``parent``."""
    for leftover in glob.glob(os.path.join(parent, f".libvirt-{version}.*.*")):
        if os.path.isdir(leftover) and not os.path.ismount(leftover):
            shutil.rmtree(leftover, ignore_errors=True)


def _mmdebstrap(wanted: Recipe, target: str, mirror: str, sdist: str, log: str | None) -> None:
    argv = ["mmdebstrap", "--mode=root", "--variant=apt", "--format=directory"]
    argv += [f"--include={','.join(wanted.packages)}"]
    argv += [f"--customize-hook={hook}" for hook in _customize_hooks(wanted, sdist)]
    argv += [wanted.suite, target, "-"]
    with tempfile.NamedTemporaryFile("w+", prefix="libvirt-bridge-root.", suffix=".log") as tmp:
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
                    "HOME": "/root",
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
        prog="python -m libvirt_bridge.sandbox.roots",
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
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            started = time.monotonic()
            path = build(args.version, args.cache_dir, mirror=args.mirror, log=args.log)
            seconds = time.monotonic() - started
            print(f"{path} ({seconds:.1f} s)", file=sys.stderr)
            print(path)
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
