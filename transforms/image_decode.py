"""Image bytes -> stored pixel values: DICOM, PNG (8 or 16 bits) and JPEG, before any windowing.

Pixel arrays are 2-D ``(height, width)`` at the file's own depth, with higher values brighter (MONOCHROME1
is inverted on read, within the range its header allows). Nothing here converts through PIL modes
(``docs/formats/padchest.md`` §1, ``docs/tokenizer.md`` §2, the 16-bit saturation trap). DICOM pixel data
in any transfer syntax pydicom decodes with the pinned plugins (uncompressed, JPEG baseline, JPEG lossless
via pylibjpeg-libjpeg, JPEG 2000 via pylibjpeg-openjpeg) is accepted; DICOM headers are read only through
:data:`DICOM_KEYWORDS_READ`, and only :data:`DICOM_FACTS_KEPT` leave this module, with the window or VOI
LUT the header gives (:class:`HeaderFacts`). A file that gives no usable single-frame grayscale image
raises :class:`ImageDecodeError` saying why.
"""

from __future__ import annotations

import io
import math
import zlib
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from transforms import io as fileio

ImageFormat = Literal["dicom", "png", "jpeg"]
FORMATS: tuple[ImageFormat, ...] = ("dicom", "png", "jpeg")

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"
_DICOM_PREAMBLE = 128
_ITEM_TAG = b"\xfe\xff\x00\xe0"  # (FFFE,E000) little endian: the first item of encapsulated pixel data


DICOM_KEYWORDS_READ = frozenset(
    {
        # read by pydicom's pixel decoder to unpack PixelData
        "TransferSyntaxUID",
        "PixelData",
        "Rows",
        "Columns",
        "SamplesPerPixel",
        "BitsAllocated",
        "BitsStored",
        "HighBit",
        "PixelRepresentation",
        "PlanarConfiguration",
        "NumberOfFrames",
        "PhotometricInterpretation",
        # read here: Modality LUT, VOI LUT or window
        "RescaleSlope",
        "RescaleIntercept",
        "WindowCenter",
        "WindowWidth",
        "VOILUTSequence",
        "LUTDescriptor",
        "LUTData",
    }
)
"""Every DICOM attribute decoding looks at. No name, id, date, place or device attribute is among them."""

DICOM_FACTS_KEPT = {
    "width": "Columns",
    "height": "Rows",
    "photometric": "PhotometricInterpretation",
    "bits_stored": "BitsStored",
}
"""The header allow-list: :class:`transforms.images.DecodedImage` field -> the DICOM attribute it comes from. These four
facts are all of a DICOM header that can reach outputs; everything else in DecodedImage is pixels or
says what decoding did."""


class ImageDecodeError(ValueError):
    """Bytes that do not give a usable single-frame grayscale image; the message says why."""


@dataclass(frozen=True)
class VoiLut:
    """A DICOM VOI LUT (PS3.3 C.11.2.1.1): value ``v`` -> ``table[clip(v - first_mapped, 0, len - 1)]``,
    the output spanning ``0 .. 2**bits - 1`` (black to white)."""

    first_mapped: float
    table: np.ndarray  # int64, one entry per input value from first_mapped on
    bits: int

    def inverted(self, pivot: float) -> VoiLut:
        """The LUT for pixels stored as ``pivot - v`` that shows them as ``max - LUT(v)`` (MONOCHROME1)."""
        top = 2**self.bits - 1
        return VoiLut(pivot - self.first_mapped - (len(self.table) - 1), top - self.table[::-1], self.bits)

    def to_uint8(self, pixels: np.ndarray) -> np.ndarray:
        """The LUT applied to ``pixels`` and scaled linearly from its output range to 0..255."""
        lut8 = np.rint(self.table * (255.0 / (2**self.bits - 1))).astype(np.uint8)
        if np.issubdtype(pixels.dtype, np.integer) and float(self.first_mapped).is_integer():
            index = pixels.astype(np.int64) - int(self.first_mapped)
        else:
            index = np.rint(pixels.astype(np.float64) - self.first_mapped).astype(np.int64)
        return lut8[np.clip(index, 0, len(lut8) - 1)]


@dataclass(frozen=True)
class HeaderFacts:
    """What decoding kept from the file's header, beside the pixels."""

    photometric: str
    bits_stored: int
    window: tuple[float, float] | None  # (center, width) in the returned pixel scale, None when absent
    voi_lut: VoiLut | None = None  # on the returned pixel scale; takes precedence over the window


@dataclass(frozen=True)
class StoredImage:
    """Decoded pixels at their stored depth (before windowing), with the file's format and header facts."""

    pixels: np.ndarray
    source_format: ImageFormat
    header: HeaderFacts


def sniff_format(data: bytes) -> ImageFormat:
    """The format of image bytes from their magic numbers (DICM at offset 128, PNG, JPEG)."""
    if data[_DICOM_PREAMBLE : _DICOM_PREAMBLE + 4] == b"DICM":
        return "dicom"
    if data.startswith(_PNG_MAGIC):
        return "png"
    if data.startswith(_JPEG_MAGIC):
        return "jpeg"
    raise ImageDecodeError(f"unrecognised image format (first bytes {data[:8]!r}); pass format= for headerless DICOM")


def _check_contrast(pixels: np.ndarray) -> np.ndarray:
    if pixels.size == 0:
        raise ImageDecodeError("image has no pixels")
    if pixels.min() == pixels.max():
        raise ImageDecodeError(f"image has no contrast: every pixel is {pixels.flat[0]}")
    return pixels


def _header(dataset: pydicom.Dataset, keyword: str):
    """A header value by keyword, only for keywords on :data:`DICOM_KEYWORDS_READ`."""
    if keyword not in DICOM_KEYWORDS_READ:
        raise KeyError(f"{keyword} is not on the DICOM keywords decoding may read")
    return dataset.get(keyword)


def _header_number(dataset: pydicom.Dataset, keyword: str) -> float | None:
    """A numeric header value; the first one when multi-valued (WindowCenter may hold several)."""
    value = _header(dataset, keyword)
    if isinstance(value, pydicom.multival.MultiValue):
        value = value[0] if len(value) else None
    if value is None or value == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError) as err:
        raise ImageDecodeError(f"DICOM {keyword} is not a number: {value!r}") from err


def _stored_range(dataset: pydicom.Dataset, bits_stored: int) -> tuple[float, float]:
    """Lowest and highest stored value the header allows."""
    if int(_header(dataset, "PixelRepresentation") or 0) == 1:
        return -(2.0 ** (bits_stored - 1)), 2.0 ** (bits_stored - 1) - 1
    return 0.0, 2.0**bits_stored - 1


def _voi_lut(dataset: pydicom.Dataset) -> VoiLut | None:
    """The first VOI LUT of the VOILUTSequence, None when there is none; a malformed one is an error."""
    items = _header(dataset, "VOILUTSequence")
    if not items:
        return None
    item = items[0]
    descriptor = _header(item, "LUTDescriptor")
    data = _header(item, "LUTData")
    if descriptor is None or len(descriptor) != 3 or data is None:
        raise ImageDecodeError("DICOM VOILUTSequence item lacks a 3-value LUTDescriptor or LUTData")
    entries, first_mapped, bits = (int(value) for value in descriptor)
    entries = entries or 2**16  # PS3.3 C.11.2.1.1.1: 0 means 65536 entries
    if int(_header(dataset, "PixelRepresentation") or 0) == 1 and first_mapped >= 2**15:
        first_mapped -= 2**16  # the first value mapped is signed for signed pixels
    if not 8 <= bits <= 16:
        raise ImageDecodeError(f"DICOM VOI LUT has {bits} bits per entry; 8 to 16 are allowed")
    if isinstance(data, bytes):  # LUTData read as OW
        little_endian = dataset.original_encoding[1] is not False
        table = np.frombuffer(data, dtype="<u2" if little_endian else ">u2").astype(np.int64)
    else:
        table = np.asarray(data if isinstance(data, (list, pydicom.multival.MultiValue)) else [data], np.int64)
    if len(table) != entries:
        raise ImageDecodeError(f"DICOM VOI LUT declares {entries} entries but holds {len(table)}")
    if table.min() < 0 or table.max() > 2**bits - 1:
        raise ImageDecodeError(f"DICOM VOI LUT values lie outside 0..{2**bits - 1} ({bits} bits)")
    return VoiLut(float(first_mapped), table, bits)


def _transfer_syntax(dataset: pydicom.Dataset) -> pydicom.uid.UID:
    """The file's transfer syntax, checked against how its PixelData is stored: a compressed syntax
    needs encapsulated (undefined-length) pixel data and a native one a plain value, so a file whose
    header names the wrong syntax fails here with that said, not deep inside a decoder."""
    syntax = pydicom.uid.UID(str(_header(dataset.file_meta, "TransferSyntaxUID")).strip())
    if not syntax.is_transfer_syntax:
        raise ImageDecodeError(f"DICOM TransferSyntaxUID {syntax} is not a known transfer syntax")
    element = dataset["PixelData"]
    encapsulated = element.is_undefined_length
    if not encapsulated and isinstance(element.value, bytes) and element.value[:4] == _ITEM_TAG:
        # written with a defined length, but an item tag first and not the size of native pixels
        rows, columns, samples, bits = (
            _header_number(dataset, k) for k in ("Rows", "Columns", "SamplesPerPixel", "BitsAllocated")
        )
        native = None if rows is None or columns is None else int(rows * columns * (samples or 1) * (bits or 16) // 8)
        encapsulated = native is not None and len(element.value) not in (native, native + 1)
    if syntax.is_compressed != encapsulated:
        raise ImageDecodeError(
            f"DICOM TransferSyntaxUID {syntax} ({syntax.name}) is a {'compressed' if syntax.is_compressed else 'native'}"
            f" syntax but the PixelData is {'encapsulated (compressed)' if encapsulated else 'native'}: "
            "the header names the wrong transfer syntax"
        )
    return syntax


def _decode_dicom(data: bytes) -> tuple[np.ndarray, HeaderFacts]:
    """Pixels after the Modality LUT with MONOCHROME1 inverted, and the header facts kept."""
    try:
        dataset = pydicom.dcmread(io.BytesIO(data), force=True)
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError, TypeError) as err:
        raise ImageDecodeError(f"unreadable DICOM: {err}") from err
    if "PixelData" not in dataset:
        raise ImageDecodeError("DICOM has no PixelData")
    if not _header(dataset.file_meta, "TransferSyntaxUID"):
        raise ImageDecodeError("DICOM has no TransferSyntaxUID (no file meta): the pixel encoding is unknown")
    syntax = _transfer_syntax(dataset)
    frames = int(_header_number(dataset, "NumberOfFrames") or 1)
    if frames != 1:
        raise ImageDecodeError(f"multi-frame DICOM ({frames} frames) is not a single radiograph")
    photometric = str(_header(dataset, "PhotometricInterpretation") or "").strip().upper()
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise ImageDecodeError(f"unsupported DICOM PhotometricInterpretation {photometric or '(missing)'}")
    try:
        stored = dataset.pixel_array
    except Exception as err:  # pydicom raises many kinds for truncated or undecodable pixel data
        raise ImageDecodeError(
            f"DICOM pixel data cannot be decoded as {syntax.name} ({syntax}): {type(err).__name__}: {err}"
        ) from err
    if stored.ndim != 2:
        raise ImageDecodeError(f"DICOM pixel array has shape {stored.shape}, expected one 2-D frame")

    bits_stored = int(_header(dataset, "BitsStored") or stored.dtype.itemsize * 8)
    slope = _header_number(dataset, "RescaleSlope")
    intercept = _header_number(dataset, "RescaleIntercept")
    slope = 1.0 if slope is None else slope
    intercept = 0.0 if intercept is None else intercept
    pixels: np.ndarray = stored
    if (slope, intercept) != (1.0, 0.0):  # the same float32 operations as stored * slope + intercept, in place
        pixels = stored.astype(np.float32)
        pixels *= np.float32(slope)
        pixels += np.float32(intercept)

    center = _header_number(dataset, "WindowCenter")
    width = _header_number(dataset, "WindowWidth")
    window = (center, width) if center is not None and width is not None and width > 0 else None
    voi_lut = _voi_lut(dataset)

    if photometric == "MONOCHROME1":
        # Invert within the range the header allows (after rescale), so the result and the
        # window do not depend on this image's own min/max: v -> lo + hi - v.
        low, high = (v * slope + intercept for v in _stored_range(dataset, bits_stored))
        pivot = low + high
        pixels = _invert(pixels, pivot)
        if window is not None:
            window = (pivot - window[0], window[1])
        if voi_lut is not None:
            voi_lut = voi_lut.inverted(pivot)
    return _check_contrast(pixels), HeaderFacts(photometric, bits_stored, window, voi_lut)


def _invert(pixels: np.ndarray, pivot: float) -> np.ndarray:
    """``pivot - pixels``, in place on the decoder's own array (a fresh one, nothing else holds it).

    Integer pixels keep their dtype when every ``round(pivot) - v`` fits it (always, for values inside
    the stored range), so a 16-bit radiograph is inverted by one pass over uint16 memory; otherwise the
    difference is taken in int64 and kept as int32. Float pixels (after a Modality LUT) stay float32."""
    if not pixels.flags.writeable:
        pixels = pixels.copy()
    if not np.issubdtype(pixels.dtype, np.integer):
        return np.subtract(np.float32(pivot), pixels, out=pixels)
    top = round(pivot)
    limits = np.iinfo(pixels.dtype)
    if limits.min <= top - int(pixels.max()) and top - int(pixels.min()) <= limits.max:
        # integer subtraction wraps modulo 2**bits, so a pivot outside the dtype still gives the exact result
        return np.subtract(np.asarray(top, np.int64).astype(pixels.dtype), pixels, out=pixels)
    return (np.int64(top) - pixels.astype(np.int64)).astype(np.int32)


def _decode_raster(data: bytes, fmt: ImageFormat) -> tuple[np.ndarray, str]:
    """PNG/JPEG bytes -> 2-D array with its own depth (uint8 or uint16) and "MONOCHROME2", or
    "RGB" when the file was in color (converted to gray)."""
    # OpenCV 5 returns None for truncated PNG and JPEG streams (checked by the tests), never a partial image.
    pixels = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if pixels is None:
        why = png_header_problem(data) if fmt == "png" else None
        raise ImageDecodeError(why or f"corrupt or truncated {fmt.upper()}: OpenCV could not decode {len(data)} bytes")
    photometric = "MONOCHROME2"
    if pixels.ndim == 3:
        channels = pixels.shape[2]
        if channels == 1:
            pixels = pixels[:, :, 0]
        elif channels in (3, 4):
            pixels = cv2.cvtColor(pixels, cv2.COLOR_BGR2GRAY if channels == 3 else cv2.COLOR_BGRA2GRAY)
            photometric = "RGB"
        else:
            raise ImageDecodeError(f"{fmt.upper()} with {channels} channels is not supported")
    return _check_contrast(pixels), photometric


_PNG_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}
"""PNG colour type -> the bit depths the PNG specification allows with it."""
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


def png_header_problem(data: bytes) -> str | None:
    """Why a PNG that does not decode is broken, read from its IHDR and image data, or None when
    neither explains it: a missing or corrupt IHDR, an invalid size, depth or colour type, or image
    data whose size does not fit the header (e.g. 16-bit pixels under a header that says 8 bits)."""
    if not data.startswith(_PNG_MAGIC):
        return "not a PNG: the 8-byte PNG signature is missing"
    ihdr = data[8:33]
    if len(ihdr) < 25 or ihdr[4:8] != b"IHDR" or int.from_bytes(ihdr[:4], "big") != 13:
        return "PNG header broken: the file does not start with a 13-byte IHDR chunk"
    if zlib.crc32(ihdr[4:21]) != int.from_bytes(ihdr[21:25], "big"):
        return "PNG header broken: the IHDR checksum does not match its content"
    width, height = int.from_bytes(ihdr[8:12], "big"), int.from_bytes(ihdr[12:16], "big")
    depth, colour, interlace = ihdr[16], ihdr[17], ihdr[20]
    header = f"IHDR says {width}x{height}, {depth}-bit, colour type {colour}"
    if not width or not height:
        return f"PNG header invalid: {header}"
    if depth not in _PNG_DEPTHS.get(colour, ()):
        return f"PNG header invalid: {header}, a depth and colour type the PNG format does not allow"
    idat, offset, kind = bytearray(), 8, b""
    while kind != b"IEND":
        if offset + 12 > len(data):
            return f"corrupt or truncated PNG: the file ends after {offset} bytes without an IEND chunk"
        length, kind = int.from_bytes(data[offset : offset + 4], "big"), data[offset + 4 : offset + 8]
        if offset + 12 + length > len(data):
            return f"corrupt or truncated PNG: the file ends inside a {kind!r} chunk"
        if kind == b"IDAT":
            idat += data[offset + 8 : offset + 8 + length]
        offset += 12 + length
    expected = height * (1 + math.ceil(width * _PNG_CHANNELS[colour] * depth / 8))  # without interlacing
    cap = 4 * expected + 1  # never inflate more than a few times what the header allows
    try:
        size = len(zlib.decompressobj().decompress(bytes(idat), cap))
    except zlib.error as err:
        return f"PNG image data corrupt ({header}): {err}"
    if interlace == 0 and size != expected:
        holds = f"more than {cap - 1}" if size == cap else str(size)
        return (
            f"PNG header does not fit its image data: {header}, which needs {expected} bytes of "
            f"filtered rows; the image data holds {holds}"
        )
    return None


def _load(path_or_bytes: str | bytes) -> bytes:
    data = fileio.read_bytes(path_or_bytes) if isinstance(path_or_bytes, str) else bytes(path_or_bytes)
    if not data:
        raise ImageDecodeError("empty image file")
    return data


def _resolve_format(data: bytes, format: str | None) -> ImageFormat:
    if format is None:
        return sniff_format(data)
    if format not in FORMATS:
        raise ValueError(f"unknown image format {format!r}; expected one of {list(FORMATS)}")
    return format  # type: ignore[return-value]


def _decode(data: bytes, fmt: ImageFormat) -> tuple[np.ndarray, HeaderFacts]:
    """Pixels and header facts; for PNG/JPEG the facts are the file's own (no window)."""
    if fmt == "dicom":
        return _decode_dicom(data)
    pixels, photometric = _decode_raster(data, fmt)
    return pixels, HeaderFacts(photometric, pixels.dtype.itemsize * 8, None)


def decode_stored(path_or_bytes: str | bytes, format: str | None = None) -> StoredImage:
    """The pixels and header facts of an image file or its bytes, the format from ``format`` or sniffed."""
    data = _load(path_or_bytes)
    source_format = _resolve_format(data, format)
    pixels, header = _decode(data, source_format)
    return StoredImage(pixels, source_format, header)


def read_image(path_or_bytes: str | bytes, format: str | None = None) -> np.ndarray:
    """A 2-D array ready for windowing: DICOM after the Modality LUT with MONOCHROME1 inverted
    (higher = brighter), PNG/JPEG at their own depth (16-bit PNG stays uint16, color -> gray).

    Paths (local or ``gs://``) are read through :mod:`transforms.io`. The format comes from
    ``format`` or is sniffed. Raises :class:`ImageDecodeError` for empty, truncated or corrupt
    files, DICOM without pixel data or without a TransferSyntaxUID, multi-frame DICOM, malformed
    VOI LUTs and images without contrast. The VOI LUT or window is applied by
    :func:`transforms.images.decode_image`.
    """
    return decode_stored(path_or_bytes, format).pixels
