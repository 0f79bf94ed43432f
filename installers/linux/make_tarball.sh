#!/usr/bin/env bash
# dist/desktop-proxy-<version>-linux-<arch>.tar.gz from dist/desktop-proxy: needs only tar and
# gzip. Unpack anywhere and run ./DesktopProxy (tray) or ./desktop-proxy (CLI), or ./install.sh
# for a per-user install with a menu entry.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

NAME="desktop-proxy-$VERSION"
OUT="$ROOT/dist/$NAME-linux-$ARCH.tar.gz"
STAGE="$(mktemp -d)"
trap 'rm -rf "$STAGE"' EXIT

cp -a "$BUNDLE" "$STAGE/$NAME"
install_share "$STAGE/$NAME"
install -m755 "$ROOT/installers/linux/install.sh" "$STAGE/$NAME/install.sh"

# Owner-neutral, so unpacking as root does not hand files to the build user's uid.
tar -C "$STAGE" --owner=0 --group=0 --numeric-owner -cf - "$NAME" | gzip -9 > "$OUT"
echo "Built $OUT ($(du -h "$OUT" | cut -f1))"
