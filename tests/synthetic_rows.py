"""CheXmask rows in the real file layout, written by the synthetic corpus's own writer (``pipelines/synth``).

Real CheXmask rows cannot be committed (the masks of credentialed images) and no package ships them, so
the tests that need whole rows take them from here: each row is a synthetic frontal image of the asked
size (``pipelines/synth/anatomy.py``), its three organ masks the filled landmark contours, written by
``pipelines/synth/chexmask.py`` exactly as an ``OriginalResolution`` file is laid out (column order per
file, Landmarks as a NumPy repr in even rows and flat integers in odd rows, ``Dice RCA (Max)`` before
``(Mean)`` in the Padchest file with Max < Mean in its even rows, ``Dice RCA (Mean)`` below 0.7 in row 2).
See ``docs/formats/chexmask.md`` for the layout and ``tests/test_masks.py`` for the decoder checks.
"""

from __future__ import annotations

import csv
import gzip
import io
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pipelines.synth import chexmask as synth_chexmask
from pipelines.synth import padchest as synth_padchest
from pipelines.synth import vindr as synth_vindr
from pipelines.synth.anatomy import FrontalSummary, build_frontal, summarize
from pipelines.synth.cases import mimic_dicom_id, rng_for

csv.field_size_limit(1 << 30)

FAILING_ROW = 2
"""The synthetic writer puts ``Dice RCA (Mean)`` below the 0.7 threshold in rows 2, 7, 12, ..."""


def native_id(stem: str, index: int, seed: int) -> str:
    """An invented id in the format of the file's id column, made by the synthetic corpus's own id
    makers (MIMIC ``dicom_id``, VinDr ``image_id``, PadChest ``ImageID``)."""
    if stem == "MIMIC-CXR-JPG":
        return mimic_dicom_id(seed, "test-chexmask", index)
    if stem == "VinDr-CXR":
        return synth_vindr.image_id(seed, index)
    return synth_padchest.image_name(seed, index, 0)


@dataclass(frozen=True)
class ChexmaskRows:
    stem: str
    header: list[str]
    rows: list[list[str]]
    frontals: list[FrontalSummary]  # the synthetic image of each row, same order

    def column(self, name: str) -> int:
        return self.header.index(name)

    def csv_text(self, rows: list[list[str]] | None = None, header: list[str] | None = None) -> str:
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerows(
            [header or self.header, *(self.rows if rows is None else rows)]
        )
        return buffer.getvalue()


def chexmask_rows(
    stem: str, sizes: list[tuple[int, int]], seed: int = 0, ctr_targets: list[float] | None = None
) -> ChexmaskRows:
    """One row per ``(width, height)`` for the CheXmask file ``stem`` (``MIMIC-CXR-JPG``, ``VinDr-CXR`` or
    ``Padchest``); ``ctr_targets`` sets each image's cardiothoracic ratio (0.45 by default)."""
    targets = ctr_targets or [0.45] * len(sizes)
    frontals = {}
    for index, ((width, height), target) in enumerate(zip(sizes, targets, strict=True)):
        name = native_id(stem, index, seed)
        frontals[name] = summarize(build_frontal({}, target, width, height, rng_for(seed, "test-chexmask", name)))
    with tempfile.TemporaryDirectory() as folder:
        synth_chexmask.write(Path(folder), {stem: frontals}, seed)
        path = Path(folder) / "OriginalResolution" / synth_chexmask.FILES[stem][0]
        data = path.read_bytes()
    text = (gzip.decompress(data) if path.suffix == ".gz" else data).decode("utf-8")
    header, *rows = list(csv.reader(io.StringIO(text, newline="")))
    by_id = [frontals[row[0]] for row in rows]
    assert len(rows) == len(sizes), "the synthetic writer left an image without a row"
    return ChexmaskRows(stem, header, rows, by_id)
