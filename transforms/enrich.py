"""The per-image units after the join and the first per-image stage.

One image goes through four pure stages, each a function of one unit: :func:`decode_unit` here (pixels
to the canvas PNG), then :func:`transforms.geometry_stage.geometry_unit` (boxes, polygons, ratios),
:func:`transforms.language_stage.language_unit` (report sections, labels, attribute phrases, English)
and :mod:`transforms.output_rows` (the ``images`` and ``annotations`` rows). A stage raises when the
image's own record cannot go on (the Beam layer turns that into a reject with the stage name); problems
confined to one annotation or one box come back as rejects beside the unit, and the unit goes on.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from schemas.records import AnnotationRecord, AttributeMention
from schemas.rows import BoxCell, FindingCell, PolygonCell, SectionCell
from transforms import images, io
from transforms.geometry import Letterbox
from transforms.png import encode_png
from transforms.units import ImageUnit


class ImageSizeMismatch(ValueError):
    """The decoded image does not have the size its metadata states."""


@dataclass
class DecodedUnit:
    unit: ImageUnit
    png: bytes
    letterbox: Letterbox
    width: int
    height: int
    photometric: str | None
    bits_stored: int | None
    source_format: str


@dataclass
class EnrichedUnit:
    decoded: DecodedUnit
    boxes: list[BoxCell] = field(default_factory=list)
    polygons: list[PolygonCell] = field(default_factory=list)
    ctr: float | None = None
    ptx_ratio: float | None = None
    ptx_side: str | None = None
    annotations: list[AnnotationRecord] = field(default_factory=list)  # those that survived geometry
    findings: list[FindingCell] = field(default_factory=list)
    sections: list[SectionCell] = field(default_factory=list)
    mentions: list[AttributeMention] = field(default_factory=list)
    findings_labels: dict[str, float | None] | None = None
    report_english: str | None = None
    report_translation: str | None = None


# ---------------------------------------------------------------- image stage


def decode_unit(unit: ImageUnit, size: int, png_compression: int) -> DecodedUnit:
    """Decode the image bytes, letterbox to ``size``, window to 8-bit and encode as PNG at zlib level
    ``png_compression``."""
    ref = unit.record.image
    image = images.decode_letterboxed(io.read_image_bytes(ref.uri), ref.format, size)
    expected = (ref.expected_width, ref.expected_height)
    if None not in expected and expected != (image.width, image.height):
        raise ImageSizeMismatch(
            f"{ref.image_key}: metadata says {expected[0]}x{expected[1]}, file is {image.width}x{image.height}"
        )
    return DecodedUnit(
        unit=unit,
        png=encode_png(image.canvas, png_compression),
        letterbox=image.letterbox,
        width=image.width,
        height=image.height,
        photometric=image.photometric,
        bits_stored=image.bits_stored,
        source_format=image.source_format,
    )


def kebab(name: str) -> str:
    """``ImageDecodeError`` -> ``image-decode-error``: reject reasons from exception classes."""
    out = []
    for i, ch in enumerate(name):
        if ch.isupper() and i and not name[i - 1].isupper():
            out.append("-")
        out.append(ch.lower())
    return "".join(out)
