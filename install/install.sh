#!/usr/bin/env bash
# Sets up libvirt-bridge from this checkout on a Debian or Ubuntu host, as root, in one
# command. The Debian package (scripts/build-deb.sh) is the usual way on these hosts; this
# script serves a checkout the package does not have yet (a branch under test). It uses
# apt-get, so it runs on Debian and Ubuntu only (docs/operators.md#install has its steps
# for other distributions):
#
#   sudo bash install/install.sh [libvirt-bridge install options, e.g. --dry-run]
#
# Installs libvirt, QEMU and the build tools from the distribution, this repository (the
# directory above this script) into a venv at /opt/libvirt-bridge, then runs
# "libvirt-bridge install" with the given options. Running it again updates the package
# and the launchers; an existing config is never changed.
set -euo pipefail

venv=/opt/libvirt-bridge
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
packages=(libvirt-daemon-system qemu-system-x86 libvirt-clients libvirt-dev pkg-config
          python3-venv python3-dev gcc)

die() {
    echo "install.sh: $*" >&2
    exit 1
}

[ "$(id -u)" -eq 0 ] || die "run it as root (sudo bash $0)"
command -v apt-get >/dev/null || die "this script is for Debian and Ubuntu (no apt-get here)"
[ -f "$repo/pyproject.toml" ] || die "$repo is not the libvirt-bridge repository"

bash "$repo/install/apt-install-missing.sh" "${packages[@]}"

# The distribution's interpreter: libvirt-python is built against the distribution's libvirt.
/usr/bin/python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
    die "libvirt-bridge needs Python >= 3.11; this host has $(/usr/bin/python3 -V 2>&1)"
if [ ! -x "$venv/bin/python" ]; then
    echo "install.sh: creating the venv $venv"
    /usr/bin/python3 -m venv "$venv"
fi
"$venv/bin/pip" install -q --upgrade pip
# Not editable: the launchers must not depend on this checkout staying where it is. pip
# reinstalls a local directory every time, so a new checkout replaces the old one.
"$venv/bin/pip" install -q "$repo"
echo "install.sh: installed $("$venv/bin/libvirt-bridge" --version) in $venv"

exec "$venv/bin/libvirt-bridge" install "$@"
