#!/usr/bin/env bash
# dist/desktop-proxy-<version>-linux-<arch>.AppImage from dist/desktop-proxy.
#
# Needs appimagetool (https://github.com/AppImage/appimagetool), on PATH or named by
# $APPIMAGETOOL. Without it this says so and exits 0 (the tarball from make_tarball.sh needs no
# tools); REQUIRE_APPIMAGE=1 makes that an error, for CI. linuxdeploy is deliberately not used:
# PyInstaller already collected the libraries, and linuxdeploy would copy in the host libraries
# build.spec leaves out (wayland, glib, fontconfig, ...). Build on the oldest distro you support
# (ubuntu-22.04 in CI): the bundle carries the build machine's glibc baseline.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

if [ -z "${APPIMAGETOOL:-}" ]; then
    APPIMAGETOOL="$(command -v appimagetool || command -v "appimagetool-$ARCH.AppImage" || true)"
fi
if [ -z "$APPIMAGETOOL" ]; then
    echo "AppImage skipped: appimagetool is not installed (see installers/README.md)." >&2
    [ "${REQUIRE_APPIMAGE:-0}" = 1 ] && exit 1
    exit 0
fi

OUT="$ROOT/dist/desktop-proxy-$VERSION-linux-$ARCH.AppImage"
WORK="$(mktemp -d)"
APPDIR="$WORK/DesktopProxy.AppDir"
trap 'rm -rf "$WORK"' EXIT

mkdir -p "$APPDIR/usr/lib"
cp -a "$BUNDLE" "$APPDIR/usr/lib/desktop-proxy"
install_share "$APPDIR/usr"
# The AppImage's top level: AppRun, one .desktop file and its icon.
cp "$APPDIR/usr/share/applications/desktop-proxy.desktop" "$APPDIR/"
cp "$ROOT/resources/icons/app-256.png" "$APPDIR/desktop-proxy.png"
ln -s desktop-proxy.png "$APPDIR/.DirIcon"
cat > "$APPDIR/AppRun" <<'APPRUN'
#!/bin/sh
# No arguments: the tray app. Any arguments: the CLI (`./desktop-proxy-*.AppImage serve`).
HERE="$(dirname "$(readlink -f "$0")")"
exec "$HERE/usr/lib/desktop-proxy/DesktopProxy" "$@"
APPRUN
chmod 755 "$APPDIR/AppRun"

rm -f "$OUT"
ARCH="$ARCH" "$APPIMAGETOOL" --no-appstream "$APPDIR" "$OUT"
echo "Built $OUT ($(du -h "$OUT" | cut -f1))"
