#!/usr/bin/env bash
# Install Desktop Proxy from this unpacked tarball, for the current user:
#   ./install.sh               app in ~/.local/lib/desktop-proxy, `desktop-proxy` in ~/.local/bin,
#                              a menu entry and icons in ~/.local/share
#   ./install.sh --uninstall   remove all of that, and the start-at-login entry if any
# sudo PREFIX=/usr/local ./install.sh installs system-wide instead. Your configuration, keys
# and history are never touched.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PREFIX="${PREFIX:-$HOME/.local}"
APP_DIR="$PREFIX/lib/desktop-proxy"
DESKTOP_FILE="$PREFIX/share/applications/desktop-proxy.desktop"
AUTOSTART="${XDG_CONFIG_HOME:-$HOME/.config}/autostart/desktop-proxy.desktop"

refresh_caches() {
    local icons="$PREFIX/share/icons/hicolor"
    command -v update-desktop-database >/dev/null &&
        { update-desktop-database -q "$PREFIX/share/applications" 2>/dev/null || true; }
    # A changed mtime tells icon themes to rescan; only a full theme (index.theme, e.g. under
    # /usr/local) gets a cache, a stale one in ~/.local would hide icons installed later.
    touch "$icons" 2>/dev/null || true
    if [ -f "$icons/index.theme" ] && command -v gtk-update-icon-cache >/dev/null; then
        gtk-update-icon-cache -q "$icons" 2>/dev/null || true
    fi
    return 0
}

if [ "${1:-}" = "--uninstall" ]; then
    rm -rf "$APP_DIR"
    rm -f "$PREFIX/bin/desktop-proxy" "$DESKTOP_FILE"
    rm -f "$PREFIX"/share/icons/hicolor/*/apps/desktop-proxy.png
    # The tray app's "Start at login" writes this; it would point at the removed app.
    rm -f "$AUTOSTART"
    refresh_caches
    echo "Removed Desktop Proxy from $PREFIX."
    exit 0
fi

rm -rf "$APP_DIR"
mkdir -p "$APP_DIR" "$PREFIX/bin"
cp -a "$HERE/DesktopProxy" "$HERE/desktop-proxy" "$HERE/_internal" "$APP_DIR/"
ln -sfn "$APP_DIR/desktop-proxy" "$PREFIX/bin/desktop-proxy"
(cd "$HERE" && find share -type f) | while read -r file; do
    install -Dm644 "$HERE/$file" "$PREFIX/$file"
done
sed -i "s|^Exec=.*|Exec=\"$APP_DIR/DesktopProxy\"|" "$DESKTOP_FILE"
refresh_caches

echo "Installed $("$APP_DIR/desktop-proxy" --version) in $APP_DIR."
echo "Start it from the applications menu, or run: $APP_DIR/DesktopProxy"
case ":$PATH:" in
    *":$PREFIX/bin:"*) echo "The command line: desktop-proxy --help" ;;
    *) echo "The command line: $PREFIX/bin/desktop-proxy --help ($PREFIX/bin is not on PATH)" ;;
esac
