"""Generated VQA (transforms/tasks/vqa.py) against an independent reading of the scene graph written here:
every family's answer recomputed from the row's ImaGenome attribute strings, on crafted rows, random rows
(hypothesis) and every image of a small synthetic build; no "no" without a stated negative, no sided
region on a view without sides, the yes/no balance drawn and recorded, seeded rows, and the row audit
catching planted wrong answers."""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import replace

import pyarrow.parquet as pq
import pytest
from builds import VQA_DATASETS, synthetic_build
from hypothesis import given, settings
from hypothesis import strategies as st

import manifests
from transforms.audit import audit_row, facts_from_annotation
from transforms.tasks import generator, load_profile

M4 = load_profile("m4cxr")
VQA = manifests.load("vqa.yaml")
ANSWERS = manifests.load("templates/vqa_m4cxr.yaml")["answers"]
ASKED = ("anatomicalfinding", "disease", "device", "tubesandlines")
KNOWN_REGIONS = set(manifests.load("labels.yaml")["anatomy"]["imagenome-regions"]) - {"unknown"}
BUILD_SEED = 4  # the synthetic corpus's build.yaml carries it to the generators
SIDE_WORDS = re.compile(r"\b(left|right)\b", re.IGNORECASE)


# ---------------------------------------------------------------- the independent reading


def side(region: str) -> str | None:
    """ImaGenome region names carry their side as the first word."""
    first = region.split()[0]
    return first if first in ("left", "right") else None


def statements(row: dict) -> tuple[dict, dict, dict]:
    """({(region, attribute): {"yes", "no"} as stated}, {attribute: category}, {region: nlp flags stated yes})."""
    said, category, flags = {}, {}, {}
    for entry in row["regions"]:
        for text in entry["attributes"]:
            parts = text.split("|")
            if len(parts) != 3:
                continue
            if parts[0] == "nlp" and parts[1] == "yes":
                flags.setdefault(entry["region"], set()).add(parts[2])
            elif parts[0] in ASKED and parts[1] in ("yes", "no"):
                said.setdefault((entry["region"], parts[2]), set()).add(parts[1])
                category[parts[2]] = parts[0]
    return said, category, flags


def truth(row: dict, region: str | None, attribute: str | None) -> bool | None:
    said, _, flags = statements(row)
    if region and attribute:
        polarities = said.get((region, attribute))
        return None if not polarities else "yes" in polarities
    if region:
        if "abnormal" in flags.get(region, ()) or any("yes" in p for (r, _), p in said.items() if r == region):
            return True
        return False if "normal" in flags.get(region, ()) else None
    if any("yes" in p for (_, a), p in said.items() if a == attribute):
        return True
    denied_sides = {side(r) for (r, a), p in said.items() if a == attribute and r in KNOWN_REGIONS}
    return False if None in denied_sides or {"left", "right"} <= denied_sides else None


def positives(row: dict) -> list[tuple[str, str]]:
    said, _, _ = statements(row)
    return sorted(key for key, polarities in said.items() if "yes" in polarities)


def expected_answer(row: dict, family: str, inputs: dict):
    """The answer a reader of the scene graph gives, family by family."""
    _, category, _ = statements(row)
    region, attribute = inputs.get("region"), inputs.get("attribute")
    if family in ("region_attribute", "region_abnormality", "image_attribute"):
        return truth(row, region, attribute)
    if family == "region_category":
        return [a for r, a in positives(row) if r == region and category[a] == inputs["category"]]
    if family == "region_abnormalities":
        return [a for r, a in positives(row) if r == region]
    if family == "image_abnormalities":
        return sorted({a for _, a in positives(row)})
    if family == "attribute_regions":
        return [r for r, a in positives(row) if a == attribute]
    if family == "count_regions":
        return sum(truth(row, r, attribute) for r in inputs["regions"])
    if family == "two_regions":
        options = [(r, truth(row, r, attribute)) for r in inputs["regions"]]
    else:
        options = [(a, truth(row, region, a)) for a in inputs["attributes"]]
    shown = [name for name, present in options if present]
    return "both" if len(shown) == 2 else "neither" if not shown else shown[0]


def phrase(name: str) -> str:
    return VQA["attribute_phrases"].get(name) or VQA["region_phrases"].get(name) or name


def check_rows(row: dict, rows: list[dict]) -> None:
    """Every generated row of an annotation row: the answer and the states it rests on are the reader's,
    every state asked is stated, the question names its inputs and the answer text says the answer."""
    for generated in rows:
        target = json.loads(generated["target"])
        family, inputs, answer = target["family"], target["inputs"], target["answer"]
        assert answer == expected_answer(row, family, inputs), (family, inputs, answer)
        for region, attribute, present in target["claims"]:
            assert truth(row, region, attribute) is present, (family, region, attribute, present)
        question, said = (turn["value"] for turn in generated["conversations"])
        named = [
            inputs.get("region"),
            inputs.get("attribute"),
            *inputs.get("regions", ()),
            *inputs.get("attributes", ()),
        ]
        for name in named:
            if name:
                assert phrase(name) in question, (name, question)
        if target["answer_type"] == "yes/no":
            assert said == ANSWERS["yes" if answer else "no"] and target["wanted"] in ("yes", "no")
        elif target["answer_type"] == "count":
            assert said == f"{answer}." and 2 <= len(inputs["regions"]) <= VQA["count_max_regions"]
        elif answer in ("both", "neither"):
            assert said == ANSWERS[answer]
        elif target["answer_type"] == "choice":
            assert said.lower() == f"{phrase(answer)}.".lower()
        else:
            assert answer and said.lower() == (", ".join(phrase(item) for item in answer) + ".").lower()
        assert generated["split"] == row["split"] and generated["image_keys"] == [row["image_key"]]
        if row["view"] not in ("PA", "AP"):
            assert not SIDE_WORDS.search(question + said), (row["view"], question, said)


# ---------------------------------------------------------------- crafted scene graphs


def entry(region: str, *attributes: str, phrase_text: str = "A phrase.") -> dict:
    return {
        "region": region,
        "phrase": phrase_text,
        "attributes": list(attributes),
        "comparison_cues": [],
        "temporal_cues": [],
        "severity_cues": [],
    }


def annotation(regions, view="PA", key="mimic/00000000-aaaa", split="validation") -> dict:
    return {"image_key": key, "source": "mimic", "split": split, "view": view, "regions": list(regions)}


CRAFTED = annotation(
    [
        entry("left costophrenic angle", "anatomicalfinding|yes|pleural effusion", "nlp|yes|abnormal"),
        entry(
            "left costophrenic angle", "anatomicalfinding|no|pleural effusion", "nlp|yes|normal"
        ),  # "no new": yes wins
        entry("right costophrenic angle", "anatomicalfinding|no|pleural effusion", "nlp|yes|normal"),
        entry("left apical zone", "anatomicalfinding|no|pneumothorax", "nlp|yes|normal"),  # denied on the left only
        entry("cardiac silhouette", "anatomicalfinding|no|enlarged cardiac silhouette", "nlp|yes|normal"),
        entry("trachea", "tubesandlines|yes|endotracheal tube"),
        entry("svc", "tubesandlines|yes|ij line", "device|no|cardiac pacer and wires"),
        entry("right lower lung zone", "technicalassessment|yes|low lung volumes", "texture|yes|opacity"),
        entry("left lower lobe", "disease|yes|pneumonia"),  # not an ImaGenome region we can name
        entry("spine", "broken string", "anatomicalfinding|maybe|scoliosis"),
    ]
)


def test_crafted_scene_graph_answers_follow_the_stated_attributes_only():
    rows = generator("vqa")(CRAFTED, M4, seed=0)
    check_rows(CRAFTED, rows)
    targets = [json.loads(r["target"]) for r in rows]
    assert {t["family"] for t in targets} == set(VQA["families"])
    assert truth(CRAFTED, "left costophrenic angle", "pleural effusion") is True
    assert truth(CRAFTED, None, "pneumothorax") is None  # denied on one side: the image is not asked
    assert truth(CRAFTED, None, "enlarged cardiac silhouette") is False  # denied in an unsided region
    asked = [(t["family"], t["inputs"]) for t in targets]
    assert ("image_attribute", {"attribute": "pneumothorax"}) not in asked
    for t in targets:  # a tagged region we cannot name, technical and texture attributes, bad strings: never asked
        text = json.dumps(t)
        assert "left lower lobe" not in text and "low lung volumes" not in text and "scoliosis" not in text
    (listed,) = [t for t in targets if t["family"] == "image_abnormalities"]
    assert listed["answer"] == ["endotracheal tube", "ij line", "pleural effusion", "pneumonia"]
    texts = [r["conversations"][1]["value"] for r in rows if json.loads(r["target"])["family"] == "image_abnormalities"]
    assert texts == ["Endotracheal tube, internal jugular line, pleural effusion, pneumonia."]


def test_a_view_without_sides_names_no_sided_region():
    lateral = {**CRAFTED, "view": "LATERAL"}
    rows = [r for seed in range(30) for r in generator("vqa")(lateral, M4, seed)]
    check_rows(lateral, rows)  # no "left" / "right" in any question or answer
    families = {json.loads(r["target"])["family"] for r in rows}
    assert "attribute_regions" in families  # the tubes are in unsided regions: still asked
    assert not any(
        json.loads(r["target"])["inputs"].get("attribute") == "pleural effusion"
        and json.loads(r["target"])["family"] == "attribute_regions"
        for r in rows
    )
    frontal = [r for seed in range(30) for r in generator("vqa")(CRAFTED, M4, seed)]
    assert any(SIDE_WORDS.search(r["conversations"][0]["value"]) for r in frontal)


def test_nothing_without_imagenome_regions():
    assert generator("vqa")(annotation([]), M4, seed=0) == []
    assert generator("vqa")({**annotation([]), "regions": None}, M4, seed=0) == []


ATTRIBUTES = [
    "anatomicalfinding|{}|pleural effusion",
    "anatomicalfinding|{}|atelectasis",
    "disease|{}|pneumonia",
    "tubesandlines|{}|enteric tube",
    "device|{}|prosthetic valve",
    "technicalassessment|{}|rotated",
    "nlp|{}|normal",
    "nlp|{}|abnormal",
    "texture|{}|opacity",
]
REGION_NAMES = [
    "left lung",
    "right lung",
    "left lower lung zone",
    "right costophrenic angle",
    "cardiac silhouette",
    "mediastinum",
    "abdomen",
    "unknown",
    "left lower lobe",
]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(REGION_NAMES),
            st.lists(st.tuples(st.sampled_from(ATTRIBUTES), st.sampled_from(["yes", "no"])), max_size=3),
        ),
        max_size=8,
    ),
    st.sampled_from(["PA", "AP", "LATERAL", "LL", None]),
    st.integers(0, 3),
)
def test_random_scene_graphs_agree_with_the_independent_reading(regions, view, seed):
    row = annotation([entry(region, *(a.format(yn) for a, yn in attributes)) for region, attributes in regions], view)
    check_rows(row, generator("vqa")(row, M4, seed))


# ---------------------------------------------------------------- a synthetic build


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    out = synthetic_build(tmp_path_factory, studies=10, seed=BUILD_SEED, without=VQA_DATASETS)  # generated only
    annotations = [r for path in sorted(out.glob("annotations/*.parquet")) for r in pq.read_table(path).to_pylist()]
    built = [
        r for path in sorted(out.glob("instructions/m4cxr/vqa/*.parquet")) for r in pq.read_table(path).to_pylist()
    ]
    return {"annotations": {r["image_key"]: r for r in annotations}, "rows": built}


def test_every_image_of_a_build_answered_as_its_scene_graph_states(build):
    by_image: dict[str, list[dict]] = {}
    for row in build["rows"]:
        by_image.setdefault(row["image_keys"][0], []).append(row)
    with_graph = {key for key, a in build["annotations"].items() if a["regions"]}
    assert with_graph and set(by_image) == with_graph  # every ImaGenome image has rows, no other image
    for key, rows in by_image.items():
        check_rows(build["annotations"][key], rows)
        with_positive = bool(positives(build["annotations"][key]))
        assert sum(json.loads(r["target"])["family"] == "image_abnormalities" for r in rows) == with_positive
    for a in build["annotations"].values():  # other seeds ask other questions of the same images
        for seed in (1, 2, 3):
            check_rows(a, generator("vqa")(a, M4, seed))


def test_no_negative_answer_without_a_stated_negative(build):
    """Each "no" state a row asserts has its own "no" string in the scene graph (a region's normal flag
    for its abnormality; for the whole image a denial without a side or on both sides)."""
    negatives = 0
    for row in build["rows"]:
        annotation_row = build["annotations"][row["image_keys"][0]]
        strings = {(e["region"], text) for e in annotation_row["regions"] for text in e["attributes"]}
        for region, attribute, present in json.loads(row["target"])["claims"]:
            if present:
                continue
            negatives += 1
            if region and attribute:
                assert any(r == region and t.endswith(f"|no|{attribute}") for r, t in strings)
            elif region:
                assert (region, "nlp|yes|normal") in strings
            else:
                denied = {side(r) for r, t in strings if t.endswith(f"|no|{attribute}")}
                assert None in denied or {"left", "right"} <= denied
    assert negatives > 20


def test_yes_no_balance_is_drawn_near_the_target_and_recorded(build):
    rows = [r for a in build["annotations"].values() for seed in range(12) for r in generator("vqa")(a, M4, seed)]
    closed = [json.loads(r["target"]) for r in rows if json.loads(r["target"])["answer_type"] == "yes/no"]
    wanted = Counter(t["wanted"] for t in closed)
    answered = Counter(t["answer"] for t in closed)
    n = len(closed)
    assert n > 400, n
    assert abs(wanted["yes"] / n - VQA["yes_share"]) < 4 * (0.25 / n) ** 0.5
    assert abs(answered[True] / n - VQA["yes_share"]) < 0.1, (answered, wanted)
    assert sum(t["answer"] == (t["wanted"] == "yes") for t in closed) / n > 0.8  # the draw is mostly met


def test_same_seed_same_rows_other_seed_other_questions(build):
    """The build's rows are the generator's with the build's seed, row for row; another seed asks others."""
    again = [r for a in build["annotations"].values() for r in generator("vqa")(a, M4, BUILD_SEED)]
    assert sorted(again, key=lambda r: r["id"]) == sorted(build["rows"], key=lambda r: r["id"])
    other = [r for a in build["annotations"].values() for r in generator("vqa")(a, M4, BUILD_SEED + 1)]
    assert {r["id"] for r in other} != {r["id"] for r in again}
    assert [r["template_id"] for r in other] != [r["template_id"] for r in again]


# ---------------------------------------------------------------- the audit catches planted answers


def _planted(row: dict, **changes) -> dict:
    target = {**json.loads(row["target"]), **changes}
    return {**row, "target": json.dumps(target)}


def _with_answer(row: dict, text: str) -> dict:
    return {**row, "conversations": [row["conversations"][0], {"from": "gpt", "value": text}]}


def test_the_audit_catches_planted_wrong_answers(build):
    facts = {key: facts_from_annotation(a) for key, a in build["annotations"].items()}
    rows = build["rows"]
    assert not [c for row in rows for c in audit_row(row, facts)]

    def first(family, predicate=lambda t: True):
        return next(
            r for r in rows if json.loads(r["target"])["family"] == family and predicate(json.loads(r["target"]))
        )

    def kinds(row, facts=facts):
        return {c.kind for c in audit_row(row, facts)}

    yes = first("region_attribute", lambda t: t["answer"])
    region, attribute, _ = json.loads(yes["target"])["claims"][0]
    flipped = _with_answer(_planted(yes, answer=False, claims=[[region, attribute, False]]), "No.")
    assert kinds(flipped) == {"negative-for-present"}
    no = first("region_attribute", lambda t: not t["answer"])
    region, attribute, _ = json.loads(no["target"])["claims"][0]
    flipped = _with_answer(_planted(no, answer=True, claims=[[region, attribute, True]]), "Yes.")
    assert kinds(flipped) == {"positive-for-absent"}
    assert "answer-text-mismatch" in kinds(_with_answer(no, "Yes."))  # the text alone says otherwise

    key = no["image_keys"][0]  # a "no" for a region the scene graph says nothing of
    silent = next(r for r in KNOWN_REGIONS if not any(e["region"] == r for e in build["annotations"][key]["regions"]))
    unstated = _planted(no, inputs={"region": silent, "attribute": attribute}, claims=[[silent, attribute, False]])
    assert "negative-for-unannotated" in kinds(unstated)

    listed = first("image_abnormalities", lambda t: len(t["answer"]) >= 2)
    target = json.loads(listed["target"])
    shortened = _planted(listed, answer=target["answer"][1:], claims=target["claims"][1:])
    assert kinds(shortened) >= {"vqa-answer-not-recomputed"}

    sided = first("region_attribute", lambda t: side(t["inputs"]["region"]) is not None)
    on_lateral = {**facts, sided["image_keys"][0]: replace(facts[sided["image_keys"][0]], view="LATERAL")}
    assert kinds(sided, on_lateral) == {"side-on-lateral"}

    count = first("count_regions")
    t = json.loads(count["target"])
    assert "vqa-answer-not-recomputed" in kinds(_planted(count, answer=t["answer"] + 1))
