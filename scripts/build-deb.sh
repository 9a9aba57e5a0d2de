#!/usr/bin/env bash
# Builds the Debian package from this checkout, with Debian's own tooling (debhelper,
# dh-python), and puts it in OUTDIR (default: dist/):
#
#   bash scripts/build-deb.sh [OUTDIR]      # -> OUTDIR/libvirt-bridge_<version>_all.deb
#
# With DEB_VERSION set, the package gets that version instead of debian/changelog's (a
# changelog entry is added to the build's copy): the real-host tests build a newer one to
# upgrade to.
#
# The build runs on a copy of the files git knows (tracked, and new ones not ignored), so
# the checkout gets no build products. Its build dependencies: scripts/setup-packaging.sh.
# Prints the path of the .deb last.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$(realpath -m "${1:-$repo/dist}")"
work="$(mktemp -d /var/tmp/libvirt-bridge-deb.XXXXXX)"
trap 'rm -rf "$work"' EXIT

mkdir -p "$work/src" "$out"
(cd "$repo" && git ls-files -z --cached --others --exclude-standard |
    while IFS= read -r -d '' f; do [ -e "$f" ] || [ -L "$f" ] && printf '%s\0' "$f"; done |
    tar --null -T - -cf -) | tar -xf - -C "$work/src"
if [ -n "${DEB_VERSION:-}" ]; then
    changelog="$work/src/debian/changelog"
    maintainer="$(sed -n 's/^ -- \(.*>\)  .*/\1/p' "$changelog" | head -1)"
    { printf 'libvirt-bridge (%s) unstable; urgency=medium\n\n  * Built with DEB_VERSION.\n\n' \
          "$DEB_VERSION"
      printf ' -- %s  %s\n\n' "$maintainer" "$(date -R)"
      cat "$changelog"; } > "$changelog.new"
    mv "$changelog.new" "$changelog"
fi
(cd "$work/src" && dpkg-buildpackage -b -us -uc --no-pre-clean >"$work/build.log" 2>&1) || {
    tail -40 "$work/build.log" >&2
    echo "build-deb: dpkg-buildpackage failed" >&2
    exit 1
}
deb="$(ls "$work"/libvirt-bridge_*_all.deb)"
cp "$deb" "$out/"
echo "$out/$(basename "$deb")"
