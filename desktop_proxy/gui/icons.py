"""Tray and window icons.

The shapes are drawn here with QPainter (crisp at every size) and pre-rendered into
`resources/icons/` by `resources/icons/make_icons.py`; the app loads those PNGs when they are
there (frozen bundles, installs) and draws the same shapes otherwise.

A coloured badge with a white glyph reads on light and dark panels alike; macOS gets a
monochrome template image instead, which the menu bar tints itself.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Literal

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QIcon, QImage, QPainter, QPainterPath, QPen, QPixmap

IconState = Literal["running", "stopped", "degraded", "error"]
STATES: tuple[IconState, ...] = ("running", "stopped", "degraded", "error")
SIZES = (16, 20, 22, 24, 32, 40, 44, 48, 64)

COLOURS: dict[IconState, str] = {
    "running": "#1f9d55",
    "stopped": "#7b8190",
    "degraded": "#d98e04",
    "error": "#d6403a",
}


def resources_dir() -> Path:
    frozen_root = getattr(sys, "_MEIPASS", None)
    if frozen_root:
        return Path(frozen_root) / "resources"
    return Path(__file__).resolve().parents[2] / "resources"


def icon_file(state: IconState, size: int, *, template: bool) -> Path:
    kind = "template" if template else "tray"
    return resources_dir() / "icons" / f"{kind}-{state}-{size}.png"


def _arrows(p: QPainter, s: float, colour: QColor, width: float) -> None:
    pen = QPen(colour, width, Qt.PenStyle.SolidLine, Qt.PenCapStyle.RoundCap)
    pen.setJoinStyle(Qt.PenJoinStyle.RoundJoin)
    p.setPen(pen)
    p.setBrush(Qt.BrushStyle.NoBrush)
    top, bottom = 0.37 * s, 0.63 * s
    left, right = 0.27 * s, 0.73 * s
    head = 0.13 * s
    p.drawLine(QPointF(left, top), QPointF(right, top))
    p.drawPolyline(
        [QPointF(right - head, top - head), QPointF(right, top), QPointF(right - head, top + head)]
    )
    p.drawLine(QPointF(right, bottom), QPointF(left, bottom))
    p.drawPolyline(
        [
            QPointF(left + head, bottom - head),
            QPointF(left, bottom),
            QPointF(left + head, bottom + head),
        ]
    )


def _exclamation(p: QPainter, s: float, colour: QColor, width: float) -> None:
    pen = QPen(colour, width, Qt.PenStyle.SolidLine, Qt.PenCapStyle.RoundCap)
    p.setPen(pen)
    p.drawLine(QPointF(0.5 * s, 0.27 * s), QPointF(0.5 * s, 0.56 * s))
    p.setPen(Qt.PenStyle.NoPen)
    p.setBrush(colour)
    p.drawEllipse(QPointF(0.5 * s, 0.73 * s), width * 0.62, width * 0.62)


def draw_icon(state: IconState, size: int, *, template: bool = False) -> QImage:
    image = QImage(size, size, QImage.Format.Format_ARGB32_Premultiplied)
    image.fill(Qt.GlobalColor.transparent)
    p = QPainter(image)
    p.setRenderHint(QPainter.RenderHint.Antialiasing)
    s = float(size)
    stroke = max(1.6, s * 0.095)
    if template:
        ink = QColor(0, 0, 0, 255 if state != "stopped" else 110)
        if state == "error":
            _exclamation(p, s, ink, stroke * 1.2)
        else:
            _arrows(p, s, ink, stroke)
        if state == "degraded":
            p.setPen(Qt.PenStyle.NoPen)
            p.setBrush(QColor(0, 0, 0))
            p.drawEllipse(QPointF(0.84 * s, 0.16 * s), 0.13 * s, 0.13 * s)
    else:
        margin = max(0.5, s * 0.04)
        rect = QRectF(margin, margin, s - 2 * margin, s - 2 * margin)
        path = QPainterPath()
        path.addRoundedRect(rect, s * 0.24, s * 0.24)
        base = QColor(COLOURS[state])
        p.setPen(QPen(base.darker(135), max(1.0, s / 32)))
        p.setBrush(base)
        p.drawPath(path)
        white = QColor("#ffffff")
        if state == "error":
            _exclamation(p, s, white, stroke * 1.2)
        else:
            _arrows(p, s, white, stroke)
    p.end()
    return image


def tray_icon(state: IconState, *, template: bool | None = None) -> QIcon:
    use_template = sys.platform == "darwin" if template is None else template
    icon = QIcon()
    for size in SIZES:
        path = icon_file(state, size, template=use_template)
        pixmap = QPixmap(str(path)) if path.is_file() else QPixmap()
        if pixmap.isNull():
            pixmap = QPixmap.fromImage(draw_icon(state, size, template=use_template))
        icon.addPixmap(pixmap)
    if use_template:
        icon.setIsMask(True)
    return icon


def app_icon() -> QIcon:
    icon = QIcon()
    for size in (*SIZES, 128, 256):
        icon.addPixmap(QPixmap.fromImage(draw_icon("running", size)))
    return icon
