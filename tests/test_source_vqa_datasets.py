"""The MIMIC-CXR-VQA and Medical-Diff-VQA readers on hand-made files of their documented layouts
(docs/formats/mimic-cxr-vqa.md, docs/formats/medical-diff-vqa.md): what each question becomes, every
unusable one a reject with its file and row, the whole-input errors, and the streamed JSON array."""

from __future__ import annotations

import io as text_io
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.records import AnnotationRecord, Reject
from transforms.sources import mimic_cxr_vqa, mimic_diff_vqa
from transforms.sources.plan import run_serially


def vqa_row(image_id: str, idx: int, split: str = "train", answer=("yes",), **changes) -> dict:
    row = {
        "split": split,
        "idx": idx,
        "subject_id": "10000032",
        "study_id": "50414267",
        "image_id": image_id,
        "image_path": f"p10/p10000032/s50414267/{image_id}.jpg",
        "question": f"Is there pleural effusion in the left lung? ({idx})",
        "semantic_type": "verify",
        "content_type": "attribute",
        "template": "Is there ${attribute} in the ${object}?",
        "template_program": "program_1",
        "template_arguments": {
            "object": {"0": "left lung"},
            "attribute": {"0": "pleural effusion"},
            "category": {},
            "viewpos": {},
            "gender": {},
        },
        "answer": list(answer),
    }
    row.update(changes)
    return row


def write_vqa(root, files: dict[str, object]) -> str:
    (root / "dataset").mkdir(parents=True)
    for name, content in files.items():
        text = content if isinstance(content, str) else json.dumps(content, indent=4)
        (root / "dataset" / f"{name}.json").write_text(text)
    return str(root)


def by_kind(outputs):
    outputs = list(outputs)
    records = {o.target_key: o for o in outputs if isinstance(o, AnnotationRecord)}
    rejects = [o for o in outputs if isinstance(o, Reject)]
    return records, rejects


def test_mimic_cxr_vqa_questions_land_on_their_image_in_file_order(tmp_path):
    root = write_vqa(
        tmp_path,
        {
            "train": [
                vqa_row("d1", 0),
                vqa_row("d2", 1, answer=["left lung", "right lung"]),
                vqa_row("d1", 2, answer=[]),
            ],
            "valid": [vqa_row("d1", 0, split="valid", answer=["no"])],
            "_train": [{k: v for k, v in vqa_row("skeleton", 0).items() if k != "answer"}],  # never read
        },
    )
    records, rejects = by_kind(mimic_cxr_vqa.read(root))
    assert rejects == [] and sorted(records) == ["mimic/d1", "mimic/d2"]
    d1 = records["mimic/d1"].questions
    assert [(q.where, q.split, q.answers) for q in d1] == [
        ("dataset/train.json #0", "train", ["yes"]),
        ("dataset/train.json #2", "train", []),
        ("dataset/valid.json #0", "valid", ["no"]),
    ]
    assert d1[0].question_type == "attribute" and d1[0].semantic_type == "verify"
    assert d1[0].template == "Is there ${attribute} in the ${object}?"
    assert records["mimic/d2"].questions[0].answers == ["left lung", "right lung"]


def test_mimic_cxr_vqa_bad_elements_are_rejects_and_the_rest_is_read(tmp_path):
    no_answer = {k: v for k, v in vqa_row("d3", 3).items() if k != "answer"}
    root = write_vqa(
        tmp_path,
        {
            "train": [
                vqa_row("d1", 0),
                7,
                no_answer,
                vqa_row("d4", 4, split="test"),
                vqa_row("d5", 5, answer=["a", 1]),
                vqa_row("d1", 6),
            ],
            "test": json.dumps([vqa_row("d9", 0, split="test")])[:-40],  # cut short, as by a failed copy
        },
    )
    records, rejects = by_kind(mimic_cxr_vqa.read(root))
    assert [q.where for q in records["mimic/d1"].questions] == ["dataset/train.json #0", "dataset/train.json #5"]
    found = {(r.key, r.reason, r.detail.split(":")[0]) for r in rejects}
    assert found == {
        ("mimic/", "bad-question", "dataset/train.json #1"),
        ("mimic/d3", "bad-question", "dataset/train.json #2"),
        ("mimic/d4", "split-mismatch", "dataset/train.json #3"),
        ("mimic/d5", "bad-question", "dataset/train.json #4"),
        ("mimic/", "not-json", "dataset/test.json"),
    }
    assert all(r.stage == "read" and r.level == "record" for r in rejects)


def test_mimic_cxr_vqa_without_answered_files_is_one_clear_error(tmp_path):
    root = write_vqa(tmp_path, {"_train": [], "_valid": []})
    with pytest.raises(mimic_cxr_vqa.MimicCxrVqaInputError, match=r"build_dataset.sh"):
        mimic_cxr_vqa.plan(root)


def test_mimic_cxr_vqa_filters_everything_without_mimic_images(tmp_path):
    root = write_vqa(tmp_path, {"train": [vqa_row("d1", 0), vqa_row("d1", 1)]})
    (reject,) = list(mimic_cxr_vqa.read(root, image_sources=("vindr",)))
    assert (reject.key, reject.reason, reject.kind) == ("mimic/d1", "image-source-not-ingested", "filtered")


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
            lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
            max_leaves=6,
        ),
        max_size=12,
    ),
    st.integers(1, 9),
    st.sampled_from([None, 0, 2, 4]),
)
def test_json_array_streams_any_array_at_any_chunk_size(elements, chunk, indent):
    text = json.dumps(elements, indent=indent)
    assert list(mimic_cxr_vqa.json_array(text_io.StringIO(text), chunk=chunk)) == elements


@pytest.mark.parametrize("text", ["", "{}", "[1,", "[1 2]", "[1,]", "[", "[1] x", '[{"a": 1}, {"a": ]'])
def test_json_array_refuses_what_is_not_one_array(text):
    with pytest.raises(ValueError):
        list(mimic_cxr_vqa.json_array(text_io.StringIO(text), chunk=3))


PAIRS_HEADER = "study_id,subject_id,ref_id,question_type,question,answer,split\n"
ALL_HEADER = "subject_id,study_id,Atelectasis,Edema,No Finding,dicom_id,view,split,study_date,study_order\n"


def write_diff(root, pairs: list[str], studies: list[str], index_column: bool = False) -> str:
    root.mkdir(parents=True, exist_ok=True)
    header = ("," + PAIRS_HEADER) if index_column else PAIRS_HEADER
    rows = [f"{n},{line}" for n, line in enumerate(pairs)] if index_column else pairs
    (root / "mimic_pair_questions.csv").write_text(header + "".join(f"{line}\n" for line in rows))
    (root / "mimic_all.csv").write_text(ALL_HEADER + "".join(f"{line}\n" for line in studies))
    return str(root)


STUDIES = [
    "1,50000001,,,1.0,d-ref,postero-anterior,train,21800506,1",
    "1,50000002,1.0,,,d-main,antero-posterior,train,21800606,2",
    "2,50000003,,,1.0,d-other,postero-anterior,validate,21800606,1",
]


@pytest.mark.parametrize("index_column", [False, True])
def test_mimic_diff_vqa_questions_land_on_the_image_mimic_all_gives_their_study(tmp_path, index_column):
    difference = (
        "50000002,1,50000001,difference,what has changed compared to the reference image?,"
        '"the main image has an additional finding of atelectasis than the reference image. ",train'
    )
    root = write_diff(
        tmp_path / "d",
        ["50000002,1,50000001,presence,is there atelectasis?,yes,train", difference],
        STUDIES,
        index_column,
    )
    records, rejects = by_kind(mimic_diff_vqa.read(root))
    assert rejects == [] and sorted(records) == ["mimic/d-main", "mimic/d-ref"]  # d-other: asked nothing
    main = records["mimic/d-main"]
    assert [(q.where, q.question_type, q.answers, q.reference_study_id, q.split) for q in main.questions] == [
        ("mimic_pair_questions.csv row 1", "presence", ["yes"], "50000001", "train"),
        (
            "mimic_pair_questions.csv row 2",
            "difference",
            ["the main image has an additional finding of atelectasis than the reference image."],
            "50000001",
            "train",
        ),
    ]
    assert records["mimic/d-ref"].questions == [] and records["mimic/d-ref"].provenance["study_id"] == "50000001"


def test_mimic_diff_vqa_rows_it_cannot_use_are_rejects_naming_file_and_row(tmp_path):
    root = write_diff(
        tmp_path / "d",
        [
            "50000002,1,50000001,presence,is there edema?,no,train",
            "59999999,1,50000001,presence,is there edema?,no,train",  # study not in mimic_all
            "50000002,7,50000001,view,which view is this image?,antero-posterior,train",  # not study 2's patient
            "50000002,1,50000001,colour,what colour?,grey,train",  # unknown question type
            "s50000002,1,50000001,presence,is there edema?,no,train",  # not an integer id
            "50000002,1,50000001,presence,is there edema?,no,training",  # unknown split
            "50000002,1,50000001,presence,is there edema?",  # cells missing
        ],
        STUDIES + ["1,50000002,,,,d-main-again,lateral,train,21800606,2"],
    )
    records, rejects = by_kind(mimic_diff_vqa.read(root))
    assert [q.where for q in records["mimic/d-main"].questions] == ["mimic_pair_questions.csv row 1"]
    found = sorted((r.key, r.reason, r.level, r.detail.split(":")[0]) for r in rejects)
    assert found == sorted(
        [
            ("mimic/s59999999", "study-not-in-mimic-all", "record", "mimic_pair_questions.csv row 2"),
            ("mimic/s50000002", "subject-mismatch", "record", "mimic_pair_questions.csv row 3"),
            ("mimic/s50000002", "bad-row", "record", "mimic_pair_questions.csv row 4"),
            ("mimic/ss50000002", "bad-row", "record", "mimic_pair_questions.csv row 5"),
            ("mimic/s50000002", "bad-row", "record", "mimic_pair_questions.csv row 6"),
            ("mimic/s50000002", "bad-row", "record", "mimic_pair_questions.csv row 7"),
            ("mimic/d-main", "duplicate-study", "item", "mimic_all.csv row 4"),
        ]
    )


@pytest.mark.parametrize(
    ("remove", "message"), [("mimic_all.csv", "mimic_all.csv"), ("mimic_pair_questions.csv", "mimic_pair_questions")]
)
def test_mimic_diff_vqa_missing_file_is_one_clear_error(tmp_path, remove, message):
    root = write_diff(tmp_path / "d", [], STUDIES)
    (tmp_path / "d" / remove).unlink()
    with pytest.raises(mimic_diff_vqa.MimicDiffVqaInputError, match=message):
        mimic_diff_vqa.plan(root)


def test_mimic_diff_vqa_missing_column_is_one_clear_error(tmp_path):
    root = write_diff(tmp_path / "d", [], STUDIES)
    (tmp_path / "d" / "mimic_all.csv").write_text("subject_id,study_id,view\n1,2,x\n")
    with pytest.raises(mimic_diff_vqa.MimicDiffVqaInputError, match=r"no column.*dicom_id"):
        mimic_diff_vqa.plan(root)


def test_mimic_diff_vqa_keeps_each_study_s_questions_in_file_row_order(tmp_path):
    """The join sorts a study's items by row number, whatever order a shuffle delivers them in."""
    pairs = [f"5000000{2 if n % 2 else 1},1,50000001,presence,is there edema {n}?,no,train" for n in range(6)]
    root = write_diff(tmp_path / "a", pairs, STUDIES)
    shuffled = write_diff(tmp_path / "b", pairs[::-1], STUDIES)
    first, second = list(run_serially(mimic_diff_vqa.plan(root))), list(run_serially(mimic_diff_vqa.plan(shuffled)))
    assert [len(r.questions) for r in first if isinstance(r, AnnotationRecord)] == [3, 3]
    assert [[q.question for q in r.questions] for r in second if isinstance(r, AnnotationRecord)] == [
        [f"is there edema {n}?" for n in (4, 2, 0)],
        [f"is there edema {n}?" for n in (5, 3, 1)],
    ]
