"""The coordinate frames an export writes boxes and polygons in, and the rewriting of a row's text from
its profile's convention into one of them.

Unit coordinates ``(u, v)`` are fractions of the square exported image (the letterboxed canvas, or its
resize). A frame writes them as:

==============  ============================================================  ==========================
frame           a box                                                         for
==============  ============================================================  ==========================
``bins1000``    ``<bin_k>`` tokens, ``k = floor(1000 u) + 1`` in 1..1000        IMT-CXR, Pix2seq, OFA
``percent``     ``[x1, y1, x2, y2]``, integers ``round(100 u)``                 M4CXR
``fixed3``      ``[x1, y1, x2, y2]``, floats with three decimals               MediVLM, any float reader
``norm1000``    ``[x1, y1, x2, y2]``, integers ``round(1000 u)`` in 0..1000      Qwen2-VL, Qwen3-VL
``pixels``      ``[x1, y1, x2, y2]``, integers ``round(u W)``, ``round(v H)``      Qwen2.5-VL (W x H after its
                                                                              resize, :func:`qwen_resized`)
==============  ============================================================  ==========================

The first three are the profiles' own conventions (:mod:`transforms.geometry`); polygons are written
as there (one bracketed list of ``x, y`` values per ring, nested; bin runs separated by a space).
``round`` is half up. Reading a frame back (:meth:`CoordinateFrame.parse_box`) gives the unit
coordinates within :meth:`CoordinateFrame.tolerance`.

:func:`reframe_text` rewrites every box and polygon of a text. The values come from the row's target
(the canonical unit geometry the text was rendered from) when one of its boxes or polygons renders to
exactly that text, so a frame finer than the profile's loses nothing; otherwise from the text itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, TypeGuard, cast

import numpy as np

from transforms.geometry import (
    BRACKETED_COORDINATES,
    COORDINATE_CONVENTIONS,
    CoordinateConvention,
    CoordinateSpan,
    UnitRing,
    find_coordinates,
    parse_box,
    parse_polygon,
    render_box,
    render_polygon,
    simplified_rings,
)

FrameKind = Literal["bins1000", "percent", "fixed3", "norm1000", "pixels"]
FRAMES: tuple[str, ...] = (*COORDINATE_CONVENTIONS, "norm1000", "pixels")
Geometry = tuple[Literal["box", "polygon"], tuple]


def _is_convention(kind: str) -> TypeGuard[CoordinateConvention]:
    """Whether a frame is one of the profiles' own conventions (:mod:`transforms.geometry` writes it)."""
    return kind in COORDINATE_CONVENTIONS


@dataclass(frozen=True)
class CoordinateFrame:
    """A frame (module docstring); ``width`` and ``height`` only for ``pixels``."""

    kind: FrameKind
    width: int | None = None
    height: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in FRAMES:
            raise ValueError(f"unknown coordinate frame {self.kind!r}; one of {list(FRAMES)}")
        if (self.kind == "pixels") != (self.width is not None and self.height is not None):
            raise ValueError("the pixels frame, and only it, takes a width and a height")
        if self.width is not None and self.height is not None and (self.width < 1 or self.height < 1):
            raise ValueError(f"pixel frame size must be positive, got {self.width} x {self.height}")

    @property
    def scale(self) -> tuple[int, int]:
        """Integer steps across the image along x and y (integer frames only)."""
        if self.kind == "pixels":
            assert self.width is not None and self.height is not None  # __post_init__ checked it
            return self.width, self.height
        return {"percent": (100, 100), "norm1000": (1000, 1000)}[self.kind]

    def describe(self) -> str:
        return f"pixels {self.width}x{self.height}" if self.kind == "pixels" else self.kind

    def tolerance(self) -> tuple[float, float]:
        """The largest distance, in unit coordinates along x and y, between a value and its reading back."""
        if self.kind == "bins1000":
            return 0.0005, 0.0005
        if self.kind == "fixed3":
            return 0.0005, 0.0005
        sx, sy = self.scale
        return 0.5 / sx, 0.5 / sy

    def _integers(self, values: np.ndarray) -> list[int]:
        outside = ~((values >= 0.0) & (values <= 1.0))
        if outside.any():
            raise ValueError(f"unit coordinate must be in [0, 1], got {values[np.argmax(outside)]}")
        sx, sy = self.scale
        scaled = values.reshape(-1, 2) * np.array([sx, sy], dtype=float)
        return np.floor(scaled + 0.5).astype(np.int64).ravel().tolist()

    def render_box(self, unit_box: tuple[float, float, float, float]) -> str:
        if _is_convention(self.kind):
            return render_box(unit_box, self.kind)
        render_box(unit_box, "fixed3")  # the same checks: 4 values, corners in order
        return "[" + ", ".join(map(str, self._integers(np.asarray(unit_box, dtype=float)))) + "]"

    def render_polygon(self, rings_unit: list[UnitRing], max_vertices: int = 30) -> str:
        if _is_convention(self.kind):
            return render_polygon(rings_unit, self.kind, max_vertices)
        rings = simplified_rings(rings_unit, max_vertices)
        return "[" + ", ".join("[" + ", ".join(map(str, self._integers(ring.ravel()))) + "]" for ring in rings) + "]"

    def _unit(self, values: list[float]) -> list[float]:
        sx, sy = self.scale
        return [v / (sx if index % 2 == 0 else sy) for index, v in enumerate(values)]

    def parse_box(self, text: str) -> tuple[float, float, float, float]:
        """The unit box a :meth:`render_box` string stands for."""
        if _is_convention(self.kind):
            return parse_box(text, self.kind)
        x1, y1, x2, y2 = self._unit(list(parse_box(text, "fixed3")))
        return (x1, y1, x2, y2)

    def parse_polygon(self, text: str) -> list[UnitRing]:
        """The rings of unit points a :meth:`render_polygon` string stands for."""
        if _is_convention(self.kind):
            return parse_polygon(text, self.kind)
        return [[self._unit_point(point) for point in ring] for ring in parse_polygon(text, "fixed3")]

    def _unit_point(self, point: tuple[float, float]) -> tuple[float, float]:
        x, y = self._unit(list(point))
        return (x, y)


QWEN_MIN_PIXELS = 56 * 56
QWEN_MAX_PIXELS = 16384 * 28 * 28


def find_in_frame(text: str, frame: CoordinateFrame) -> list[CoordinateSpan]:
    """Every box and polygon a frame wrote into ``text``, read back to unit coordinates
    (:func:`transforms.geometry.find_coordinates` for the profile conventions; for the integer frames
    a flat bracketed list of 4 numbers is a box and a nested list a polygon)."""
    if _is_convention(frame.kind):
        return find_coordinates(text, frame.kind)
    spans = []
    for match in BRACKETED_COORDINATES.finditer(text):
        piece = match.group()
        if match.group("polygon"):
            rings = frame.parse_polygon(piece)
            spans.append(
                CoordinateSpan("polygon", match.start(), match.end(), rings=tuple(tuple(ring) for ring in rings))
            )
        elif piece.count(",") == 3:
            spans.append(CoordinateSpan("box", match.start(), match.end(), box=frame.parse_box(piece)))
    return spans


def qwen_resized(
    height: int, width: int, factor: int = 28, min_pixels: int = QWEN_MIN_PIXELS, max_pixels: int = QWEN_MAX_PIXELS
) -> tuple[int, int]:
    """The ``(height, width)`` a Qwen2-VL / Qwen2.5-VL image processor resizes an image to: each side
    rounded to a multiple of ``factor`` (the 14-pixel patch times the 2x2 merge), then, if the area is
    above ``max_pixels`` or below ``min_pixels``, both sides scaled by one factor (square root of the
    area ratio) and floored or ceiled to multiples of ``factor`` so the area lands inside. The
    defaults are the ``min_pixels`` / ``max_pixels`` of the released Qwen2.5-VL checkpoints'
    ``preprocessor_config.json``; Qwen3-VL uses ``factor=32`` (16-pixel patches)."""
    if max(height, width) / min(height, width) > 200:
        raise ValueError(f"aspect ratio of {width}x{height} is above 200")
    resized_h = round(height / factor) * factor
    resized_w = round(width / factor) * factor
    if resized_h * resized_w > max_pixels:
        shrink = math.sqrt(height * width / max_pixels)
        resized_h = max(factor, math.floor(height / shrink / factor) * factor)
        resized_w = max(factor, math.floor(width / shrink / factor) * factor)
    elif resized_h * resized_w < min_pixels:
        grow = math.sqrt(min_pixels / (height * width))
        resized_h = math.ceil(height * grow / factor) * factor
        resized_w = math.ceil(width * grow / factor) * factor
    return resized_h, resized_w


def _candidates(value, found: list[Geometry]) -> None:
    """Every box (4 unit numbers, corners in order) and polygon (a list of rings of >= 3 unit points)
    anywhere inside a target value; rings beside ``start_vertices`` (segmentation) also as rotated to
    start there, as the text writes them."""
    if isinstance(value, dict):
        rings, starts = value.get("rings"), value.get("start_vertices")
        if (
            isinstance(rings, list)
            and isinstance(starts, list)
            and len(rings) == len(starts)
            and all(_is_ring(ring) for ring in rings)
            and all(isinstance(s, int) for s in starts)
        ):
            rotated = [ring[start % len(ring) :] + ring[: start % len(ring)] for ring, start in zip(rings, starts)]
            _candidates(rotated, found)
        for item in value.values():
            _candidates(item, found)
        return
    if not isinstance(value, list) or not value:
        return
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    if (
        numbers
        and len(value) == 4
        and all(0 <= v <= 1 for v in value)
        and value[0] <= value[2]
        and value[1] <= value[3]
    ):
        found.append(("box", tuple(float(v) for v in value)))
        return
    if all(_is_ring(ring) for ring in value):
        found.append(("polygon", tuple(tuple((float(x), float(y)) for x, y in ring) for ring in value)))
        return
    for item in value:
        _candidates(item, found)


def _is_ring(value) -> bool:
    return (
        isinstance(value, list)
        and len(value) >= 3
        and all(
            isinstance(p, list) and len(p) == 2 and all(isinstance(c, (int, float)) and 0 <= c <= 1 for c in p)
            for p in value
        )
    )


def target_geometry(target: dict, convention: CoordinateConvention, max_vertices: int) -> dict[str, Geometry]:
    """The boxes and polygons of a row's target keyed by how ``convention`` writes them. Two different
    geometries that write the same text leave it out: which of them a span stands for is not known, so
    it is read from the text."""
    found: list[Geometry] = []
    _candidates(target, found)
    rendered: dict[str, Geometry] = {}
    ambiguous: set[str] = set()
    for kind, value in found:
        try:
            text = (
                render_box(value, convention)
                if kind == "box"
                else render_polygon([list(ring) for ring in value], convention, max_vertices)
            )
        except ValueError:
            continue
        if rendered.setdefault(text, (kind, value)) != (kind, value):
            ambiguous.add(text)
    return {text: geometry for text, geometry in rendered.items() if text not in ambiguous}


def reframe_text(
    text: str, convention: CoordinateConvention, frame: CoordinateFrame, exact: dict[str, Geometry], max_vertices: int
) -> tuple[str, int, int]:
    """``text`` with every box and polygon written in ``convention`` rewritten in ``frame``; also the
    number of coordinates rewritten and how many of them had no exact value in the target (read from
    the text, so within the profile's rounding). A frame equal to the convention returns the text."""
    if frame.kind == convention:
        return text, 0, 0
    pieces: list[str] = []
    cursor = rewritten = from_text = 0
    for span in find_coordinates(text, convention):
        written = text[span.start : span.end]
        kind, value = exact.get(written, (span.kind, None))
        if value is None or kind != span.kind:
            from_text += 1
            value = span.box if span.kind == "box" else span.rings
            kind = span.kind
        pieces.append(text[cursor : span.start])
        pieces.append(  # a span, and an exact value, carries the geometry of its kind
            frame.render_box(cast(tuple[float, float, float, float], value))
            if kind == "box"
            else frame.render_polygon([list(ring) for ring in cast(tuple, value)], max_vertices)
        )
        cursor = span.end
        rewritten += 1
    pieces.append(text[cursor:])
    return "".join(pieces), rewritten, from_text
