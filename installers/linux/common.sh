# Shared by make_tarball.sh and make_appimage.sh; sourced, not run.
# Sets ROOT, VERSION, ARCH, BUNDLE and provides install_share.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VERSION="$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$ROOT/desktop_proxy/_version.py")"
ARCH="$(uname -m)"
BUNDLE="$ROOT/dist/desktop-proxy"  # PyInstaller's onedir output (build.spec)

if [ -z "$VERSION" ]; then
    echo "error: no __version__ in desktop_proxy/_version.py" >&2
    exit 1
fi
if [ ! -x "$BUNDLE/DesktopProxy" ] || [ ! -x "$BUNDLE/desktop-proxy" ]; then
    echo "error: $BUNDLE is missing; run 'pyinstaller --noconfirm build.spec' (or 'make dist')" >&2
    exit 1
fi

# install_share DIR: the .desktop file and the hicolor icons under DIR/share.
install_share() {
    local share="$1/share" size src
    install -Dm644 "$ROOT/installers/linux/desktop-proxy.desktop" \
        "$share/applications/desktop-proxy.desktop"
    for size in 16 22 24 32 48 64 256 512; do
        src="$ROOT/resources/icons/tray-running-$size.png"
        [ "$size" -ge 256 ] && src="$ROOT/resources/icons/app-$size.png"
        install -Dm644 "$src" "$share/icons/hicolor/${size}x${size}/apps/desktop-proxy.png"
    done
}
