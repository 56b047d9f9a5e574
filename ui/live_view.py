"""The live image: the frame, the detected scan region, the analysed crop, the heat map and the
finger-drawn region of interest (drag to draw; drag inside to move; drag a corner to resize; tap a lesion to seed
a square region around it, :func:`seed_roi` — docs/ui.md "Tap a lesion")."""

from __future__ import annotations

import time
from collections import deque
from enum import Enum

import numpy as np
from PyQt5.QtCore import QPoint, QPointF, QRect, QRectF, Qt, pyqtSignal
from PyQt5.QtGui import QColor, QFont, QImage, QMouseEvent, QPainter, QPaintEvent, QPen, QPolygonF, QResizeEvent
from PyQt5.QtWidgets import QSizePolicy, QWidget

from device.crop import Box
from device.sources.base import Frame
from ui import theme
from ui.frames import FramePacket, display_image, heatmap_rgb, to_qimage

MIN_ROI_PX = 16  # source pixels: a drag that draws anything thinner is a stray touch, not a region
# A tapped lesion gets a square region this fraction of the scan region's shorter side: the longest extent of a
# lesion's reference mask is a median 0.45 (BUS-BRA) / 0.36 (BrEaST-Lesions-USG) of its image's shorter side, 0.62 /
# 0.51 at the 75th percentile (docs/ui.md "Tap a lesion"): a tap on the middle of most lesions holds all of it.
SEED_FRACTION = 0.6
OUTLINE_COLOUR = "#ff5fd2"  # the lesion outline: magenta, apart from the boxes (scan region, analysed, ROI) and the heat map


def paint_outline(painter: QPainter, polygon: QPolygonF, line_px: float = 2) -> None:
    """The lesion's polygon: a dark halo under a bright magenta line, seen on bright and dark tissue alike."""
    painter.setBrush(Qt.BrushStyle.NoBrush)
    painter.setPen(QPen(QColor(0, 0, 0, 160), 2 * line_px))
    painter.drawPolygon(polygon)
    painter.setPen(QPen(QColor(OUTLINE_COLOUR), line_px))
    painter.drawPolygon(polygon)


class _Drag(Enum):
    NONE = 0
    DRAW = 1
    MOVE = 2
    RESIZE = 3


def seed_roi(x: int, y: int, region: Box, fraction: float = SEED_FRACTION) -> Box:
    """The square region a tap at ``(x, y)`` seeds inside ``region`` (the scan region, or the frame; source pixels):
    ``fraction`` of the region's shorter side (at least :data:`MIN_ROI_PX`), centred on the tap, and moved inward
    where it would cross the region's edge, so a lesion near the edge keeps the same size of region. A region
    narrower than the square cuts it to the region's width or height."""
    side = max(MIN_ROI_PX, round(fraction * min(region.width, region.height)))
    width, height = min(side, region.width), min(side, region.height)
    left = min(max(region.x, x - width // 2), region.x + region.width - width)
    top = min(max(region.y, y - height // 2), region.y + region.height - height)
    return Box(left, top, width, height)


class LiveView(QWidget):
    """Paints frames handed to it by the reader; never decodes or scales full frames itself while live."""

    roi_changed = pyqtSignal(object)  # Box | None, in source pixels
    lesion_tapped = pyqtSignal(object)  # Box: the region a tap on a lesion chose (seeded around it, or the one it fell in)
    target_size_changed = pyqtSignal(int, int)
    packet_taken = pyqtSignal()

    def __init__(self, handle_px: int = 28, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setMinimumSize(240, 160)
        self.setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent)
        self._handle = handle_px
        self._image: QImage | None = None
        self._scale = 1.0
        self.frame: Frame | None = None
        self.scan_box: Box | None = None
        self.roi: Box | None = None
        self.crop_box: Box | None = None
        self._heat: QImage | None = None
        self._heat_box: Box | None = None
        self.heatmap_visible = False
        self._lesion_contour: tuple[tuple[int, int], ...] = ()  # the lesion outline, image pixels (device/lesion_record.py)
        self.outline_visible = True
        self.frozen = False
        self.message = "Waiting for the image source…"
        self._shown: deque[float] = deque(maxlen=120)
        self._drag = _Drag.NONE
        self._drag_origin = QPoint()
        self._drag_roi: Box | None = None
        self._drag_corner = (0, 0)
        self._tap_slop = max(4, handle_px // 2)  # view pixels a gloved finger may move and still tap
        self._moved = False  # this touch went beyond the tap slop: a drag, whatever its end
        self.touch_locked = False  # an analysis of the region on screen is running: the region must not change under it

    # --- frames ----------------------------------------------------------------------------------------

    def show_packet(self, packet: FramePacket) -> None:
        self.packet_taken.emit()  # the reader may prepare the next one
        if self.frozen:
            return
        self.frame, self._image, self._scale, self.scan_box = packet.frame, packet.image, packet.scale, packet.scan_box
        self._shown.append(time.monotonic())
        self.update()

    def fps(self, window_s: float = 2.0) -> float:
        """Frames shown per second over the last ``window_s`` seconds."""
        now = time.monotonic()
        recent = [t for t in self._shown if now - t <= window_s]
        if len(recent) < 2:
            return 0.0
        return (len(recent) - 1) / max(1e-6, recent[-1] - recent[0])

    def freeze(self, frame: Frame | None = None) -> None:
        """Stop following the stream; optionally show a specific (earlier) frame."""
        self.frozen = True
        if frame is not None and frame is not self.frame:
            self.frame = frame
            self._rescale()
        self.update()

    def unfreeze(self) -> None:
        self.frozen = False
        self.set_heatmap(None, None)
        self.set_outline(())
        self.crop_box = None
        self.update()

    def clear_frame(self, message: str) -> None:
        self.frame, self._image, self.message = None, None, message
        self.update()

    def _rescale(self) -> None:
        if self.frame is not None:
            self._image, self._scale = display_image(self.frame.image, self.width(), self.height())

    def resizeEvent(self, event: QResizeEvent | None) -> None:
        super().resizeEvent(event)
        self.target_size_changed.emit(self.width(), self.height())
        if self.frozen:
            self._rescale()

    # --- overlays --------------------------------------------------------------------------------------

    def set_roi(self, roi: Box | None) -> None:
        self.roi = roi
        self.update()
        self.roi_changed.emit(roi)

    def set_heatmap(self, crop: Box | None, heat: np.ndarray | None) -> None:
        if crop is None or heat is None or heat.size == 0:
            self._heat, self._heat_box = None, None
        else:
            rgb = heatmap_rgb(heat)
            alpha = (np.clip(heat.astype(np.float32) * 0.75, 40, 190)).astype(np.uint8)
            rgba = np.dstack([rgb, alpha])
            height, width = rgba.shape[:2]
            image = QImage(np.ascontiguousarray(rgba).data, width, height, width * 4, QImage.Format.Format_RGBA8888)  # type: ignore[call-overload]  # PyQt5 takes any buffer (numpy's memoryview); its stubs list bytes and sip.voidptr only
            self._heat, self._heat_box = image.copy(), crop
        self.update()

    def set_outline(self, contour: tuple[tuple[int, int], ...]) -> None:
        """The lesion outline to draw on the frame (image pixel coordinates); () for none."""
        self._lesion_contour = tuple(contour)
        self.update()

    @property
    def has_outline(self) -> bool:
        return bool(self._lesion_contour)

    @property
    def has_heatmap(self) -> bool:
        return self._heat is not None

    # --- geometry ----------------------------------------------------------------------------------------

    def image_rect(self) -> QRectF:
        if self._image is None:
            return QRectF()
        w, h = self._image.width(), self._image.height()
        return QRectF((self.width() - w) / 2, (self.height() - h) / 2, w, h)

    def to_view(self, box: Box) -> QRectF:
        origin = self.image_rect().topLeft()
        s = self._scale
        return QRectF(origin.x() + box.x * s, origin.y() + box.y * s, box.width * s, box.height * s)

    def to_source(self, point: QPointF | QPoint) -> tuple[int, int]:
        origin = self.image_rect().topLeft()
        x = (point.x() - origin.x()) / self._scale
        y = (point.y() - origin.y()) / self._scale
        if self.frame is not None:
            height, width = self.frame.image.shape[:2]
            x, y = min(max(x, 0), width), min(max(y, 0), height)
        return round(x), round(y)

    def seed_region(self) -> Box | None:
        """Where a tap may seed a region: the detected scan region on the frame, else the whole frame."""
        if self.frame is None:
            return None
        frame = Box.full(self.frame.image)
        if self.scan_box is None:
            return frame
        box = self.scan_box.clip_to(self.frame.image)
        return box if box.width >= MIN_ROI_PX and box.height >= MIN_ROI_PX else frame

    # --- touch: tap to seed, draw, move or resize the region of interest -------------------------------

    def mousePressEvent(self, event: QMouseEvent | None) -> None:
        if event is None or self.frame is None or event.button() != Qt.MouseButton.LeftButton or self.touch_locked:
            return
        self._moved = False
        self._drag_origin = event.pos()
        self._drag_roi = self.roi
        self._drag = _Drag.DRAW
        if self.roi is not None:
            rect = self.to_view(self.roi)
            corner = self._corner_at(rect, event.pos())
            if corner is not None:
                self._drag, self._drag_corner = _Drag.RESIZE, corner
            elif rect.contains(QPointF(event.pos())):
                self._drag = _Drag.MOVE

    def mouseMoveEvent(self, event: QMouseEvent | None) -> None:
        if event is None or self._drag is _Drag.NONE or self.frame is None:
            return
        self._moved = self._moved or not self._within_slop(event.pos())
        if self._moved:  # a finger resting on a tap does not draw a speck of a region under it
            self.roi = self._dragged_roi(event.pos())
            self.update()

    def mouseReleaseEvent(self, event: QMouseEvent | None) -> None:
        if event is None or self._drag is _Drag.NONE:
            return
        drag, self._drag = self._drag, _Drag.NONE
        if not self._moved and self._within_slop(event.pos()):
            self._tapped(drag, event.pos())
            return
        roi = self._dragged_roi(event.pos(), drag)
        if roi is not None and (roi.width < MIN_ROI_PX or roi.height < MIN_ROI_PX):
            roi = self._drag_roi  # a stray touch, not a region: keep what was there
        self.set_roi(roi)

    def _within_slop(self, pos: QPoint) -> bool:
        return abs(pos.x() - self._drag_origin.x()) <= self._tap_slop and abs(pos.y() - self._drag_origin.y()) <= self._tap_slop

    def _tapped(self, drag: _Drag, pos: QPoint) -> None:
        """A tap: inside the region it keeps the region (a drawn region is deliberate: the lesion tapped is in it)
        and reports it as the tapped lesion's; on a handle it keeps it; elsewhere on the scan region it seeds a new
        one around the tapped point; on the letterbox bars or the scanner's margin outside the scan region it
        keeps what was there."""
        self.roi = self._drag_roi
        self.update()
        if drag is _Drag.MOVE and self.roi is not None:
            self.lesion_tapped.emit(self.roi)
            return
        region = self.seed_region()
        if drag is not _Drag.DRAW or region is None or not self.image_rect().contains(QPointF(pos)):
            return
        x, y = self.to_source(self._drag_origin)
        if not (region.x <= x < region.x + region.width and region.y <= y < region.y + region.height):
            return
        seeded = seed_roi(x, y, region)
        self.set_roi(seeded)
        self.lesion_tapped.emit(seeded)

    def _corner_at(self, rect: QRectF, pos: QPoint) -> tuple[int, int] | None:
        for cx, x in ((0, rect.left()), (1, rect.right())):
            for cy, y in ((0, rect.top()), (1, rect.bottom())):
                if abs(pos.x() - x) <= self._handle and abs(pos.y() - y) <= self._handle:
                    return cx, cy
        return None

    def _dragged_roi(self, pos: QPoint, drag: _Drag | None = None) -> Box | None:
        drag = self._drag if drag is None else drag
        x0, y0 = self.to_source(self._drag_origin)
        x1, y1 = self.to_source(pos)
        if drag is _Drag.DRAW or self._drag_roi is None:
            return Box(min(x0, x1), min(y0, y1), abs(x1 - x0), abs(y1 - y0))
        old = self._drag_roi
        assert self.frame is not None  # a drag starts on a shown frame (mousePressEvent)
        height, width = self.frame.image.shape[:2]
        if drag is _Drag.MOVE:
            nx = min(max(0, old.x + x1 - x0), width - old.width)
            ny = min(max(0, old.y + y1 - y0), height - old.height)
            return Box(nx, ny, old.width, old.height)
        left, top, right, bottom = old.x, old.y, old.x + old.width, old.y + old.height
        cx, cy = self._drag_corner
        if cx == 0:
            left = x1
        else:
            right = x1
        if cy == 0:
            top = y1
        else:
            bottom = y1
        return Box(min(left, right), min(top, bottom), abs(right - left), abs(bottom - top))

    # --- painting ----------------------------------------------------------------------------------------------

    def paintEvent(self, event: QPaintEvent | None) -> None:
        painter = QPainter(self)
        painter.fillRect(self.rect(), QColor("#000000"))
        if self._image is None:
            painter.setPen(QColor(theme.MUTED))
            painter.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap, self.message)
            return
        target = self.image_rect()
        painter.drawImage(target.topLeft(), self._image)
        if self.heatmap_visible and self._heat is not None and self._heat_box is not None:
            painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
            painter.drawImage(self.to_view(self._heat_box), self._heat)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        if self.outline_visible and self._lesion_contour:
            self._lesion_outline(painter)
        if self.scan_box is not None and self.roi is None and self.crop_box is None:
            self._outline(painter, self.scan_box, theme.INFO, Qt.PenStyle.DashLine, "scan region")
        if self.crop_box is not None and self.crop_box != self.roi:
            self._outline(painter, self.crop_box, theme.OK, Qt.PenStyle.SolidLine, "analysed")
        if self.roi is not None:
            self._outline(painter, self.roi, theme.WARN, Qt.PenStyle.SolidLine, "region of interest")
            self._handles(painter, self.to_view(self.roi))
        if self.frozen:
            self._badge(painter, "FROZEN")

    def _outline(self, painter: QPainter, box: Box, colour: str, style: Qt.PenStyle, caption: str) -> None:
        rect = self.to_view(box)
        pen = QPen(QColor(colour), 2, style)
        painter.setPen(pen)
        painter.setBrush(Qt.BrushStyle.NoBrush)
        painter.drawRect(rect)
        font = QFont(painter.font())
        font.setPixelSize(13)
        painter.setFont(font)
        label_y = rect.top() - 4 if rect.top() > 18 else rect.top() + 16
        painter.drawText(QPointF(rect.left() + 4, label_y), caption)

    def _lesion_outline(self, painter: QPainter) -> None:
        origin, s = self.image_rect().topLeft(), self._scale
        paint_outline(painter, QPolygonF([QPointF(origin.x() + (x + 0.5) * s, origin.y() + (y + 0.5) * s) for x, y in self._lesion_contour]))

    def _handles(self, painter: QPainter, rect: QRectF) -> None:
        painter.setBrush(QColor(theme.WARN))
        size = 10
        for point in (rect.topLeft(), rect.topRight(), rect.bottomLeft(), rect.bottomRight()):
            painter.drawEllipse(point, size / 2, size / 2)

    def _badge(self, painter: QPainter, text: str) -> None:
        font = QFont(painter.font())
        font.setPixelSize(16)
        font.setBold(True)
        painter.setFont(font)
        box = QRect(8, 8, 96, 28)
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(QColor(theme.ACCENT))
        painter.drawRoundedRect(box, 6, 6)
        painter.setPen(QColor(theme.BG))
        painter.drawText(box, Qt.AlignmentFlag.AlignCenter, text)


def frame_from_array(image: np.ndarray, origin: str = "test") -> Frame:
    """A Frame for an in-memory image (screenshots and tests)."""
    return Frame(image, origin, 0)


__all__ = ["LiveView", "frame_from_array", "seed_roi", "to_qimage"]
