"""Byte-stable file writing shared by the writers: CSV (plain or gzip with mtime 0) and DICOM."""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian

DX_FOR_PRESENTATION = UID("1.2.840.10008.5.1.4.1.1.1.1")
SECONDARY_CAPTURE = UID("1.2.840.10008.5.1.4.1.1.7")
SYNTH_IMPLEMENTATION_UID = UID("1.2.826.0.1.3680043.10.1456.1")  # fixed, so files do not vary with pydicom versions


def write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def write_text(path: Path, text: str) -> None:
    """UTF-8 text; a ``.gz`` path is gzipped with mtime 0 and no file name, so bytes are reproducible."""
    data = text.encode("utf-8")
    if path.suffix == ".gz":
        buffer = io.BytesIO()
        with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0) as stream:
            stream.write(data)
        data = buffer.getvalue()
    write_bytes(path, data)


def write_csv(path: Path, frame: pd.DataFrame, index: bool = False) -> None:
    """A CSV as pandas writes it (``\\n`` line ends); gzipped when the path ends in ``.gz``."""
    write_text(path, frame.to_csv(index=index, lineterminator="\n"))


def dicom_uid(*parts: object) -> str:
    """A DICOM UID under the ``2.25`` (UUID-derived) root from the SHA-256 of the parts."""
    digest = hashlib.sha256("|".join(str(part) for part in parts).encode()).hexdigest()
    return f"2.25.{int(digest[:32], 16)}"


def code_sequence(value: str, scheme: str, meaning: str) -> Sequence:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return Sequence([item])


def new_dataset(
    sop_class: str,
    sop_instance: str,
    transfer_syntax: str = ExplicitVRLittleEndian,
    implementation_uid: str = SYNTH_IMPLEMENTATION_UID,
) -> Dataset:
    """An empty dataset with its file meta filled (little endian, explicit VR unless compressed)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance)
    meta.TransferSyntaxUID = UID(transfer_syntax)
    meta.ImplementationClassUID = UID(implementation_uid)
    dataset = Dataset()
    dataset.file_meta = meta
    return dataset


def save_dicom(dataset: Dataset, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    dataset.save_as(path, enforce_file_format=True)


@contextmanager
def deliberate_invalid_values() -> Iterator[None]:
    """Silence pydicom's value warnings where a real-data trap is written on purpose
    (an MD5 hex as instance UID, an age string without its unit)."""
    pydicom_log = logging.getLogger("pydicom")
    level = pydicom_log.level
    pydicom_log.setLevel(logging.ERROR)  # pydicom both warns and logs each invalid value
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"Invalid value for VR (UI|AS)", category=UserWarning)
            yield
    finally:
        pydicom_log.setLevel(level)
