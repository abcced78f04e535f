"""Binary masks: the two RLE codecs of the sources, and masks turned into boxes and polygons.

Masks are boolean ``(height, width)`` arrays, ``mask[row, col]``.

RLE conventions (``docs/formats/chexmask.md`` §3 and ``docs/formats/siim-acr.md`` §4):

- ``"chexmask"``: ``start length`` pairs, starts 1-based and absolute, pixels flattened row-major.
  An empty mask is ``""``.
- ``"siim"``: the first start is a 0-based absolute index, every later start is the number of
  background pixels since the end of the previous run; pixels flattened column-major
  (flat index = ``col * height + row``). An empty mask is ``"-1"`` (the files write `` -1``).

Coordinates: boxes are in pixel-edge coordinates (``x2`` = last column + 1); polygon vertices are
in pixel-index coordinates (vertex ``(x, y)`` = centre of the pixel in column ``x``, row ``y``), the
convention of OpenCV contours and of the CheXmask landmarks, so ``cv2.fillPoly`` of an
unsimplified ring gives back exactly its pixels.
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np
import shapely
from shapely.geometry import LineString, Point
from shapely.geometry import Polygon as ShapelyPolygon

Convention = Literal["chexmask", "siim"]
Ring = list[tuple[float, float]]

_EMPTY_SIIM = "-1"
_CONVENTIONS = ("chexmask", "siim")


def _check_convention(convention: str) -> None:
    if convention not in _CONVENTIONS:
        raise ValueError(f"unknown RLE convention {convention!r}; expected one of {list(_CONVENTIONS)}")


def _parse_rle_ints(rle: str) -> np.ndarray:
    """The whitespace-separated integers of an RLE string, as int64."""
    try:
        values = np.array(rle.split(), dtype=np.int64)
    except (ValueError, OverflowError) as err:
        raise ValueError(f"RLE contains a non-integer token: {err}") from None
    if values.size % 2:
        raise ValueError(f"RLE has an odd number of integers ({values.size}); expected start/length pairs")
    return values


def _runs_from_rle(values: np.ndarray, convention: Convention) -> tuple[np.ndarray, np.ndarray]:
    """Absolute 0-based run starts and run ends (exclusive) in flat pixel order, validated."""
    raw_starts, lengths = values[0::2], values[1::2]
    if (lengths <= 0).any():
        bad = int(lengths[lengths <= 0][0])
        raise ValueError(f"RLE run length must be positive, got {bad}")
    if convention == "chexmask":
        if (raw_starts < 1).any():
            bad = int(raw_starts[raw_starts < 1][0])
            raise ValueError(f"chexmask RLE starts are 1-based, got start {bad}")
        starts = raw_starts - 1
        ends = starts + lengths
        if (starts[1:] < ends[:-1]).any():
            index = int(np.flatnonzero(starts[1:] < ends[:-1])[0]) + 1
            raise ValueError(
                f"chexmask RLE runs are unsorted or overlap: run {index} starts at {int(raw_starts[index])} "
                f"before the previous run ends at {int(ends[index - 1])}"
            )
    else:
        if (raw_starts < 0).any():
            bad = int(raw_starts[raw_starts < 0][0])
            raise ValueError(f"siim RLE starts and gaps must be >= 0, got {bad}")
        # start_i = sum of gaps up to i + sum of lengths before i
        ends = np.cumsum(raw_starts + lengths)
        starts = ends - lengths
    return starts, ends


def rle_decode(rle: str, height: int, width: int, convention: Convention) -> np.ndarray:
    """Boolean ``(height, width)`` mask of an RLE string; ``""``, ``"-1"`` and ``" -1"`` are empty.

    Raises ``ValueError`` for malformed strings (odd count, non-integers, non-positive lengths,
    negative starts, unsorted or overlapping runs, runs past the last pixel).
    """
    _check_convention(convention)
    if height <= 0 or width <= 0:
        raise ValueError(f"mask size must be positive, got height={height} width={width}")
    text = rle.strip()
    n_pixels = height * width
    if text in ("", _EMPTY_SIIM):
        return np.zeros((height, width), dtype=bool)
    starts, ends = _runs_from_rle(_parse_rle_ints(text), convention)
    if ends[-1] > n_pixels:
        raise ValueError(f"RLE run ends at pixel {int(ends[-1])}, past the {height}x{width} mask ({n_pixels} pixels)")
    # Alternating background / foreground stretches: gap before each run, the run, then the tail.
    counts = np.empty(2 * starts.size + 1, dtype=np.int64)
    counts[0:-1:2] = starts - np.concatenate(([0], ends[:-1]))
    counts[1::2] = ends - starts
    counts[-1] = n_pixels - ends[-1]
    stretch_values = np.arange(counts.size, dtype=np.uint8) % 2
    flat = np.repeat(stretch_values, counts)
    return _from_flat_order(flat, height, width, convention).view(bool)


def _from_flat_order(flat: np.ndarray, height: int, width: int, convention: Convention) -> np.ndarray:
    """A uint8 flat pixel array in the convention's order as a C-contiguous ``(height, width)`` array."""
    if convention == "chexmask":
        return flat.reshape(height, width)
    return cv2.transpose(flat.reshape(width, height))  # cv2 transposes uint8 far faster than numpy copies


def _to_flat_order(mask: np.ndarray, convention: Convention) -> np.ndarray:
    """A ``(height, width)`` uint8 mask flattened in the convention's pixel order."""
    if convention == "chexmask":
        return np.ascontiguousarray(mask).ravel()
    return cv2.transpose(np.ascontiguousarray(mask)).ravel()


def rle_encode(mask: np.ndarray, convention: Convention) -> str:
    """RLE string of a 2-D mask (non-zero = foreground), the exact inverse of :func:`rle_decode`.

    An empty mask gives ``""`` (chexmask) or ``"-1"`` (siim). Unlike the original SIIM
    ``mask2rle``, a run touching the last pixel is written, so every mask round-trips.
    """
    _check_convention(convention)
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D (height, width), got shape {mask.shape}")
    flat = _to_flat_order((mask != 0).view(np.uint8), convention)
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    if flat.size and flat[0]:
        changes = np.concatenate(([0], changes))
    if flat.size and flat[-1]:
        changes = np.concatenate((changes, [flat.size]))
    starts, ends = changes[0::2], changes[1::2]
    if starts.size == 0:
        return "" if convention == "chexmask" else _EMPTY_SIIM
    lengths = ends - starts
    firsts = starts + 1 if convention == "chexmask" else starts - np.concatenate(([0], ends[:-1]))
    pairs = np.column_stack((firsts, lengths)).ravel()
    return " ".join(pairs.astype(str).tolist())


def _as_uint8_mask(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D (height, width), got shape {mask.shape}")
    return (mask != 0).astype(np.uint8)


def mask_to_boxes(mask: np.ndarray, union: bool = False) -> list[tuple[int, int, int, int]]:
    """One tight ``(x1, y1, x2, y2)`` box per 8-connected component, in pixel-edge coordinates.

    Boxes are sorted by ``(x1, y1, x2, y2)``. With ``union=True`` and at least one component,
    the box around all components is appended last. An empty mask gives ``[]``.
    """
    count, _, stats, _ = cv2.connectedComponentsWithStats(_as_uint8_mask(mask), connectivity=8)
    components = stats[1:count]  # row 0 is the background
    boxes = sorted(
        (int(x), int(y), int(x + w), int(y + h))
        for x, y, w, h in components[:, [cv2.CC_STAT_LEFT, cv2.CC_STAT_TOP, cv2.CC_STAT_WIDTH, cv2.CC_STAT_HEIGHT]]
    )
    if union and boxes:
        corners = np.array(boxes)
        boxes.append(
            (int(corners[:, 0].min()), int(corners[:, 1].min()), int(corners[:, 2].max()), int(corners[:, 3].max()))
        )
    return boxes


def signed_area(ring: Ring | np.ndarray) -> float:
    """Shoelace area of a ring in (x, y): positive for exterior rings, negative for holes."""
    points = np.asarray(ring, dtype=float)
    x, y = points[:, 0], points[:, 1]
    return float(0.5 * (np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y)))


def ring_is_hole(ring: Ring) -> bool:
    """Whether a ring from :func:`mask_to_polygons` is a hole (negative :func:`signed_area`)."""
    return signed_area(ring) < 0


# Half-width given to one-pixel-wide parts of a contour: wide enough to make a valid polygon, and
# with bevel joins every new vertex stays within 0.36 px of a pixel centre, so cv2.fillPoly (which
# rounds vertices to whole pixels) draws exactly those pixels again.
_THIN_PART_HALF_WIDTH = 0.25


def _valid_polygons(points: np.ndarray, height: int, width: int) -> tuple[list[ShapelyPolygon], list[ShapelyPolygon]]:
    """Valid polygons of positive area for one traced contour: its area parts and its thin bands.

    A contour valid as is stays untouched (one area part). Otherwise (a single pixel, a line, a
    spike, lobes touching at one pixel) it is split into its valid polygonal parts, and its
    one-pixel-wide parts, which are always foreground pixels (also when they poke into a hole),
    become thin bands around their pixel centres, clipped to the image (vertices never below 0
    or past the last pixel centre, so unit coordinates stay in [0, 1]).
    """
    distinct = np.unique(points, axis=0)
    if len(distinct) >= 3:
        polygon = ShapelyPolygon(points)
        if polygon.is_valid and polygon.area > 0:
            return [polygon], []
        parts = shapely.get_parts(shapely.make_valid(polygon))
    else:
        parts = [Point(distinct[0]) if len(distinct) == 1 else LineString(distinct)]
    areas = [part for part in parts if part.geom_type == "Polygon" and part.area > 0]
    thin = [part for part in parts if part.geom_type != "Polygon"]
    bands = []
    if thin:
        widened = shapely.union_all(thin).buffer(_THIN_PART_HALF_WIDTH, cap_style="square", join_style="bevel")
        last_x, last_y = (max(side - 1, _THIN_PART_HALF_WIDTH) for side in (width, height))
        widened = shapely.clip_by_rect(widened, 0.0, 0.0, last_x, last_y)
        bands = [part for part in shapely.get_parts(widened) if part.geom_type == "Polygon" and part.area > 0]
    return areas, bands


def _ring_vertices(polygon: ShapelyPolygon) -> np.ndarray:
    """Unclosed vertex array of a polygon's exterior."""
    return np.asarray(polygon.exterior.coords)[:-1]


def _simplest_ring(polygon: ShapelyPolygon, max_vertices: int, preserve_topology: bool) -> np.ndarray | None:
    """Douglas-Peucker with the smallest tolerance found whose result is a valid ring of at most
    ``max_vertices`` vertices; None when none is found. Topology-preserving results are valid by
    construction and shrink as the tolerance grows, so a binary search fits; plain results are
    checked on a ladder of growing tolerances."""
    extent = float(max(np.ptp(_ring_vertices(polygon), axis=0)))

    def feasible(tolerance: float) -> np.ndarray | None:
        simplified = polygon.simplify(tolerance, preserve_topology=preserve_topology)
        if simplified.geom_type != "Polygon" or simplified.is_empty or not simplified.is_valid:
            return None
        ring = _ring_vertices(simplified)
        return ring if 3 <= len(ring) <= max_vertices and simplified.area > 0 else None

    if not preserve_topology:
        ladder = extent * 2.0 ** (-np.arange(40, -1, -1) / 2)
        return next((ring for ring in map(feasible, ladder) if ring is not None), None)
    best = feasible(extent)
    if best is None:
        return None
    low, high = 0.0, extent
    while high - low > 1e-3:
        middle = (low + high) / 2
        candidate = feasible(middle)
        if candidate is None:
            low = middle
        else:
            high, best = middle, candidate
    return best


def simplify_ring(coords: np.ndarray, max_vertices: int) -> np.ndarray:
    """A valid ring (unclosed) of at most ``max_vertices`` vertices covering about the same area.

    Topology-preserving Douglas-Peucker first; a ring it cannot reduce enough falls back to plain
    Douglas-Peucker, then to the simplified convex hull (always valid).
    """
    if len(coords) <= max_vertices:
        return coords
    polygon = ShapelyPolygon(coords)
    for candidate_polygon, preserve in ((polygon, True), (polygon, False), (polygon.convex_hull, False)):
        ring = _simplest_ring(candidate_polygon, max_vertices, preserve)
        if ring is not None:
            return ring
    raise ValueError(f"cannot simplify a ring of {len(coords)} vertices to {max_vertices}")


_VERTEX_DECIMALS = 4  # drops float noise from buffering, unless rounding would make a ring invalid


def _oriented(coords: np.ndarray, hole: bool) -> Ring:
    """The ring as (x, y) tuples, rounded, turned so that its orientation says whether it is a hole."""
    rounded = np.round(coords, _VERTEX_DECIMALS) + 0.0
    if ShapelyPolygon(rounded).is_valid:
        coords = rounded
    ring = [(float(x), float(y)) for x, y in coords]
    if (signed_area(ring) < 0) != hole:
        ring.reverse()
    return ring


def mask_to_polygons(mask: np.ndarray, max_vertices: int = 30) -> list[Ring]:
    """Rings outlining every 8-connected component of a mask and every hole in them.

    Each ring is an unclosed list of ``(x, y)`` vertices in pixel-index coordinates, at most
    ``max_vertices`` long, valid as ``shapely.Polygon(ring)``. Orientation tells the kind:
    exterior rings have positive :func:`signed_area` (counter-clockwise as shapely's ``is_ccw``
    reports it, which looks clockwise on screen with y down), holes negative (:func:`ring_is_hole`).
    Exteriors come first, then holes, each in the order OpenCV traces them (deterministic).
    """
    if max_vertices < 3:
        raise ValueError(f"max_vertices must be at least 3, got {max_vertices}")
    binary = _as_uint8_mask(mask)
    contours, hierarchy = cv2.findContours(binary, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return []
    exteriors: list[Ring] = []
    holes: list[Ring] = []

    def add(polygon: ShapelyPolygon, hole: bool) -> None:
        """The polygon's exterior as a ring of the given kind, its interiors as the other kind
        (interiors occur only in repaired contours: background enclosed by thin parts, or
        foreground enclosed by a self-touching hole contour)."""
        (holes if hole else exteriors).append(_oriented(simplify_ring(_ring_vertices(polygon), max_vertices), hole))
        for interior in polygon.interiors:
            inner = np.asarray(interior.coords)[:-1]
            (exteriors if hole else holes).append(_oriented(simplify_ring(inner, max_vertices), not hole))

    for contour, (_, _, _, parent) in zip(contours, hierarchy[0]):
        areas, bands = _valid_polygons(contour[:, 0, :].astype(float), *binary.shape)
        for polygon in areas:
            add(polygon, hole=parent != -1)
        for band in bands:
            add(band, hole=False)
    return exteriors + holes


_SUBPIXEL_BITS = 4  # fixed-point fraction bits, so fractional vertices reach cv2.fillPoly unrounded by us


def _fill_ring(ring: Ring, height: int, width: int, keep_outline: bool) -> np.ndarray:
    """uint8 raster of a ring's filled inside, with (keep_outline) or without its outline pixels."""
    canvas = np.zeros((height, width), dtype=np.uint8)
    points = np.rint(np.asarray(ring, dtype=float) * (1 << _SUBPIXEL_BITS)).astype(np.int32)
    cv2.fillPoly(canvas, [points], 1, lineType=cv2.LINE_8, shift=_SUBPIXEL_BITS)
    if not keep_outline:
        cv2.polylines(canvas, [points], True, 0, lineType=cv2.LINE_8, shift=_SUBPIXEL_BITS)
    return canvas


def polygons_to_mask(rings: list[Ring], height: int, width: int) -> np.ndarray:
    """Boolean mask of rings as :func:`mask_to_polygons` writes them (orientation marks holes).

    A pixel is foreground when the exteriors covering it (outline included) outnumber the holes
    strictly containing it, so islands inside holes come back too. Vertices are pixel-index
    coordinates, as OpenCV draws them.
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"mask size must be positive, got height={height} width={width}")
    depth = np.zeros((height, width), dtype=np.int32)
    for ring in rings:
        if len(ring) < 3:
            raise ValueError(f"a ring needs at least 3 vertices, got {len(ring)}")
        if ring_is_hole(ring):
            depth -= _fill_ring(ring, height, width, keep_outline=False)
        else:
            depth += _fill_ring(ring, height, width, keep_outline=True)
    return depth > 0


def polygon_mask_iou(rings: list[Ring], mask: np.ndarray) -> float:
    """Intersection over union of the rasterised rings and a mask (1.0 when both are empty)."""
    target = _as_uint8_mask(mask).astype(bool)
    drawn = polygons_to_mask(rings, *target.shape)
    union = np.count_nonzero(drawn | target)
    if union == 0:
        return 1.0
    return np.count_nonzero(drawn & target) / union
