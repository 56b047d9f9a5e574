"""The lesion outline as a stored result keeps it: found or not, box, polygon, area, mm sizes (only with a known
pixel spacing), the three descriptors each with its display flag — the ``lesion`` object of ``classify --json``
(docs/lesion-outline.md), validated whenever it is read back (from the store's JSON column).

Qt-, NumPy- and OpenCV-free: the hub imports device.results (and so this module) through the contract.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

MAX_POINTS = 64  # device.lesion_shape.MAX_CONTOUR_POINTS (tests/device/test_store_lesion.py checks they agree)
DESCRIPTOR_VALUES: dict[str, frozenset[str]] = {  # device.lesion_shape's Orientation, Shape, Margin values
    "orientation": frozenset({"parallel", "not_parallel"}),
    "shape": frozenset({"oval", "round", "irregular"}),
    "margin": frozenset({"circumscribed", "not_circumscribed"}),
}
WITHHELD_VALUES = frozenset({"inconclusive"})  # device.outline.Withheld
NO_OUTLINE = "No lesion outlined"
# The classifier saw no lesion but the outline model outlines a region (the two models disagree): said as such.
OUTLINE_UNDER_NO_LESION = "Region outlined ({size}) though no lesion seen: look again"
# The same in a list of results (History, the exam summary, the hub's exam page, `device history`): no room for more
OUTLINE_UNDER_NO_LESION_SHORT = "outlined: recheck"
_KEYS = ("found", "withheld", "box", "contour", "area_px", "width_mm", "depth_mm", "area_mm2", "spacing_mm", *DESCRIPTOR_VALUES)


class LesionRecordError(ValueError):
    """A stored lesion outline that is not one (wrong keys, types or values); the message names the field."""


@dataclass(frozen=True)
class Descriptor:
    value: str
    shown: bool  # the bundle's display rule (SegmentationSpec.shown_descriptors): on screen, labelled automatic, only if True


@dataclass(frozen=True)
class LesionRecord:
    """One result's lesion outline. ``found`` False: "no lesion outlined" (every other field empty); ``withheld``
    set: not looked for (an inconclusive result), nothing to show."""

    found: bool
    withheld: str | None = None
    box: tuple[int, int, int, int] | None = None  # x, y, w, h in image pixels
    contour: tuple[tuple[int, int], ...] = ()  # <= MAX_POINTS points, image pixels
    area_px: float | None = None
    width_mm: float | None = None  # the three mm figures: None unless the pixel spacing was known
    depth_mm: float | None = None
    area_mm2: float | None = None
    spacing_mm: tuple[float, float] | None = None
    orientation: Descriptor | None = None
    shape: Descriptor | None = None
    margin: Descriptor | None = None

    @property
    def calibrated(self) -> bool:
        return self.width_mm is not None

    def descriptors(self) -> dict[str, Descriptor]:
        found = {"orientation": self.orientation, "shape": self.shape, "margin": self.margin}
        return {name: d for name, d in found.items() if d is not None}

    def shown_descriptors(self) -> dict[str, str]:
        """The descriptors the display rule lets the screen show, name -> value."""
        return {name: d.value for name, d in self.descriptors().items() if d.shown}

    def descriptors_to_show(self, no_lesion_seen: bool) -> dict[str, str]:
        """The descriptors a screen or line shows for this result, name -> value: :meth:`shown_descriptors`, and none
        under *No lesion seen* (``no_lesion_seen``: a region the classifier saw no lesion in is not a lesion to
        describe) or with no outline."""
        return {} if no_lesion_seen or not self.found else self.shown_descriptors()

    def size_text(self) -> str | None:
        """``"14.2 × 9.8 mm, 110 mm²"``, or ``"uncalibrated: 1234 px"`` without a spacing; None with no outline.
        Never a mm figure without a known spacing."""
        if not self.found or self.area_px is None:
            return None
        if self.width_mm is not None and self.depth_mm is not None and self.area_mm2 is not None:
            return f"{self.width_mm:.1f} × {self.depth_mm:.1f} mm, {self.area_mm2:.0f} mm²"
        return f"uncalibrated: {self.area_px:.0f} px"

    def headline(self, no_lesion_seen: bool) -> str:
        """The outline in one line, as the result card, the hub and ``classify`` say it: ``"Lesion 14.2 × 9.8 mm,
        110 mm²"``, ``"Lesion uncalibrated: 1234 px"``, ``"No lesion outlined"``; "" when withheld (an inconclusive
        result). When the classifier saw no lesion (``no_lesion_seen``) but the outline model outlines a region, the
        two models disagree and the line says so: :data:`OUTLINE_UNDER_NO_LESION`."""
        if self.withheld is not None:
            return ""
        size = self.size_text()
        if size is None:
            return NO_OUTLINE
        return OUTLINE_UNDER_NO_LESION.format(size=size) if no_lesion_seen else f"Lesion {size}"

    def list_text(self, no_lesion_seen: bool) -> str:
        """The outline in a list of results: its size (:meth:`size_text`), ``"no lesion outlined"``, or — under
        *No lesion seen*, the two models disagreeing — :data:`OUTLINE_UNDER_NO_LESION_SHORT`, never a lesion's size
        there; "" when withheld."""
        if self.withheld is not None:
            return ""
        size = self.size_text()
        if size is None:
            return "no lesion outlined"
        return OUTLINE_UNDER_NO_LESION_SHORT if no_lesion_seen else size

    def to_json(self) -> dict[str, Any]:
        return {
            "found": self.found,
            "withheld": self.withheld,
            "box": list(self.box) if self.box is not None else None,
            "contour": [list(p) for p in self.contour] if self.found else None,
            "area_px": self.area_px,
            "width_mm": self.width_mm,
            "depth_mm": self.depth_mm,
            "area_mm2": self.area_mm2,
            "spacing_mm": list(self.spacing_mm) if self.spacing_mm is not None else None,
            **{
                name: ({"value": d.value, "shown": d.shown} if d is not None else None)
                for name, d in (("orientation", self.orientation), ("shape", self.shape), ("margin", self.margin))
            },
        }

    def to_text(self) -> str:
        return json.dumps(self.to_json(), separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_text(cls, text: str, where: str = "lesion") -> LesionRecord:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise LesionRecordError(f"{where}: not JSON ({exc})") from exc
        return cls.from_json(data, where)

    @classmethod
    def from_json(cls, data: Any, where: str = "lesion") -> LesionRecord:
        """Validate ``data`` (the ``lesion`` object of ``classify --json``, or a stored one) into a record."""
        if not isinstance(data, dict):
            raise LesionRecordError(f"{where}: expected an object, got {type(data).__name__}")
        unknown = sorted(set(data) - set(_KEYS))
        if unknown or "found" not in data:
            raise LesionRecordError(f"{where}: unknown keys {unknown}" if unknown else f"{where}: 'found' is missing")
        found = data["found"]
        if not isinstance(found, bool):
            raise LesionRecordError(f"{where}.found: expected true or false, got {found!r}")
        withheld = data.get("withheld")
        if withheld is not None and (withheld not in WITHHELD_VALUES or found):
            raise LesionRecordError(f"{where}.withheld: {withheld!r} is no reason (one of {sorted(WITHHELD_VALUES)}, and only without an outline)")
        if not found:
            filled = [k for k in _KEYS if k not in ("found", "withheld") and data.get(k) is not None]
            if filled:
                raise LesionRecordError(f"{where}: no lesion outlined, yet {filled} given")
            return cls(found=False, withheld=withheld)
        return cls(
            found=True,
            box=parse_box(data.get("box"), f"{where}.box"),
            contour=_contour(data.get("contour"), f"{where}.contour"),
            area_px=_positive(data.get("area_px"), f"{where}.area_px"),
            **_sizes(data, where),
            orientation=_descriptor(data.get("orientation"), "orientation", f"{where}.orientation"),
            shape=_descriptor(data.get("shape"), "shape", f"{where}.shape"),
            margin=_descriptor(data.get("margin"), "margin", f"{where}.margin"),
        )


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _positive(value: Any, where: str) -> float:
    if not _number(value) or value <= 0:
        raise LesionRecordError(f"{where}: expected a positive number, got {value!r}")
    return float(value)


def _int(value: Any, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise LesionRecordError(f"{where}: expected an integer, got {value!r}")
    return value


def parse_box(value: Any, where: str) -> tuple[int, int, int, int]:
    """``[x, y, w, h]`` (integers, x, y >= 0, w, h >= 1) as a box: a lesion's box, and a stored result's crop
    box (hub/store.py); :class:`LesionRecordError` naming ``where`` otherwise."""
    if not isinstance(value, list) or len(value) != 4:
        raise LesionRecordError(f"{where}: expected [x, y, w, h], got {value!r}")
    x, y, w, h = (_int(v, where) for v in value)
    if x < 0 or y < 0 or w <= 0 or h <= 0:
        raise LesionRecordError(f"{where}: {value} is no box (x, y >= 0; w, h > 0)")
    return x, y, w, h


def _contour(value: Any, where: str) -> tuple[tuple[int, int], ...]:
    if not isinstance(value, list) or not 3 <= len(value) <= MAX_POINTS:
        raise LesionRecordError(f"{where}: expected 3..{MAX_POINTS} [x, y] points, got {len(value) if isinstance(value, list) else value!r}")
    points = []
    for i, point in enumerate(value):
        if not isinstance(point, list) or len(point) != 2:
            raise LesionRecordError(f"{where}[{i}]: expected [x, y], got {point!r}")
        points.append((_int(point[0], f"{where}[{i}]"), _int(point[1], f"{where}[{i}]")))
    return tuple(points)


def _sizes(data: dict[str, Any], where: str) -> dict[str, Any]:
    """The mm figures and the spacing: all four given or none (a mm figure only with a known spacing)."""
    names = ("width_mm", "depth_mm", "area_mm2", "spacing_mm")
    given = [n for n in names if data.get(n) is not None]
    if not given:
        return {}
    if len(given) != len(names):
        raise LesionRecordError(f"{where}: mm sizes need the spacing and all three figures; only {given} given")
    spacing = data["spacing_mm"]
    if not isinstance(spacing, list) or len(spacing) != 2:
        raise LesionRecordError(f"{where}.spacing_mm: expected [x_mm, y_mm], got {spacing!r}")
    sx, sy = (_positive(v, f"{where}.spacing_mm") for v in spacing)
    return {
        "width_mm": _positive(data["width_mm"], f"{where}.width_mm"),
        "depth_mm": _positive(data["depth_mm"], f"{where}.depth_mm"),
        "area_mm2": _positive(data["area_mm2"], f"{where}.area_mm2"),
        "spacing_mm": (sx, sy),
    }


def _descriptor(value: Any, name: str, where: str) -> Descriptor:
    if not isinstance(value, dict) or set(value) != {"value", "shown"}:
        raise LesionRecordError(f"{where}: expected {{value, shown}}, got {value!r}")
    if value["value"] not in DESCRIPTOR_VALUES[name]:
        raise LesionRecordError(f"{where}.value: {value['value']!r} is not one of {sorted(DESCRIPTOR_VALUES[name])}")
    if not isinstance(value["shown"], bool):
        raise LesionRecordError(f"{where}.shown: expected true or false, got {value['shown']!r}")
    return Descriptor(value["value"], value["shown"])
