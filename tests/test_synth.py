"""The synthetic corpus: every source parses with plain pandas / pydicom / cv2 the way the real
files do, the traps of the real formats are present, and pixels, masks, labels and the truth agree."""

from __future__ import annotations

import ast
import gzip
import hashlib
import json
import re
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pydicom
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.synth import generate
from pipelines.synth.anatomy import box_of, build_frontal, cardiothoracic_ratio, fill_contour
from pipelines.synth.cases import (
    CHEXPERT_14,
    CTR_TARGETS,
    ctr_band,
    make_image_cases,
    make_mimic_patients,
    rng_for,
    stated_labels,
)
from pipelines.synth.siim import instance_uids
from pipelines.synth.text import mimic_report
from schemas.config import load_config
from transforms.masks import rle_decode

SEED = 3
SECTION = re.compile(r"\n ([A-Z ()/,-]+):\s", re.DOTALL)  # the official MIMIC section header regex


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return generate(tmp_path_factory.mktemp("synth"), studies=6, seed=SEED)


@pytest.fixture(scope="module")
def truth(corpus) -> dict:
    return json.loads((corpus / "SYNTHETIC_TRUTH.json").read_text())


def of_source(truth: dict, source: str) -> dict[str, dict]:
    return {key: entry for key, entry in truth["images"].items() if entry["source"] == source}


# --------------------------------------------------------------------------------------- layout


def test_build_yaml_points_at_every_source(corpus):
    config = load_config(corpus / "build.yaml")
    assert set(config.sources) == {
        "mimic",
        "vindr",
        "chexmask",
        "siim",
        "imagenome",
        "padchest",
        "mimic_cxr_vqa",
        "mimic_diff_vqa",
    }
    assert config.seed == SEED and config.image_size == 512
    for source in config.sources.values():
        assert Path(source.root).is_dir() and Path(source.root).is_relative_to(corpus.resolve())


def test_truth_lists_every_image_file_and_nothing_else(corpus, truth):
    on_disk = {f"mimic/{p.stem}" for p in (corpus / "mimic-cxr" / "files").rglob("*.dcm")}
    on_disk |= {f"vindr/{p.stem}" for p in (corpus / "vindr-cxr").rglob("*.dicom")}
    on_disk |= {f"siim/{p.stem}" for p in (corpus / "siim-acr").rglob("*.dcm")}
    on_disk |= {f"padchest/{p.name}" for p in (corpus / "padchest").rglob("*.png")}
    assert on_disk == set(truth["images"])
    for entry in truth["images"].values():
        assert set(entry["findings"]) <= set(CHEXPERT_14)
        assert set(entry["findings"].values()) <= {1, 0, -1}
        assert entry["findings"].get("No Finding", 1) == 1


def test_planted_phi_is_listed_per_image_and_kept_per_patient(truth):
    """Fake PHI (pipelines/synth/phi.py): one identity per patient, never in the datasets' own ids."""
    identities = {}
    for entry in truth["images"].values():
        values = {item["field"]: item["value"] for item in entry["planted_phi"]}
        assert len(values) == len(entry["planted_phi"]) and all(values.values())
        if entry["source"] == "padchest":
            assert values == {}
            continue
        assert "PatientID" not in values and not {entry["subject_id"], entry["study_id"]} & set(values.values())
        if entry["source"] in ("mimic", "siim"):
            person = (values.get("PatientName"), values["PatientBirthDate"], values["OtherPatientIDs"])
            assert identities.setdefault((entry["source"], entry["subject_id"]), person) == person
        if entry["source"] == "mimic":
            assert values["mrn"] == values["OtherPatientIDs"] and values["PatientName"].startswith("SYNTHPHI^")
            assert (
                values["date of birth"] == f"{values['PatientBirthDate'][4:6]}/{values['PatientBirthDate'][6:]}/"
                f"{values['PatientBirthDate'][:4]}"
            )
    assert len(identities) < sum(e["source"] in ("mimic", "siim") for e in truth["images"].values())


def test_generate_refuses_a_foreign_non_empty_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        generate(tmp_path, studies=1)


def test_two_generations_are_byte_identical_and_the_seed_matters(tmp_path):
    def checksums(root: Path) -> dict[str, str]:
        return {
            str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))
            if p.is_file()
        }

    first = checksums(generate(tmp_path / "a", studies=2, seed=11))
    assert first == checksums(generate(tmp_path / "b", studies=2, seed=11))
    assert first == checksums(generate(tmp_path / "a", studies=2, seed=11))  # regenerating in place
    other = checksums(generate(tmp_path / "c", studies=2, seed=12))
    assert first.keys() != other.keys() or first != other


# ---------------------------------------------------------------------------------------- MIMIC


def read_gz_csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def test_mimic_metadata_has_the_12_columns_and_numeric_study_times(corpus, truth):
    root = corpus / "mimic-cxr"
    with gzip.open(root / "mimic-cxr-2.0.0-metadata.csv.gz", "rt") as stream:
        header = stream.readline().strip().split(",")
    assert header == [
        "dicom_id",
        "subject_id",
        "study_id",
        "PerformedProcedureStepDescription",
        "ViewPosition",
        "Rows",
        "Columns",
        "StudyDate",
        "StudyTime",
        "ProcedureCodeSequence_CodeMeaning",
        "ViewCodeSequence_CodeMeaning",
        "PatientOrientationCodeSequence_CodeMeaning",
    ]
    metadata = pd.read_csv(root / "mimic-cxr-2.0.0-metadata.csv.gz")
    assert metadata["StudyTime"].dtype == float
    lost_zero = metadata["StudyTime"] < 100000
    assert lost_zero.any() and (~lost_zero).any()
    for row in metadata.itertuples():
        entry = truth["images"][f"mimic/{row.dicom_id}"]
        assert (row.Rows, row.Columns) == (entry["height"], entry["width"])
        assert f"{row.StudyTime:013.6f}"[:6] == entry["study_time"][:6]  # the documented zero-restoring parse
    portable = metadata[metadata["ViewPosition"] == "AP"]
    assert portable["PatientOrientationCodeSequence_CodeMeaning"].isna().all()


def test_mimic_split_is_official_and_patient_disjoint(corpus, truth):
    split = read_gz_csv(corpus / "mimic-cxr" / "mimic-cxr-2.0.0-split.csv.gz")
    assert list(split.columns) == ["dicom_id", "study_id", "subject_id", "split"]
    assert set(split["split"]) == {"train", "validate", "test"}
    assert (split.groupby("subject_id")["split"].nunique() == 1).all()
    for row in split.itertuples():
        assert truth["images"][f"mimic/{row.dicom_id}"]["split"] == row.split


def test_mimic_reports_keep_the_official_layout(corpus, truth):
    reports = sorted((corpus / "mimic-cxr" / "files").glob("p1?/p*/s*.txt"))
    assert len(reports) == truth["studies"]
    both = 0
    for path in reports:
        assert path.with_suffix("").is_dir()  # the report sits beside its study folder
        text = path.read_text()
        lines = text.split("\n")
        assert lines[0].strip() == "FINAL REPORT" and 30 <= len(lines[0]) - len(lines[0].lstrip()) <= 36
        for line in lines[1:-1]:
            assert line == " " or (line.startswith(" ") and not line.startswith("  ")), repr(line)
            assert len(line) <= 79
        names = SECTION.findall(text)
        assert {"FINDINGS", "IMPRESSION"} & set(names) and "EXAMINATION" in names
        both += {"FINDINGS", "IMPRESSION"} <= set(names)
        stripped = "\n".join(line.strip() for line in lines)
        assert not SECTION.findall(stripped)  # stripping the leading space breaks the official parser
    assert both >= len(reports) // 2


def test_comparisons_and_change_words_only_where_a_prior_exists():
    change = re.compile(r"\b(unchanged|increased|decreased|resolved|progressed|New)\b")
    for patient in make_mimic_patients(30, seed=5):
        for study in patient.studies:
            report = mimic_report(patient, study, seed=5)
            comparison = re.search(r"COMPARISON:  (.*)", report).group(1)
            if study.prior_study_id is None:
                assert comparison == "None." and not change.search(report)
            else:
                assert comparison != "None."


def test_mimic_label_csvs_encode_the_truth(corpus, truth):
    root = corpus / "mimic-cxr"
    by_study = {entry["study_id"]: entry["findings"] for entry in of_source(truth, "mimic").values()}
    for name in ("chexpert", "negbio"):
        labels = read_gz_csv(root / f"mimic-cxr-2.0.0-{name}.csv.gz")
        assert list(labels.columns) == ["subject_id", "study_id", *sorted(CHEXPERT_14)]
        assert labels["study_id"].is_unique and set(labels["study_id"]) == set(by_study)
        assert set(labels["No Finding"]) <= {"1.0", ""}
        for row in labels.to_dict("records"):
            cells = {k: float(v) for k, v in row.items() if k in CHEXPERT_14 and v != ""}
            assert cells == {k: float(v) for k, v in by_study[row["study_id"]].items()}


def test_mimic_dicoms_decode_and_match_the_lists(corpus, truth):
    root = corpus / "mimic-cxr"
    records = read_gz_csv(root / "cxr-record-list.csv.gz")
    assert list(records.columns) == ["subject_id", "study_id", "dicom_id", "path"]
    photometric = Counter()
    for row in records.itertuples():
        assert re.fullmatch(r"files/p1\d/p1\d{7}/s5\d{7}/([0-9a-f]{8}-){4}[0-9a-f]{8}\.dcm", row.path)
        dataset = pydicom.dcmread(root / row.path)
        entry = truth["images"][f"mimic/{row.dicom_id}"]
        assert dataset.pixel_array.shape == (entry["height"], entry["width"])
        assert dataset.PatientID == row.subject_id and dataset.ViewPosition == entry["view"]
        assert dataset.pixel_array.std() > 100  # a radiograph, not a constant
        photometric[dataset.PhotometricInterpretation] += 1
    assert set(photometric) == {"MONOCHROME1", "MONOCHROME2"}
    studies = read_gz_csv(root / "cxr-study-list.csv.gz")
    assert all((root / path).is_file() for path in studies["path"])


def test_patients_in_truth_are_in_time_order(truth):
    for key, studies in truth["patients"].items():
        if key.startswith("mimic/"):
            moments = {
                e["study_id"]: (e["study_date"], e["study_time"])
                for e in of_source(truth, "mimic").values()
                if e["subject_id"] == key.split("/")[1]
            }
            assert [moments[s] for s in studies] == sorted(moments[s] for s in studies)
    assert max(len(s) for k, s in truth["patients"].items() if k.startswith("mimic/")) >= 2


# ---------------------------------------------------------------------------------------- VinDr


VINDR_WHITELIST = {
    "PatientSex",
    "PatientAge",
    "PatientSize",
    "PatientWeight",
    "PhotometricInterpretation",
    "Rows",
    "Columns",
    "PixelSpacing",
    "PixelAspectRatio",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "SmallestImagePixelValue",
    "LargestImagePixelValue",
    "WindowCenter",
    "WindowWidth",
    "RescaleIntercept",
    "RescaleSlope",
    "LossyImageCompression",
    "LossyImageCompressionRatio",
    "LossyImageCompressionMethod",
    "SamplesPerPixel",
    "NumberOfFrames",
    "PixelData",
}
"""VinDr's de-identification whitelist (docs/formats/vindr-cxr.md §2)."""


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")  # the MD5 instance UID is the real trap
def test_vindr_dicoms_are_whitelisted_hex_named_and_varied(corpus, truth):
    files = sorted((corpus / "vindr-cxr").glob("*/*.dicom"))
    assert {p.parent.name for p in files} == {"train", "test"}
    kinds = Counter()
    for path in files:
        assert re.fullmatch(r"[0-9a-f]{32}", path.stem)
        dataset = pydicom.dcmread(path)
        for forbidden in ("PatientID", "StudyInstanceUID", "SOPInstanceUID", "SOPClassUID", "Modality", "ViewPosition"):
            assert forbidden not in dataset
        planted = {item["field"] for item in truth["images"][f"vindr/{path.stem}"]["planted_phi"]}
        assert {element.keyword for element in dataset} - VINDR_WHITELIST == planted  # the whitelist + fake PHI
        assert dataset.file_meta.MediaStorageSOPInstanceUID == path.stem
        pixels = dataset.pixel_array
        assert pixels.shape == (truth["images"][f"vindr/{path.stem}"]["height"], dataset.Columns)
        kinds[dataset.PhotometricInterpretation] += 1
        kinds[str(dataset.file_meta.TransferSyntaxUID)] += 1
        assert truth["images"][f"vindr/{path.stem}"]["split"] == path.parent.name
    assert kinds["MONOCHROME1"] and kinds["MONOCHROME2"] and kinds["1.2.840.10008.1.2.4.90"]


def test_vindr_csvs_have_readers_spellings_and_empty_no_finding_boxes(corpus, truth):
    folder = corpus / "vindr-cxr" / "annotations"
    train_labels = pd.read_csv(folder / "image_labels_train.csv")
    test_labels = pd.read_csv(folder / "image_labels_test.csv")
    assert "Other diseases" in train_labels and "Other disease" not in train_labels
    assert "Other disease" in test_labels and "rad_id" not in test_labels
    assert (train_labels.groupby("image_id").size() == 3).all()
    assert not train_labels.duplicated(["image_id", "rad_id"]).any()
    assert train_labels["rad_id"].str.fullmatch(r"R([1-9]|1[0-7])").all()
    boxes = pd.read_csv(folder / "annotations_train.csv")
    test_boxes = pd.read_csv(folder / "annotations_test.csv")
    assert "rad_id" not in test_boxes
    for frame in (boxes, test_boxes):
        empty = frame[frame["class_name"] == "No finding"]
        assert empty[["x_min", "y_min", "x_max", "y_max"]].isna().all().all()
        drawn = frame[frame["class_name"] != "No finding"]
        assert (drawn["x_min"] < drawn["x_max"]).all() and (drawn["y_min"] < drawn["y_max"]).all()
    assert (boxes["class_name"] == "No finding").any()
    for image_id, group in boxes.dropna(subset=["x_max"]).groupby("image_id"):
        entry = truth["images"][f"vindr/{image_id}"]
        assert (group["x_max"] <= entry["width"]).all() and (group["y_max"] <= entry["height"]).all()
        if entry["findings"].get("Cardiomegaly") == 1:
            assert (group["class_name"] == "Cardiomegaly").sum() >= 2  # at least two of three readers


# ------------------------------------------------------------------------------------- CheXmask


def chexmask_files(corpus: Path) -> dict[str, pd.DataFrame]:
    folder = corpus / "chexmask" / "OriginalResolution"
    return {
        name: pd.read_csv(folder / name, dtype={"ImageID": str})
        for name in ("MIMIC-CXR-JPG.csv.gz", "VinDr-CXR.csv", "Padchest.csv")
    }


def test_chexmask_columns_by_file(corpus):
    frames = chexmask_files(corpus)
    assert frames["MIMIC-CXR-JPG.csv.gz"].columns[0] == "dicom_id"
    assert frames["VinDr-CXR.csv"].columns[0] == "image_id"
    assert list(frames["Padchest.csv"].columns[:3]) == ["ImageID", "Dice RCA (Max)", "Dice RCA (Mean)"]
    assert list(frames["VinDr-CXR.csv"].columns[1:3]) == ["Dice RCA (Mean)", "Dice RCA (Max)"]
    padchest = frames["Padchest.csv"]
    assert (padchest["Dice RCA (Max)"] < padchest["Dice RCA (Mean)"]).any()


def test_chexmask_rle_landmarks_and_ctr_agree_with_the_truth(corpus, truth):
    sources = {"MIMIC-CXR-JPG.csv.gz": "mimic", "VinDr-CXR.csv": "vindr", "Padchest.csv": "padchest"}
    forms = Counter()
    for name, frame in chexmask_files(corpus).items():
        for row in frame.to_dict("records"):
            key = f"{sources[name]}/{row[frame.columns[0]]}"
            entry = truth["images"][key]
            height, width = int(row["Height"]), int(row["Width"])
            assert (height, width) == (entry["height"], entry["width"])
            masks = {
                organ: rle_decode(row[organ], height, width, "chexmask")
                for organ in ("Right Lung", "Left Lung", "Heart")
            }
            ctr = cardiothoracic_ratio(masks["Right Lung"], masks["Left Lung"], masks["Heart"])
            assert ctr_band(ctr) == entry["ctr_band"] and ctr == pytest.approx(entry["ctr"], abs=1e-3)
            numbers = [int(v) for v in re.findall(r"-?\d+", row["Landmarks"])]
            assert len(numbers) == 240
            points = np.array(numbers).reshape(120, 2)
            for organ, part in (("Right Lung", points[:44]), ("Left Lung", points[44:94]), ("Heart", points[94:])):
                assert np.array_equal(fill_contour(part, height, width), masks[organ])
            assert masks["Right Lung"].nonzero()[1].mean() < width / 2 < masks["Left Lung"].nonzero()[1].mean()
            forms["numpy" if row["Landmarks"].startswith("[[") else "flat"] += 1
            assert entry["chexmask"] == {
                "dice_rca_mean": pytest.approx(row["Dice RCA (Mean)"]),
                "passes": row["Dice RCA (Mean)"] >= 0.7,
            }
    assert forms["numpy"] and forms["flat"]
    failing = [e for e in truth["images"].values() if e["chexmask"] and not e["chexmask"]["passes"]]
    assert failing


# ------------------------------------------------------------------------------------------ SIIM


def test_siim_rle_csv_keeps_the_stage_one_spacing(corpus, truth):
    frame = pd.read_csv(corpus / "siim-acr" / "train-rle.csv")
    assert list(frame.columns) == ["ImageId", " EncodedPixels"]
    assert frame[" EncodedPixels"].str.startswith(" ").all()
    counts = frame.groupby("ImageId").size()
    assert (counts > 1).any() and (frame[" EncodedPixels"] == " -1").any()
    assert set(frame["ImageId"]) == {k.split("/", 1)[1] for k in of_source(truth, "siim")}


def test_siim_dicoms_are_jpeg_baseline_and_masks_lie_inside_a_lung(corpus, truth):
    frame = pd.read_csv(corpus / "siim-acr" / "train-rle.csv", skipinitialspace=True)
    files = {p.stem: p for p in (corpus / "siim-acr" / "dicom-images-train").glob("*/*/*.dcm")}
    cases = make_image_cases("siim", len(files), SEED)
    for case in cases:
        image_id = instance_uids(SEED, case.index)[2]
        entry = truth["images"][f"siim/{image_id}"]
        dataset = pydicom.dcmread(files[image_id])
        assert dataset.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.50"
        pixels = dataset.pixel_array
        assert pixels.shape == (1024, 1024) and pixels.dtype == np.uint8
        assert re.fullmatch(r"[0-9a-f-]{36}", dataset.PatientID) and re.fullmatch(r"\d+", dataset.PatientAge)
        assert files[image_id].parent.name == dataset.SeriesInstanceUID
        union = np.zeros((1024, 1024), bool)
        for rle in frame.loc[frame["ImageId"] == image_id, "EncodedPixels"]:
            union |= rle_decode(rle, 1024, 1024, "siim")
        assert union.sum() == entry["pneumothorax_area"]
        assert entry["findings"]["Pneumothorax"] == int(union.any())
        rebuilt = build_frontal(
            case.findings,
            case.ctr_target,
            1024,
            1024,
            rng_for(SEED, "siim-image", image_id),
            pneumothorax_pockets=case.extra["pockets"],
        )
        lungs = rebuilt.organs["right_lung"] | rebuilt.organs["left_lung"]
        assert not (union & ~lungs).any()
        if union.any():
            assert pixels[union].mean() < pixels[lungs & ~union].mean()  # the air is darker than the lung


# ------------------------------------------------------------------------------ Chest ImaGenome


def test_imagenome_splits_have_an_unnamed_index_and_gold_is_listed(corpus, truth):
    folder = corpus / "chest-imagenome" / "silver_dataset" / "splits"
    listed = set()
    for split in ("train", "valid", "test"):
        frame = pd.read_csv(folder / f"{split}.csv", dtype=str)
        assert frame.columns[0].startswith("Unnamed") and list(frame.columns[1:]) == [
            "subject_id",
            "study_id",
            "dicom_id",
            "path",
            "ViewPosition",
        ]
        assert set(frame["ViewPosition"]) <= {"AP", "PA"}
        listed |= set(frame["dicom_id"])
    avoid = pd.read_csv(folder / "images_to_avoid.csv", dtype=str)
    assert list(avoid.columns) == ["subject_id", "study_id", "dicom_id", "path", "ViewPosition"]
    expected = {k.split("/")[1] for k, e in of_source(truth, "mimic").items() if e["imagenome"]}
    assert listed == expected
    assert set(avoid["dicom_id"]) == {
        k.split("/")[1] for k, e in of_source(truth, "mimic").items() if e["imagenome_gold"]
    } and len(avoid)


def test_scene_graphs_cover_frontal_images_with_both_coordinate_spaces(corpus, truth):
    graphs = sorted((corpus / "chest-imagenome" / "silver_dataset" / "scene_graph").glob("*_SceneGraph.json"))
    mimic = of_source(truth, "mimic")
    assert {f"mimic/{p.name.removesuffix('_SceneGraph.json')}" for p in graphs} == {
        k for k, e in mimic.items() if e["imagenome"]
    }
    bad = Counter()
    relations = 0
    for path in graphs:
        graph = json.loads(path.read_text())
        entry = mimic[f"mimic/{graph['image_id']}"]
        assert entry["view"] in ("AP", "PA") and graph["viewpoint"] == entry["view"]
        assert graph["patient_id"] == int(entry["subject_id"]) and graph["study_id"] == int(entry["study_id"])
        for obj in graph["objects"]:
            assert obj["object_id"] == f"{graph['image_id']}_{obj['bbox_name']}"
            assert {"x1", "y1", "x2", "y2", "original_x1", "original_y2", "original_width"} <= set(obj)
            bad["negative"] += obj["original_x1"] < 0
            bad["beyond"] += obj["original_y2"] > entry["height"]
            bad["zero-area"] += obj["original_x1"] == obj["original_x2"]
            assert max(obj["x1"], obj["x2"], obj["y1"]) <= 224
        for attribute in graph["attributes"]:
            assert attribute[attribute["bbox_name"]] is True
            lengths = {len(attribute[k]) for k in ("attributes", "phrases", "comparison_cues", "temporal_cues")}
            assert len(lengths) == 1
        for relation in graph["relationships"]:
            previous = relation["object_id"].rsplit("_", 1)[0]
            assert mimic[f"mimic/{previous}"]["subject_id"] == entry["subject_id"]
            assert mimic[f"mimic/{previous}"]["study_order"] < entry["study_order"]
            relations += 1
    assert bad["negative"] and bad["beyond"] and bad["zero-area"] and relations


# ------------------------------------------------------------------------------------- PadChest


def test_padchest_csv_has_36_columns_and_its_string_traps(corpus, truth):
    path = corpus / "padchest" / "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz"
    frame = pd.read_csv(path, dtype={"PatientID": str, "StudyID": str})
    assert frame.shape[1] == 36 and frame.columns[0].startswith("Unnamed")
    assert list(frame.columns[[26, 34]]) == ["ExposureTime", "labelCUIS"]
    assert frame["PatientID"].str.fullmatch(r"\d{30,45}").all()
    assert set(frame["MethodLabel"]) == {"Physician", "RNN_model"}
    assert frame["Labels"].isna().sum() == 1
    labelled = frame.dropna(subset=["Labels"])
    items = [item for cell in labelled["Labels"] for item in ast.literal_eval(cell)]
    assert any(item.startswith(" ") for item in items) and any("loc  " in cell for cell in labelled["Localizations"])
    for cell in labelled["labelCUIS"]:
        assert cell.startswith("[") and "," not in cell
        assert all(re.fullmatch(r"(C\d{7})?", cui) for cui in re.findall(r"'([^']*)'", cell))
    assert any("''" in cell for cell in labelled["labelCUIS"])
    assert set(frame["Projection"]) >= {"PA"}
    assert labelled["Report"].str.contains(" . ").any()
    for row in frame.itertuples():
        assert truth["images"][f"padchest/{row.ImageID}"]["image_dir"] == row.ImageDir


def test_padchest_pngs_are_16_bit_at_the_listed_size(corpus):
    frame = pd.read_csv(
        corpus / "padchest" / "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz",
        dtype={"PatientID": str, "StudyID": str},
    )
    for row in frame.itertuples():
        pixels = cv2.imread(str(corpus / "padchest" / str(row.ImageDir) / row.ImageID), cv2.IMREAD_UNCHANGED)
        assert pixels.dtype == np.uint16 and pixels.shape == (row.Rows_DICOM, row.Columns_DICOM)
        assert pixels.max() > 255 * 8  # really 16-bit, not 8-bit values in a 16-bit container


# ------------------------------------------------------------------------------- geometry, cases


@settings(max_examples=12, deadline=None)
@given(
    band=st.sampled_from(sorted(CTR_TARGETS)),
    where=st.floats(0, 1),
    width=st.integers(600, 1100),
    height=st.integers(600, 1100),
    seed=st.integers(0, 2**16),
)
def test_measured_ctr_stays_in_the_band_of_its_target(band, where, width, height, seed):
    low, high = CTR_TARGETS[band]
    frontal = build_frontal({}, low + where * (high - low), width, height, rng_for(seed, "ctr"))
    assert frontal.ctr_band == band
    right, left = box_of(frontal.organs["right_lung"]), box_of(frontal.organs["left_lung"])
    assert right[2] <= left[0] + 5  # the right lung is on the image left
    assert [len(frontal.landmarks[k]) for k in ("right_lung", "left_lung", "heart")] == [44, 50, 26]


@settings(max_examples=25, deadline=None)
@given(ctr=st.floats(0.2, 0.9))
def test_ctr_band_edges(ctr):
    band = ctr_band(ctr)
    assert band == ("normal" if ctr < 0.51 else "mild" if ctr < 0.55 else "moderate" if ctr < 0.60 else "severe")


def test_case_findings_evolve_and_label_like_chexpert():
    patients = make_mimic_patients(40, seed=1)
    assert sum(len(p.studies) for p in patients) == 40
    changes = Counter(f.change for p in patients for s in p.studies[1:] for f in s.findings.values())
    assert {"unchanged", "worsened", "improved"} <= set(changes)
    for patient in patients:
        assert patient.studies[0].prior_study_id is None
        assert all(s.prior_study_id == p.study_id for p, s in zip(patient.studies, patient.studies[1:]))
        for study in patient.studies:
            labels = stated_labels(study.findings)
            if labels.get("No Finding") == 1:
                assert not any(v != 0 for k, v in labels.items() if k not in ("No Finding", "Support Devices"))
