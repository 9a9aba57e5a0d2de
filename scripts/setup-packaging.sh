#!/usr/bin/env bash
# Installs, as root, what building the Debian package and running the Ansible role need,
# all from the distribution (Debian/Ubuntu): debhelper, dh-python and lintian to build and
# check the .deb; the package's dependencies (python3-libvirt, python3-lxml), so that its
# tests install it without a network; ansible-core and ansible-lint (their versions are
# the distribution's), and python3-apt for Ansible's apt module. Idempotent.
# scripts/setup.sh runs it.
set -euo pipefail

packages=(debhelper dh-python lintian fakeroot python3-libvirt python3-lxml
          ansible-core ansible-lint python3-apt)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup-packaging: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
