"""DICOM headers from a file's first bytes: a ranged read, then more only when the header is longer.
The one header reader of the source readers (:func:`read_fields`).

A chest radiograph is ~10 MB of pixels behind a header of a few KB. The readers need only the header
(size, ids, view), so they fetch :data:`FIRST_READ` bytes and parse up to the pixel data; when the
parse runs into the end of what was fetched (a long header, an embedded icon), they fetch four times
as much and parse again, up to the whole file.
"""

from __future__ import annotations

import io as bytes_io
import struct
from typing import NamedTuple

import pydicom
from pydicom.errors import InvalidDicomError

from transforms import io

FIRST_READ = 64 * 1024
"""Bytes fetched first: every header of the corpora read so far fits (MIMIC's ~2-4 KB, VinDr's ~1 KB)."""

HEADER_ERRORS = (InvalidDicomError, OSError, EOFError, ValueError, TypeError, KeyError, AttributeError, struct.error)
"""What pydicom raises on a header that is not DICOM or is cut short."""


def read_header(uri: str, first_read: int = FIRST_READ) -> pydicom.Dataset:
    """The header (everything before the pixel data) of the DICOM file at ``uri``, pixels not fetched.

    Raises one of :data:`HEADER_ERRORS` when even the whole file does not parse."""
    length = first_read
    while True:
        data = io.read_head(uri, length)
        whole_file = len(data) < length
        buffer = bytes_io.BytesIO(data)
        try:
            header = pydicom.dcmread(buffer, stop_before_pixels=True, force=True)
        except HEADER_ERRORS:
            if whole_file:
                raise
        else:
            # stopping before the pixel data leaves the position short of the end of what was fetched
            if whole_file or buffer.tell() < len(data):
                return header
        length *= 4


class HeaderFields(NamedTuple):
    """What a reader keeps of a DICOM header: the image size and the text of a few allow-listed keywords."""

    height: int
    width: int
    text: dict[str, str | None]
    """keyword -> its value as stripped text, None when absent or empty."""


def read_fields(uri: str, keywords: tuple[str, ...] = ()) -> HeaderFields:
    """The size and the ``keywords`` of the DICOM header at ``uri`` (its first bytes only); ValueError,
    saying why, when the header cannot be parsed or has no positive Rows and Columns."""
    try:
        header = read_header(uri)
        text = {keyword: str(header.get(keyword, "") or "").strip() or None for keyword in keywords}
        height, width = int(header.Rows), int(header.Columns)
    except AttributeError:
        raise ValueError("header has no Rows/Columns") from None
    except HEADER_ERRORS as error:
        raise ValueError(f"{type(error).__name__}: {error}") from None
    if height <= 0 or width <= 0:
        raise ValueError(f"header size {height}x{width} is not positive")
    return HeaderFields(height, width, text)
