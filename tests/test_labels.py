"""Label harmonisation into CheXpert-14 (transforms/labels.py, manifests/labels.yaml)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from realdata import vindr_kaggle_rows

import manifests
from schemas.records import Box, RawLabel
from transforms.labels import (
    TAXONOMY,
    Finding,
    box_labels,
    finding_for_box,
    harmonize,
    label_rules,
    parse_label_rules,
    unknown_labels,
    unmapped,
)

CHEXPERT_14 = [
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Lesion",
    "Lung Opacity",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
]
MULTI_READER_IMAGE = "9a5094b2563a1ef3ff50dc5c7ff71345"  # VinDr train image, three readers' boxes
NO_FINDING_IMAGE = "50a418190bc3fb1ef1633bf9678929b3"  # VinDr train image, three readers' "No finding"


def presences(findings: list[Finding]) -> dict[str, int | None]:
    assert [f.name for f in findings] == CHEXPERT_14
    return {f.name: f.presence for f in findings}


def by_name(findings: list[Finding]) -> dict[str, Finding]:
    return {f.name: f for f in findings}


def mimic_row(system: str, cells: dict[str, str]) -> list[RawLabel]:
    """Raw labels as the MIMIC reader makes them from one CSV row: all 14 columns, blank -> None."""
    return [
        RawLabel(system=system, name=name, value=float(cells[name]) if cells.get(name, "") != "" else None)
        for name in sorted(CHEXPERT_14)
    ]


def padchest(*labels: str, method: str = "Physician") -> list[RawLabel]:
    return [RawLabel(system="padchest-labels", name=label, value=1.0, reader=method) for label in labels]


def vindr_image_labels(reader: str, positives: set[str]) -> list[RawLabel]:
    """One reader row of image_labels_*.csv: all 28 columns, 0/1."""
    columns = [
        "Aortic enlargement",
        "Atelectasis",
        "Calcification",
        "Cardiomegaly",
        "Clavicle fracture",
        "Consolidation",
        "Edema",
        "Emphysema",
        "Enlarged PA",
        "ILD",
        "Infiltration",
        "Lung Opacity",
        "Lung cavity",
        "Lung cyst",
        "Mediastinal shift",
        "Nodule/Mass",
        "Pleural effusion",
        "Pleural thickening",
        "Pneumothorax",
        "Pulmonary fibrosis",
        "Rib fracture",
        "Other lesion",
        "COPD",
        "Lung tumor",
        "Pneumonia",
        "Tuberculosis",
        "Other diseases",
        "No finding",
    ]
    assert positives <= set(columns)
    return [
        RawLabel(system="vindr-image-labels", name=name, value=1.0 if name in positives else 0.0, reader=reader)
        for name in columns
    ]


# --- the manifest ------------------------------------------------------------------------------


def test_taxonomy_is_chexpert_14_in_order():
    assert list(TAXONOMY) == CHEXPERT_14


def test_every_map_target_in_the_yaml_is_a_taxonomy_name():
    document = yaml.safe_load((Path(manifests.MANIFEST_DIR) / "labels.yaml").read_text(encoding="utf-8"))
    assert document["taxonomy"] == CHEXPERT_14
    targets = []
    for system, entry in document["systems"].items():
        for raw_name, target in (entry.get("map") or {}).items():
            assert isinstance(raw_name, str) and raw_name == raw_name.strip(), (system, raw_name)
            if isinstance(target, str):
                targets.append(target)
            elif isinstance(target, list):
                targets.extend(target)
            else:
                assert set(target.values()) <= {1, -1}, (system, raw_name)
                targets.extend(target)
        assert not set(entry.get("not_mapped") or ()) & set(entry.get("map") or {}), system
    assert targets and set(targets) <= set(CHEXPERT_14)
    assert set(document["systems"]) >= {
        "mimic-chexpert",
        "mimic-negbio",
        "mimic-test-labeled",
        "vindr-image-labels",
        "vindr-annotations",
        "padchest-labels",
        "siim-rle",
    }


def test_manifest_errors_name_the_entry():
    document = copy.deepcopy(manifests.load("labels.yaml"))
    document["systems"]["padchest-labels"]["map"]["pleural effusion"] = "Effusion"
    with pytest.raises(ValueError, match=r"padchest-labels.*'pleural effusion'.*'Effusion'.*not a taxonomy name"):
        parse_label_rules(document)
    document = copy.deepcopy(manifests.load("labels.yaml"))
    document["systems"]["siim-rle"]["absent"] = "zeros"
    with pytest.raises(ValueError, match=r"siim-rle.absent"):
        parse_label_rules(document)
    document = copy.deepcopy(manifests.load("labels.yaml"))
    document["systems"]["padchest-labels"]["map"]["tuberculosis"] = "Pneumonia"
    with pytest.raises(ValueError, match="both mapped and listed as not mapped"):
        parse_label_rules(document)


def test_vindr_candidate_extensions_are_decided():
    targets = label_rules().systems["vindr-image-labels"].targets
    assert targets["Edema"] == (("Edema", 1),)
    assert targets["Rib fracture"] == targets["Clavicle fracture"] == (("Fracture", 1),)
    assert targets["Lung cavity"] == targets["Lung tumor"] == (("Lung Lesion", 1),)
    assert targets["Pulmonary fibrosis"] == (("Pleural Other", 1),)
    assert "Calcification" not in targets and "Tuberculosis" not in targets


# --- MIMIC -------------------------------------------------------------------------------------


def test_mimic_blank_stays_none_and_zero_stays_zero():
    raw = mimic_row("mimic-chexpert", {"Edema": "0.0", "Pleural Effusion": "1.0", "Cardiomegaly": "-1.0"})
    got = presences(harmonize(raw))
    assert got["Edema"] == 0
    assert got["Pleural Effusion"] == 1
    assert got["Cardiomegaly"] == -1
    assert got["Pneumonia"] is None and got["Lung Opacity"] is None
    assert got["No Finding"] is None  # MIMIC never states No Finding = 0; absence is not 0


def test_mimic_no_finding_is_kept_as_stated_even_with_devices():
    got = presences(harmonize(mimic_row("mimic-chexpert", {"No Finding": "1.0", "Support Devices": "1.0"})))
    assert got["No Finding"] == 1 and got["Support Devices"] == 1


def test_mimic_chexpert_preferred_over_negbio_without_mixing():
    raw = mimic_row("mimic-negbio", {"Edema": "1.0", "Atelectasis": "1.0"}) + mimic_row(
        "mimic-chexpert", {"Edema": "0.0"}
    )
    findings = by_name(harmonize(raw))
    assert findings["Edema"].presence == 0
    assert findings["Edema"].systems == ["mimic-chexpert"]
    assert findings["Edema"].raw == ["mimic-chexpert:Edema=0"]
    assert findings["Atelectasis"].presence is None  # a chexpert blank is not filled from negbio


def test_mimic_test_set_labels_win_over_both():
    raw = (
        mimic_row("mimic-chexpert", {"Pneumonia": "1.0"})
        + mimic_row("mimic-negbio", {"Pneumonia": "1.0"})
        + mimic_row("mimic-test-labeled", {"Pneumonia": "-1.0"})
    )
    assert presences(harmonize(raw))["Pneumonia"] == -1


def test_mimic_all_blank_chexpert_row_falls_back_to_negbio():
    raw = mimic_row("mimic-chexpert", {}) + mimic_row("mimic-negbio", {"Airspace Opacity": "1.0"})
    raw += [RawLabel(system="mimic-negbio", name="Airspace Opacity", value=1.0)]
    findings = by_name(harmonize(raw))
    assert findings["Lung Opacity"].presence == 1
    assert findings["Lung Opacity"].systems == ["mimic-negbio"]


def test_system_priority_overrides_the_manifest_order():
    raw = mimic_row("mimic-chexpert", {"Edema": "0.0"}) + mimic_row("mimic-negbio", {"Edema": "1.0"})
    assert presences(harmonize(raw, system_priority=["mimic-negbio", "mimic-chexpert"]))["Edema"] == 1
    assert presences(harmonize(raw, system_priority=["mimic-negbio"]))["Edema"] == 1
    assert presences(harmonize(raw, system_priority=["mimic-test-labeled"]))["Edema"] is None
    with pytest.raises(ValueError, match="unknown systems"):
        harmonize(raw, system_priority=["mimic-chexbert"])


# --- VinDr -------------------------------------------------------------------------------------


def test_vindr_train_majority_of_three_readers():
    raw = (
        vindr_image_labels("R1", {"Cardiomegaly", "Nodule/Mass", "Infiltration"})
        + vindr_image_labels("R2", {"Cardiomegaly", "ILD"})
        + vindr_image_labels("R3", {"Pleural effusion"})
    )
    findings = by_name(harmonize(raw))
    got = presences(harmonize(raw))
    assert got["Cardiomegaly"] == 1  # 2 of 3
    assert got["Lung Lesion"] == 0  # 1 of 3
    assert got["Pleural Effusion"] == 0
    assert got["Lung Opacity"] == 1  # R1 via Infiltration, R2 via ILD: each reader first, then the vote
    assert got["No Finding"] == 0
    assert got["Support Devices"] is None  # VinDr does not label devices
    assert [text for text in findings["Lung Lesion"].raw if "Nodule/Mass" in text] == [
        "vindr-image-labels:Nodule/Mass=0@R2",
        "vindr-image-labels:Nodule/Mass=0@R3",
        "vindr-image-labels:Nodule/Mass=1@R1",
    ]
    assert len(findings["Lung Lesion"].raw) == 9  # Nodule/Mass, Lung cavity, Lung tumor x 3 readers


def test_vindr_test_consensus_row_decides_alone():
    raw = (
        vindr_image_labels("consensus", {"Pneumothorax"})
        + vindr_image_labels("R1", {"Atelectasis"})
        + (vindr_image_labels("R2", {"Atelectasis"}))
    )
    got = presences(harmonize(raw))
    assert got["Pneumothorax"] == 1 and got["Atelectasis"] == 0


def test_vindr_split_vote_is_uncertain():
    raw = vindr_image_labels("R1", {"Cardiomegaly"}) + vindr_image_labels("R2", set())
    assert presences(harmonize(raw))["Cardiomegaly"] == -1


def test_vindr_no_finding_unanimous():
    raw = [vindr_image_labels(reader, {"No finding"}) for reader in ("R11", "R15", "R16")]
    got = presences(harmonize([label for labels in raw for label in labels]))
    assert got["No Finding"] == 1
    assert all(got[name] == 0 for name in CHEXPERT_14 if name not in ("No Finding", "Support Devices"))


def _kaggle_rows(image_id: str) -> list[dict[str, str]]:
    """The real VinBigData (Kaggle) rows of one image, read from the torchxrayvision wheel at test time."""
    rows = vindr_kaggle_rows({image_id})
    assert rows, f"{image_id} is not in the wheel's vinbigdata-train.csv.gz"
    return rows


def _kaggle_raw_labels(rows: list[dict[str, str]]) -> list[RawLabel]:
    """Boxes and coordinate-less rows of one image, as the VinDr reader keeps them."""
    boxes = [
        Box(
            label=row["class_name"],
            x1=float(row["x_min"]),
            y1=float(row["y_min"]),
            x2=float(row["x_max"]),
            y2=float(row["y_max"]),
            origin="vindr-kaggle",
            reader=row["rad_id"],
        )
        for row in rows
        if row["x_min"]
    ]
    labels = [
        RawLabel(system="vindr-kaggle", name=row["class_name"], value=1.0, reader=row["rad_id"])
        for row in rows
        if not row["x_min"]
    ]
    return box_labels(boxes) + labels


def test_vindr_real_multi_reader_boxes():
    rows = _kaggle_rows(MULTI_READER_IMAGE)
    findings = by_name(harmonize(_kaggle_raw_labels(rows)))
    got = {name: finding.presence for name, finding in findings.items()}
    assert got["Cardiomegaly"] == 1  # R8, R9 and R10 all drew it
    assert got["Pleural Effusion"] == 0  # only R9
    assert got["Pleural Other"] == 0
    assert got["Enlarged Cardiomediastinum"] == 0
    assert got["No Finding"] == 0
    assert got["Pneumonia"] is None and got["Edema"] is None and got["Fracture"] is None  # not in Kaggle classes
    assert "vindr-kaggle:Pleural effusion=1@R9" in findings["Pleural Effusion"].raw


def test_vindr_real_no_finding_rows():
    rows = _kaggle_rows(NO_FINDING_IMAGE)
    got = presences(harmonize(_kaggle_raw_labels(rows)))
    assert got["No Finding"] == 1 and got["Cardiomegaly"] == 0 and got["Pneumonia"] is None


def test_vindr_annotations_leave_global_labels_unknown():
    raw = box_labels([Box(label="Nodule/Mass", x1=1, y1=2, x2=3, y2=4, origin="vindr-annotations", reader="consensus")])
    got = presences(harmonize(raw))
    assert got["Lung Lesion"] == 1 and got["Edema"] == 0 and got["Pneumonia"] is None


def test_vindr_image_labels_preferred_over_boxes():
    raw = vindr_image_labels("consensus", {"Cardiomegaly"}) + box_labels(
        [Box(label="Pneumothorax", x1=0, y1=0, x2=5, y2=5, origin="vindr-annotations", reader="consensus")]
    )
    got = presences(harmonize(raw))
    assert got["Cardiomegaly"] == 1 and got["Pneumothorax"] == 0


def test_box_labels_one_per_reader_and_label():
    boxes = [
        Box(label="Cardiomegaly", x1=0, y1=0, x2=9, y2=9, origin="vindr-annotations", reader="R9"),
        Box(label="Cardiomegaly", x1=1, y1=1, x2=8, y2=8, origin="vindr-annotations", reader="R9"),
        Box(label="Cardiomegaly", x1=1, y1=1, x2=8, y2=8, origin="vindr-annotations", reader="R8"),
    ]
    assert box_labels(boxes) == [
        RawLabel(system="vindr-annotations", name="Cardiomegaly", value=1.0, reader="R8"),
        RawLabel(system="vindr-annotations", name="Cardiomegaly", value=1.0, reader="R9"),
    ]


@pytest.mark.parametrize(
    ("origin", "label", "expected"),
    [
        ("vindr-annotations", "Nodule/Mass", "Lung Lesion"),
        ("vindr-annotations", "Pleural effusion", "Pleural Effusion"),
        ("vindr-kaggle", "Aortic enlargement", "Enlarged Cardiomediastinum"),
        ("vindr-annotations", "Calcification", None),  # documented as not mapped
        ("vindr-annotations", "Pleural Effusion", None),  # exact strings only
        ("imagenome-scene-graph", "right lung", None),  # anatomy, not a finding
        ("padchest-labels", "hydropneumothorax", None),  # two categories: no single name
        ("padchest-labels", "costophrenic angle blunting", None),  # uncertain sign, not the finding
    ],
)
def test_finding_for_box(origin, label, expected):
    assert finding_for_box(origin, label) == expected


# --- PadChest ----------------------------------------------------------------------------------


def test_padchest_normal_only():
    got = presences(harmonize(padchest("normal")))
    assert got["No Finding"] == 1
    assert all(got[name] == 0 for name in CHEXPERT_14 if name != "No Finding")


def test_padchest_heart_insufficiency_is_edema_and_uncertain_cardiomegaly():
    findings = by_name(harmonize(padchest("heart insufficiency", "pacemaker", method="RNN_model")))
    assert findings["Edema"].presence == 1
    assert findings["Cardiomegaly"].presence == -1
    assert findings["Cardiomegaly"].raw == ["padchest-labels:heart insufficiency=1@RNN_model"]
    assert findings["Support Devices"].presence == 1
    assert findings["No Finding"].presence == 0
    assert findings["Pneumothorax"].presence == 0  # absent member of a labelled row


def test_padchest_uncertain_mappings():
    got = presences(harmonize(padchest("hilar congestion", "costophrenic angle blunting", "vertebral compression")))
    assert got["Edema"] == -1 and got["Pleural Effusion"] == -1 and got["Fracture"] == -1
    # a positive member beats an uncertain one, as in CheXpert's aggregation
    got = presences(harmonize(padchest("costophrenic angle blunting", "pleural effusion")))
    assert got["Pleural Effusion"] == 1


def test_padchest_hydropneumothorax_maps_to_two_findings():
    got = presences(harmonize(padchest("hydropneumothorax")))
    assert got["Pneumothorax"] == 1 and got["Pleural Effusion"] == 1


@pytest.mark.parametrize(
    "labels", [("exclude",), ("suboptimal study",), ("exclude", "suboptimal study"), ("unchanged",)]
)
def test_padchest_no_information_rows_are_null_everywhere(labels):
    assert set(presences(harmonize(padchest(*labels))).values()) == {None}


def test_padchest_null_labels_are_null_everywhere():
    localizations = [RawLabel(system="padchest-localizations", name="cardiac", value=1.0, reader="Physician")]
    assert set(presences(harmonize(localizations)).values()) == {None}
    assert set(presences(harmonize([])).values()) == {None}
    assert unmapped(localizations) == []


def test_padchest_normal_with_a_finding_is_not_no_finding():
    got = presences(harmonize(padchest("normal", "pneumonia")))
    assert got["No Finding"] == 0 and got["Pneumonia"] == 1
    got = presences(harmonize(padchest("normal", "NSG tube")))
    assert got["No Finding"] == 1 and got["Support Devices"] == 1  # devices do not block No Finding


def test_exact_strings_only():
    raw = padchest(
        "pericardial effusion", "Pleural Effusion", " pleural effusion", "pseudonodule", "callus rib fracture"
    )
    got = presences(harmonize(raw))
    assert got["Pleural Effusion"] == 0  # pericardial effusion and mis-spelled variants never map
    assert got["Lung Lesion"] == 0  # pseudonodule is not a nodule
    assert got["Fracture"] == 1
    assert [label.name for label in unmapped(raw)] == [
        "pericardial effusion",
        "Pleural Effusion",
        " pleural effusion",
        "pseudonodule",
    ]
    assert [label.name for label in unknown_labels(raw)] == ["Pleural Effusion", " pleural effusion"]
    vindr = [RawLabel(system="vindr-image-labels", name="Effusion", value=1.0, reader="R1")]
    assert presences(harmonize(vindr))["Pleural Effusion"] == 0
    assert unmapped(vindr) == vindr


def test_unknown_systems_and_labels_stay_visible_without_crashing():
    raw = [
        RawLabel(system="chexbert", name="Edema", value=1.0),
        RawLabel(system="padchest-labels", name="brand new finding", value=1.0, reader="Physician"),
        RawLabel(system="padchest-labels", name="tuberculosis", value=1.0, reader="Physician"),
    ]
    got = presences(harmonize(raw))
    assert got["Edema"] == 0  # chexbert is not a configured system; the PadChest row labels Edema absent
    assert unmapped(raw) == raw
    assert unknown_labels(raw) == raw[:2]  # tuberculosis is a documented decision, not unknown


# --- SIIM and combinations ---------------------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [(1.0, 1), (0.0, 0)])
def test_siim_only_pneumothorax_is_known(value, expected):
    got = presences(harmonize([RawLabel(system="siim-rle", name="Pneumothorax", value=value)]))
    assert got["Pneumothorax"] == expected
    assert all(got[name] is None for name in CHEXPERT_14 if name != "Pneumothorax")


def test_systems_of_different_sources_combine_positive_first():
    raw = [RawLabel(system="siim-rle", name="Pneumothorax", value=1.0)] + mimic_row(
        "mimic-chexpert", {"Pneumothorax": "0.0", "Edema": "1.0"}
    )
    findings = by_name(harmonize(raw))
    assert findings["Pneumothorax"].presence == 1
    assert findings["Pneumothorax"].systems == ["mimic-chexpert", "siim-rle"]
    assert findings["Pneumothorax"].raw == ["mimic-chexpert:Pneumothorax=0", "siim-rle:Pneumothorax=1"]


def test_bad_raw_value_is_a_clear_error():
    with pytest.raises(ValueError, match=r"mimic-chexpert:'Edema' has value 0\.5"):
        harmonize([RawLabel(system="mimic-chexpert", name="Edema", value=0.5)])


# --- properties --------------------------------------------------------------------------------

RAW_LABELS = st.lists(
    st.builds(
        RawLabel,
        system=st.sampled_from(
            ["mimic-chexpert", "mimic-negbio", "vindr-image-labels", "padchest-labels", "siim-rle", "other"]
        ),
        name=st.sampled_from(
            CHEXPERT_14
            + [
                "Pleural effusion",
                "Nodule/Mass",
                "No finding",
                "normal",
                "exclude",
                "heart insufficiency",
                "pericardial effusion",
                "Pneumothorax",
            ]
        ),
        value=st.sampled_from([1.0, 0.0, -1.0, None]),
        reader=st.sampled_from([None, "R1", "R2", "R3", "consensus", "Physician"]),
    ),
    max_size=25,
)


@settings(max_examples=200, deadline=None)
@given(RAW_LABELS, st.randoms(use_true_random=False))
def test_harmonize_is_complete_valid_and_order_independent(raw, random):
    findings = harmonize(raw)
    assert [f.name for f in findings] == CHEXPERT_14
    assert all(f.presence in (1, 0, -1, None) for f in findings)
    assert all((f.presence is None) == (not f.systems) for f in findings)
    shuffled = list(raw)
    random.shuffle(shuffled)
    assert harmonize(shuffled) == findings


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(CHEXPERT_14), st.sampled_from(["1.0", "0.0", "-1.0", ""])))
def test_mimic_values_pass_through_unchanged(cells):
    got = presences(harmonize(mimic_row("mimic-chexpert", cells)))
    if not any(cells.values()):
        assert set(got.values()) == {None}
    else:
        assert got == {name: int(float(cells[name])) if cells.get(name) else None for name in CHEXPERT_14}
