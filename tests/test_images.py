"""Decoding of DICOM (uncompressed, JPEG baseline, JPEG 2000), PNG 8/16-bit and JPEG; windowing;
letterbox; PNG encoding. DICOM files are written with pydicom at test time."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, JPEGBaseline8Bit, generate_uid

from transforms.images import (
    ImageDecodeError,
    decode_image,
    encode_png,
    letterbox,
    read_image,
    sniff_format,
    to_uint8,
)

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


def test_monochrome1_window_follows_the_inversion():
    stored = _radiograph()
    window = {"WindowCenter": 1800, "WindowWidth": 1600}
    mono2 = decode_image(_dicom_bytes(_dicom_dataset(stored, "MONOCHROME2", **window)))
    mono1 = decode_image(_dicom_bytes(_dicom_dataset(4095 - stored, "MONOCHROME1", **window)))
    assert mono1.windowing == mono2.windowing == "dicom-window"
    # MONOCHROME1 stored 4095 - v with the same window on its own scale: bright where v was dark
    inverted_window = decode_image(_dicom_bytes(_dicom_dataset(stored, "MONOCHROME2", WindowCenter=4095 - 1800, WindowWidth=1600)))
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


def test_jpeg2000_lossless_dicom_round_trips_exactly():
    stored = _radiograph()
    dataset = _dicom_dataset(stored)
    dataset.compress(JPEG2000Lossless, encoding_plugin="pylibjpeg")
    pixels = read_image(_dicom_bytes(dataset))
    np.testing.assert_array_equal(pixels, stored)


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
    with pytest.raises(ImageDecodeError, match="truncated|corrupt"):
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
    assert (box.size, box.scale, box.pad_x, box.pad_y, box.orig_width, box.orig_height) == (512, 0.512, 0.0, 102.0, 1000, 600)
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
    first, second = encode_png(canvas), encode_png(canvas.copy())
    assert first == second
    np.testing.assert_array_equal(cv2.imdecode(np.frombuffer(first, np.uint8), cv2.IMREAD_UNCHANGED), canvas)
    assert read_image(first).shape == (64, 64)


def test_non_numeric_window_is_a_clear_error():
    dataset = _dicom_dataset(_radiograph())
    dataset.add_new(0x00281050, "LO", "abc")  # WindowCenter, written with a text VR as broken files do
    dataset.WindowWidth = 100
    with pytest.raises(ImageDecodeError, match="WindowCenter is not a number"):
        decode_image(_dicom_bytes(dataset))
