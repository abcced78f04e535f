"""Decoding of DICOM (uncompressed, JPEG baseline, JPEG 2000, JPEG lossless), PNG 8/16-bit and JPEG;
MONOCHROME1 inversion, VOI LUT and windowing; letterbox; PNG encoding and its compression level (the
build config's ``png_compression``, through the image stage); the DICOM header allow-list. DICOM files
are written with pydicom at test time (JPEG lossless streams by a small encoder here, pydicom has none)."""

from __future__ import annotations

import dataclasses
import io
import zlib

import apache_beam as beam
import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from pydantic import ValidationError
from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, JPEGBaseline8Bit, JPEGLosslessSV1, generate_uid

from pipelines.beam.image_stage import ImageStage, ProcessImageShard, unit_entry
from schemas.config import BuildConfig, load_config
from schemas.records import ImageRef, SourceRecord
from transforms.image_decode import DICOM_FACTS_KEPT, DICOM_KEYWORDS_READ, ImageDecodeError, read_image, sniff_format
from transforms.images import DecodedImage, decode_image, decode_letterboxed, letterbox
from transforms.png import PNG_LEVELS, encode_png
from transforms.units import ImageUnit
from transforms.windowing import to_uint8

ROWS, COLUMNS = 96, 128


def _radiograph(rows: int = ROWS, columns: int = COLUMNS, maximum: int = 4095) -> np.ndarray:
    """A smooth 12-bit test image: a bright disc on a ramp, every value within [0, maximum]."""
    yy, xx = np.mgrid[0:rows, 0:columns]
    ramp = xx / (columns - 1) * 0.6 + yy / (rows - 1) * 0.2
    disc = ((yy - rows / 2) ** 2 + (xx - columns / 2) ** 2 < (rows / 4) ** 2) * 0.2
    return np.rint((ramp + disc) * maximum).astype(np.uint16)


def _dicom_dataset(pixels: np.ndarray, photometric: str = "MONOCHROME2", bits_stored: int = 12, **extra) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = Dataset()
    dataset.file_meta = meta
    dataset.Rows, dataset.Columns = pixels.shape
    dataset.SamplesPerPixel = 1
    dataset.PhotometricInterpretation = photometric
    dataset.BitsAllocated = pixels.dtype.itemsize * 8
    dataset.BitsStored = bits_stored
    dataset.HighBit = bits_stored - 1
    dataset.PixelRepresentation = 0
    for name, value in extra.items():
        setattr(dataset, name, value)
    dataset.PixelData = pixels.tobytes()
    return dataset


def _dicom_bytes(dataset: Dataset) -> bytes:
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _png(pixels: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".png", pixels)
    assert ok
    return encoded.tobytes()


def _jpeg(pixels: np.ndarray, quality: int = 95) -> bytes:
    ok, encoded = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return encoded.tobytes()


# ---- DICOM -----------------------------------------------------------------------------------


def test_uncompressed_16bit_monochrome2_round_trips_exactly():
    stored = _radiograph()
    data = _dicom_bytes(_dicom_dataset(stored))
    assert sniff_format(data) == "dicom"
    pixels = read_image(data)
    assert pixels.dtype == np.uint16 and pixels.shape == (ROWS, COLUMNS)
    np.testing.assert_array_equal(pixels, stored)


def test_monochrome1_is_inverted_within_the_stored_range():
    stored = _radiograph()
    pixels = read_image(_dicom_bytes(_dicom_dataset(stored, "MONOCHROME1")))
    np.testing.assert_array_equal(pixels.astype(np.int64), 4095 - stored.astype(np.int64))
    assert pixels.dtype == np.uint16  # the inverted values still fit the stored type


@settings(max_examples=40, deadline=None)
@given(
    data=st.data(),
    bits=st.integers(8, 16),
    signed=st.booleans(),
    shape=st.tuples(st.integers(1, 24), st.integers(2, 24)),
)
def test_monochrome1_inversion_is_exact_and_keeps_the_stored_type(data, bits, signed, shape):
    """``lowest + highest - v`` of the stored range, for every stored value, signed or not, in the
    decoder's own integer type (the inversion is done in place on it)."""
    low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    dtype = np.int16 if signed else np.uint16
    stored = data.draw(arrays(dtype, shape, elements=st.integers(low, high)))
    stored.flat[:2] = (low, high)  # contrast, and both ends of the range
    dataset = _dicom_dataset(stored, "MONOCHROME1", bits_stored=bits)
    dataset.PixelRepresentation = int(signed)
    pixels = read_image(_dicom_bytes(dataset))
    assert pixels.dtype == dtype
    np.testing.assert_array_equal(pixels.astype(np.int64), low + high - stored.astype(np.int64))


def test_monochrome1_with_rescale_is_inverted_in_the_rescaled_range():
    stored = _radiograph()
    pixels = read_image(_dicom_bytes(_dicom_dataset(stored, "MONOCHROME1", RescaleSlope=2, RescaleIntercept=-1024)))
    # stored range 0..4095 rescales to -1024..7166; v -> -1024 + 7166 - v, in float32 as decoding does it
    expected = np.float32(-1024 + 7166) - (stored.astype(np.float32) * np.float32(2) + np.float32(-1024))
    assert pixels.dtype == np.float32
    np.testing.assert_array_equal(pixels, expected)


def test_monochrome1_window_follows_the_inversion():
    stored = _radiograph()
    window = {"WindowCenter": 1800, "WindowWidth": 1600}
    mono2 = decode_image(_dicom_bytes(_dicom_dataset(stored, "MONOCHROME2", **window)))
    mono1 = decode_image(_dicom_bytes(_dicom_dataset(4095 - stored, "MONOCHROME1", **window)))
    assert mono1.windowing == mono2.windowing == "dicom-window"
    # MONOCHROME1 stored 4095 - v with the same window on its own scale: bright where v was dark
    inverted_window = decode_image(
        _dicom_bytes(_dicom_dataset(stored, "MONOCHROME2", WindowCenter=4095 - 1800, WindowWidth=1600))
    )
    np.testing.assert_array_equal(mono1.pixels_uint8, inverted_window.pixels_uint8)
    assert mono1.photometric == "MONOCHROME1" and mono1.bits_stored == 12


def test_rescale_slope_and_intercept_are_applied():
    stored = _radiograph()
    data = _dicom_bytes(_dicom_dataset(stored, RescaleSlope=2, RescaleIntercept=-1024))
    pixels = read_image(data)
    np.testing.assert_allclose(pixels, stored.astype(np.float64) * 2 - 1024)


def test_dicom_window_maps_center_and_width_linearly():
    stored = _radiograph()
    decoded = decode_image(_dicom_bytes(_dicom_dataset(stored, WindowCenter="2048", WindowWidth="1024")))
    expected = np.rint(np.clip((stored.astype(np.float64) - 1536) / 1024 * 255, 0, 255))
    np.testing.assert_array_equal(decoded.pixels_uint8, expected.astype(np.uint8))
    assert (decoded.width, decoded.height, decoded.source_format) == (COLUMNS, ROWS, "dicom")


def test_dicom_without_window_uses_percentiles():
    decoded = decode_image(_dicom_bytes(_dicom_dataset(_radiograph())))
    assert decoded.windowing == "percentile"
    assert decoded.pixels_uint8.min() == 0 and decoded.pixels_uint8.max() == 255


def test_jpeg_baseline_dicom_decodes_like_the_jpeg_itself():
    image = to_uint8(_radiograph())
    jpeg = _jpeg(image)
    dataset = _dicom_dataset(image, bits_stored=8)
    dataset.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    dataset.PixelData = encapsulate([jpeg])
    dataset["PixelData"].VR = "OB"
    dataset.LossyImageCompression = "01"
    pixels = read_image(_dicom_bytes(dataset))
    assert pixels.dtype == np.uint8 and pixels.shape == image.shape
    reference = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_UNCHANGED)
    assert np.abs(pixels.astype(int) - reference.astype(int)).max() <= 2
    assert np.abs(pixels.astype(int) - image.astype(int)).mean() < 2


def test_dicom_without_pixel_data_is_rejected():
    dataset = _dicom_dataset(_radiograph())
    del dataset.PixelData
    with pytest.raises(ImageDecodeError, match="no PixelData"):
        read_image(_dicom_bytes(dataset))


def test_multi_frame_dicom_is_rejected():
    frames = np.stack([_radiograph(), _radiograph()])
    dataset = _dicom_dataset(frames[0])
    dataset.NumberOfFrames = 2
    dataset.PixelData = frames.tobytes()
    with pytest.raises(ImageDecodeError, match="multi-frame"):
        read_image(_dicom_bytes(dataset))


@pytest.mark.parametrize("keep", [0.3, 0.9, 0.999])
def test_truncated_dicom_is_rejected(keep):
    data = _dicom_bytes(_dicom_dataset(_radiograph()))
    with pytest.raises(ImageDecodeError):
        read_image(data[: int(len(data) * keep)], format="dicom")


def test_constant_dicom_is_rejected_not_blanked():
    with pytest.raises(ImageDecodeError, match="no contrast"):
        read_image(_dicom_bytes(_dicom_dataset(np.full((ROWS, COLUMNS), 700, np.uint16))))


def test_unsupported_photometric_is_rejected():
    with pytest.raises(ImageDecodeError, match="PhotometricInterpretation"):
        read_image(_dicom_bytes(_dicom_dataset(_radiograph(), "PALETTE COLOR")))


def _jpeg_lossless(pixels: np.ndarray, precision: int) -> bytes:
    """A JPEG lossless stream (ITU T.81 Annex H, process 14, predictor 1, Pt 0, one component).

    Huffman table: the 17 difference categories 0..16 all get 5-bit codes (canonical order, so
    category k is coded as k). Differences are taken modulo 2**16 as the standard says."""
    image = pixels.astype(np.int64)
    rows, columns = image.shape
    prediction = np.empty_like(image)
    prediction[0, 0] = 1 << (precision - 1)
    prediction[0, 1:] = image[0, :-1]  # first line: the sample to the left
    prediction[1:, 0] = image[:-1, 0]  # first column: the sample above
    prediction[1:, 1:] = image[1:, :-1]  # selection value 1: left
    diff = (image - prediction) % 65536
    diff = np.where(diff > 32768, diff - 65536, diff).ravel()
    category = np.frexp(np.abs(diff).astype(np.float64))[1].astype(np.int64)  # bits of |diff|, 0 for 0
    extra_bits = np.where(category == 16, 0, category)  # category 16 (diff 32768) has no extra bits
    extra = np.where(diff < 0, diff + (1 << category) - 1, diff) & ((1 << extra_bits) - 1)
    value = (category << extra_bits) | extra
    length = 5 + extra_bits
    shifts = length[:, None] - 1 - np.arange(21)[None, :]
    bits = ((value[:, None] >> np.maximum(shifts, 0)) & 1)[shifts >= 0]
    bits = np.concatenate([bits, np.ones(-len(bits) % 8, np.int64)])  # pad the last byte with 1-bits
    scan = np.packbits(bits.astype(np.uint8))
    scan = np.insert(scan, np.flatnonzero(scan == 0xFF) + 1, 0)  # byte stuffing

    def segment(marker: int, payload: bytes) -> bytes:
        return bytes([0xFF, marker]) + (len(payload) + 2).to_bytes(2, "big") + payload

    counts = bytes(4) + bytes([17]) + bytes(11)  # 17 codes of length 5
    frame = bytes([precision]) + rows.to_bytes(2, "big") + columns.to_bytes(2, "big") + bytes([1, 1, 0x11, 0])
    return (
        b"\xff\xd8"
        + segment(0xC3, frame)
        + segment(0xC4, bytes([0x00]) + counts + bytes(range(17)))
        + segment(0xDA, bytes([1, 1, 0x00, 1, 0, 0]))
        + scan.tobytes()
        + b"\xff\xd9"
    )


def _compressed(dataset: Dataset, syntax: str, frame: bytes) -> bytes:
    dataset.file_meta.TransferSyntaxUID = syntax
    dataset.PixelData = encapsulate([frame])
    dataset["PixelData"].VR = "OB"
    return _dicom_bytes(dataset)


@pytest.mark.parametrize("maximum, bits", [(4095, 12), (65535, 16)])
def test_jpeg_lossless_dicom_equals_its_uncompressed_twin(maximum, bits):
    stored = _radiograph(maximum=maximum)
    stored[5, 7], stored[6, 7] = 0, maximum  # a jump across the whole range (wraps modulo 2**16 at 16 bits)
    plain = _dicom_bytes(_dicom_dataset(stored, bits_stored=bits, WindowCenter=1800, WindowWidth=1600))
    lossless = _compressed(
        _dicom_dataset(stored, bits_stored=bits, WindowCenter=1800, WindowWidth=1600),
        JPEGLosslessSV1,
        _jpeg_lossless(stored, bits),
    )
    np.testing.assert_array_equal(read_image(lossless), stored)
    np.testing.assert_array_equal(decode_image(lossless).pixels_uint8, decode_image(plain).pixels_uint8)


def test_jpeg2000_dicom_equals_its_uncompressed_twin():
    stored = _radiograph()
    window = {"WindowCenter": 2000, "WindowWidth": 2400}
    compressed = _dicom_dataset(stored, **window)
    compressed.compress(JPEG2000Lossless, encoding_plugin="pylibjpeg")
    twin, plain = decode_image(_dicom_bytes(compressed)), decode_image(_dicom_bytes(_dicom_dataset(stored, **window)))
    np.testing.assert_array_equal(twin.pixels_uint8, plain.pixels_uint8)
    assert dataclasses.replace(twin, pixels_uint8=None) == dataclasses.replace(plain, pixels_uint8=None)


def _voi_lut_item(table: np.ndarray, first_mapped: int, bits: int, as_ow: bool = False) -> Dataset:
    item = Dataset()
    item.LUTDescriptor = [len(table) % 65536, first_mapped, bits]
    if as_ow:
        item.add_new(0x00283006, "OW", table.astype("<u2").tobytes())  # LUTData
    else:
        item.add_new(0x00283006, "US", [int(v) for v in table])  # LUTData
    return item


def _gamma_lut(first_mapped: int, entries: int, bits: int = 16) -> np.ndarray:
    """A non-linear (gamma 0.5) LUT over ``entries`` input values."""
    return np.rint(np.sqrt(np.linspace(0, 1, entries)) * (2**bits - 1)).astype(np.int64)


@pytest.mark.parametrize("as_ow", [False, True])
def test_voi_lut_sequence_is_applied_with_clamping(as_ow):
    stored = _radiograph()
    first, entries, bits = 500, 2000, 16  # values below 500 take entry 0, from 2499 on the last entry
    table = _gamma_lut(first, entries, bits)
    dataset = _dicom_dataset(stored, WindowCenter=100, WindowWidth=10)  # the LUT wins over the window
    dataset.VOILUTSequence = [_voi_lut_item(table, first, bits, as_ow)]
    decoded = decode_image(_dicom_bytes(dataset))
    assert decoded.windowing == "dicom-voi-lut"
    expected = np.rint(table[np.clip(stored.astype(np.int64) - first, 0, entries - 1)] * 255 / (2**bits - 1))
    np.testing.assert_array_equal(decoded.pixels_uint8, expected.astype(np.uint8))
    assert (
        decoded.pixels_uint8[stored < first].max() == 0
        and decoded.pixels_uint8[stored >= first + entries - 1].min() == 255
    )
    np.testing.assert_array_equal(read_image(_dicom_bytes(dataset)), stored)  # read_image stops before the VOI


@pytest.mark.parametrize("vr, first_mapped", [("US", 65536 - 2048), ("SS", -2048)])
def test_voi_lut_first_value_mapped_is_signed_for_signed_pixels(vr, first_mapped):
    stored = _radiograph(maximum=3000)
    signed = stored.astype(np.int16) - 2048  # 12-bit signed: -2048 .. 952
    dataset = _dicom_dataset(signed, bits_stored=12)
    dataset.PixelRepresentation = 1
    table = np.arange(4096, dtype=np.int64) // 16  # 8-bit output
    dataset.VOILUTSequence = [_voi_lut_item(table, 0, 8)]
    del dataset.VOILUTSequence[0].LUTDescriptor
    dataset.VOILUTSequence[0].add_new(0x00283002, vr, [4096, first_mapped, 8])  # LUTDescriptor, both VRs seen
    decoded = decode_image(_dicom_bytes(dataset))
    np.testing.assert_array_equal(decoded.pixels_uint8, table[stored].astype(np.uint8))


@pytest.mark.parametrize(
    "change, reason",
    [
        (lambda item: setattr(item, "LUTData", item.LUTData[:-1]), "declares 4096 entries but holds 4095"),
        (lambda item: setattr(item, "LUTDescriptor", [4096, 0, 4]), "4 bits per entry"),
        (lambda item: setattr(item, "LUTDescriptor", [4096, 0, 8]), r"outside 0\.\.255"),
    ],
)
def test_malformed_voi_lut_is_rejected(change, reason):
    dataset = _dicom_dataset(_radiograph())
    dataset.VOILUTSequence = [_voi_lut_item(_gamma_lut(0, 4096, 12), 0, 12)]
    change(dataset.VOILUTSequence[0])
    with pytest.raises(ImageDecodeError, match=reason):
        decode_image(_dicom_bytes(dataset))


def _twins(stored: np.ndarray, header: dict, lut: np.ndarray | None = None) -> tuple[bytes, bytes]:
    """The same anatomy stored as MONOCHROME2 (``stored``) and as MONOCHROME1 (``4095 - stored``,
    the window centre mirrored, the LUT reversed and inverted), as a scanner would write them."""
    mono2 = _dicom_dataset(stored, "MONOCHROME2", **header)
    mirrored = dict(header)
    if "WindowCenter" in header:
        mirrored["WindowCenter"] = 4095 - header["WindowCenter"]
    mono1 = _dicom_dataset(4095 - stored, "MONOCHROME1", **mirrored)
    if lut is not None:
        mono2.VOILUTSequence = [_voi_lut_item(lut, 0, 16)]
        mono1.VOILUTSequence = [_voi_lut_item(65535 - lut[::-1], 0, 16)]
    return _dicom_bytes(mono1), _dicom_bytes(mono2)


@pytest.mark.parametrize(
    "header, lut, windowing",
    [
        ({"WindowCenter": 1800, "WindowWidth": 1600}, None, "dicom-window"),
        ({"WindowCenter": 1801, "WindowWidth": 1601}, None, "dicom-window"),
        ({}, None, "percentile"),
        ({}, _gamma_lut(0, 4096), "dicom-voi-lut"),
    ],
)
def test_monochrome1_and_monochrome2_twins_decode_to_the_same_image(header, lut, windowing):
    mono1, mono2 = _twins(_radiograph(), header, lut)
    first, second = decode_image(mono1), decode_image(mono2)
    assert first.windowing == second.windowing == windowing
    np.testing.assert_array_equal(first.pixels_uint8, second.pixels_uint8)
    assert (first.photometric, second.photometric) == ("MONOCHROME1", "MONOCHROME2")


@pytest.mark.parametrize(
    "header, lut, windowing",
    [
        ({"WindowCenter": 1800, "WindowWidth": 1600}, None, "dicom-window"),
        ({}, None, "percentile"),
        ({}, _gamma_lut(0, 4096), "dicom-voi-lut"),
    ],
)
def test_monochrome1_twins_give_the_same_letterboxed_canvas(header, lut, windowing):
    """The pipeline's path (inversion before the resize, window after it) treats MONOCHROME1 as its
    MONOCHROME2 twin: the same canvas, byte for byte."""
    mono1, mono2 = _twins(_radiograph(640, 480), header, lut)
    first, second = decode_letterboxed(mono1, size=128), decode_letterboxed(mono2, size=128)
    assert first.windowing == second.windowing == windowing
    np.testing.assert_array_equal(first.canvas, second.canvas)
    assert first.canvas.std() > 10


def test_dicom_without_transfer_syntax_is_rejected_with_the_reason():
    dataset = _dicom_dataset(_radiograph())
    del dataset.file_meta
    buffer = io.BytesIO()
    dataset.save_as(buffer, implicit_vr=True, little_endian=True)  # a bare dataset: no preamble, no file meta
    data = buffer.getvalue()
    with pytest.raises(ImageDecodeError, match="unrecognised image format"):
        read_image(data)
    with pytest.raises(ImageDecodeError, match="no TransferSyntaxUID"):
        read_image(data, format="dicom")


def test_wrong_transfer_syntax_is_named_in_the_error():
    image = to_uint8(_radiograph())
    dataset = _dicom_dataset(image, bits_stored=8)
    dataset.PixelData = encapsulate([_jpeg(image)])  # JPEG data, file meta still says Explicit VR Little Endian
    dataset["PixelData"].VR = "OB"
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=False)
    with pytest.raises(
        ImageDecodeError,
        match=r"Explicit VR Little Endian\) is a native syntax but the PixelData "
        r"is encapsulated",
    ):
        read_image(buffer.getvalue(), format="dicom")
    native = _dicom_bytes(_dicom_dataset(_radiograph()))  # and the other way round: RLE Lossless, same length
    relabelled = native.replace(b"1.2.840.10008.1.2.1\x00", b"1.2.840.10008.1.2.5\x00", 1)
    with pytest.raises(ImageDecodeError, match=r"is a compressed syntax but the PixelData is native"):
        read_image(relabelled)
    unknown = native.replace(b"1.2.840.10008.1.2.1\x00", b"1.2.3.4.5.6.7.8.9.10", 1)
    with pytest.raises(ImageDecodeError, match=r"1\.2\.3\.4\.5\.6\.7\.8\.9\.10 is not a known transfer syntax"):
        read_image(unknown)


def _with_ihdr(data: bytes, depth: int | None = None, colour: int | None = None, fix_crc: bool = True) -> bytes:
    """The PNG with its IHDR bit depth and/or colour type changed (checksum recomputed unless told not to)."""
    out = bytearray(data)
    out[24] = out[24] if depth is None else depth
    out[25] = out[25] if colour is None else colour
    if fix_crc:
        out[29:33] = zlib.crc32(bytes(out[12:29])).to_bytes(4, "big")
    return bytes(out)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"depth": 8}, r"IHDR says 128x96, 8-bit, colour type 0, which needs 12384 bytes .* holds 24672"),
        ({"depth": 16, "colour": 3}, "a depth and colour type the PNG format does not allow"),
        ({"depth": 8, "fix_crc": False}, "the IHDR checksum does not match"),
    ],
)
def test_16bit_png_with_a_wrong_header_says_what_is_wrong(change, message):
    data = _png(_radiograph())
    assert data[24] == 16
    with pytest.raises(ImageDecodeError, match=message):
        read_image(_with_ihdr(data, **change))


IDENTIFYING = {
    "PatientName": "Doe^Jane",
    "PatientID": "MRN-48213",
    "PatientBirthDate": "19510203",
    "StudyDate": "20190412",
    "InstitutionName": "Saint Example Hospital",
    "AccessionNumber": "ACC-7781",
    "ReferringPhysicianName": "House^Greg",
    "StationName": "XR-ROOM-3",
}


def test_only_the_allow_listed_header_facts_reach_the_decoded_image():
    dataset = _dicom_dataset(_radiograph(), "MONOCHROME1", WindowCenter=2000, WindowWidth=3000, **IDENTIFYING)
    decoded = decode_image(_dicom_bytes(dataset))
    header_fields = {f.name for f in dataclasses.fields(DecodedImage)} - {"pixels_uint8", "source_format", "windowing"}
    assert header_fields == set(DICOM_FACTS_KEPT)
    assert {name: getattr(decoded, name) for name in DICOM_FACTS_KEPT} == {
        "width": dataset.Columns,
        "height": dataset.Rows,
        "photometric": "MONOCHROME1",
        "bits_stored": 12,
    }
    text = repr(dataclasses.replace(decoded, pixels_uint8=None))
    assert not [value for value in IDENTIFYING.values() if value in text]


def test_header_keywords_read_carry_no_names_dates_or_free_text():
    assert set(DICOM_FACTS_KEPT.values()) <= DICOM_KEYWORDS_READ
    identifying_vrs = {"PN", "DA", "DT", "TM", "AS", "LO", "SH", "LT", "ST", "UT", "UC"}
    assert not {keyword for keyword in DICOM_KEYWORDS_READ if dictionary_VR(keyword) in identifying_vrs}
    assert not DICOM_KEYWORDS_READ & set(IDENTIFYING)


# ---- PNG and JPEG ----------------------------------------------------------------------------


def test_16bit_png_keeps_its_range_and_to_uint8_does_not_saturate():
    ramp = np.tile(np.linspace(0, 65535, 512).astype(np.uint16), (64, 1))
    pixels = read_image(_png(ramp))
    assert pixels.dtype == np.uint16
    np.testing.assert_array_equal(pixels, ramp)
    eight = to_uint8(pixels)
    assert eight.dtype == np.uint8
    assert np.mean(eight == 255) < 0.02 and np.mean(eight == 0) < 0.02
    assert len(np.unique(eight)) > 200
    assert np.all(np.diff(eight[0].astype(int)) >= 0)


def test_8bit_png_passes_through_unchanged(tmp_path):
    image = to_uint8(_radiograph())
    path = tmp_path / "image.png"
    path.write_bytes(_png(image))
    decoded = decode_image(str(path))
    assert decoded.windowing == "none" and decoded.source_format == "png" and decoded.bits_stored == 8
    np.testing.assert_array_equal(decoded.pixels_uint8, image)


def test_color_inputs_become_gray():
    gray = to_uint8(_radiograph())
    color = cv2.merge([gray, gray, gray])
    pixels = read_image(_png(color))
    assert pixels.ndim == 2
    np.testing.assert_array_equal(pixels, gray)
    assert decode_image(_png(color)).photometric == "RGB"


def test_jpeg_file_from_path(tmp_path):
    image = to_uint8(_radiograph())
    path = tmp_path / "image.jpg"
    path.write_bytes(_jpeg(image))
    pixels = read_image(str(path))
    assert pixels.dtype == np.uint8 and pixels.shape == image.shape
    assert np.abs(pixels.astype(int) - image.astype(int)).mean() < 2


@pytest.mark.parametrize("kind", ["png", "jpeg"])
@pytest.mark.parametrize("keep", [0.5, 0.95, 0.999])
def test_truncated_png_and_jpeg_are_rejected(kind, keep):
    image = to_uint8(_radiograph())
    data = _png(image) if kind == "png" else _jpeg(image)
    with pytest.raises(ImageDecodeError, match=r"truncated|corrupt"):
        read_image(data[: int(len(data) * keep)])


def test_corrupt_png_body_is_rejected():
    data = bytearray(_png(to_uint8(_radiograph())))
    data[60:80] = b"\x00" * 20  # inside IDAT: CRC and zlib stream fail
    with pytest.raises(ImageDecodeError):
        read_image(bytes(data))


@pytest.mark.parametrize("data", [b"", b"not an image at all", b"\x00" * 300])
def test_empty_and_unknown_bytes_are_rejected(data):
    with pytest.raises(ImageDecodeError):
        read_image(data)


def test_unknown_format_argument_is_an_error():
    with pytest.raises(ValueError, match="unknown image format"):
        read_image(_png(to_uint8(_radiograph())), format="tiff")


def test_constant_png_is_rejected():
    with pytest.raises(ImageDecodeError, match="no contrast"):
        read_image(_png(np.full((20, 30), 9, np.uint8)))


# ---- to_uint8 --------------------------------------------------------------------------------


def test_to_uint8_window_and_passthrough():
    values = np.array([[0, 100, 200, 300, 400]], dtype=np.uint16)
    np.testing.assert_array_equal(to_uint8(values, window=(200, 200)), [[0, 0, 128, 255, 255]])
    image = np.array([[0, 7], [9, 255]], dtype=np.uint8)
    assert to_uint8(image) is image


def test_to_uint8_percentiles_ignore_a_few_hot_pixels():
    image = np.tile(np.arange(1000, dtype=np.uint16), (100, 1))
    image[0, :3] = 65535  # burned-in marker
    eight = to_uint8(image)
    assert eight[50, 500] == pytest.approx(128, abs=3)
    assert eight[0, 0] == 255


def test_to_uint8_rejects_constant_images_and_bad_windows():
    with pytest.raises(ValueError, match="no contrast"):
        to_uint8(np.full((4, 4), 3000, np.uint16))
    with pytest.raises(ValueError, match="window width"):
        to_uint8(np.arange(16, dtype=np.uint16).reshape(4, 4), window=(5, 0))


@settings(max_examples=60, deadline=None)
@given(image=arrays(np.uint16, st.tuples(st.integers(2, 40), st.integers(2, 40)), elements=st.integers(0, 65535)))
def test_to_uint8_is_monotonic(image):
    if image.min() == image.max():
        return
    eight = to_uint8(image)
    order = np.argsort(image, axis=None, kind="stable")
    assert np.all(np.diff(eight.ravel()[order].astype(int)) >= 0)


# ---- letterbox and PNG encoding --------------------------------------------------------------


def test_letterbox_of_1000_by_600_maps_as_documented():
    image = np.full((600, 1000), 200, np.uint8)
    image[100:200, 300:500] = 255  # a bright box: x 300..500, y 100..200 in edge coordinates
    canvas, box = letterbox(image, 512)
    assert canvas.shape == (512, 512) and canvas.dtype == np.uint8
    assert (box.size, box.scale, box.pad_x, box.pad_y, box.orig_width, box.orig_height) == (
        512,
        0.512,
        0.0,
        102.0,
        1000,
        600,
    )
    # content rows 102..408 (307 rows), black bars above and below
    assert not canvas[:102].any() and not canvas[409:].any()
    assert canvas[102:409].min() >= 200
    x1, y1 = box.to_canvas(300, 100)
    x2, y2 = box.to_canvas(500, 200)
    assert (x1, y1, x2, y2) == pytest.approx((153.6, 153.2, 256.0, 204.4))
    bright = np.argwhere(canvas == 255)
    assert bright[:, 1].min() == pytest.approx(x1, abs=1) and bright[:, 1].max() + 1 == pytest.approx(x2, abs=1)
    assert bright[:, 0].min() == pytest.approx(y1, abs=1) and bright[:, 0].max() + 1 == pytest.approx(y2, abs=1)


def test_letterbox_enlarges_small_images():
    image = np.tile(np.arange(50, dtype=np.uint8) * 5, (100, 1))  # 50 wide, 100 high
    canvas, box = letterbox(image, 512)
    assert box.scale == 5.12 and (box.pad_x, box.pad_y) == (128.0, 0.0)
    assert not canvas[:, :128].any() and not canvas[:, 384:].any()
    assert canvas[:, 130:382].any()


def test_letterbox_rejects_non_uint8():
    with pytest.raises(ValueError, match="uint8"):
        letterbox(np.zeros((10, 10), np.uint16))


def test_encode_png_is_deterministic_and_lossless():
    canvas, _ = letterbox(to_uint8(_radiograph()), 64)
    first, second = encode_png(canvas, 1), encode_png(canvas.copy(), 1)
    assert first == second
    np.testing.assert_array_equal(cv2.imdecode(np.frombuffer(first, np.uint8), cv2.IMREAD_UNCHANGED), canvas)
    assert read_image(first).shape == (64, 64)


def _noisy_canvas(size: int = 128) -> np.ndarray:
    noise = np.random.default_rng(0).normal(0, 40, (size, size))
    return np.clip(to_uint8(_radiograph(size, size)) + noise, 0, 255).astype(np.uint8)


def test_encode_png_levels_change_size_not_pixels():
    canvas = _noisy_canvas()
    encoded = {level: encode_png(canvas, level) for level in PNG_LEVELS}
    assert len(encoded[0]) > len(encoded[1]) >= len(encoded[9])
    assert len(encoded[0]) > canvas.size  # level 0 stores the rows as they are
    for data in encoded.values():
        np.testing.assert_array_equal(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED), canvas)


@pytest.mark.parametrize("level", [-1, 10, 1.0, "6", True, None])
def test_encode_png_rejects_levels_outside_0_to_9(level):
    with pytest.raises(ValueError, match="PNG compression level must be an integer from 0 to 9"):
        encode_png(np.zeros((4, 4), np.uint8), level)


def test_png_compression_is_a_config_setting_validated_with_its_key(tmp_path):
    assert BuildConfig(sources={}).png_compression in PNG_LEVELS
    assert BuildConfig(sources={}, png_compression=9).png_compression == 9
    for bad in (-1, 10, "fast", 1.5, True):
        with pytest.raises(ValidationError, match="png_compression") as caught:
            BuildConfig(sources={}, png_compression=bad)
        assert caught.value.errors()[0]["loc"] == ("png_compression",)
    path = tmp_path / "build.yaml"
    path.write_text(yaml.safe_dump({"sources": {}, "png_compression": 12}))
    with pytest.raises(ValidationError, match=r"png_compression\n.*from 0 \(no compression\) to 9.*got 12"):
        load_config(path)


def test_the_image_stage_encodes_at_the_configured_level(tmp_path):
    """The level reaches the encoder through the Beam image stage: one unit run at level 0 and at level 9
    stores the same pixels in PNGs of different sizes, and the level is part of the shard settings a
    resumed build must match (a finished shard made at another level is redone)."""
    path = tmp_path / "image.dcm"
    noise = np.random.default_rng(0).integers(0, 64, (640, 480), dtype=np.uint16)
    path.write_bytes(_dicom_bytes(_dicom_dataset(_radiograph(640, 480) + noise, WindowCenter=2000, WindowWidth=2400)))
    key = "0123456789abcdef0123456789abcdef"
    record = SourceRecord(
        image=ImageRef(
            image_key=f"vindr/{key}",
            source="vindr",
            native_id=key,
            uri=str(path),
            format="dicom",
            official_split="train",
        )
    )
    unit = ImageUnit(record=record, split="train", split_authority="official")
    stored = {}
    for level in (0, 9):
        out = tmp_path / f"level-{level}"
        with beam.Pipeline() as pipeline:
            _ = (
                pipeline
                | beam.Create([unit_entry(unit)])
                | ImageStage(str(out), 500, 256, 64, {}, png_compression=level)
            )
        (shard,) = (out / "images").glob("*.parquet")
        (row,) = pq.read_table(shard, columns=["image"]).column("image").to_pylist()
        stored[level] = row["bytes"]
    assert len(stored[0]) > 256 * 256 > len(stored[9])
    np.testing.assert_array_equal(read_image(stored[0]), read_image(stored[9]))
    assert ProcessImageShard(str(tmp_path), 256, 64, {}, png_compression=3).settings["png_compression"] == 3


def test_non_numeric_window_is_a_clear_error():
    dataset = _dicom_dataset(_radiograph())
    dataset.add_new(0x00281050, "LO", "abc")  # WindowCenter, written with a text VR as broken files do
    dataset.WindowWidth = 100
    with pytest.raises(ImageDecodeError, match="WindowCenter is not a number"):
        decode_image(_dicom_bytes(dataset))


@pytest.mark.parametrize("kind", ["percentile", "window", "voi-lut", "eight-bit", "enlarge"])
def test_letterboxed_path_matches_window_then_letterbox(kind):
    """The pipeline resizes stored values before windowing; it must agree with windowing first
    (the other order) up to rounding inside resampling cells."""
    pixels = _radiograph(640, 480)
    if kind == "window":
        data = _dicom_bytes(_dicom_dataset(pixels, WindowCenter=2000, WindowWidth=2400))
    elif kind == "voi-lut":
        item = _voi_lut_item(_gamma_lut(0, 4096), first_mapped=0, bits=16)
        dataset = _dicom_dataset(pixels)
        dataset.VOILUTSequence = [item]
        data = _dicom_bytes(dataset)
    elif kind == "eight-bit":
        data = _png((pixels >> 4).astype(np.uint8))
    elif kind == "enlarge":
        data = _dicom_bytes(_dicom_dataset(_radiograph(300, 200)))
    else:
        data = _dicom_bytes(_dicom_dataset(pixels))
    fast = decode_letterboxed(data, size=512)
    reference_pixels = decode_image(data)
    reference, box = letterbox(reference_pixels.pixels_uint8, 512)
    assert fast.letterbox == box and fast.windowing == reference_pixels.windowing
    assert (fast.width, fast.height) == (reference_pixels.width, reference_pixels.height)
    difference = np.abs(fast.canvas.astype(int) - reference.astype(int))
    assert np.percentile(difference, 99) <= 2 and difference.max() <= 12
    assert fast.canvas.std() > 10
