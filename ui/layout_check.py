"""Geometry checks for touch layouts (used by the layout tests and by ``python -m ui.screenshots``):
every visible control inside the window, at least 48 px, its text not cut, no two controls overlapping; a table's
cells not elided (``table_cells_cut``).
Content inside scroll areas and tables is exempt from the window check (it scrolls)."""

from __future__ import annotations

from PyQt5.QtCore import QPoint, QRect
from PyQt5.QtGui import QFontMetrics
from PyQt5.QtWidgets import QAbstractButton, QAbstractScrollArea, QLabel, QStyle, QTableWidget, QWidget

from ui.overlay import Overlay

MIN_TOUCH_PX = 48


def describe(widget: QWidget) -> str:
    text = widget.text() if hasattr(widget, "text") else ""
    text = text if isinstance(text, str) else ""
    return f"{type(widget).__name__}({text[:40]!r})" if text else type(widget).__name__


def window_rect(widget: QWidget, window: QWidget) -> QRect:
    return QRect(widget.mapTo(window, QPoint(0, 0)), widget.size())


def _scrolls(widget: QWidget, window: QWidget) -> bool:
    parent = widget.parentWidget()
    while parent is not None and parent is not window:
        if isinstance(parent, QAbstractScrollArea):
            return True
        parent = parent.parentWidget()
    return False


def _layer(widget: QWidget, window: QWidget) -> QWidget | None:
    """The overlay a widget belongs to (None: the main layer)."""
    parent: QWidget | None = widget
    while parent is not None and parent is not window:
        if isinstance(parent, Overlay):
            return parent
        parent = parent.parentWidget()
    return None


def _covered(widget: QWidget, window: QWidget) -> bool:
    """Under a visible overlay: not what the user sees now, so not checked now."""
    if _layer(widget, window) is not None:
        return False
    return any(o.isVisible() for o in window.findChildren(Overlay))


def layout_problems(window: QWidget, min_touch: int = MIN_TOUCH_PX) -> list[str]:
    problems: list[str] = []
    bounds = window.rect().adjusted(-1, -1, 1, 1)
    buttons: list[tuple[QWidget, QRect]] = []
    for widget in window.findChildren(QWidget):
        if not widget.isVisible() or _covered(widget, window):
            continue
        rect = window_rect(widget, window)
        scrolls = _scrolls(widget, window)
        if not scrolls and not bounds.contains(rect):
            problems.append(f"{describe(widget)} at {rect.getRect()} is outside the {window.width()}x{window.height()} window")
        if isinstance(widget, QAbstractButton):
            if widget.height() < min_touch or widget.width() < min_touch:
                problems.append(f"{describe(widget)} is {widget.width()}x{widget.height()} px, below {min_touch} px")
            if widget.text() and widget.width() < widget.sizeHint().width() - 2:
                problems.append(f"{describe(widget)} text cut: {widget.width()} px wide, needs {widget.sizeHint().width()}")
            if not scrolls:
                buttons.append((widget, rect))
        elif isinstance(widget, QLabel) and widget.text() and widget.pixmap() is None:
            if widget.wordWrap():
                need = widget.heightForWidth(widget.width())
                if need > 0 and widget.height() < need - 2:
                    problems.append(f"{describe(widget)} wrapped text cut: {widget.height()} px high, needs {need}")
            elif widget.width() < widget.sizeHint().width() - 2 or widget.height() < widget.fontMetrics().height() - 2:
                problems.append(
                    f"{describe(widget)} text cut: {widget.width()}x{widget.height()} px, needs "
                    f"{widget.sizeHint().width()}x{widget.fontMetrics().height()}"
                )
    for i, (a, ra) in enumerate(buttons):
        for b, rb in buttons[i + 1 :]:
            if _layer(a, window) is _layer(b, window) and ra.intersected(rb).width() > 2 and ra.intersected(rb).height() > 2:
                problems.append(f"{describe(a)} overlaps {describe(b)}")
    return problems


def table_cells_cut(table: QTableWidget) -> list[str]:
    """Cells whose text is wider than their column, so Qt elides it ("6 · o…"): one line per cell, row and column
    named. A table scrolls vertically, not sideways, so a cut cell is text the user never sees."""
    metrics = QFontMetrics(table.font())
    style = table.style()
    if style is None:  # Qt gives every widget a style; typed Optional only
        raise RuntimeError(f"{describe(table)} has no style to measure its cells with")
    margin = 2 * (style.pixelMetric(QStyle.PixelMetric.PM_FocusFrameHMargin, None, table) + 1)
    problems = []
    for row in range(table.rowCount()):
        for column in range(table.columnCount()):
            item = table.item(row, column)
            if item is None or table.isColumnHidden(column):
                continue
            widest = max((metrics.horizontalAdvance(line) for line in item.text().split("\n")), default=0)
            if widest + margin > table.columnWidth(column):
                problems.append(f"row {row} column {column}: {item.text()!r} is {widest + margin} px in a {table.columnWidth(column)} px column")
    return problems
