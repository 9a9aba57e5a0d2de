#!/usr/bin/env bash
# Installs, as root, what building the Debian package and running the Ansible role need,
# all from the distribution (Debian/Ubuntu): build-essential (dpkg-buildpackage checks for
# it), debhelper, dh-python and lintian to build and check the .deb; the package's
# dependencies (python3-libvirt, python3-lxml), so that its
# tests install it without a network; ansible-core and ansible-lint (their versions are
# the distribution's), and python3-apt for Ansible's apt module. Idempotent.
# scripts/setup.sh runs it.
set -euo pipefail

packages=(build-essential debhelper dh-python lintian fakeroot python3-libvirt python3-lxml
          ansible-core ansible-lint python3-apt)
bash "$(dirname "$0")/../install/apt-install-missing.sh" --no-install-recommends \
    "${packages[@]}"
