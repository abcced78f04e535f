"""Repeated and conflicting input: the one policy every reader follows.

Native files sometimes say the same thing twice, or two different things about one unit. A reader
never settles that by file order (the last row silently winning, or the first): what it does depends
on what the rows carry.

1. Rows that carry what an image needs to be read at all (MIMIC metadata and split rows): identical
   repeats are one row; repeats that disagree reject the image (``conflicting-<what>-rows``).
2. Rows that carry labels of one label system for a unit (MIMIC's CheXpert, NegBio and test-set label
   CSVs per study): identical repeats are merged and read once; repeats that disagree cost that
   system's labels for the unit, and only them: an item reject ``conflicting-label-rows`` on each
   image of the unit, naming the file and every row, and the image is written without those labels.
3. A row that stands for the whole unit in a file of one row per unit (a PadChest label row, a CheXmask
   row): the first row in file order is read and every repeat is a reject of its own naming its row
   and the first (``duplicate-image-id``, ``duplicate-row``), so the choice is in the rejects table.
4. A cell whose blank value changes what the row means (VinDr's ``rad_id``: blank is the consensus
   reader, whose labels override the named readers') is taken to mean that only where the layout
   says so (VinDr's test split, every row of the image blank). A blank beside named readers of the
   same image, or in the train split, is an item reject ``blank-reader-id`` and that row is left out.
5. Several rows that each add a part (SIIM mask rows of one image, VinDr boxes of one reader) are all
   kept; rows that contradict each other (a SIIM ``-1`` "no mask" row beside mask rows) reject the image.

:func:`agreed` and :func:`rows_detail` are the helpers for rules 1 and 2.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TypeVar

T = TypeVar("T")


def agreed(values: Sequence[T]) -> tuple[bool, T | None]:
    """``(True, value)`` when every repeat states the same value (or there is none: ``(True, None)``);
    ``(False, None)`` when they disagree, so the caller rejects instead of picking one."""
    if not values:
        return True, None
    first = values[0]
    if any(value != first for value in values[1:]):
        return False, None
    return True, first


def rows_detail(file: str, rows: Iterable[int], what: str) -> str:
    """``"<file> row 3, row 9: <what>"``: the reject detail naming every row involved, in file order."""
    return f"{file} {', '.join(f'row {n}' for n in sorted(set(rows)))}: {what}"
