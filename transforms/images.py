"""Image decoding (DICOM, PNG 8/16-bit, JPEG), explicit windowing to 8 bits, letterbox, PNG encoding.

Pixel arrays are 2-D ``(height, width)`` with higher values brighter (MONOCHROME1 is inverted
on read). Nothing here converts through PIL modes: 16-bit data is windowed explicitly
(``docs/formats/padchest.md`` §1, ``docs/tokenizer.md`` §2, the 16-bit saturation trap). DICOM pixel data in any
transfer syntax pydicom decodes with the pinned plugins (uncompressed, JPEG baseline, JPEG lossless
via pylibjpeg-libjpeg, JPEG 2000 via pylibjpeg-openjpeg) is accepted; DICOM headers are read only
through :data:`DICOM_KEYWORDS_READ`, and only :data:`DICOM_FACTS_KEPT` leave this module.
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
from transforms.geometry import Letterbox, letterbox_for

ImageFormat = Literal["dicom", "png", "jpeg"]
FORMATS: tuple[ImageFormat, ...] = ("dicom", "png", "jpeg")

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"
_DICOM_PREAMBLE = 128
_ITEM_TAG = b"\xfe\xff\x00\xe0"  # (FFFE,E000) little endian: the first item of encapsulated pixel data

ROBUST_PERCENTILES = (0.5, 99.5)
"""Percentiles taken as black and white when no window is given, for data wider than 8 bits."""
_PERCENTILE_SAMPLE_PIXELS = 1 << 20  # percentiles are estimated on a regular subgrid of at most this many pixels
PNG_LEVELS = range(10)
"""zlib compression levels :func:`encode_png` accepts: 0 stores, 1 is fastest, 9 is smallest. The build's level is
``BuildConfig.png_compression`` (schemas/config.py, where the default's measurements are)."""


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
"""The header allow-list: :class:`DecodedImage` field -> the DICOM attribute it comes from. These four
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


Windowing = Literal["dicom-voi-lut", "dicom-window", "percentile", "none"]


@dataclass(frozen=True)
class DecodedImage:
    """An image ready for the letterbox: 8-bit pixels plus what was done to get them.

    Of a DICOM header only the fields named in :data:`DICOM_FACTS_KEPT` are carried."""

    pixels_uint8: np.ndarray
    width: int
    height: int
    photometric: str  # as read, before inversion: DICOM PhotometricInterpretation; PNG/JPEG "MONOCHROME2" or "RGB"
    bits_stored: int
    source_format: ImageFormat
    windowing: Windowing


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
        sizes = [_header_number(dataset, k) for k in ("Rows", "Columns", "SamplesPerPixel", "BitsAllocated")]
        native = None if None in sizes[:2] else int(sizes[0] * sizes[1] * (sizes[2] or 1) * (sizes[3] or 16) // 8)
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


def read_image(path_or_bytes: str | bytes, format: str | None = None) -> np.ndarray:
    """A 2-D array ready for windowing: DICOM after the Modality LUT with MONOCHROME1 inverted
    (higher = brighter), PNG/JPEG at their own depth (16-bit PNG stays uint16, color -> gray).

    Paths (local or ``gs://``) are read through :mod:`transforms.io`. The format comes from
    ``format`` or is sniffed. Raises :class:`ImageDecodeError` for empty, truncated or corrupt
    files, DICOM without pixel data or without a TransferSyntaxUID, multi-frame DICOM, malformed
    VOI LUTs and images without contrast. The VOI LUT or window is applied by :func:`decode_image`.
    """
    data = _load(path_or_bytes)
    pixels, _ = _decode(data, _resolve_format(data, format))
    return pixels


def to_uint8(array: np.ndarray, window: tuple[float, float] | None = None) -> np.ndarray:
    """Explicit linear windowing to uint8.

    With ``window = (center, width)``: ``center - width/2`` -> 0, ``center + width/2`` -> 255,
    clipped. Without: uint8 input is returned unchanged; anything else is stretched between
    its 0.5 and 99.5 percentiles (min and max when those coincide). Raises ``ValueError`` for a
    constant image or a non-positive window width.
    """
    array = np.asarray(array)
    if array.ndim != 2:
        raise ValueError(f"expected a 2-D image, got shape {array.shape}")
    if window is None and array.dtype == np.uint8:
        return array
    if window is not None:
        center, width = window
        if not width > 0:
            raise ValueError(f"window width must be positive, got {width}")
        low, high = center - width / 2, center + width / 2
    else:
        low, high = robust_range(array)
    return _apply_window(array, low, high)


def robust_range(array: np.ndarray) -> tuple[float, float]:
    """The 0.5 and 99.5 percentiles (estimated on a regular subgrid), or min and max when those coincide."""
    step = max(1, math.ceil(math.sqrt(array.size / _PERCENTILE_SAMPLE_PIXELS)))
    low, high = np.percentile(array[::step, ::step], ROBUST_PERCENTILES)
    if high <= low:
        low, high = float(array.min()), float(array.max())
    if high <= low:
        raise ValueError(f"image has no contrast: every pixel is {low}")
    return float(low), float(high)


def _apply_window(array: np.ndarray, low: float, high: float) -> np.ndarray:
    # the same float32 operations as (x - low) * k, clipped and rounded half to even, done in place
    scaled = array.astype(np.float32)
    scaled -= np.float32(low)
    scaled *= np.float32(255.0 / (high - low))
    np.clip(scaled, 0, 255, out=scaled)
    np.rint(scaled, out=scaled)
    return scaled.astype(np.uint8)


def decode_image(path_or_bytes: str | bytes, format: str | None = None) -> DecodedImage:
    """Decode and window to 8 bits: a DICOM's own VOI LUT (first VOILUTSequence item) when present,
    else its WindowCenter/WindowWidth, else :func:`to_uint8`'s robust min-max; 8-bit PNG/JPEG pass
    unchanged (MIMIC JPGs are already equalised, ``docs/formats/mimic-cxr.md`` §2.3)."""
    data = _load(path_or_bytes)
    fmt = _resolve_format(data, format)
    pixels, header = _decode(data, fmt)
    windowing: Windowing
    if header.voi_lut is not None:
        windowing = "dicom-voi-lut"
        pixels_uint8 = header.voi_lut.to_uint8(pixels)
    else:
        if header.window is not None:
            windowing = "dicom-window"
        elif pixels.dtype == np.uint8:
            windowing = "none"
        else:
            windowing = "percentile"
        pixels_uint8 = to_uint8(pixels, header.window)
    if pixels_uint8.min() == pixels_uint8.max():
        raise ImageDecodeError(f"image has no contrast after {windowing} windowing")
    height, width = pixels.shape
    return DecodedImage(
        pixels_uint8=pixels_uint8,
        width=width,
        height=height,
        photometric=header.photometric,
        bits_stored=header.bits_stored,
        source_format=fmt,
        windowing=windowing,
    )


def letterbox(image_uint8: np.ndarray, size: int = 512) -> tuple[np.ndarray, Letterbox]:
    """Scale the long side to ``size`` (INTER_AREA when shrinking, INTER_CUBIC when enlarging) and
    centre on a black ``size x size`` canvas; the :class:`Letterbox` maps original coordinates."""
    image = np.asarray(image_uint8)
    if image.ndim != 2 or image.dtype != np.uint8:
        raise ValueError(f"letterbox expects a 2-D uint8 image, got {image.dtype} {image.shape}")
    height, width = image.shape
    box = letterbox_for(width, height, size)
    interpolation = cv2.INTER_AREA if box.scale < 1 else cv2.INTER_CUBIC
    resized = cv2.resize(image, (box.content_width, box.content_height), interpolation=interpolation)
    canvas = np.zeros((size, size), dtype=np.uint8)
    x0, y0 = int(box.pad_x), int(box.pad_y)
    canvas[y0 : y0 + box.content_height, x0 : x0 + box.content_width] = resized
    return canvas, box


@dataclass(frozen=True)
class LetterboxedImage:
    """The pipeline's image: the letterboxed 8-bit canvas and what was done to get it."""

    canvas: np.ndarray  # (size, size) uint8
    letterbox: Letterbox
    width: int  # original size
    height: int
    photometric: str
    bits_stored: int
    source_format: ImageFormat
    windowing: Windowing


_RESIZABLE = (np.uint8, np.uint16, np.int16, np.float32)


def decode_letterboxed(path_or_bytes: str | bytes, format: str | None = None, size: int = 512) -> LetterboxedImage:
    """Decode, resize the stored values to the letterbox, then window to 8 bits, then pad.

    The window is chosen exactly as :func:`decode_image` chooses it (the DICOM VOI LUT, else its
    window, else robust percentiles of the full-resolution image), but it is applied after the
    resize: the full-resolution pixels are touched once, by the resize, instead of three times.
    The result differs from ``letterbox(decode_image(...).pixels_uint8)`` only where the window
    clips inside one resampling cell (at most a few grey levels)."""
    data = _load(path_or_bytes)
    fmt = _resolve_format(data, format)
    pixels, header = _decode(data, fmt)
    height, width = pixels.shape
    box = letterbox_for(width, height, size)
    stored = pixels if pixels.dtype in _RESIZABLE else pixels.astype(np.float32)
    interpolation = cv2.INTER_AREA if box.scale < 1 else cv2.INTER_CUBIC
    resized = cv2.resize(stored, (box.content_width, box.content_height), interpolation=interpolation)
    windowing: Windowing
    if header.voi_lut is not None:
        windowing = "dicom-voi-lut"
        content = header.voi_lut.to_uint8(np.clip(resized, pixels.min(), pixels.max()).astype(pixels.dtype))
    elif header.window is not None:
        windowing = "dicom-window"
        content = to_uint8(resized, header.window)
    elif pixels.dtype == np.uint8:
        windowing = "none"
        content = resized
    else:
        windowing = "percentile"
        try:
            content = _apply_window(resized, *robust_range(pixels))
        except ValueError as exc:
            raise ImageDecodeError(str(exc)) from exc
    if content.min() == content.max():
        raise ImageDecodeError(f"image has no contrast after {windowing} windowing")
    canvas = np.zeros((size, size), dtype=np.uint8)
    x0, y0 = int(box.pad_x), int(box.pad_y)
    canvas[y0 : y0 + box.content_height, x0 : x0 + box.content_width] = content
    return LetterboxedImage(
        canvas=canvas,
        letterbox=box,
        width=width,
        height=height,
        photometric=header.photometric,
        bits_stored=header.bits_stored,
        source_format=fmt,
        windowing=windowing,
    )


def encode_png(image_uint8: np.ndarray, level: int) -> bytes:
    """Deterministic PNG bytes of a 2-D uint8 image at zlib compression ``level`` (one of
    :data:`PNG_LEVELS`), no metadata. Every level is lossless: only size and encoding time differ."""
    if isinstance(level, bool) or not isinstance(level, (int, np.integer)) or level not in PNG_LEVELS:
        raise ValueError(f"PNG compression level must be an integer from 0 to 9, got {level!r}")
    image = np.asarray(image_uint8)
    if image.ndim != 2 or image.dtype != np.uint8:
        raise ValueError(f"encode_png expects a 2-D uint8 image, got {image.dtype} {image.shape}")
    ok, encoded = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, int(level)])
    if not ok:
        raise ValueError("OpenCV failed to encode the PNG")
    return encoded.tobytes()


def resize_canvas(canvas: np.ndarray, size: int) -> np.ndarray:
    """A square letterboxed canvas at ``size`` x ``size`` (area averaging when shrinking, bilinear when
    growing): a profile's input size (e.g. 224) from the images table's canvas. Unit coordinates of the
    canvas stay valid, since both are the same square. The canvas itself when it already has that size."""
    height, width = canvas.shape[:2]
    if height != width:
        raise ValueError(f"a letterboxed canvas is square, got {width}x{height}")
    if size == width:
        return canvas
    return cv2.resize(canvas, (size, size), interpolation=cv2.INTER_AREA if size < width else cv2.INTER_LINEAR)


def resize_png(png: bytes, size: int, level: int = 1) -> bytes:
    """PNG bytes of a grayscale canvas resized by :func:`resize_canvas` (the same bytes when the size matches)."""
    canvas = cv2.imdecode(np.frombuffer(png, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if canvas is None or canvas.ndim != 2:
        raise ValueError("not a grayscale PNG canvas")
    if canvas.shape[0] == size and canvas.shape[1] == size:
        return png
    return encode_png(resize_canvas(canvas, size), level)
