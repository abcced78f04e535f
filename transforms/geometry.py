"""Letterbox arithmetic, box clipping, coordinate renderers, and the cardiothoracic and
pneumothorax ratios with their bands.

Coordinates are continuous pixel-edge coordinates: x = 0 is the left edge of column 0 and
x = width its right edge (a box ``(x1, y1, x2, y2)`` covers columns ``x1 .. x2 - 1``). A point
given in pixel-index coordinates (a pixel centre, e.g. a polygon vertex from
:func:`transforms.masks.mask_to_polygons`) is the edge coordinate minus 0.5; the difference
is at most half an original pixel, i.e. ``0.5 * scale`` canvas pixels.

Coordinate conventions of the profiles (``coordinates:`` in ``manifests/mixtures/*.yaml``), as
:func:`render_box` and :func:`render_polygon` write them for unit coordinates of the canvas:

- ``"bins1000"`` (IMT-CXR, Pix2seq/OFA tokens): each coordinate one token ``<bin_k>``, ``k`` in
  1..1000 (:func:`to_bins`), x before y, no spaces inside a box or a ring:
  box ``<bin_121><bin_241><bin_501><bin_801>``; a polygon is its rings' token runs
  ``<bin_x><bin_y><bin_x><bin_y>...`` separated by one space.
- ``"percent"`` (M4CXR): integers 0..100 (:func:`to_percent`): box ``[12, 24, 50, 80]``;
  polygon ``[[x, y, x, y, ...], [x, y, ...]]`` (one inner list per ring, always nested).
- ``"fixed3"``: floats with three decimals (:func:`to_fixed`): box ``[0.120, 0.240, 0.500, 0.800]``;
  polygon nested as for ``"percent"``.

:func:`parse_box` and :func:`parse_polygon` read these strings back into unit floats (bin centres,
percent / 100, the decimals), within half a bin / half a percent / 0.0005 of what was rendered.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal, cast

import numpy as np

import manifests
from transforms.masks import signed_area, simplify_ring

CtrBand = Literal["normal", "mild", "moderate", "severe"]
PtxBand = Literal["small", "moderate", "large"]
PtxSide = Literal["right", "left", "both"]
CoordinateConvention = Literal["bins1000", "percent", "fixed3"]
COORDINATE_CONVENTIONS = ("bins1000", "percent", "fixed3")
UnitRing = list[tuple[float, float]]


def _content_side(side: int, scale: float) -> int:
    """Whole canvas pixels a side of the original becomes (at least one)."""
    return max(1, round(side * scale))


@dataclass(frozen=True)
class Letterbox:
    """How an ``orig_width x orig_height`` image sits on a ``size x size`` canvas.

    ``canvas = original * scale + pad``. The long side fills the canvas exactly; the short side
    is resized to ``round(side * scale)`` whole pixels and centred with ``pad`` (whole pixels),
    so along it the content may end up to half a canvas pixel away from ``side * scale + pad``
    (one pixel for a side shorter than half a canvas pixel, which is still drawn one pixel wide).
    """

    size: int
    scale: float
    pad_x: float
    pad_y: float
    orig_width: int
    orig_height: int

    @property
    def content_width(self) -> int:
        """Width in canvas pixels of the resized image."""
        return _content_side(self.orig_width, self.scale)

    @property
    def content_height(self) -> int:
        return _content_side(self.orig_height, self.scale)

    def to_canvas(self, x: float, y: float) -> tuple[float, float]:
        """Original pixel-edge coordinates -> canvas pixel coordinates."""
        return x * self.scale + self.pad_x, y * self.scale + self.pad_y

    def to_unit(self, x: float, y: float) -> tuple[float, float]:
        """Original pixel-edge coordinates -> floats in [0, 1] of the canvas (for points inside the image)."""
        canvas_x, canvas_y = self.to_canvas(x, y)
        return canvas_x / self.size, canvas_y / self.size

    def box_to_unit(self, x1: float, y1: float, x2: float, y2: float) -> tuple[float, float, float, float]:
        """An original-pixel box -> ``(x1, y1, x2, y2)`` in [0, 1] of the canvas."""
        return (*self.to_unit(x1, y1), *self.to_unit(x2, y2))

    def to_original(self, canvas_x: float, canvas_y: float) -> tuple[float, float]:
        """Canvas pixel coordinates -> original pixel-edge coordinates (inverse of :meth:`to_canvas`)."""
        return (canvas_x - self.pad_x) / self.scale, (canvas_y - self.pad_y) / self.scale

    def unit_to_original(self, u: float, v: float) -> tuple[float, float]:
        """Unit canvas coordinates -> original pixel-edge coordinates (inverse of :meth:`to_unit`)."""
        return self.to_original(u * self.size, v * self.size)


def letterbox_for(width: int, height: int, size: int = 512) -> Letterbox:
    """The letterbox of a ``width x height`` image on a ``size`` canvas (what ``images.letterbox`` does)."""
    if width <= 0 or height <= 0 or size <= 0:
        raise ValueError(f"sizes must be positive, got width={width} height={height} size={size}")
    scale = size / max(width, height)
    return Letterbox(
        size=size,
        scale=scale,
        pad_x=float((size - _content_side(width, scale)) // 2),
        pad_y=float((size - _content_side(height, scale)) // 2),
        orig_width=width,
        orig_height=height,
    )


def clip_box(
    x1: float, y1: float, x2: float, y2: float, width: float, height: float
) -> tuple[float, float, float, float] | None:
    """The box clipped to ``[0, width] x [0, height]``; None when nothing of positive area is left
    (also for an inverted box, ``x2 <= x1`` or ``y2 <= y1``)."""
    clipped = (min(max(x1, 0), width), min(max(y1, 0), height), min(max(x2, 0), width), min(max(y2, 0), height))
    if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
        return None
    return clipped


def _check_unit(v: float) -> None:
    if not (0.0 <= v <= 1.0) or math.isnan(v):
        raise ValueError(f"unit coordinate must be in [0, 1], got {v}")


def to_bins(v: float, bins: int = 1000) -> int:
    """Bin number 1..bins of a unit float (IMT-CXR / Pix2seq): ``floor(v * bins) + 1``, and
    ``v = 1.0`` goes to the last bin. Bin ``b`` covers ``[(b - 1) / bins, b / bins)``."""
    _check_unit(v)
    return min(math.floor(v * bins) + 1, bins)


def bin_center(b: int, bins: int = 1000) -> float:
    """The unit float at the centre of bin ``b`` (1-based), the inverse used to read bins back."""
    if not 1 <= b <= bins:
        raise ValueError(f"bin must be in 1..{bins}, got {b}")
    return (b - 0.5) / bins


def to_percent(v: float) -> int:
    """Integer 0..100 of a unit float (M4CXR), rounded half up: ``floor(v * 100 + 0.5)``."""
    _check_unit(v)
    return math.floor(v * 100 + 0.5)


def to_fixed(v: float, decimals: int = 3) -> str:
    """A unit float as a fixed-point string, e.g. ``"0.125"``; rounded to nearest by Python's
    formatting of the exact binary value (so within ``0.5 * 10**-decimals``)."""
    _check_unit(v)
    return f"{v:.{decimals}f}"


def _columns_with(mask: np.ndarray, what: str) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"{what} mask must be 2-D, got shape {mask.shape}")
    columns = np.flatnonzero(mask.any(axis=0))
    if columns.size == 0:
        raise ValueError(f"{what} mask is empty")
    return columns


def cardiothoracic_ratio(heart_mask: np.ndarray, lung_mask: np.ndarray) -> float:
    """Maximal transverse heart diameter over maximal inner thoracic diameter.

    Heart: its horizontal bounding extent (leftmost to rightmost heart pixel, possibly on
    different rows, as the clinical MRD + MLD measure). Thorax: the widest row span of the
    lungs' union (leftmost pixel of the image-left lung to rightmost of the other, on one row).
    Widths count pixels (``last - first + 1``). Pass both lungs in ``lung_mask``.
    """
    heart_columns = _columns_with(heart_mask, "heart")
    _columns_with(lung_mask, "lung")
    lungs = np.asarray(lung_mask) != 0
    if np.shape(heart_mask) != lungs.shape:
        raise ValueError(f"heart and lung masks differ in shape: {np.shape(heart_mask)} vs {lungs.shape}")
    rows = lungs.any(axis=1)
    first = np.argmax(lungs[rows], axis=1)
    last = lungs.shape[1] - 1 - np.argmax(lungs[rows][:, ::-1], axis=1)
    thorax_width = int((last - first).max()) + 1
    heart_width = int(heart_columns[-1] - heart_columns[0]) + 1
    return heart_width / thorax_width


def _band(value: float, manifest: str) -> str:
    """Name of the band of ``manifest`` holding ``value``: bands in increasing order, each from
    its ``from`` edge (inclusive) up to the next band's edge."""
    bands = manifests.load(manifest)["bands"]
    edges = np.array([band["from"] for band in bands[1:]], dtype=float)
    return bands[int(np.searchsorted(edges, value, side="right"))]["name"]


def ctr_band(ctr: float) -> CtrBand:
    """Severity band of a cardiothoracic ratio; band edges from ``manifests/ctr_bands.yaml``
    (each band includes its lower edge)."""
    if not math.isfinite(ctr) or ctr <= 0:
        raise ValueError(f"cardiothoracic ratio must be a positive number, got {ctr}")
    return cast(CtrBand, _band(ctr, "ctr_bands.yaml"))  # the manifest's band names are the Literal's


def _mask(mask: np.ndarray, what: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """A 2-D mask as bool, non-empty, of the given shape."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"{what} mask must be 2-D, got shape {mask.shape}")
    if shape is not None and mask.shape != shape:
        raise ValueError(f"{what} mask has shape {mask.shape}, the pneumothorax mask {shape}")
    if not mask.any():
        raise ValueError(f"{what} mask is empty")
    return mask != 0


def pneumothorax_ratio(ptx_mask: np.ndarray, right_lung: np.ndarray, left_lung: np.ndarray) -> tuple[float, PtxSide]:
    """Pneumothorax area over the area of the lung on its side, and that side.

    The side is the lung mask the pneumothorax overlaps (any shared pixel); when it overlaps both
    or neither, the denominator is both lungs together (side ``"both"``). Right and left are the
    patient's (CheXmask "Right Lung" / "Left Lung"). The whole pneumothorax area is counted, also
    the part outside the lung mask, so the ratio can exceed 1 when the lung mask is small.
    """
    ptx = _mask(ptx_mask, "pneumothorax")
    right = _mask(right_lung, "right lung", ptx.shape)
    left = _mask(left_lung, "left lung", ptx.shape)
    touches_right, touches_left = bool((ptx & right).any()), bool((ptx & left).any())
    if touches_right != touches_left:
        side: PtxSide = "right" if touches_right else "left"
        lung_area = np.count_nonzero(right if touches_right else left)
    else:
        side = "both"
        lung_area = np.count_nonzero(right | left)
    return np.count_nonzero(ptx) / lung_area, side


def ptx_band(ratio: float) -> PtxBand:
    """Size band of a pneumothorax ratio; edges from ``manifests/ptx_bands.yaml`` (each band
    includes its lower edge)."""
    if not math.isfinite(ratio) or ratio <= 0:
        raise ValueError(f"pneumothorax ratio must be a positive number, got {ratio}")
    return cast(PtxBand, _band(ratio, "ptx_bands.yaml"))  # the manifest's band names are the Literal's


# ---------------------------------------------------------------- rendering per coordinate convention


def _check_convention(convention: str) -> None:
    if convention not in COORDINATE_CONVENTIONS:
        raise ValueError(
            f"unknown coordinate convention {convention!r}; expected one of {list(COORDINATE_CONVENTIONS)}"
        )


def _render_values(values: list[float], convention: CoordinateConvention) -> str:
    """Unit floats (x, y alternating) in one box, as the convention writes them."""
    if convention == "bins1000":
        return "".join(f"<bin_{to_bins(v)}>" for v in values)
    items = [str(to_percent(v)) if convention == "percent" else to_fixed(v, 3) for v in values]
    return "[" + ", ".join(items) + "]"


def _render_ring_values(units: np.ndarray, convention: CoordinateConvention) -> str:
    """:func:`_render_values` for a ring's many values at once: the same arithmetic as
    :func:`to_bins`, :func:`to_percent` and :func:`to_fixed`, vectorised."""
    outside = ~((units >= 0.0) & (units <= 1.0))  # NaN included
    if outside.any():
        _check_unit(float(units[np.argmax(outside)]))
    if convention == "bins1000":
        bins = np.minimum(np.floor(units * 1000).astype(np.int64) + 1, 1000)
        return "".join([f"<bin_{b}>" for b in bins.tolist()])
    if convention == "percent":
        items = [str(p) for p in np.floor(units * 100 + 0.5).astype(np.int64).tolist()]
    else:
        items = [f"{v:.3f}" for v in units.tolist()]
    return "[" + ", ".join(items) + "]"


def render_box(unit_box: tuple[float, float, float, float], convention: CoordinateConvention) -> str:
    """A unit box ``(u1, v1, u2, v2)`` as the convention writes it (see the module docstring)."""
    _check_convention(convention)
    if len(unit_box) != 4:
        raise ValueError(f"a box has 4 coordinates, got {len(unit_box)}")
    u1, v1, u2, v2 = unit_box
    if u2 < u1 or v2 < v1:
        raise ValueError(f"box corners are inverted: {tuple(unit_box)}")
    return _render_values([u1, v1, u2, v2], convention)


def simplified_rings(rings_unit: list[UnitRing], max_vertices: int = 30) -> list[np.ndarray]:
    """The rings as ``(n, 2)`` arrays, each longer than ``max_vertices`` simplified
    (:func:`transforms.masks.simplify_ring`); vertex order, and so a hole's orientation, is kept."""
    if max_vertices < 3:
        raise ValueError(f"max_vertices must be at least 3, got {max_vertices}")
    if not rings_unit:
        raise ValueError("a polygon needs at least one ring")
    simplified_all = []
    for ring in rings_unit:
        points = np.asarray(ring, dtype=float).reshape(-1, 2)
        if len(points) < 3:
            raise ValueError(f"a ring needs at least 3 vertices, got {len(points)}")
        simplified = simplify_ring(points, max_vertices)
        if simplified is not points and (signed_area(simplified) < 0) != (signed_area(points) < 0):
            simplified = simplified[::-1]
        simplified_all.append(simplified)
    return simplified_all


def render_polygon(rings_unit: list[UnitRing], convention: CoordinateConvention, max_vertices: int = 30) -> str:
    """Rings of unit points as the convention writes them (see the module docstring), simplified first
    (:func:`simplified_rings`)."""
    _check_convention(convention)
    rendered = [_render_ring_values(ring.ravel(), convention) for ring in simplified_rings(rings_unit, max_vertices)]
    if convention == "bins1000":
        return " ".join(rendered)
    return "[" + ", ".join(rendered) + "]"


_BIN_TOKEN = re.compile(r"<bin_(\d+)>")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def _parse_values(text: str, convention: CoordinateConvention) -> list[float]:
    """The unit floats of one rendered box or ring."""
    if convention == "bins1000":
        if _BIN_TOKEN.sub("", text).strip():
            raise ValueError(f"unexpected text between bin tokens in {text!r}")
        return [bin_center(int(b)) for b in _BIN_TOKEN.findall(text)]
    body = text.strip()
    if not (body.startswith("[") and body.endswith("]")):
        raise ValueError(f"expected a bracketed list, got {text!r}")
    numbers = [n.strip() for n in body[1:-1].split(",")]
    if not all(_NUMBER.fullmatch(n) for n in numbers):
        raise ValueError(f"expected comma-separated numbers in {text!r}")
    return [int(n) / 100 if convention == "percent" else float(n) for n in numbers]


def parse_box(text: str, convention: CoordinateConvention) -> tuple[float, float, float, float]:
    """The unit box a :func:`render_box` string stands for (bin centres, percent / 100, decimals)."""
    _check_convention(convention)
    values = _parse_values(text, convention)
    if len(values) != 4:
        raise ValueError(f"a box has 4 coordinates, {text!r} has {len(values)}")
    x1, y1, x2, y2 = values
    return (x1, y1, x2, y2)


def parse_polygon(text: str, convention: CoordinateConvention) -> list[UnitRing]:
    """The rings of unit points a :func:`render_polygon` string stands for."""
    _check_convention(convention)
    if convention == "bins1000":
        parts = text.split(" ")
    else:
        body = text.strip()
        if not (body.startswith("[[") and body.endswith("]]")):
            raise ValueError(f"expected a nested list of rings, got {text!r}")
        parts = ["[" + part + "]" for part in body[2:-2].split("], [")]
    rings = []
    for part in parts:
        values = _parse_values(part, convention)
        if len(values) % 2 or len(values) < 6:
            raise ValueError(f"a ring needs at least 3 (x, y) vertices, got {len(values)} numbers in {part!r}")
        rings.append(list(zip(values[0::2], values[1::2])))
    return rings


# ---------------------------------------------------------------- coordinates inside free text


@dataclass(frozen=True)
class CoordinateSpan:
    """A box or a polygon written in a text under a convention: where it stands (``text[start:end]``)
    and the unit coordinates it reads back to (:func:`parse_box` / :func:`parse_polygon`)."""

    kind: Literal["box", "polygon"]
    start: int
    end: int
    box: tuple[float, float, float, float] | None = None
    rings: tuple[tuple[tuple[float, float], ...], ...] | None = None


_BIN_RUN = re.compile(r"(?:<bin_\d+>)+")
_LIST_NUMBER = r"-?\d+(?:\.\d+)?"  # signed, so a negative coordinate is found and refused, not skipped
_FLAT_LIST = rf"\[{_LIST_NUMBER}(?:, {_LIST_NUMBER})*\]"
BRACKETED_COORDINATES = re.compile(rf"(?P<polygon>\[{_FLAT_LIST}(?:, {_FLAT_LIST})*\])|(?P<box>{_FLAT_LIST})")


def _unit_checked(values: tuple[float, ...] | list[float], text: str) -> None:
    if any(not 0.0 <= v <= 1.0 for v in values):
        raise ValueError(f"coordinates outside the canvas in {text!r}")


def _span(kind: str, text: str, start: int, end: int, convention: CoordinateConvention) -> CoordinateSpan:
    piece = text[start:end]
    if kind == "box":
        box = parse_box(piece, convention)
        _unit_checked(box, piece)
        if box[2] < box[0] or box[3] < box[1]:
            raise ValueError(f"box corners are inverted in {piece!r}")
        return CoordinateSpan("box", start, end, box=box)
    rings = parse_polygon(piece, convention)
    for ring in rings:
        _unit_checked([v for point in ring for v in point], piece)
    return CoordinateSpan("polygon", start, end, rings=tuple(tuple(ring) for ring in rings))


def find_coordinates(text: str, convention: CoordinateConvention) -> list[CoordinateSpan]:
    """Every box and polygon :func:`render_box` / :func:`render_polygon` wrote into ``text`` (an answer
    or a question, with labels and separators around them), in text order.

    ``bins1000``: a run of 4 ``<bin_k>`` tokens is a box; a run of an even number of at least 6 is a
    ring, and rings separated by exactly one space are the rings of one polygon (so two polygons
    written one space apart read as one; no template does that). ``percent`` / ``fixed3``: a flat
    bracketed list of 4 numbers is a box, a nested list a polygon; a flat list of another length is
    not a coordinate and is left alone. Raises ValueError for a bin run that is neither a box nor a
    ring, a polygon that does not parse, or a value outside the canvas.
    """
    _check_convention(convention)
    spans: list[CoordinateSpan] = []
    if convention == "bins1000":
        runs = [(m.start(), m.end(), len(_BIN_TOKEN.findall(m.group()))) for m in _BIN_RUN.finditer(text)]
        polygon: list[tuple[int, int]] = []  # (start, end) of the rings of the polygon being read
        for start, end, count in runs:
            if count == 4:
                kind = "box"
            elif count >= 6 and count % 2 == 0:
                kind = "ring"
            else:
                raise ValueError(
                    f"{count} bin tokens at offset {start} of {text!r}: neither a box (4) "
                    "nor a ring (an even number, at least 6)"
                )
            if polygon and (kind != "ring" or text[polygon[-1][1] : start] != " "):
                spans.append(_span("polygon", text, polygon[0][0], polygon[-1][1], convention))
                polygon = []
            if kind == "ring":
                polygon.append((start, end))
            else:
                spans.append(_span("box", text, start, end, convention))
        if polygon:
            spans.append(_span("polygon", text, polygon[0][0], polygon[-1][1], convention))
        return spans
    for match in BRACKETED_COORDINATES.finditer(text):
        if match.group("polygon"):
            spans.append(_span("polygon", text, match.start(), match.end(), convention))
        elif match.group("box").count(",") == 3:
            spans.append(_span("box", text, match.start(), match.end(), convention))
    return spans
