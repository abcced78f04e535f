"""Chest geometry first, pixels second.

:func:`build_frontal` turns a case's findings into shapes on a frontal view: lung fields and heart
as closed landmark contours (the CheXmask point counts: 44 right lung, 50 left lung, 26 heart),
masks filled from those contours, and lesion masks derived from the lungs (a pneumothorax is a
rim between the lung and its collapsed copy, an effusion a basal meniscus, a nodule a disc).
:func:`render_frontal` and :func:`render_lateral` draw radiograph-like images (attenuation in
[0, 1]: air dark, bone and heart bright) from the same shapes, so masks, boxes and pixels agree.

Sides are the patient's: the right lung lies on the IMAGE LEFT of a frontal view.
Coordinates are pixels, x = column, y = row; boxes are ``(x1, y1, x2, y2)`` with exclusive ends.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from pipelines.synth.cases import Findings, ctr_band
from transforms.masks import rle_encode

LANDMARK_COUNTS = {"right_lung": 44, "left_lung": 50, "heart": 26}
SIDES = {"right": "right_lung", "left": "left_lung"}
_EFFUSION_FRACTION = {1: 0.07, 2: 0.16, 3: 0.30}
_PNEUMOTHORAX_FRACTION = {1: 0.10, 2: 0.22, 3: 0.38}
_NODULE_RADIUS = {1: 0.010, 2: 0.017, 3: 0.028}  # fraction of the image width


@dataclass
class Frontal:
    """The shapes of one frontal image; masks are boolean ``(height, width)`` arrays."""

    width: int
    height: int
    landmarks: dict[str, np.ndarray]  # organ -> (n, 2) int32 (x, y), closed contour
    organs: dict[str, np.ndarray]  # "right_lung", "left_lung", "heart"
    lesions: dict[str, list[tuple[str, np.ndarray]]] = field(default_factory=dict)  # finding -> [(side, mask)]
    haze: np.ndarray | None = None  # edema density, float32
    pleural_lines: list[np.ndarray] = field(default_factory=list)  # edge of a collapsed lung
    devices: list[tuple[str, np.ndarray]] = field(default_factory=list)  # (kind, polyline (n, 2) int32)
    ribs: list[tuple[str, np.ndarray]] = field(default_factory=list)  # (side, polyline)
    clavicles: dict[str, np.ndarray] = field(default_factory=dict)  # side -> polyline
    fracture_gaps: list[np.ndarray] = field(default_factory=list)  # points where a rib is broken
    params: dict = field(default_factory=dict)  # midline, mediastinum, aortic knob, carina, ...

    @property
    def ctr(self) -> float:
        """Widest heart width / widest thoracic width (outer lung edges), measured on the masks."""
        return cardiothoracic_ratio(self.organs["right_lung"], self.organs["left_lung"], self.organs["heart"])

    @property
    def ctr_band(self) -> str:
        return ctr_band(self.ctr)


def cardiothoracic_ratio(right_lung: np.ndarray, left_lung: np.ndarray, heart: np.ndarray) -> float:
    """CTR of three masks: heart column extent over the column extent of both lungs together."""

    def extent(mask: np.ndarray) -> int:
        columns = np.flatnonzero(mask.any(axis=0))
        if columns.size == 0:
            raise ValueError("cannot measure a CTR on an empty mask")
        return int(columns[-1] - columns[0] + 1)

    return extent(heart) / extent(right_lung | left_lung)


def box_of(mask: np.ndarray) -> tuple[int, int, int, int]:
    """Tight ``(x1, y1, x2, y2)`` box of a non-empty mask, exclusive ends."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        raise ValueError("box of an empty mask")
    return int(cols[0]), int(rows[0]), int(cols[-1] + 1), int(rows[-1] + 1)


def fill_contour(points: np.ndarray, height: int, width: int) -> np.ndarray:
    """Boolean mask of a closed contour, filled the way CheXmask masks are (``drawContours``, filled)."""
    canvas = np.zeros((height, width), np.uint8)
    cv2.drawContours(canvas, [np.round(points).astype(np.int32).reshape(-1, 1, 2)], -1, 1, thickness=cv2.FILLED)
    return canvas.astype(bool)


def _closed_curve(control: np.ndarray, count: int) -> np.ndarray:
    """``count`` points evenly spaced along a Chaikin-smoothed closed curve through ``control``."""
    points = control.astype(np.float64)
    for _ in range(3):
        following = np.roll(points, -1, axis=0)
        points = np.stack([0.75 * points + 0.25 * following, 0.25 * points + 0.75 * following], axis=1).reshape(-1, 2)
    closed = np.vstack([points, points[:1]])
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(closed, axis=0), axis=1))])
    targets = np.arange(count) * arc[-1] / count
    return np.column_stack([np.interp(targets, arc, closed[:, 0]), np.interp(targets, arc, closed[:, 1])])


def _lung_contour(side: str, p: dict, heart_left: int, heart_right: int, count: int) -> np.ndarray:
    """The contour of one lung, starting at the apex and running laterally first."""
    w, h = p["width"], p["height"]
    sign = -1.0 if side == "right" else 1.0
    dome = p["cp"] - p["dome_rise"] + (0.02 if side == "left" else 0.0)
    medial = heart_left + 0.012 * w if side == "right" else heart_right - 0.012 * w
    phrenic = heart_left + 0.03 * w if side == "right" else heart_right - 0.03 * w
    cp_x = p["cx"] + sign * p["lat"] * 0.93 * w

    def at(du: float, v: float) -> tuple[float, float]:
        return p["cx"] + sign * du * w, v * h

    control = [
        at(0.19, p["apex"]),
        at(0.28, p["apex"] + 0.03),
        at(0.345, p["apex"] + 0.12),
        at(p["lat"], 0.47),
        at(p["lat"] * 0.985, p["cp"] - 0.09),
        (cp_x, p["cp"] * h),
        ((cp_x * 2 + phrenic) / 3, (dome + 0.02) * h),
        ((cp_x + phrenic * 2) / 3, dome * h),
        (phrenic, (dome + 0.02) * h),
        (medial, p["hy"] * h),
        at(0.068, p["hy"] - p["hb"]),
        at(0.062, 0.30),
        at(0.09, p["apex"] + 0.045),
    ]
    return _closed_curve(np.array(control), count)


def _heart_contour(p: dict, left: int, width_px: int) -> np.ndarray:
    """26 points; the two with cos = +-1 sit exactly on the heart's outer columns."""
    right = left + width_px - 1
    centre = left + 0.42 * (width_px - 1)
    angles = 2 * np.pi * np.arange(LANDMARK_COUNTS["heart"]) / LANDMARK_COUNTS["heart"]
    cos, sin = np.cos(angles), np.sin(angles)
    x = np.where(cos >= 0, centre + (right - centre) * cos, centre + (centre - left) * cos)
    y = p["hy"] * p["height"] + p["hb"] * p["height"] * sin * np.where(sin > 0, 0.85, 1.0)
    return np.column_stack([x, y])


def _int_points(points: np.ndarray) -> np.ndarray:
    return np.round(points).astype(np.int32)


def _fit_organs(p: dict, ctr_target: float) -> dict[str, np.ndarray]:
    """Landmarks of both lungs and the heart with the heart width set so the measured CTR hits the target."""
    width = p["width"]
    thoracic = 2 * p["lat"] * width
    for _ in range(4):
        heart_px = int(round(ctr_target * thoracic))
        left = int(round(p["cx"] - 0.42 * heart_px))
        landmarks = {
            "right_lung": _int_points(
                _lung_contour("right", p, left, left + heart_px - 1, LANDMARK_COUNTS["right_lung"])
            ),
            "left_lung": _int_points(_lung_contour("left", p, left, left + heart_px - 1, LANDMARK_COUNTS["left_lung"])),
            "heart": _int_points(_heart_contour(p, left, heart_px)),
        }
        measured = landmarks["left_lung"][:, 0].max() - landmarks["right_lung"][:, 0].min() + 1
        if measured == thoracic:
            break
        thoracic = measured
    return landmarks


def _sides(laterality: str | None) -> list[str]:
    return ["right", "left"] if laterality is None or laterality == "bilateral" else [laterality]


def _zone_rows(box: tuple[int, int, int, int], zone: str | None) -> tuple[int, int]:
    _, top, _, bottom = box
    third = (bottom - top) / 3
    index = {"upper": 0, "middle": 1, "lower": 2}.get(zone or "middle", 1)
    return int(top + index * third), int(top + (index + 1) * third)


def _largest_component(mask: np.ndarray) -> np.ndarray:
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if count <= 1:
        return mask
    biggest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return labels == biggest


def _ellipse(shape: tuple[int, int], centre: tuple[float, float], axes: tuple[float, float]) -> np.ndarray:
    canvas = np.zeros(shape, np.uint8)
    cv2.ellipse(
        canvas,
        (int(round(centre[0])), int(round(centre[1]))),
        (max(1, int(round(axes[0]))), max(1, int(round(axes[1])))),
        0,
        0,
        360,
        1,
        -1,
    )
    return canvas.astype(bool)


def _effusion(frontal: Frontal, side: str, severity: int) -> np.ndarray:
    """A basal meniscus: the lowest lung pixels, reaching higher laterally, of a set area fraction."""
    lung = frontal.organs[SIDES[side]]
    ys, xs = np.nonzero(lung)
    medial = xs.max() if side == "right" else xs.min()
    lateralness = np.abs(xs - medial) / (np.ptp(xs) + 1)
    score = ys + 0.35 * (np.ptp(ys) + 1) * lateralness**1.5
    keep = score >= np.quantile(score, 1 - _EFFUSION_FRACTION[severity])
    mask = np.zeros_like(lung)
    mask[ys[keep], xs[keep]] = True
    return mask


def _pneumothorax(frontal: Frontal, side: str, severity: int, pockets: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Pneumothorax components (main rim, optional separate basal pocket) and the visceral pleural line.

    The lung collapses toward an anchor (lung base for a small one, the hilum otherwise); the rim
    between the lung edge and the collapsed lung, lateral to the medial quarter, is the air.
    """
    organ = SIDES[side]
    lung = frontal.organs[organ]
    x1, y1, x2, y2 = box_of(lung)
    lung_w, lung_h = x2 - x1, y2 - y1
    medial_x = x2 if side == "right" else x1
    anchor_y = y2 if severity == 1 else y1 + 0.55 * lung_h
    anchor_x = (x1 + x2) / 2 if severity == 1 else medial_x - np.sign(medial_x - (x1 + x2) / 2) * 0.15 * lung_w
    scale = np.sqrt(1.0 - _PNEUMOTHORAX_FRACTION[severity])
    points = frontal.landmarks[organ].astype(np.float64)
    collapsed = (
        fill_contour(
            np.array([anchor_x, anchor_y]) + (points - [anchor_x, anchor_y]) * scale, frontal.height, frontal.width
        )
        & lung
    )
    columns = np.arange(frontal.width)[None, :]
    lateral = (columns < medial_x - 0.25 * lung_w) if side == "right" else (columns > medial_x + 0.25 * lung_w)
    main = _largest_component(lung & ~collapsed & lateral)
    components = [main]
    if pockets > 1:
        lateral_x = x1 + 0.16 * lung_w if side == "right" else x2 - 0.16 * lung_w
        pocket = _ellipse(lung.shape, (lateral_x, y1 + 0.74 * lung_h), (0.07 * lung_w, 0.05 * lung_h))
        halo = cv2.dilate(main.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)
        pocket = _largest_component(pocket & lung & ~halo)
        if pocket.any():
            components.append(pocket)
    air = np.logical_or.reduce(components)
    line = cv2.dilate(air.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool) & lung & ~air
    return components, line


def _disc_in_zone(frontal: Frontal, side: str, zone: str | None, radius: float, rng: np.random.Generator) -> np.ndarray:
    """A disc of ``radius`` px whose centre lies in the lung zone, at least ``radius`` + 3 px inside the lung."""
    lung = frontal.organs[SIDES[side]]
    top, bottom = _zone_rows(box_of(lung), zone)
    inside = cv2.distanceTransform(lung.astype(np.uint8), cv2.DIST_L2, 5)
    inside[:top] = 0
    inside[bottom:] = 0
    candidates = np.flatnonzero(inside.ravel() > radius + 3)
    if candidates.size == 0:
        candidates = np.flatnonzero(inside.ravel() == inside.max())
    y, x = divmod(int(candidates[rng.integers(candidates.size)]), frontal.width)
    return _ellipse(lung.shape, (x, y), (radius, radius)) & lung


def _blob(frontal: Frontal, side: str, zone: str | None, severity: int, rng: np.random.Generator) -> np.ndarray:
    """An airspace opacity: an ellipse in the lung zone, cut by the lung edge."""
    lung = frontal.organs[SIDES[side]]
    x1, y1, x2, y2 = box_of(lung)
    grow = 0.7 + 0.2 * severity
    axes = (0.2 * (x2 - x1) * grow, 0.09 * (y2 - y1) * grow)
    centre = _disc_in_zone(frontal, side, zone, 2, rng)
    cy, cx = (int(v.mean()) for v in np.nonzero(centre))
    return _largest_component(_ellipse(lung.shape, (cx, cy), axes) & lung)


def _band(frontal: Frontal, side: str, severity: int) -> np.ndarray:
    """Plate-like atelectasis: a thin horizontal band at the lung base."""
    lung = frontal.organs[SIDES[side]]
    x1, y1, x2, y2 = box_of(lung)
    centre = ((x1 + x2) / 2, y1 + 0.78 * (y2 - y1))
    return _largest_component(
        _ellipse(lung.shape, centre, (0.3 * (x2 - x1), (0.018 + 0.008 * severity) * (y2 - y1))) & lung
    )


def _apical_cap(frontal: Frontal, side: str) -> np.ndarray:
    lung = frontal.organs[SIDES[side]]
    _, y1, _, y2 = box_of(lung)
    cap = lung.copy()
    cap[int(y1 + 0.08 * (y2 - y1)) :] = False
    return cap


def _edema_haze(frontal: Frontal, severity: int) -> np.ndarray:
    """Perihilar density: a Gaussian around each hilum, inside the lungs."""
    rows = np.arange(frontal.height, dtype=np.float32)[:, None]
    cols = np.arange(frontal.width, dtype=np.float32)[None, :]
    haze = np.zeros((frontal.height, frontal.width), np.float32)
    for side, organ in SIDES.items():
        x1, y1, x2, y2 = box_of(frontal.organs[organ])
        hilum_x = x2 - 0.1 * (x2 - x1) if side == "right" else x1 + 0.1 * (x2 - x1)
        hilum_y = y1 + 0.45 * (y2 - y1)
        sigma_x, sigma_y = 0.45 * (x2 - x1), 0.3 * (y2 - y1)
        bump = np.exp(-(((cols - hilum_x) / sigma_x) ** 2) / 2) * np.exp(-(((rows - hilum_y) / sigma_y) ** 2) / 2)
        haze += np.where(frontal.organs[organ], bump, 0).astype(np.float32)
    return haze * (0.05 + 0.04 * severity)


def _rib_polylines(p: dict) -> list[tuple[str, np.ndarray]]:
    """Posterior ribs: ten arcs per side sloping down and out from the spine."""
    ribs = []
    s = np.linspace(0, 1, 24)
    for side, sign in (("right", -1.0), ("left", 1.0)):
        for k in range(10):
            y0 = (p["apex"] - 0.01 + k * 0.058) * p["height"]
            x = p["cx"] + sign * (0.03 + s * (p["lat"] + 0.03)) * p["width"]
            y = y0 + p["height"] * (0.055 * np.sin(np.pi * s * 0.9) + 0.03 * s)
            ribs.append((side, _int_points(np.column_stack([x, y]))))
    return ribs


def _clavicles(p: dict) -> dict[str, np.ndarray]:
    s = np.linspace(0, 1, 16)
    lines = {}
    for side, sign in (("right", -1.0), ("left", 1.0)):
        x = p["cx"] + sign * (0.03 + 0.28 * s) * p["width"]
        y = (p["apex"] + 0.03 - 0.06 * s + 0.015 * np.sin(np.pi * s * 2)) * p["height"]
        lines[side] = _int_points(np.column_stack([x, y]))
    return lines


def _device_polyline(kind: str, p: dict) -> np.ndarray:
    w, h, cx = p["width"], p["height"], p["cx"]
    if kind == "endotracheal tube":
        points = [(cx, 0), (cx + 0.003 * w, p["carina"] * h - 0.045 * h)]
    elif kind == "nasogastric tube":
        points = [
            (cx + 0.01 * w, 0),
            (cx + 0.012 * w, 0.5 * h),
            (cx + 0.05 * w, (p["cp"] + 0.05) * h),
            (cx + 0.11 * w, (p["cp"] + 0.1) * h),
        ]
    elif kind == "right internal jugular line":
        points = [(cx - 0.12 * w, 0), (cx - 0.07 * w, 0.12 * h), (cx - 0.04 * w, 0.26 * h), (cx - 0.035 * w, 0.36 * h)]
    elif kind == "pacemaker":
        points = [
            (cx + 0.26 * w, 0.16 * h),
            (cx + 0.1 * w, 0.2 * h),
            (cx - 0.02 * w, 0.38 * h),
            (cx + 0.02 * w, p["hy"] * h),
        ]
    else:
        raise ValueError(f"unknown device {kind!r}")
    return _int_points(np.array(points, dtype=np.float64))


def build_frontal(
    findings: Findings,
    ctr_target: float,
    width: int,
    height: int,
    rng: np.random.Generator,
    pneumothorax_pockets: int = 1,
) -> Frontal:
    """The shapes of a frontal image for these findings; raises if the measured CTR misses its band."""
    enlarged_mediastinum = any(f.name == "Enlarged Cardiomediastinum" and f.presence == 1 for f in findings.values())
    cp = float(rng.uniform(0.70, 0.76))
    dome_rise = float(rng.uniform(0.06, 0.08))
    p: dict[str, Any] = {
        "width": width,
        "height": height,
        "cx": width * (0.5 + float(rng.uniform(-0.012, 0.012))),
        "apex": float(rng.uniform(0.11, 0.15)),
        "cp": cp,
        "dome_rise": dome_rise,
        "lat": float(rng.uniform(0.36, 0.40)),
        "hy": cp - dome_rise - 0.07,
        "hb": 0.12,
        "carina": float(rng.uniform(0.27, 0.31)),
        "mediastinum_half": 0.085 if enlarged_mediastinum else 0.055,
        "knob_radius": 0.045 if enlarged_mediastinum else 0.03,
    }
    p["knob"] = (p["cx"] + 0.055 * width, (p["apex"] + 0.13) * height)
    landmarks = _fit_organs(p, ctr_target)
    organs = {name: fill_contour(points, height, width) for name, points in landmarks.items()}
    frontal = Frontal(width, height, landmarks, organs, params=p)
    expected = ctr_band(ctr_target)
    if frontal.ctr_band != expected:
        raise AssertionError(f"measured CTR {frontal.ctr:.4f} left its band {expected} (target {ctr_target:.4f})")
    frontal.ribs = _rib_polylines(p)
    frontal.clavicles = _clavicles(p)
    _add_lesions(frontal, findings, rng, pneumothorax_pockets)
    return frontal


def _add_lesions(frontal: Frontal, findings: Findings, rng: np.random.Generator, pockets: int) -> None:
    lesions = frontal.lesions
    p = frontal.params
    for name in sorted(findings):
        finding = findings[name]
        if finding.presence == 0:
            continue
        severity = finding.severity or 1
        if name == "Pleural Effusion":
            lesions[name] = [(side, _effusion(frontal, side, severity)) for side in _sides(finding.laterality)]
        elif name == "Pneumothorax":
            side = _sides(finding.laterality)[0]
            components, line = _pneumothorax(frontal, side, severity, pockets)
            lesions[name] = [(side, component) for component in components]
            frontal.pleural_lines.append(line)
        elif name == "Lung Lesion":
            radius = _NODULE_RADIUS[severity] * frontal.width
            lesions[name] = [
                (side, _disc_in_zone(frontal, side, finding.zone, radius, rng))
                for side in _sides(finding.laterality)[:1]
            ]
        elif name in ("Consolidation", "Lung Opacity"):
            lesions[name] = [
                (side, _blob(frontal, side, finding.zone, severity, rng)) for side in _sides(finding.laterality)[:1]
            ]
        elif name == "Atelectasis":
            lesions[name] = [(side, _band(frontal, side, severity)) for side in _sides(finding.laterality)]
        elif name == "Pleural Other":
            lesions[name] = [(side, _apical_cap(frontal, side)) for side in _sides(finding.laterality)[:1]]
        elif name == "Edema":
            frontal.haze = _edema_haze(frontal, severity)
            threshold = 0.45 * float(frontal.haze.max())
            lesions[name] = [
                (side, frontal.organs[organ] & (frontal.haze > threshold)) for side, organ in SIDES.items()
            ]
        elif name == "Cardiomegaly":
            lesions[name] = [("", frontal.organs["heart"])]
        elif name == "Enlarged Cardiomediastinum":
            radius = p["knob_radius"] * frontal.width
            lesions[name] = [("", _ellipse((frontal.height, frontal.width), p["knob"], (radius, radius)))]
        elif name == "Fracture":
            side = _sides(finding.laterality)[0]
            polyline = [line for rib_side, line in frontal.ribs if rib_side == side][int(rng.integers(4, 8))]
            point = polyline[int(len(polyline) * 0.7)]
            frontal.fracture_gaps.append(point)
            radius = 0.02 * frontal.width
            lesions[name] = [(side, _ellipse((frontal.height, frontal.width), tuple(point), (radius, radius)))]
        elif name == "Support Devices" and finding.detail:
            frontal.devices.append((finding.detail, _device_polyline(finding.detail, p)))
    if (
        "Pneumonia" in findings
        and findings["Pneumonia"].presence != 0
        and not ({"Consolidation", "Lung Opacity"} & set(lesions))
    ):
        pneumonia = findings["Pneumonia"]
        side = _sides(pneumonia.laterality)[0]
        lesions["Pneumonia"] = [(side, _blob(frontal, side, pneumonia.zone, 1, rng))]


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cell: int) -> np.ndarray:
    """Low-frequency noise in [-1, 1]: a coarse random grid resized with cubic interpolation."""
    coarse = rng.uniform(-1, 1, (max(2, shape[0] // cell), max(2, shape[1] // cell))).astype(np.float32)
    return cv2.resize(coarse, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)


def _finish(image: np.ndarray, rng: np.random.Generator, text: str | None) -> np.ndarray:
    """Blur to radiograph softness, add quantum noise and optional burned-in text; clip to [0, 1]."""
    height, width = image.shape
    image = cv2.GaussianBlur(image, (0, 0), sigmaX=max(1.0, 0.0025 * width))
    image += rng.normal(0.0, 0.012, image.shape).astype(np.float32)
    if text:
        scale = width / 900
        ink = np.zeros(image.shape, np.uint8)
        cv2.putText(
            ink,
            text,
            (int(0.04 * width), int(0.06 * height)),
            cv2.FONT_HERSHEY_SIMPLEX,
            scale,
            255,
            max(1, int(2 * scale)),
            cv2.LINE_AA,
        )
        image = np.maximum(image, ink.astype(np.float32) * (0.97 / 255))
    return np.clip(image, 0.0, 1.0)


def render_frontal(frontal: Frontal, rng: np.random.Generator, text: str | None = None) -> np.ndarray:
    """A float32 frontal radiograph in [0, 1] drawn from the shapes (higher = more attenuation)."""
    h, w = frontal.height, frontal.width
    p = frontal.params
    cx = p["cx"]
    image = np.full((h, w), 0.03, np.float32)
    cv2.ellipse(image, (int(cx), int(0.58 * h)), (int(0.47 * w), int(0.62 * h)), 0, 0, 360, 0.5, -1)
    cv2.rectangle(image, (int(cx - 0.12 * w), 0), (int(cx + 0.12 * w), int(0.2 * h)), 0.5, -1)
    lungs = frontal.organs["right_lung"] | frontal.organs["left_lung"]
    depth = np.clip((np.arange(h, dtype=np.float32) / h - p["apex"]) / (p["cp"] - p["apex"]), 0, 1)[:, None]
    markings = 0.03 * _smooth_noise(rng, (h, w), 12) + 0.015 * _smooth_noise(rng, (h, w), 4)
    image = np.where(lungs, 0.15 + 0.07 * depth + markings, image).astype(np.float32)
    half = p["mediastinum_half"] * w
    cv2.rectangle(image, (int(cx - half), int(0.04 * h)), (int(cx + half), int(p["hy"] * h)), 0.6, -1)
    cv2.circle(image, (int(p["knob"][0]), int(p["knob"][1])), int(p["knob_radius"] * w), 0.62, -1)
    image[frontal.organs["heart"]] = 0.7
    bone = np.zeros((h, w), np.float32)
    cv2.rectangle(bone, (int(cx - 0.035 * w), 0), (int(cx + 0.035 * w), h), 0.6, -1)
    rib_thickness = max(2, int(0.016 * h))
    for _, line in frontal.ribs:
        cv2.polylines(bone, [line.reshape(-1, 1, 2)], False, 1.0, rib_thickness)
    for point in frontal.fracture_gaps:
        cv2.line(
            bone,
            (int(point[0] - 0.006 * w), int(point[1] - 0.02 * h)),
            (int(point[0] + 0.006 * w), int(point[1] + 0.02 * h)),
            0.0,
            max(2, int(0.005 * w)),
        )
    for line in frontal.clavicles.values():
        cv2.polylines(bone, [line.reshape(-1, 1, 2)], False, 1.6, max(3, int(0.022 * h)))
    image += 0.11 * bone
    density = {
        "Consolidation": 0.3,
        "Lung Opacity": 0.18,
        "Pneumonia": 0.2,
        "Lung Lesion": 0.28,
        "Atelectasis": 0.2,
        "Pleural Other": 0.15,
    }
    soft = np.zeros((h, w), np.float32)
    for name, parts in frontal.lesions.items():
        for _, mask in parts:
            if name in density:
                soft[mask] += density[name]
    image += cv2.GaussianBlur(soft, (0, 0), sigmaX=max(1.5, 0.006 * w))
    if frontal.haze is not None:
        image += frontal.haze
    for _, mask in frontal.lesions.get("Pleural Effusion", []):
        image[mask] = 0.58 + 0.04 * depth.repeat(w, axis=1)[mask]
    for _, mask in frontal.lesions.get("Pneumothorax", []):
        image[mask] = 0.07
    for line in frontal.pleural_lines:
        image[line] += 0.2
    devices = np.zeros((h, w), np.float32)
    for _, polyline in frontal.devices:
        cv2.polylines(devices, [polyline.reshape(-1, 1, 2)], False, 1.0, max(2, int(0.005 * w)))
    image += 0.45 * devices
    return _finish(image, rng, text)


def render_lateral(
    width: int, height: int, findings: Findings, rng: np.random.Generator, text: str | None = None
) -> np.ndarray:
    """A float32 lateral radiograph: one lung field, heart anterior (image left), spine posterior."""
    h, w = height, width
    image = np.full((h, w), 0.03, np.float32)
    cv2.ellipse(image, (int(0.5 * w), int(0.58 * h)), (int(0.42 * w), int(0.6 * h)), 0, 0, 360, 0.52, -1)
    cv2.ellipse(image, (int(0.5 * w), int(0.45 * h)), (int(0.3 * w), int(0.3 * h)), 0, 0, 360, 0.2, -1)
    heart = findings.get("Cardiomegaly")
    grow = 1.0 + (0.1 * (heart.severity or 1) if heart is not None and heart.presence == 1 else 0.0)
    cv2.ellipse(image, (int(0.38 * w), int(0.6 * h)), (int(0.13 * w * grow), int(0.14 * h)), -20, 0, 360, 0.66, -1)
    for k in range(12):
        top = int((0.1 + k * 0.07) * h)
        cv2.rectangle(image, (int(0.7 * w), top), (int(0.8 * w), top + int(0.055 * h)), 0.75, -1)
    effusion = findings.get("Pleural Effusion")
    if effusion is not None and effusion.presence == 1:
        level = 0.75 - 0.05 * (effusion.severity or 1)
        cv2.ellipse(
            image, (int(0.66 * w), int(0.78 * h)), (int(0.1 * w), int((0.78 - level) * h)), 0, 180, 360, 0.58, -1
        )
    image += 0.02 * _smooth_noise(rng, (h, w), 10)
    return _finish(image, rng, text)


def to_unsigned(image: np.ndarray, bits: int) -> np.ndarray:
    """Scale a [0, 1] float image to unsigned integers of ``bits`` stored bits (uint8 or uint16)."""
    top = (1 << bits) - 1
    dtype = np.uint8 if bits <= 8 else np.uint16
    return np.round(np.clip(image, 0.0, 1.0) * top).astype(dtype)


Box = tuple[int, int, int, int]


def _clip_box(box: tuple[float, float, float, float], width: int, height: int) -> Box:
    x1, y1, x2, y2 = box
    return (
        int(np.clip(round(x1), 0, width - 1)),
        int(np.clip(round(y1), 0, height - 1)),
        int(np.clip(round(x2), 1, width)),
        int(np.clip(round(y2), 1, height)),
    )


def region_boxes(frontal: Frontal) -> dict[str, Box]:
    """Boxes of the Chest ImaGenome anatomical regions, derived from the same shapes (clipped to the image)."""
    w, h, p = frontal.width, frontal.height, frontal.params
    cx, half = p["cx"], p["mediastinum_half"] * w
    regions: dict[str, tuple[float, float, float, float]] = {}
    for side, organ in SIDES.items():
        x1, y1, x2, y2 = box_of(frontal.organs[organ])
        lw, lh = x2 - x1, y2 - y1
        medial_right = side == "right"
        regions[f"{side} lung"] = (x1, y1, x2, y2)
        regions[f"{side} upper lung zone"] = (x1, y1, x2, y1 + lh / 3)
        regions[f"{side} mid lung zone"] = (x1, y1 + lh / 3, x2, y1 + 2 * lh / 3)
        regions[f"{side} lower lung zone"] = (x1, y1 + 2 * lh / 3, x2, y2)
        regions[f"{side} apical zone"] = (x1, y1, x2, y1 + 0.15 * lh)
        regions[f"{side} hilar structures"] = (
            (x2 - 0.35 * lw, y1 + 0.35 * lh, x2 + 0.02 * w, y1 + 0.6 * lh)
            if medial_right
            else (x1 - 0.02 * w, y1 + 0.35 * lh, x1 + 0.35 * lw, y1 + 0.6 * lh)
        )
        regions[f"{side} costophrenic angle"] = (
            (x1, y2 - 0.18 * lh, x1 + 0.3 * lw, y2) if medial_right else (x2 - 0.3 * lw, y2 - 0.18 * lh, x2, y2)
        )
        regions[f"{side} hemidiaphragm"] = (x1, y2 - 0.12 * lh, x2, y2 + 0.04 * lh)
        line = frontal.clavicles[side]
        pad = 0.012 * h
        regions[f"{side} clavicle"] = (
            line[:, 0].min() - pad,
            line[:, 1].min() - pad,
            line[:, 0].max() + pad,
            line[:, 1].max() + pad,
        )
    hx1, hy1, hx2, hy2 = box_of(frontal.organs["heart"])
    carina = p["carina"] * h
    knob_x, knob_y = p["knob"]
    knob_r = p["knob_radius"] * w
    regions.update(
        {
            "trachea": (cx - 0.03 * w, 0.02 * h, cx + 0.03 * w, carina),
            "carina": (cx - 0.03 * w, carina - 0.02 * h, cx + 0.03 * w, carina + 0.02 * h),
            "spine": (cx - 0.04 * w, 0.05 * h, cx + 0.04 * w, 0.95 * h),
            "aortic arch": (knob_x - knob_r, knob_y - knob_r, knob_x + knob_r, knob_y + knob_r),
            "mediastinum": (min(cx - half, hx1), 0.06 * h, max(cx + half, hx2), hy2),
            "upper mediastinum": (cx - half, 0.06 * h, cx + half, hy1),
            "svc": (cx - half, 0.15 * h, cx, hy1 + 0.03 * h),
            "cardiac silhouette": (hx1, hy1, hx2, hy2),
            "cavoatrial junction": (hx1, hy1, hx1 + 0.06 * w, hy1 + 0.05 * h),
            "right atrium": (hx1, (hy1 + hy2) / 2 - 0.05 * h, (hx1 + hx2) / 2, hy2),
            "abdomen": (
                regions["right lung"][0],
                max(regions["right lung"][3], regions["left lung"][3]),
                regions["left lung"][2],
                h,
            ),
        }
    )
    return {name: _clip_box(box, w, h) for name, box in sorted(regions.items())}


@dataclass(frozen=True)
class FrontalSummary:
    """What annotation writers need of a frontal image once its pixels are written."""

    width: int
    height: int
    landmarks: dict[str, np.ndarray]
    organ_rles: dict[str, str]  # CheXmask column name -> 1-based row-major RLE
    ctr: float
    ctr_band: str
    lesion_boxes: dict[str, list[tuple[str, Box]]]  # finding -> [(side, box)]
    regions: dict[str, Box]


def summarize(frontal: Frontal) -> FrontalSummary:
    """Landmarks, CheXmask RLEs of the three organs, CTR, lesion and region boxes of a frontal image."""
    rles = {
        column: rle_encode(frontal.organs[organ], "chexmask")
        for column, organ in (("Left Lung", "left_lung"), ("Right Lung", "right_lung"), ("Heart", "heart"))
    }
    lesion_boxes = {
        name: [(side, box_of(mask)) for side, mask in parts if mask.any()]
        for name, parts in sorted(frontal.lesions.items())
    }
    return FrontalSummary(
        frontal.width,
        frontal.height,
        frontal.landmarks,
        rles,
        frontal.ctr,
        frontal.ctr_band,
        lesion_boxes,
        region_boxes(frontal),
    )


def lesion_boxes_json(summary: FrontalSummary | None) -> dict[str, list[list[int]]] | None:
    """Lesion boxes of a frontal image for the truth file (``[x1, y1, x2, y2]``, exclusive ends)."""
    if summary is None:
        return None
    return {name: [list(box) for _, box in parts] for name, parts in summary.lesion_boxes.items()}
