"""CheXmask (``OriginalResolution``) writer (``docs/formats/chexmask.md``).

One row per covered frontal image of MIMIC (``MIMIC-CXR-JPG.csv.gz``, ``dicom_id``), VinDr
(``VinDr-CXR.csv``, ``image_id``) and PadChest (``Padchest.csv``, ``ImageID``) — the mix of ``.csv`` and
``.csv.gz`` is deliberate. Masks are the filled landmark contours, 1-based row-major RLE at the
image's own Height/Width; ``Right Lung`` is the patient's right (image left). Traps reproduced:
Landmarks as a NumPy repr in even rows and flat comma integers in odd rows; ``Dice RCA (Max)``
before ``(Mean)`` in the Padchest file with Max < Mean in its even rows; ``Dice RCA (Mean)`` < 0.7
in every fifth row of each file; every seventh MIMIC frontal image has no row at all.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.synth import output
from pipelines.synth.anatomy import FrontalSummary
from pipelines.synth.cases import rng_for

FILES = {
    "MIMIC-CXR-JPG": ("MIMIC-CXR-JPG.csv.gz", "dicom_id", "mimic"),
    "VinDr-CXR": ("VinDr-CXR.csv", "image_id", "vindr"),
    "Padchest": ("Padchest.csv", "ImageID", "padchest"),
}
"""Dataset stem -> (file name, id column, image source of the image key)."""
QUALITY_THRESHOLD = 0.7
LANDMARK_ORDER = ("right_lung", "left_lung", "heart")  # 44 + 50 + 26 points


def landmarks_cell(summary: FrontalSummary, numpy_repr: bool) -> str:
    """The 120 (x, y) points as OriginalResolution stores them: a NumPy repr or flat ``x,y,x,y,...``."""
    points = np.concatenate([summary.landmarks[organ] for organ in LANDMARK_ORDER]).astype(np.int64)
    if numpy_repr:
        return np.array2string(points, threshold=sys.maxsize)
    return ",".join(str(int(v)) for v in points.ravel())


def dice_scores(seed: int, key: str, failing: bool) -> tuple[float, float]:
    """(mean, max) Dice RCA of a row; a failing row has mean below the 0.7 quality threshold."""
    rng = rng_for(seed, "chexmask-dice", key)
    mean = float(rng.uniform(0.52, 0.69)) if failing else float(rng.uniform(0.75, 0.95))
    return mean, float(min(0.999, mean + rng.uniform(0.01, 0.05)))


def covered(stem: str, position: int) -> bool:
    return not (stem == "MIMIC-CXR-JPG" and position % 7 == 5)


def write(root: Path, frontals: dict[str, dict[str, FrontalSummary]], seed: int) -> dict[str, dict]:
    """Write one OriginalResolution file per dataset stem; returns image key -> CheXmask truth."""
    truth: dict[str, dict] = {}
    for stem, (file_name, id_column, source) in FILES.items():
        rows: list = []
        for position, (native_id, summary) in enumerate(frontals.get(stem, {}).items()):
            if not covered(stem, position):
                continue
            mean, best = dice_scores(seed, native_id, failing=len(rows) % 5 == 2)
            if stem == "Padchest" and len(rows) % 2 == 0:
                best = mean - (best - mean)  # the swapped-looking Max < Mean of the Padchest file
            rows.append(
                {
                    id_column: native_id,
                    "Dice RCA (Mean)": mean,
                    "Dice RCA (Max)": best,
                    "Landmarks": landmarks_cell(summary, numpy_repr=len(rows) % 2 == 0),
                    **summary.organ_rles,
                    "Height": summary.height,
                    "Width": summary.width,
                }
            )
            truth[f"{source}/{native_id}"] = {"dice_rca_mean": mean, "passes": mean >= QUALITY_THRESHOLD}
        quality = ["Dice RCA (Max)", "Dice RCA (Mean)"] if stem == "Padchest" else ["Dice RCA (Mean)", "Dice RCA (Max)"]
        columns = [id_column, *quality, "Landmarks", "Left Lung", "Right Lung", "Heart", "Height", "Width"]
        output.write_csv(root / "OriginalResolution" / file_name, pd.DataFrame(rows, columns=columns))
    return truth
