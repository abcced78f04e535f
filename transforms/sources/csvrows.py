"""CSV rows with their numbers, so a reader can reject one bad row and read on.

Not a source reader: a helper the readers share. Rows are numbered from 1 = the first data record
after the header (a quoted cell spanning lines is still one record), the numbering every reject
detail uses: ``"train-rle.csv row 17: ..."``. A record whose cell count differs from the header's
("a CSV row with missing columns") or that holds bytes that are not UTF-8 comes back as a
:class:`BadRow` instead of raising; the rows after it are read as usual. Blank lines are not rows.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import re
import zlib
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from typing import IO

from transforms import io

FIELD_LIMIT = 1 << 28
"""Largest cell accepted (bytes): CheXmask original-resolution RLE cells exceed the csv default."""

_UNDECODABLE = re.compile("[\udc80-\udcff]")  # bytes that were not UTF-8, kept by surrogateescape
_ERROR_HANDLER = "cxr-instruct-csvrows"
CORRUPT = (EOFError, zlib.error, gzip.BadGzipFile)
"""What reading a compressed file that is cut short or damaged raises."""
_decode_errors = [0]  # how often the handler ran: rows are searched for surrogates only after it did


def _escape_and_count(error: UnicodeError) -> tuple[str | bytes, int]:
    _decode_errors[0] += 1
    return codecs.lookup_error("surrogateescape")(error)


codecs.register_error(_ERROR_HANDLER, _escape_and_count)


@dataclass(frozen=True)
class BadRow:
    """A data record that cannot be read as a row of the file's header."""

    number: int
    cells: list[str]
    reason: str  # "malformed-row" (wrong cell count) or "undecodable-row" (not UTF-8)
    problem: str

    def cell(self, position: int | None) -> str:
        """The stripped cell at ``position``, "" when the row is too short or it is undecodable."""
        if position is None or position >= len(self.cells):
            return ""
        text = self.cells[position].strip()
        return "" if _UNDECODABLE.search(text) else text

    def where(self, name: str) -> str:
        """``"<name> row N: <problem>"`` for a reject detail."""
        return f"{name} row {self.number}: {self.problem}"


def bad_row(number: int, cells: list[str], problem: str, columns: int) -> BadRow:
    """The BadRow of a record :func:`records` flagged (its ``problem``) in a file of ``columns`` columns."""
    return BadRow(number, cells, "malformed-row" if len(cells) != columns else "undecodable-row", problem)


def open_text(path: str) -> IO[str]:
    """A text stream that never raises on bytes that are not UTF-8 (they become surrogates)."""
    return io.open_text(path, encoding="utf-8-sig", errors=_ERROR_HANDLER)


def records(path: str) -> Iterator[tuple[int, list[str], str | None]]:
    """``(number, cells, problem)`` for every data record after the header, streamed; ``problem`` is
    None for a good row. Yields the header first as ``(0, header, None)``; nothing for an empty file."""
    csv.field_size_limit(max(csv.field_size_limit(), FIELD_LIMIT))
    errors_seen = _decode_errors[0]  # before the first read: the stream decodes ahead of the rows
    with open_text(path) as stream:
        reader = csv.reader(stream)
        try:
            header = next(reader, None)
        except CORRUPT as error:
            raise ValueError(f"{path}: compressed file cut short or damaged ({error}); download it again") from None
        if header is None:
            return
        yield 0, header, None
        number = 0
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as error:  # e.g. a quote never closed: the rest of the file is unreadable
                raise ValueError(f"{path} row {number + 1}: not CSV ({error})") from None
            except CORRUPT as error:
                raise ValueError(
                    f"{path} row {number + 1}: compressed file cut short or damaged ({error}); download it again"
                ) from None
            number += 1
            if not cells:
                continue
            problem = None
            if len(cells) != len(header):
                problem = f"{len(cells)} cells for {len(header)} columns"
            elif _decode_errors[0] != errors_seen and any(_UNDECODABLE.search(cell) for cell in cells):
                problem = "bytes that are not UTF-8"
            yield number, cells, problem


@dataclass
class Table:
    """A whole CSV: stripped header names, the good rows (number, cells) and the bad ones."""

    path: str
    header: list[str]
    rows: list[tuple[int, list[str]]]
    bad: list[BadRow]

    def position(self, name: str) -> int | None:
        return self.header.index(name) if name in self.header else None


def read_table(path: str, keep: Collection[int] | None = None) -> Table:
    """Every record of ``path``; ``keep`` (header positions) trims good rows to those cells, in order.

    Raises ValueError for a file with no header line."""
    stream = records(path)
    first = next(stream, None)
    if first is None:
        raise ValueError(f"{path}: empty file, no header; download it again")
    header = [name.strip() for name in first[1]]
    positions = list(keep) if keep is not None else None
    rows, bad = [], []
    for number, cells, problem in stream:
        if problem is None:
            rows.append((number, cells if positions is None else [cells[p] for p in positions]))
        else:
            bad.append(bad_row(number, cells, problem, len(header)))
    return Table(path, header, rows, bad)


def read_header(path: str) -> list[str]:
    """The stripped column names of a CSV (only its first record is read); ValueError for an empty file."""
    first = next(records(path), None)
    if first is None:
        raise ValueError(f"{path}: empty file, no header; download it again")
    return [name.strip() for name in first[1]]
