"""Render the tray icons into this folder: `python resources/icons/make_icons.py`.

The shapes live in desktop_proxy/gui/icons.py; this only writes them out as PNGs for bundles.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from PySide6.QtGui import QGuiApplication

from desktop_proxy.gui.icons import SIZES, STATES, draw_icon


def main() -> None:
    app = QGuiApplication([])
    out = Path(__file__).resolve().parent
    for state in STATES:
        for size in SIZES:
            for template in (False, True):
                kind = "template" if template else "tray"
                draw_icon(state, size, template=template).save(
                    str(out / f"{kind}-{state}-{size}.png")
                )
    for size in (256, 512):
        draw_icon("running", size).save(str(out / f"app-{size}.png"))
    del app


if __name__ == "__main__":
    main()
