"""Pack the app icon PNGs from `resources/icons/` into a Windows .ico and a macOS .icns.

Both formats can hold PNG data as is (Windows Vista+, macOS 10.7+), so this needs neither Pillow
nor iconutil and runs on any build machine. `build.spec` calls `write_app_icons()`.
"""

from __future__ import annotations

import struct
from pathlib import Path

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# The app icon is the "running" badge (`desktop_proxy.gui.icons.app_icon`): the small sizes are
# the tray PNGs, the large ones were rendered separately.
SOURCES = {
    16: "tray-running-16.png",
    24: "tray-running-24.png",
    32: "tray-running-32.png",
    48: "tray-running-48.png",
    64: "tray-running-64.png",
    256: "app-256.png",
    512: "app-512.png",
}

ICO_SIZES = (16, 24, 32, 48, 64, 256)  # 256 is the largest an .ico entry can declare
# ICNS element types that take PNG data, and the pixel size each one holds.
ICNS_TYPES = (
    (b"icp4", 16),
    (b"icp5", 32),
    (b"icp6", 64),
    (b"ic11", 32),  # 16@2x
    (b"ic12", 64),  # 32@2x
    (b"ic08", 256),
    (b"ic09", 512),
    (b"ic14", 512),  # 256@2x
)


def png_size(data: bytes) -> tuple[int, int]:
    if data[:8] != PNG_SIGNATURE or data[12:16] != b"IHDR":
        raise ValueError("not a PNG file")
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def load_pngs(icons_dir: Path) -> dict[int, bytes]:
    pngs = {}
    for size, name in SOURCES.items():
        data = (icons_dir / name).read_bytes()
        if png_size(data) != (size, size):
            raise ValueError(f"{name} is {png_size(data)}, expected {size}x{size}")
        pngs[size] = data
    return pngs


def ico_bytes(pngs: dict[int, bytes]) -> bytes:
    count = len(ICO_SIZES)
    header = struct.pack("<HHH", 0, 1, count)
    offset = len(header) + 16 * count
    entries, images = [], []
    for size in ICO_SIZES:
        data = pngs[size]
        side = 0 if size == 256 else size  # 0 means 256
        entries.append(struct.pack("<BBBBHHII", side, side, 0, 0, 1, 32, len(data), offset))
        images.append(data)
        offset += len(data)
    return header + b"".join(entries) + b"".join(images)


def icns_bytes(pngs: dict[int, bytes]) -> bytes:
    body = b"".join(
        kind + struct.pack(">I", 8 + len(pngs[size])) + pngs[size] for kind, size in ICNS_TYPES
    )
    return b"icns" + struct.pack(">I", 8 + len(body)) + body


def write_app_icons(icons_dir: Path, out_dir: Path) -> tuple[Path, Path]:
    """Write `desktop-proxy.ico` and `desktop-proxy.icns` into `out_dir`; return their paths."""
    pngs = load_pngs(icons_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ico, icns = out_dir / "desktop-proxy.ico", out_dir / "desktop-proxy.icns"
    ico.write_bytes(ico_bytes(pngs))
    icns.write_bytes(icns_bytes(pngs))
    return ico, icns
