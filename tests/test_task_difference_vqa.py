"""Difference VQA (transforms/tasks/difference_vqa.py): every answer is recomputed by an independent
reading of the ImaGenome statements (``Expected`` below, written from the rules in the module docstring,
not from its code), on crafted patients, on generated ones and on every patient of a synthetic build."""

from __future__ import annotations

import json
import re
from datetime import datetime

import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import manifests
from tests.builds import VQA_DATASETS, synthetic_build
from transforms.tasks import Profile, TaskSpec
from transforms.tasks.difference_vqa import FAMILIES, TASK, generate
from transforms.templates import load_template_set
from transforms.units import task_groups
from transforms.views import is_frontal

PROFILE = Profile(name="m4cxr", coordinates="percent", tasks={TASK: TaskSpec(template_set="vqa_difference_m4cxr")})
PROMPT = (
    "reference: <image>, main: <image>\nUsing the provided reference and main radiology images, answer the "
    "following question. "
)
"""M4CXR's "diff" pattern (deepnoid-ai/M4CXR-TNNLS exp/cxr_llm/data_utils/templates.py), its two user
messages joined by a newline."""
ANSWERS = load_template_set("vqa_difference_m4cxr").answers
CLOSED = ("finding_new", "finding_resolved", "region_change", "finding_change")

# ---------------------------------------------------------------- the independent reading

RULES = manifests.load("difference_vqa.yaml")["difference"]
SCENE_RULES = manifests.load("vqa.yaml")  # categories and excluded regions, shared with single-image VQA
SIDE = {
    name: entry.get("laterality")
    for name, entry in manifests.load("labels.yaml")["anatomy"]["imagenome-regions"].items()
    if name not in SCENE_RULES["excluded_regions"]
}
ATTRIBUTE = re.compile(r"(?P<category>[^|]+)\|(?P<said>yes|no)\|(?P<name>[^|]+)")


def region_says(row: dict) -> dict[tuple[str, str], bool]:
    """(region, finding) -> True when some phrase of the region says yes, False when they all say no."""
    says: dict[tuple[str, str], bool] = {}
    for entry in row["regions"]:
        for text in entry["attributes"]:
            match = ATTRIBUTE.fullmatch(text)
            if entry["region"] in SIDE and match and match["category"] in SCENE_RULES["categories"]:
                key = (entry["region"], match["name"])
                says[key] = says.get(key, False) or match["said"] == "yes"
    return says


def sides_where(says: dict, finding: str, value: bool) -> set[str]:
    covered = set()
    for (region, name), said in says.items():
        if name == finding and said == value:
            covered |= {SIDE[region]} if SIDE[region] else {"left", "right"}
    return covered


class Expected:
    """What a (reference, main) pair may be asked and the true answers, from the rules alone."""

    def __init__(self, reference: dict, reference_study: list[dict], main: dict):
        ref, now = region_says(reference), region_says(main)
        names = sorted({name for _, name in ref} | {name for _, name in now})

        def present(says, name):
            return bool(sides_where(says, name, True))

        def absent(says, name):
            return not present(says, name) and sides_where(says, name, False) == {"left", "right"}

        def came(before, after, name):  # present after; before says it nowhere and denies it where after has it
            return (
                present(after, name)
                and not present(before, name)
                and sides_where(after, name, True) <= sides_where(before, name, False)
            )

        def says_yes(text):
            match = ATTRIBUTE.fullmatch(text)
            if match and match["said"] == "yes" and match["category"] in SCENE_RULES["categories"]:
                return match["name"]
            return None

        def unnamed(row):  # a phrase flagged abnormal without a finding present
            return any(
                RULES["abnormal_flag"] in entry["attributes"]
                and not (entry["region"] in SIDE and any(map(says_yes, entry["attributes"])))
                for entry in row["regions"]
            )

        def whole(before, after, row):
            return (
                bool(after)
                and not unnamed(row)
                and all(came(before, after, n) or present(before, n) for n in names if present(after, n))
            )

        self.new = [n for n in names if came(ref, now, n)]
        self.resolved = [n for n in names if came(now, ref, n)]
        both = {n for n in names if present(ref, n) and present(now, n)}
        self.open = {
            "new_findings": self.new if whole(ref, now, main) else None,
            "resolved_findings": self.resolved if whole(now, ref, reference) else None,
        }
        self.finding_new = {n: True for n in self.new} | {n: False for n in names if absent(now, n) or n in both}
        self.finding_resolved = {n: True for n in self.resolved} | {n: False for n in both}
        keys = {row["image_key"] for row in reference_study}
        relations = []  # (region, relation, phrase) of main's comparisons with the reference study
        for rel in json.loads(json.loads(main["provenance"]).get("imagenome.relationships", "[]")):
            for name in rel["relation"] or []:
                match = ATTRIBUTE.fullmatch(name)
                if (
                    match
                    and match["category"] == "comparison"
                    and match["said"] == "yes"
                    and rel["region"] in SIDE
                    and match["name"] in RULES["relations"]
                    and rel["previous_key"] in keys
                ):
                    relations.append((rel["region"], match["name"], rel["phrase"]))
        flipped = {region for (region, name), said in now.items() if ref.get((region, name), said) != said}
        moved = {region for region, relation, _ in relations if relation in RULES["changed"]} | flipped
        self.region_change = {region: region in moved for region in moved | {r for r, _, _ in relations}}
        stated: dict[tuple[str, str], set[str]] = {}
        for region, relation, phrase in relations:
            findings = {
                says_yes(text)
                for entry in main["regions"]
                for text in entry["attributes"]
                if (entry["region"], entry["phrase"]) == (region, phrase)
            } - {None}
            if len(findings) == 1:
                stated.setdefault((region, findings.pop()), set()).add(relation)
        self.finding_change = {key: rels.pop() for key, rels in stated.items() if len(rels) == 1}

    def askable(self) -> set[str]:
        families = {family for family, answer in self.open.items() if answer is not None}
        for family in ("finding_new", "finding_resolved", "region_change"):
            if {True, False} <= set(getattr(self, family).values()):
                families.add(family)
        return families | ({"finding_change"} if self.finding_change else set())

    def answer(self, family: str, inputs: dict):
        if family in self.open:
            return self.open[family]
        if family == "region_change":
            return self.region_change[inputs["region"]]
        if family == "finding_change":
            return self.finding_change[(inputs["region"], inputs["finding"])] == inputs["relation"]
        return getattr(self, family)[inputs["finding"]]


def expected_pairs(patient: list[list[dict]]) -> list[tuple[dict, list[dict], dict]]:
    """(reference image, reference study, main image) of consecutive dated studies, strictly in time order."""
    dated = sorted(
        (s for s in patient if s[0]["study_datetime"]),
        key=lambda s: (datetime.fromisoformat(s[0]["study_datetime"]), s[0]["study_id"]),
    )
    shown = [
        min(
            (r for r in s if is_frontal(r["view"]) and "imagenome" in r["annotation_sources"]),
            key=lambda r: r["image_key"],
            default=None,
        )
        for s in dated
    ]
    return [
        (shown[i], dated[i], shown[i + 1])
        for i in range(len(dated) - 1)
        if shown[i] and shown[i + 1] and shown[i]["study_datetime"] != shown[i + 1]["study_datetime"]
    ]


def check_patient(patient: list[list[dict]], seed: int = 0) -> list[dict]:
    """The patient's rows, each checked against the independent reading; returns the rows' targets."""
    rows = generate(patient, PROFILE, seed)
    by_pair: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        by_pair.setdefault(tuple(row["image_keys"]), []).append(row)
    targets = []
    for reference, study, main in expected_pairs(patient):
        expected = Expected(reference, study, main)
        made = by_pair.pop((reference["image_key"], main["image_key"]), [])
        assert sorted(json.loads(r["target"])["family"] for r in made) == sorted(expected.askable())
        for row in made:
            target = json.loads(row["target"])
            assert target["answer"] == expected.answer(target["family"], target["inputs"]), target
            assert datetime.fromisoformat(target["reference"]["study_datetime"]) < datetime.fromisoformat(
                target["main"]["study_datetime"]
            )
            assert (target["reference"]["image_key"], target["main"]["image_key"]) == tuple(row["image_keys"])
            assert is_frontal(reference["view"]) and is_frontal(main["view"])
            question = row["conversations"][0]["value"]
            assert question.startswith(PROMPT) and question.count("<image>") == 2
            assert_answer_text(target, row["conversations"][1]["value"])
            targets.append(target)
    assert not by_pair, f"rows for pairs that are not consecutive studies in time order: {sorted(by_pair)}"
    return targets


def assert_answer_text(target: dict, text: str) -> None:
    answer = target["answer"]
    if isinstance(answer, bool):
        assert text == ANSWERS["yes" if answer else "no"]
    elif not answer:
        assert text == ANSWERS["nothing_new" if target["family"] == "new_findings" else "nothing_resolved"]
    else:
        assert all(name in text for name in answer) and text.count(", ") == len(answer) - 1


# ---------------------------------------------------------------- crafted patients


def phrase(
    region: str, finding: str, said: bool = True, text: str | None = None, category: str = "anatomicalfinding"
) -> tuple[str, str, list[str]]:
    flag = "nlp|yes|abnormal" if said else "nlp|yes|normal"
    statement = f"{category}|{'yes' if said else 'no'}|{finding}"
    return region, text or f"{'' if said else 'no '}{finding}.", [statement, flag]


def image(
    key: str,
    study: str,
    when: str | None,
    regions=(),
    relations=(),
    view: str = "PA",
    sources=("imagenome",),
    split: str = "train",
) -> dict:
    """An annotation row of a MIMIC image with ImaGenome statements and relations
    ``(region, relation, previous image, phrase)``."""
    provenance = (
        {
            "imagenome.relationships": json.dumps(
                [
                    {
                        "region": region,
                        "relation": [f"comparison|yes|{relation}"],
                        "previous_key": f"mimic/{previous}",
                        "phrase": said,
                    }
                    for region, relation, previous, said in relations
                ]
            )
        }
        if relations
        else {}
    )
    return {
        "image_key": f"mimic/{key}",
        "source": "mimic",
        "split": split,
        "subject_id": "10000001",
        "study_id": study,
        "view": view,
        "study_datetime": when,
        "annotation_sources": list(sources),
        "regions": [
            {
                "region": region,
                "phrase": text,
                "attributes": attributes,
                "comparison_cues": [],
                "temporal_cues": [],
                "severity_cues": [],
            }
            for region, text, attributes in regions
        ],
        "provenance": json.dumps(provenance),
    }


NO_PTX = [phrase(f"{side} apical zone", "pneumothorax", False) for side in ("left", "right")]
LEFT_EFFUSION = phrase("left costophrenic angle", "pleural effusion")
EARLY = "2180-01-01T08:00:00"
LATE = "2180-02-01T08:00:00"


SEEDS = range(40)


def families_over_seeds(patient, seeds=SEEDS) -> dict[str, list[dict]]:
    """Targets per family over many seeds (each seed asks one closed question per family)."""
    found: dict[str, list[dict]] = {}
    for seed in seeds:
        for target in check_patient(patient, seed):
            found.setdefault(target["family"], []).append(target)
    return found


def test_new_and_resolved_findings_come_from_explicit_statements_on_both_images():
    reference = image("r", "s1", EARLY, [*NO_PTX, LEFT_EFFUSION])
    main = image(
        "m",
        "s2",
        LATE,
        [phrase("left apical zone", "pneumothorax"), phrase("left costophrenic angle", "pleural effusion", False)],
    )
    found = families_over_seeds([[main], [reference]])
    assert {json.dumps(t["answer"]) for t in found["new_findings"]} == {'["pneumothorax"]'}
    assert {json.dumps(t["answer"]) for t in found["resolved_findings"]} == {'["pleural effusion"]'}
    # nothing present on both: "is it new?" / "has it resolved?" have only one answer, so are not asked
    assert "finding_new" not in found and "finding_resolved" not in found
    (row, *_) = generate([[reference], [main]], PROFILE, seed=0)
    assert row["image_keys"] == ["mimic/r", "mimic/m"]


def test_a_finding_not_stated_on_the_reference_is_never_new():
    silent = image("r", "s1", EARLY, [LEFT_EFFUSION])  # says nothing of a pneumothorax
    right_only = image("r", "s1", EARLY, [LEFT_EFFUSION, NO_PTX[1]])  # denies it on the other side only
    nowhere = image("r", "s1", EARLY, [LEFT_EFFUSION, phrase("unknown", "pneumothorax", False)])  # in no region read
    main = image(
        "m",
        "s2",
        LATE,
        [
            phrase("left apical zone", "pneumothorax"),
            LEFT_EFFUSION,
            phrase("right costophrenic angle", "pleural effusion", False),
        ],
    )
    for reference in (silent, right_only, nowhere):
        found = families_over_seeds([[reference], [main]])
        assert "new_findings" not in found  # the list could not be complete
        assert all(
            t["inputs"]["finding"] != "pneumothorax" or t["answer"] is False for t in found.get("finding_new", [])
        )
    denied = image("r", "s1", EARLY, [LEFT_EFFUSION, *NO_PTX])
    found = families_over_seeds([[denied], [main]])
    assert found["new_findings"][0]["answer"] == ["pneumothorax"]
    assert {(t["inputs"]["finding"], t["answer"]) for t in found["finding_new"]} == {
        ("pneumothorax", True),
        ("pleural effusion", False),
    }  # the effusion was there before


def test_only_a_finding_stated_present_on_the_reference_is_asked_as_resolved():
    reference = image("r", "s1", EARLY, [LEFT_EFFUSION, phrase("cardiac silhouette", "enlarged cardiac silhouette")])
    main = image(
        "m", "s2", LATE, [LEFT_EFFUSION, *NO_PTX, phrase("cardiac silhouette", "enlarged cardiac silhouette", False)]
    )
    found = families_over_seeds([[reference], [main]])
    asked = {(t["inputs"]["finding"], t["answer"]) for t in found["finding_resolved"]}
    assert asked == {("enlarged cardiac silhouette", True), ("pleural effusion", False)}  # never the pneumothorax


def test_an_abnormality_without_a_finding_we_name_keeps_the_open_list_unasked():
    reference = image("r", "s1", EARLY, [*NO_PTX])
    unnamed = ("left lower lung zone", "Hazy opacity.", ["texture|yes|opacity", "nlp|yes|abnormal"])
    main = image("m", "s2", LATE, [*NO_PTX, unnamed])
    assert "new_findings" not in families_over_seeds([[reference], [main]], range(3))
    plain = image("m", "s2", LATE, [*NO_PTX])
    assert [t["answer"] for t in families_over_seeds([[reference], [plain]], range(1))["new_findings"]] == [[]]


def test_region_and_finding_changes_come_from_relations_to_the_reference_study():
    reference = image(
        "r",
        "s1",
        EARLY,
        [
            LEFT_EFFUSION,
            phrase("cardiac silhouette", "enlarged cardiac silhouette"),
            phrase("left apical zone", "pneumothorax", False),
        ],
    )
    other_view = image("r2", "s1", EARLY, view="AP", sources=())  # another image of the reference study
    worse = "Left effusion has increased."
    stable = "Stable cardiomegaly."
    main = image(
        "m",
        "s2",
        LATE,
        [
            phrase("left costophrenic angle", "pleural effusion", text=worse),
            phrase("left apical zone", "pneumothorax"),  # denied before: a change without a relation
            phrase("cardiac silhouette", "enlarged cardiac silhouette", text=stable),
            (
                "mediastinum",
                "Wider mediastinum, unchanged tube.",
                ["anatomicalfinding|yes|mediastinal widening", "tubesandlines|yes|endotracheal tube"],
            ),
        ],
        relations=[
            ("left costophrenic angle", "worsened", "r2", worse),
            ("cardiac silhouette", "no change", "r", stable),
            ("mediastinum", "no change", "r", "Wider mediastinum, unchanged tube."),
            ("trachea", "worsened", "older", "Tube retracted."),
        ],
    )  # not the reference study
    found = families_over_seeds([[reference, other_view], [main]])
    assert {(t["inputs"]["region"], t["answer"]) for t in found["region_change"]} == {
        ("left costophrenic angle", True),
        ("left apical zone", True),
        ("cardiac silhouette", False),
        ("mediastinum", False),
    }
    asked = {
        (t["inputs"]["region"], t["inputs"]["finding"], t["inputs"]["relation"], t["answer"])
        for t in found["finding_change"]
    }
    # the mediastinum phrase names two findings: which one "no change" is about is unknown
    assert {(region, finding) for region, finding, _, _ in asked} == {
        ("left costophrenic angle", "pleural effusion"),
        ("cardiac silhouette", "enlarged cardiac silhouette"),
    }
    assert ("left costophrenic angle", "pleural effusion", "worsened", True) in asked
    assert ("cardiac silhouette", "enlarged cardiac silhouette", "no change", True) in asked
    assert any(answer is False for *_, answer in asked)
    questions = {
        json.loads(row["target"])["inputs"]["relation"]: row["conversations"][0]["value"]
        for seed in range(40)
        for row in generate([[reference, other_view], [main]], PROFILE, seed)
        if json.loads(row["target"])["family"] == "finding_change"
    }
    assert "stayed the same" in questions["no change"] and "worsened" in questions["worsened"]


def test_the_m4cxr_template_is_rendered_exactly_reference_image_first():
    reference = image("r", "s1", EARLY, [*NO_PTX])
    main = image("m", "s2", LATE, [*NO_PTX[:1], phrase("right apical zone", "pneumothorax")])
    (row,) = [
        r
        for r in generate([[main], [reference]], PROFILE, seed=0)
        if json.loads(r["target"])["family"] == "new_findings"
    ]
    prompt_id, question_id = row["template_id"].split("+")
    (template,) = [t for t in load_template_set("vqa_difference_m4cxr").kinds["new_findings"] if t.id == question_id]
    assert prompt_id == "m4-diff-vqa"
    assert row["conversations"] == [
        {"from": "human", "value": PROMPT + template.human},
        {"from": "gpt", "value": template.gpt.format(findings="pneumothorax")},
    ]
    assert row["image_keys"] == ["mimic/r", "mimic/m"] and row["task"] == TASK and row["split"] == "train"
    target = json.loads(row["target"])
    assert target["reference"] == {"image_key": "mimic/r", "study_id": "s1", "study_datetime": EARLY}
    assert target["main"] == {"image_key": "mimic/m", "study_id": "s2", "study_datetime": LATE}


def test_pairs_are_consecutive_studies_strictly_in_time_order_with_a_frontal_imagenome_image():
    first = [
        image("a-lat", "s1", EARLY, NO_PTX, view="LATERAL"),
        image("b", "s1", EARLY, NO_PTX),
        image("a", "s1", EARLY, NO_PTX, sources=()),
    ]
    same_time = [image("c", "s2", EARLY, NO_PTX)]
    later = [image("d", "s3", LATE, NO_PTX)]
    undated = [image("e", "s4", None, NO_PTX)]
    lateral_only = [image("f", "s5", "2180-03-01T08:00:00", NO_PTX, view="LATERAL")]
    last = [image("g", "s6", "2180-04-01T08:00:00", NO_PTX)]
    rows = generate([last, lateral_only, undated, later, same_time, first], PROFILE, seed=0)
    # s1 and s2 share a time; s5 has no frontal ImaGenome image, so s3 -> s6 is not consecutive either
    assert {tuple(row["image_keys"]) for row in rows} == {("mimic/c", "mimic/d")}
    (row, *_) = generate([first, [image("h", "s7", LATE, NO_PTX)]], PROFILE, seed=0)
    assert row["image_keys"] == ["mimic/b", "mimic/h"]  # the first frontal ImaGenome image by key


def test_a_reference_that_is_not_earlier_than_its_main_is_never_written():
    # by their text the first is earlier; in time (UTC) it is an hour later
    reference = image("r", "s1", "2180-01-01T06:00:00+00:00", NO_PTX)
    main = image("m", "s2", "2180-01-01T10:00:00+05:00", NO_PTX)
    with pytest.raises(ValueError, match="not earlier"):
        generate([[reference], [main]], PROFILE, seed=0)


def test_a_patient_across_splits_is_refused():
    with pytest.raises(ValueError, match="span splits"):
        generate([[image("r", "s1", EARLY, NO_PTX)], [image("m", "s2", LATE, NO_PTX, split="test")]], PROFILE, 0)


def balanced_pair() -> list[list[dict]]:
    reference = image(
        "r", "s1", EARLY, [*NO_PTX, LEFT_EFFUSION, phrase("cardiac silhouette", "enlarged cardiac silhouette")]
    )
    main = image(
        "m",
        "s2",
        LATE,
        [
            phrase("left apical zone", "pneumothorax"),
            NO_PTX[1],
            LEFT_EFFUSION,
            phrase("cardiac silhouette", "enlarged cardiac silhouette", False),
        ],
    )
    return [[reference], [main]]


def test_rows_are_deterministic_and_yes_and_no_are_balanced_by_seed():
    patient = balanced_pair()
    assert generate(patient, PROFILE, 3) == generate(patient[::-1], PROFILE, 3)
    answers = [
        json.loads(row["target"])["answer"]
        for seed in range(300)
        for row in generate(patient, PROFILE, seed)
        if json.loads(row["target"])["family"] in CLOSED
    ]
    assert 0.4 < sum(a is True for a in answers) / len(answers) < 0.6
    assert len({row["template_id"] for seed in range(30) for row in generate(patient, PROFILE, seed)}) > 6


# ---------------------------------------------------------------- generated patients

REGIONS = [
    "left costophrenic angle",
    "right costophrenic angle",
    "left apical zone",
    "right apical zone",
    "cardiac silhouette",
    "mediastinum",
    "unknown",
]
FINDINGS = ["pleural effusion", "pneumothorax", "enlarged cardiac silhouette"]
PHRASES = ["P1.", "P2.", "P3."]
attribute = st.one_of(
    st.builds("anatomicalfinding|{1}|{0}".format, st.sampled_from(FINDINGS), st.sampled_from(["yes", "no"])),
    st.sampled_from(["technicalassessment|yes|rotated", "nlp|yes|abnormal", "nlp|yes|normal", "disease|yes|pneumonia"]),
)
region_phrase = st.tuples(
    st.sampled_from(REGIONS), st.sampled_from(PHRASES), st.lists(attribute, min_size=1, max_size=3)
)
relation_parts = (
    st.sampled_from(["improved", "worsened", "no change", "stable"]),  # "stable" is not a relation read
    st.sampled_from(["p0-0", "p0-1", "p1-0", "p1-1", "elsewhere"]),
)
relation = st.tuples(st.sampled_from(REGIONS), *relation_parts, st.sampled_from(PHRASES))


@st.composite
def patients(draw) -> list[list[dict]]:
    """2-3 studies, mostly on different days; each of one or two images, the first frontal with
    ImaGenome data unless drawn otherwise."""
    count = draw(st.integers(2, 3))
    days: list[int | None] = draw(st.lists(st.integers(1, 9), min_size=count, max_size=count, unique=True))
    if draw(st.integers(0, 5)) == 0:  # a study at the same time as another, or without a time
        days[draw(st.integers(1, count - 1))] = draw(st.sampled_from([days[0], None]))
    studies = []
    for number, day in enumerate(days):
        when = None if day is None else f"2180-01-0{day}T08:00:00"
        study = []
        for index in range(draw(st.integers(1, 2))):
            odd = index > 0 or draw(st.integers(0, 5)) == 0  # a second image, or a first that is not shown
            regions = draw(st.lists(region_phrase, min_size=2, max_size=10))
            own = st.sampled_from([(region, said) for region, said, _ in regions])  # mostly about its own phrases
            about_own = st.builds(lambda place, *rest: (place[0], *rest, place[1]), own, *relation_parts)
            relations = draw(st.lists(st.one_of(relation, about_own), max_size=5))
            study.append(
                image(
                    f"p{number}-{index}",
                    f"s{number}",
                    when,
                    regions,
                    relations,
                    view=draw(st.sampled_from(["PA", "AP", "LATERAL"])) if odd else "PA",
                    sources=draw(st.sampled_from([("imagenome",), ()])) if odd else ("imagenome",),
                )
            )
        studies.append(study)
    return studies


@settings(max_examples=120, deadline=None)
@given(patients(), st.integers(0, 3))
def test_generated_patients_agree_with_the_independent_reading(patient, seed):
    check_patient(patient, seed)


# ---------------------------------------------------------------- a synthetic build


@pytest.fixture(scope="module")
def synthetic_patients(tmp_path_factory) -> list[list[list[dict]]]:
    out = synthetic_build(tmp_path_factory, studies=24, seed=0, without=VQA_DATASETS)  # generated only
    rows = sorted(
        (row for path in sorted((out / "annotations").glob("*.parquet")) for row in pq.read_table(path).to_pylist()),
        key=lambda row: row["image_key"],
    )
    return [group for unit, group in task_groups(rows) if unit == "patient"]


def test_every_patient_of_a_synthetic_build_agrees_with_the_independent_reading(synthetic_patients):
    with_relations = [
        patient
        for patient in synthetic_patients
        if sum(any("imagenome" in row["annotation_sources"] for row in study) for study in patient) > 1
        and any("imagenome.relationships" in json.loads(row["provenance"]) for study in patient for row in study)
    ]
    assert with_relations, "the synthetic corpus has no patient with two ImaGenome studies and relations"
    targets = [target for patient in synthetic_patients for target in check_patient(patient)]
    kinds = {
        (t["family"], t["answer"] if isinstance(t["answer"], bool) else "list" if t["answer"] else "empty")
        for t in targets
    }
    assert {family for family, _ in kinds} == set(FAMILIES)
    assert all((family, answer) in kinds for family in CLOSED for answer in (True, False))
    assert ("new_findings", "list") in kinds and ("resolved_findings", "list") in kinds
    by_key = {row["image_key"]: row for patient in synthetic_patients for study in patient for row in study}
    for target in targets:  # nothing is new or resolved but what the other image explicitly denies
        claimed = {"new_findings": target["answer"], "resolved_findings": target["answer"]}.get(target["family"], [])
        if target["family"] in ("finding_new", "finding_resolved") and target["answer"] is True:
            claimed = [target["inputs"]["finding"]]
        before = target["reference" if target["family"] in ("new_findings", "finding_new") else "main"]["image_key"]
        for name in claimed:
            assert any(
                text.endswith(f"|no|{name}") for entry in by_key[before]["regions"] for text in entry["attributes"]
            )
