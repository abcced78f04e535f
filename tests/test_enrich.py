"""The per-image stages on hand-made units: clipping, reader consensus, CheXmask in both spaces."""

from __future__ import annotations

import cv2
import numpy as np

from schemas.records import AnnotationRecord, Box, ImageRef, Landmarks, MaskRLE, SourceRecord
from transforms import enrich, geometry, geometry_stage, language_stage, masks, output_rows
from transforms.geometry import letterbox_for
from transforms.units import ImageUnit

WIDTH, HEIGHT = 900, 700  # landscape: CheXmask's centre-pad adds rows above and below


def decoded(record: SourceRecord, annotations=()) -> enrich.DecodedUnit:
    unit = ImageUnit(record=record, split="train", split_authority="official", annotations=list(annotations))
    return enrich.DecodedUnit(
        unit=unit,
        png=b"",
        letterbox=letterbox_for(WIDTH, HEIGHT, 512),
        width=WIDTH,
        height=HEIGHT,
        photometric="MONOCHROME2",
        bits_stored=12,
        source_format="dicom",
    )


def vindr_record(boxes=()) -> SourceRecord:
    key = "0123456789abcdef0123456789abcdef"
    return SourceRecord(
        image=ImageRef(
            image_key=f"vindr/{key}",
            source="vindr",
            native_id=key,
            uri="/x.dicom",
            format="dicom",
            official_split="train",
        ),
        boxes=list(boxes),
    )


def ellipse(shape, centre, axes) -> np.ndarray:
    canvas = np.zeros(shape, np.uint8)
    cv2.ellipse(canvas, centre, axes, 0, 0, 360, 1, -1)
    return canvas.astype(bool)


def organs(shape) -> dict[str, np.ndarray]:
    h, w = shape
    return {
        "right lung": ellipse(shape, (w * 3 // 10, h // 2), (w // 7, h // 3)),
        "left lung": ellipse(shape, (w * 7 // 10, h // 2), (w // 7, h // 3)),
        "heart": ellipse(shape, (w // 2 + w // 20, h * 6 // 10), (w // 8, h // 7)),
    }


def contour(mask: np.ndarray) -> list[tuple[float, float]]:
    found, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return [(float(x), float(y)) for x, y in found[0][:, 0, :]]


def chexmask_annotation(organ_masks: dict[str, np.ndarray], space: str) -> AnnotationRecord:
    h, w = next(iter(organ_masks.values())).shape
    return AnnotationRecord(
        target_key="vindr/0123456789abcdef0123456789abcdef",
        source="chexmask",
        native_id="VinDr-CXR/x",
        declared_width=w,
        declared_height=h,
        masks=[
            MaskRLE(
                label=k,
                rle=masks.rle_encode(m, "chexmask"),
                convention="chexmask",
                height=h,
                width=w,
                origin="chexmask",
            )
            for k, m in organ_masks.items()
        ],
        landmarks=[Landmarks(label=k, points=contour(m), origin="chexmask") for k, m in organ_masks.items()],
        provenance={"space": space},
    )


def to_preprocessed(mask: np.ndarray) -> np.ndarray:
    """CheXmask's VinDr preprocessing: centre-pad to a square, resize to 1024."""
    h, w = mask.shape
    side = max(h, w)
    top, left = (side - h) // 2, (side - w) // 2
    square = np.zeros((side, side), np.uint8)
    square[top : top + h, left : left + w] = mask
    return cv2.resize(square, (1024, 1024), interpolation=cv2.INTER_NEAREST).astype(bool)


def test_boxes_are_clipped_and_boxes_outside_the_image_are_item_rejects():
    record = vindr_record(
        [
            Box(label="Nodule/Mass", x1=-20, y1=100, x2=50, y2=160, origin="vindr-annotations", reader="R1"),
            Box(label="Nodule/Mass", x1=950, y1=10, x2=990, y2=60, origin="vindr-annotations", reader="R2"),
        ]
    )
    enriched, rejects = geometry_stage.geometry_unit(decoded(record))
    (box,) = enriched.boxes
    assert (box["x1"], box["x2"]) == (0, 50) and box["finding"] == "Lung Lesion"
    assert [(r.reason, r.level) for r in rejects] == [("box-outside-image", "item")]


def test_three_readers_give_a_consensus_box_beside_their_own():
    drawn = [(100, 100, 300, 260), (110, 95, 310, 250), (95, 105, 290, 270)]
    record = vindr_record(
        [
            Box(label="Cardiomegaly", x1=a, y1=b, x2=c, y2=d, origin="vindr-annotations", reader=f"R{i}")
            for i, (a, b, c, d) in enumerate(drawn, 1)
        ]
        + [Box(label="Nodule/Mass", x1=500, y1=300, x2=540, y2=340, origin="vindr-annotations", reader="R3")]
    )
    enriched, rejects = geometry_stage.geometry_unit(decoded(record))
    consensus = [b for b in enriched.boxes if b["reader"] == "consensus"]
    assert [(b["label"], b["readers"]) for b in consensus] == [("Cardiomegaly", ["R1", "R2", "R3"])]
    assert abs(consensus[0]["x1"] - np.mean([d[0] for d in drawn])) < 1e-9
    assert len(enriched.boxes) == 5  # four reader boxes kept beside the consensus
    assert [(r.reason, r.kind) for r in rejects] == [("no-reader-consensus", "filtered")]


def test_chexmask_preprocessed_rows_map_back_to_the_image():
    original = organs((HEIGHT, WIDTH))
    in_original, _ = geometry_stage.geometry_unit(decoded(vindr_record(), [chexmask_annotation(original, "original")]))
    preprocessed = {k: to_preprocessed(m) for k, m in original.items()}
    in_preprocessed, rejects = geometry_stage.geometry_unit(
        decoded(vindr_record(), [chexmask_annotation(preprocessed, "preprocessed-1024")])
    )
    assert not rejects and in_preprocessed.annotations
    assert abs(in_preprocessed.ctr - in_original.ctr) < 0.01
    assert geometry.ctr_band(in_preprocessed.ctr) == geometry.ctr_band(in_original.ctr)
    for mapped, direct in zip(in_preprocessed.boxes, in_original.boxes):
        assert mapped["label"] == direct["label"]
        assert all(abs(mapped[k] - direct[k]) <= 2 for k in ("x1", "y1", "x2", "y2"))
    for polygon in in_preprocessed.polygons:
        points = np.array(polygon["rings"][0])
        assert points[:, 0].max() < WIDTH and points[:, 1].max() < HEIGHT and points.min() >= 0


def test_chexmask_size_mismatch_rejects_the_annotation_not_the_image():
    wrong = organs((WIDTH, HEIGHT))  # height and width swapped, as the official back-mapping scripts do
    enriched, rejects = geometry_stage.geometry_unit(decoded(vindr_record(), [chexmask_annotation(wrong, "original")]))
    assert not enriched.annotations and enriched.ctr is None
    (reject,) = rejects
    assert (reject.source, reject.stage, reject.reason, reject.level) == (
        "chexmask",
        "geometry",
        "mask-size-mismatch",
        "record",
    )
    assert "swapped" in reject.detail


def test_pneumothorax_ratio_uses_the_lung_on_its_side():
    lungs = organs((HEIGHT, WIDTH))
    right = lungs["right lung"]  # the patient's right lung, on the image left
    rim = right & ~ellipse((HEIGHT, WIDTH), (WIDTH * 3 // 10, HEIGHT // 2), (WIDTH // 7 - 12, HEIGHT // 3 - 12))
    record = SourceRecord(
        image=ImageRef(
            image_key="siim/1.2.3", source="siim", native_id="1.2.3", uri="/x.dcm", format="dicom", subject_id="p"
        ),
        masks=[
            MaskRLE(
                label="Pneumothorax",
                rle=masks.rle_encode(rim, "siim"),
                convention="siim",
                height=HEIGHT,
                width=WIDTH,
                origin="siim-rle",
            )
        ],
    )
    annotation = chexmask_annotation(lungs, "original").model_copy(update={"target_key": "siim/1.2.3"})
    enriched, rejects = geometry_stage.geometry_unit(decoded(record, [annotation]))
    assert not rejects and enriched.ptx_side == "right"
    assert abs(enriched.ptx_ratio - rim.sum() / right.sum()) < 1e-12
    row = output_rows.annotation_row(language_stage.language_unit(enriched))
    assert row["ptx_band"] == geometry.ptx_band(enriched.ptx_ratio) and row["ptx_side"] == "right"
