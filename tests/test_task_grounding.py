"""Grounding generators on crafted annotation rows: rendered boxes read back to the canonical unit
boxes under each profile's convention, answers true to the row, reader and merge rules, seeded templates."""

import json
import re

import pytest

from transforms.geometry import parse_box
from transforms.tasks import Profile, generator
from transforms.tasks.grounding import M4CXR_GROUNDING, absent_labels, localisation_boxes, location_phrase
from transforms.templates import load_template_set

M4_TASKS = list(M4CXR_GROUNDING)
IMT = Profile(name="imt-cxr", coordinates="bins1000", tasks={"lesion_localization": {"template_set": "grounding_imt"}})
M4 = Profile(name="m4cxr", coordinates="percent", tasks={t: {"template_set": "grounding_m4cxr"} for t in M4_TASKS})
HALF_STEP = {"bins1000": 0.5 / 1000, "percent": 0.5 / 100}


def box(label, unit, origin="vindr-annotations", finding=None, reader=None):
    u1, v1, u2, v2 = unit
    return {
        "label": label,
        "finding": finding,
        "origin": origin,
        "reader": reader,
        "readers": [reader] if reader else [],
        "x1": u1 * 1000,
        "y1": v1 * 1000,
        "x2": u2 * 1000,
        "y2": v2 * 1000,
        "u1": u1,
        "v1": v1,
        "u2": u2,
        "v2": v2,
    }


def mention(finding, laterality=None, zones=(), presence=1):
    return {"finding": finding, "presence": presence, "laterality": laterality, "zones": list(zones)}


def row(
    boxes=(), source="vindr", key="vindr/abc", readers=(), no_finding=None, regions=(), mentions=(), view="PA", raw=()
):
    return {
        "image_key": key,
        "source": source,
        "split": "train",
        "view": view,
        "boxes": list(boxes),
        "raw_labels": [
            {"system": "vindr-image-labels", "name": "No finding", "value": 0.0, "reader": r} for r in readers
        ]
        + list(raw),
        "findings": [{"name": "No Finding", "presence": no_finding, "systems": [], "raw": []}],
        "regions": list(regions),
        "mentions": list(mentions),
    }


def parsed_boxes(text, convention):
    """Every box rendered in ``text``, read back to unit floats."""
    pattern = r"(?:<bin_\d+>){4}" if convention == "bins1000" else r"\[[^\[\]]*\]"
    return [parse_box(part, convention) for part in re.findall(pattern, text)]


def assert_close(rendered, unit, convention):
    assert all(abs(a - b) <= HALF_STEP[convention] + 1e-12 for a, b in zip(rendered, unit)), (rendered, unit)


EFFUSION = (0.12, 0.55, 0.31, 0.81)
VINDR_TRAIN = row(
    readers=("R1", "R2", "R3"),
    boxes=[
        box("Pleural effusion", (0.10, 0.50, 0.30, 0.80), finding="Pleural Effusion", reader="R1"),
        box("Pleural effusion", (0.14, 0.60, 0.32, 0.82), finding="Pleural Effusion", reader="R2"),
        box("Pleural effusion", EFFUSION, finding="Pleural Effusion", reader="consensus"),
        box("Other lesion", (0.6, 0.2, 0.7, 0.3), reader="R3"),  # one reader only: no consensus, never a target
        box("heart", (0.35, 0.45, 0.70, 0.67), origin="chexmask-mask"),
    ],
    mentions=[mention("Pleural Effusion", presence=0), mention("Pleural Effusion", "left", ["basal", "lower"])],
)


def test_lesion_localization_uses_consensus_boxes_and_the_mention_location():
    (only,) = generator("lesion_localization")(VINDR_TRAIN, IMT, seed=0)
    target = json.loads(only["target"])
    assert target["finding"] == "Pleural Effusion" and target["location"] == "in the lower left lung"
    assert [b["box"] for b in target["boxes"]] == [list(EFFUSION)]
    assert "pleural effusion, in the lower left lung" in only["conversations"][0]["value"]
    (rendered,) = parsed_boxes(only["conversations"][1]["value"], "bins1000")
    assert_close(rendered, EFFUSION, "bins1000")
    assert only["conversations"][0]["value"].startswith("<image>\n")


def test_single_reader_boxes_are_used_as_they_are_and_unmapped_labels_only_by_raw_label_tasks():
    siim = row(
        source="siim",
        key="siim/1",
        boxes=[
            box("Pneumothorax", (0.7, 0.1, 0.9, 0.4), origin="siim-rle", finding="Pneumothorax"),
            box("Other lesion", (0.2, 0.2, 0.3, 0.3)),
        ],
    )
    (imt,) = generator("lesion_localization")(siim, IMT, seed=0)
    assert json.loads(imt["target"])["finding"] == "Pneumothorax"  # the unmapped "Other lesion" is not asked by IMT
    labels = {json.loads(r["target"])["label"] for r in generator("finding_grounding")(siim, M4, seed=0)}
    assert labels == {"Pneumothorax", "Other lesion"}


def test_location_phrase_needs_a_positive_mention_with_side_or_zone():
    assert location_phrase([mention("Edema")], "Edema") is None
    assert (
        location_phrase([mention("Pneumothorax", "right", ["apical", "upper"])], "Pneumothorax")
        == "in the upper right lung"
    )
    assert location_phrase([mention("Pleural Effusion", "bilateral")], "Pleural Effusion") == "in both lungs"
    assert location_phrase([mention("Lung Lesion", "left", presence=-1)], "Lung Lesion") is None


def test_m4cxr_merges_overlapping_same_class_boxes_into_their_enclosing_box():
    image = row(
        source="vindr",
        boxes=[
            box("Nodule/Mass", (0.20, 0.20, 0.30, 0.30), finding="Lung Lesion"),
            box("Nodule/Mass", (0.22, 0.22, 0.34, 0.29), finding="Lung Lesion"),
            box("Nodule/Mass", (0.60, 0.60, 0.70, 0.70), finding="Lung Lesion"),
            box("Cardiomegaly", (0.21, 0.21, 0.29, 0.29), finding="Cardiomegaly"),
        ],
    )
    merged = [(b["label"], b["unit"]) for b in localisation_boxes(image, "m4cxr")]
    assert merged == [
        ("Cardiomegaly", (0.21, 0.21, 0.29, 0.29)),
        ("Nodule/Mass", (0.20, 0.20, 0.34, 0.30)),
        ("Nodule/Mass", (0.60, 0.60, 0.70, 0.70)),
    ]
    assert len(localisation_boxes(image, "imt-cxr")) == 4  # IMT-CXR does not merge
    rows = {json.loads(r["target"])["label"]: r for r in generator("finding_grounding")(image, M4, seed=1)}
    rendered = parsed_boxes(rows["Nodule/Mass"]["conversations"][1]["value"], "percent")
    assert len(rendered) == 2
    for got, want in zip(rendered, [(0.20, 0.20, 0.34, 0.30), (0.60, 0.60, 0.70, 0.70)]):
        assert_close(got, want, "percent")


def test_grounded_finding_names_every_label_boxed_at_the_rendered_box():
    image = row(
        boxes=[
            box("Nodule/Mass", (0.2, 0.2, 0.3, 0.3), finding="Lung Lesion"),
            box("Other lesion", (0.2, 0.2, 0.3, 0.3)),
        ]
    )
    (only,) = generator("grounded_finding")(image, M4, seed=0)
    assert only["conversations"][1]["value"] == "Nodule/Mass, Other lesion"
    assert "[20, 20, 30, 30]" in only["conversations"][0]["value"]


def test_abnormality_detection_says_no_abnormality_only_when_the_source_states_it():
    detect = generator("abnormality_detection")
    (none,) = detect(
        row(readers=("R1", "R2"), no_finding=1, boxes=[box("Other lesion", (0.1, 0.1, 0.2, 0.2), reader="R1")]),
        M4,
        seed=0,
    )
    assert none["conversations"][1]["value"] == "No abnormality." and json.loads(none["target"])["abnormal"] is False
    assert detect(row(no_finding=None), M4, seed=0) == []  # nothing stated: nothing asked
    assert detect(row(source="siim", key="siim/2", no_finding=1), M4, seed=0) == []  # SIIM boxes only pneumothorax
    (found,) = detect(VINDR_TRAIN, M4, seed=0)
    assert found["conversations"][1]["value"] == "Pleural effusion: [12, 55, 31, 81]"


def test_multi_finding_grounding_answers_each_present_asked_label_with_its_boxes():
    labels = ["Aortic enlargement", "Cardiomegaly", "Nodule/Mass", "Pleural effusion", "Pleural thickening"]
    image = row(boxes=[box(label, (0.1 * i, 0.1, 0.1 * i + 0.05, 0.2)) for i, label in enumerate(labels)])
    sizes, none_found = set(), 0
    for seed in range(40):
        (only,) = generator("multi_finding_grounding")(image, M4, seed=seed)
        target = json.loads(only["target"])
        asked = target["labels"]
        sizes.add(len(asked))
        assert 2 <= len(asked) <= 4 and asked == sorted(asked)
        assert target["present"] == [label for label in asked if label in labels]
        assert target["absent"] == [label for label in asked if label not in labels]
        assert set(target["absent"]) <= set(absent_labels(image))
        answer = only["conversations"][1]["value"]
        if not target["present"]:
            none_found += 1
            assert answer == "Not found."
            continue
        items = answer.split("; ")
        assert [item.split(": ")[0] for item in items] == target["present"]
        for item in items:
            label, rendered = item.split(": ")
            i = labels.index(label)
            assert_close(parse_box(rendered, "percent"), (0.1 * i, 0.1, 0.1 * i + 0.05, 0.2), "percent")
    assert sizes == {2, 3, 4} and none_found
    siim = row(source="siim", key="siim/9", boxes=[box("Pneumothorax", (0.3, 0.4, 0.7, 0.6), origin="siim-rle")])
    assert generator("multi_finding_grounding")(siim, M4, 0) == []  # one label only


def test_finding_grounding_asks_about_definitely_absent_labels_too():
    image = row(
        readers=("R1", "R2"),
        boxes=[
            box("Cardiomegaly", (0.3, 0.4, 0.7, 0.6), finding="Cardiomegaly", reader="consensus"),
            box("Nodule/Mass", (0.2, 0.2, 0.25, 0.25), finding="Lung Lesion", reader="R1"),
        ],  # one reader: undecided
        raw=[{"system": "vindr-image-labels", "name": "Pneumothorax", "value": 1.0, "reader": "R2"}],
    )
    absent = absent_labels(image)
    assert "Cardiomegaly" not in absent and "Nodule/Mass" not in absent and "Pneumothorax" not in absent
    assert {"Pleural effusion", "Edema", "Other lesion"} <= set(absent)
    rows = generator("finding_grounding")(image, M4, seed=0)
    targets = [json.loads(r["target"]) for r in rows]
    assert [t["label"] for t in targets if t["present"]] == ["Cardiomegaly"]
    (negative,) = [r for r, t in zip(rows, targets) if not t["present"]]  # one per label with boxes
    assert json.loads(negative["target"])["label"] in absent and negative["conversations"][1]["value"] == "Not present."
    normal = row(
        readers=("R1", "R2"),
        no_finding=1,  # the readers' coordinate-less "No finding" rows
        raw=[{"system": "vindr-annotations", "name": "No finding", "value": 1.0, "reader": r} for r in ("R1", "R2")],
    )
    assert [json.loads(r["target"])["present"] for r in generator("finding_grounding")(normal, M4, seed=0)] == [False]


def test_absence_needs_a_statement_where_readers_do_not_box_everything():
    stated = [{"system": "siim-rle", "name": "Pneumothorax", "value": 0.0, "reader": None}]
    negative = row(source="siim", key="siim/4", raw=stated)
    assert absent_labels(negative) == ["Pneumothorax"]
    (only,) = generator("finding_grounding")(negative, M4, seed=0)
    assert json.loads(only["target"]) == {"label": "Pneumothorax", "present": False, "boxes": []}
    assert absent_labels(row(source="siim", key="siim/5")) == []  # nothing stated: nothing asked
    assert absent_labels(row(source="mimic", key="mimic/5")) == []  # no box source at all


def test_no_location_on_a_lateral_view():
    lateral = {**VINDR_TRAIN, "view": "LATERAL"}
    (only,) = generator("lesion_localization")(lateral, IMT, seed=0)
    assert json.loads(only["target"])["location"] is None and "left" not in only["conversations"][0]["value"]


def test_organ_region_and_phrase_tasks_read_back_to_the_row_boxes():
    regions = [
        box("left apical zone", (0.55, 0.10, 0.80, 0.20), origin="imagenome-scene-graph"),
        box("right apical zone", (0.20, 0.10, 0.45, 0.20), origin="imagenome-scene-graph"),
        box("cardiac silhouette", (0.35, 0.45, 0.70, 0.67), origin="imagenome-scene-graph"),
    ]
    phrases = [
        {"region": "left apical zone", "phrase": "There is no\n pneumothorax."},
        {"region": "right apical zone", "phrase": "There is no pneumothorax."},
        {"region": "cardiac silhouette", "phrase": "Moderate cardiomegaly."},
        {"region": "right apical zone", "phrase": "Apical scarring."},
    ]
    image = row(
        source="mimic",
        key="mimic/1",
        boxes=regions + [box("heart", (0.3, 0.4, 0.7, 0.7), origin="chexmask-mask")],
        regions=phrases,
    )
    units = {b["label"]: (b["u1"], b["v1"], b["u2"], b["v2"]) for b in image["boxes"]}
    for task, name_in, box_in in [
        ("organ_grounding", "human", "gpt"),
        ("grounded_organ", "gpt", "human"),
        ("anatomical_region_grounding", "human", "gpt"),
        ("grounded_anatomical_region", "gpt", "human"),
    ]:
        rows = generator(task)(image, M4, seed=0)
        assert rows
        for r in rows:
            label = json.loads(r["target"])["label"]
            turns = {t["from"]: t["value"] for t in r["conversations"]}
            assert label in turns[name_in]
            assert_close(
                parse_box(re.search(r"\[[\d, ]+\]", turns[box_in]).group(), "percent"), units[label], "percent"
            )
    grounded = {json.loads(r["target"])["phrase"]: r for r in generator("phrase_grounding")(image, M4, seed=0)}
    no_ptx = grounded["There is no pneumothorax."]
    assert [t["label"] for t in json.loads(no_ptx["target"])["boxes"]] == ["left apical zone", "right apical zone"]
    generated = {
        json.loads(r["target"])["region"]: r for r in generator("grounded_phrase_generation")(image, M4, seed=0)
    }
    assert generated["right apical zone"]["conversations"][1]["value"] == "There is no pneumothorax. Apical scarring."


def test_region_rows_per_image_are_capped_by_a_seeded_sample():
    image = row(
        source="mimic",
        key="mimic/2",
        boxes=[
            box(f"region {i}", (0.01 * i, 0.1, 0.01 * i + 0.1, 0.2), origin="imagenome-scene-graph") for i in range(29)
        ],
    )
    picks = {
        tuple(json.loads(r["target"])["label"] for r in generator("anatomical_region_grounding")(image, M4, s))
        for s in range(10)
    }
    assert all(len(p) == 3 for p in picks) and len(picks) > 1


def test_an_unknown_box_origin_is_an_error():
    with pytest.raises(ValueError, match="no role"):
        generator("finding_grounding")(row(boxes=[box("X", (0.1, 0.1, 0.2, 0.2), origin="mystery")]), M4, seed=0)


def test_generation_is_stable_and_the_seed_changes_template_choice():
    first = [r for task in M4_TASKS for r in generator(task)(VINDR_TRAIN, M4, seed=5)]
    assert first == [r for task in M4_TASKS for r in generator(task)(VINDR_TRAIN, M4, seed=5)]
    assert len({r["id"] for r in first}) == len(first)
    chosen = {generator("finding_grounding")(VINDR_TRAIN, M4, seed=s)[0]["template_id"] for s in range(30)}
    assert len(chosen) > 1


def test_every_template_is_used_and_every_placeholder_filled():
    images = [
        VINDR_TRAIN,
        row(readers=("R1", "R2"), no_finding=1),
        row(
            boxes=[
                box(label, (0.1 * i, 0.1, 0.1 * i + 0.05, 0.2), finding="Cardiomegaly")
                for i, label in enumerate(["A", "B", "C"])
            ],
            key="vindr/x",
        ),
        row(
            source="siim",
            key="siim/3",
            boxes=[box("Pneumothorax", (0.7, 0.1, 0.9, 0.4), origin="siim-rle", finding="Pneumothorax")],
        ),
        row(
            source="mimic",
            key="mimic/3",
            boxes=[
                box("left lung", (0.5, 0.1, 0.9, 0.8), origin="chexmask-mask"),
                box("trachea", (0.45, 0.1, 0.55, 0.3), origin="imagenome-scene-graph"),
            ],
            regions=[{"region": "trachea", "phrase": "Trachea is midline."}],
        ),
    ]
    used = set()
    for seed in range(40):
        for image in images:
            for task, profile in [("lesion_localization", IMT)] + [(t, M4) for t in M4_TASKS]:
                for r in generator(task)(image, profile, seed):
                    used.add(r["template_id"])
                    assert not re.search(r"[{}]", " ".join(t["value"] for t in r["conversations"]))
    defined = {
        t.id
        for name in ("grounding_imt", "grounding_m4cxr")
        for kind in load_template_set(name).kinds.values()
        for t in kind
    }
    assert used == defined
