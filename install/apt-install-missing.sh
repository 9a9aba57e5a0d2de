#!/usr/bin/env bash
# Installs, as root, those of the named Debian/Ubuntu packages that are not installed yet
# (apt-get update first, only then); options before the names go to apt-get install:
#
#   bash install/apt-install-missing.sh [--no-install-recommends] PACKAGE...
#
# Used by install/install.sh, scripts/setup.sh and scripts/setup-packaging.sh.
set -euo pipefail

options=()
while [ $# -gt 0 ] && [ "${1#-}" != "$1" ]; do
    options+=("$1")
    shift
done
missing=()
for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${options[@]}" "${missing[@]}" >/dev/null
fi
