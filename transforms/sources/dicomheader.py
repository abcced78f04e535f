"""DICOM headers from a file's first bytes: a ranged read, then more only when the header is longer.

A chest radiograph is ~10 MB of pixels behind a header of a few KB. The readers need only the header
(size, ids, view), so they fetch :data:`FIRST_READ` bytes and parse up to the pixel data; when the
parse runs into the end of what was fetched (a long header, an embedded icon), they fetch four times
as much and parse again, up to the whole file.
"""

from __future__ import annotations

import io as bytes_io
import struct

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
