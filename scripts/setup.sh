#!/usr/bin/env bash
# Installs what libvirt-bridge needs to run, test and demo on Debian/Ubuntu, as root:
# libvirt 9+ and QEMU from the distribution, Cockpit and chromium (for the tests of the
# Cockpit page), the tools that build and check the Debian package and run the Ansible
# role (scripts/setup-packaging.sh), then a venv in .venv with this package and its bench
# (lab/: the sandbox, the demo and the lab; both editable) and its test tools, then the cached root with libvirt 11.3 for the tests
# (docs/libvirt-versions.md). Idempotent; starts no service of its own (on a host booted
# with systemd, Debian's cockpit-ws package enables its socket on port 9090).
set -euo pipefail
cd "$(dirname "$0")/.."

# cockpit-*, chromium: the browser tests of Cockpit's Hooks page (tests/cockpit) run
# cockpit-ws and its shell from /usr/share/cockpit, in headless chromium.
packages=(libvirt-daemon-system qemu-system-x86 libvirt-clients libvirt-dev pkg-config
          python3-venv python3-dev gcc util-linux logrotate mmdebstrap systemd-container
          cockpit-ws cockpit-bridge cockpit-system chromium chromium-driver)
bash install/apt-install-missing.sh "${packages[@]}"

bash scripts/setup-packaging.sh

# Debian's interpreter: libvirt-python is built against the distribution's libvirt.
if [ ! -x .venv/bin/python ]; then
    /usr/bin/python3 -m venv .venv
fi
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e '.[test]' -e ./lab
# The cached Debian root with libvirt 11.3 (and the modular daemons built from its source)
# that the 11.3 test cells chroot into (beside the system's libvirt, never over it); about
# 3 minutes the first time, instant once built.
.venv/bin/python -m libvirt_bridge_lab.sandbox.roots build 11.3 >/dev/null
# The cached Debian 12 and 13 hosts the real-host suite boots with systemd as PID 1
# (systemd-nspawn, from systemd-container); about 45 s the first time, instant once built.
PYTHONPATH=. .venv/bin/python -m testing.systemd_host build debian12 debian13 >/dev/null
echo "setup: done; the bridge is .venv/bin/libvirt-bridge"
