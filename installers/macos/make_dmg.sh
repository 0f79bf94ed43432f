#!/usr/bin/env bash
# dist/desktop-proxy-<version>-macos-<arch>.dmg from "dist/Desktop Proxy.app" (build.spec).
#
# Uses create-dmg (`brew install create-dmg`) for a window with an Applications link, or plain
# hdiutil when create-dmg is missing or fails (it drives Finder, which headless CI may refuse).
#
# Optional, from the environment (see installers/README.md):
#   MACOS_CODESIGN_IDENTITY   "Developer ID Application: …": the same identity build.spec used to
#                             sign the app; here it signs the .dmg. Unset: an ad hoc signed,
#                             unnotarised image (fine for testing, Gatekeeper will warn users).
#   MACOS_NOTARY_PROFILE      a `xcrun notarytool store-credentials` keychain profile, or
#   MACOS_NOTARY_APPLE_ID, MACOS_NOTARY_TEAM_ID, MACOS_NOTARY_PASSWORD (app-specific password):
#                             with an identity, submit the .dmg for notarisation and staple it.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VERSION="$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$ROOT/desktop_proxy/_version.py")"
APP_NAME="Desktop Proxy"
APP="$ROOT/dist/$APP_NAME.app"
if [ ! -d "$APP" ]; then
    echo "error: $APP is missing; run 'pyinstaller --noconfirm build.spec' (or 'make dist')" >&2
    exit 1
fi
ARCHS="$(lipo -archs "$APP/Contents/MacOS/DesktopProxy")"
case "$ARCHS" in
    *" "*) ARCH=universal2 ;;
    *) ARCH="$ARCHS" ;;
esac
DMG="$ROOT/dist/desktop-proxy-$VERSION-macos-$ARCH.dmg"
IDENTITY="${MACOS_CODESIGN_IDENTITY:-}"

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
STAGE="$WORK/stage"
mkdir -p "$STAGE"
ditto "$APP" "$STAGE/$APP_NAME.app"  # keeps symlinks, extended attributes and signatures

if [ -n "$IDENTITY" ]; then
    codesign --verify --deep --strict --verbose=2 "$APP"
fi

with_create_dmg() {
    command -v create-dmg >/dev/null || return 1
    local volicon=()
    [ -f "$ROOT/build/icons/desktop-proxy.icns" ] &&
        volicon=(--volicon "$ROOT/build/icons/desktop-proxy.icns")
    create-dmg \
        --volname "$APP_NAME" "${volicon[@]+"${volicon[@]}"}" \
        --window-size 540 360 --icon-size 96 \
        --icon "$APP_NAME.app" 140 170 --hide-extension "$APP_NAME.app" \
        --app-drop-link 400 170 \
        "$DMG" "$STAGE"
}

with_hdiutil() {
    ln -s /Applications "$STAGE/Applications"
    local attempt
    for attempt in 1 2 3; do
        # Retried: macOS sometimes still holds the previous image ("Resource busy").
        hdiutil create -volname "$APP_NAME" -srcfolder "$STAGE" -fs HFS+ -format UDZO -ov \
            "$DMG" && return 0
        sleep $((5 * attempt))
    done
    return 1
}

rm -f "$DMG"
if ! with_create_dmg; then
    echo "create-dmg unavailable or failed; using hdiutil" >&2
    rm -f "$DMG" "$ROOT"/dist/rw.*.dmg  # create-dmg's read-write intermediate
    with_hdiutil
fi

notary() {
    if [ -n "${MACOS_NOTARY_PROFILE:-}" ]; then
        xcrun notarytool "$@" --keychain-profile "$MACOS_NOTARY_PROFILE"
    else
        xcrun notarytool "$@" --apple-id "$MACOS_NOTARY_APPLE_ID" \
            --team-id "$MACOS_NOTARY_TEAM_ID" --password "$MACOS_NOTARY_PASSWORD"
    fi
}

if [ -z "$IDENTITY" ]; then
    echo "Not signed or notarised (MACOS_CODESIGN_IDENTITY is unset)."
elif [ -z "${MACOS_NOTARY_PROFILE:-}" ] && { [ -z "${MACOS_NOTARY_APPLE_ID:-}" ] ||
    [ -z "${MACOS_NOTARY_TEAM_ID:-}" ] || [ -z "${MACOS_NOTARY_PASSWORD:-}" ]; }; then
    codesign --force --timestamp --sign "$IDENTITY" "$DMG"
    echo "Signed, not notarised (no MACOS_NOTARY_* credentials)."
else
    codesign --force --timestamp --sign "$IDENTITY" "$DMG"
    notary submit "$DMG" --wait --output-format json > "$WORK/notary.json"
    status="$(plutil -extract status raw -o - "$WORK/notary.json")"
    if [ "$status" != "Accepted" ]; then
        echo "Notarisation: $status" >&2
        notary log "$(plutil -extract id raw -o - "$WORK/notary.json")" >&2 || true
        exit 1
    fi
    xcrun stapler staple "$DMG"
    xcrun stapler validate "$DMG"
    spctl --assess --type open --context context:primary-signature --verbose "$DMG"
    echo "Signed, notarised and stapled."
fi
echo "Built $DMG ($(du -h "$DMG" | cut -f1))"
