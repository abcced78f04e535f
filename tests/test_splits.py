"""Split assignment: official first, patient-wise hash otherwise, stable across processes."""

import subprocess
import sys

from hypothesis import given
from hypothesis import strategies as st

from schemas.records import ImageRef
from transforms.splits import SPLIT_ORDER, assign_split, hashed_split, patient_key


def ref(source="padchest", subject="123", native="a.png", official=None):
    return ImageRef(
        image_key=f"{source}/{native}",
        source=source,
        native_id=native,
        uri="/x",
        format="png",
        subject_id=subject,
        official_split=official,
    )


def test_official_split_wins():
    assert assign_split(ref(source="mimic", official="test")) == ("test", "official")


def test_mimic_validate_is_read_as_written_and_named_validation_in_the_output():
    """MIMIC-CXR's split file says "validate"; the output split is "validation", as `datasets` names it."""
    assert ref(source="mimic", official="validate").official_split == "validate"
    assert assign_split(ref(source="mimic", official="validate")) == ("validation", "official")
    assert SPLIT_ORDER == ("train", "validation", "test")
    assert {hashed_split(f"siim/{i}") for i in range(400)} == set(SPLIT_ORDER)


@given(st.text(min_size=1, max_size=20), st.lists(st.text(min_size=1, max_size=10), min_size=2, max_size=5))
def test_every_image_of_a_patient_shares_a_split(subject, natives):
    splits = {assign_split(ref(subject=subject, native=n))[0] for n in natives}
    assert len(splits) == 1


def test_images_without_patient_are_their_own_patient():
    image = ref(source="vindr", subject=None, native="abc")
    assert patient_key(image) == "vindr/abc"


def test_ratios_roughly_hold_and_hash_is_process_independent():
    splits = [hashed_split(f"padchest/{i}") for i in range(4000)]
    assert 0.65 < splits.count("train") / 4000 < 0.75 and 0.17 < splits.count("test") / 4000 < 0.23
    code = "from transforms.splits import hashed_split; print([hashed_split(f'padchest/{i}') for i in range(50)])"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "123", "PATH": ""},
    ).stdout.strip()
    assert out == str(splits[:50])


def test_vindr_validation_is_carved_from_official_train_only():
    carved = [
        assign_split(ref(source="vindr", subject=None, native=f"{i:032x}", official="train")) for i in range(2000)
    ]
    assert {authority for _, authority in carved} == {"official+carved"}
    assert {split for split, _ in carved} == {"train", "validation"}
    share = sum(split == "validation" for split, _ in carved) / len(carved)
    assert 0.1 < share < 0.15  # 1/8 of train
    tests = {assign_split(ref(source="vindr", subject=None, native=f"{i:032x}", official="test")) for i in range(200)}
    assert tests == {("test", "official")}
    assert assign_split(ref(source="mimic", official="train")) == ("train", "official")  # MIMIC keeps its own


def test_a_gold_set_image_in_train_is_held_out_with_every_annotation():
    from schemas.records import AnnotationRecord, Reject, SourceRecord
    from transforms.units import ImageUnit, join_image

    def record(official):
        return SourceRecord(
            image=ImageRef(
                image_key="mimic/d1",
                source="mimic",
                native_id="d1",
                uri="/d1.dcm",
                format="dicom",
                subject_id="10000032",
                official_split=official,
            )
        )

    gold = AnnotationRecord(
        target_key="mimic/d1",
        source="imagenome",
        native_id="d1_SceneGraph.json",
        provenance={"images_to_avoid": "true"},
    )
    masks = AnnotationRecord(target_key="mimic/d1", source="chexmask", native_id="MIMIC-CXR-JPG.csv row 4")
    held = list(join_image("mimic/d1", [record("train")], [gold, masks]))
    assert all(isinstance(item, Reject) and item.kind == "filtered" and item.stage == "split" for item in held)
    assert sorted(item.source for item in held) == ["chexmask", "imagenome", "mimic"]  # the image and both annotations
    (unit,) = join_image("mimic/d1", [record("test")], [gold, masks])  # outside train the official split stands
    assert isinstance(unit, ImageUnit) and unit.split == "test" and len(unit.annotations) == 2
