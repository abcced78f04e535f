"""The task stage: studies and patients built inside one images shard, rows staged as sorted
fragments, a failing task costing only its own group."""

from __future__ import annotations

import pickle

from pipelines.beam import task_stage
from pipelines.beam.grouping import unpack
from pipelines.beam.image_stage import Checkpoint, ShardResult, shard_group
from pipelines.beam.severity_fit import FitSeverityIdf
from pipelines.beam.write import read_fragment
from schemas.records import ImageRef, Reject
from transforms.tasks import Profile, TaskSpec
from transforms.tasks.multi import MULTI_IMAGE, MULTI_STUDY
from transforms.units import group_rows, task_groups

IMAGE_TASK = "disease_classification"
PROFILE = Profile(
    name="m4cxr",
    coordinates="percent",
    tasks={name: TaskSpec(template_set="unused") for name in (IMAGE_TASK, MULTI_IMAGE, MULTI_STUDY)},
)
EMPTY_IDF = FitSeverityIdf().extract_output(FitSeverityIdf().create_accumulator())


def row(key: str, subject: str | None, study: str | None, when: str | None = None) -> dict:
    return {
        "image_key": f"mimic/{key}",
        "source": "mimic",
        "split": "train",
        "subject_id": subject,
        "study_id": study,
        "study_datetime": when,
        "mentions": [],
        "report_language": None,
        "report_english": None,
        "severity_tfidf": None,
    }


# Patient p1: studies s2 (two images, later) and s1 (one image, earlier); p2: one study; an image
# without a study (VinDr-like rows have neither).
ROWS = [
    row("d", "p1", "s2", "2180-02-01T00:00:00"),
    row("a", "p1", "s1", "2180-01-01T00:00:00"),
    row("c", "p1", "s2", "2180-02-01T00:00:00"),
    row("e", "p2", "s9", "2180-03-01T00:00:00"),
    row("b", None, None),
]


def keys(group) -> list:
    if isinstance(group, dict):
        return group["image_key"].split("/")[1]
    return [keys(item) for item in group]


def test_groups_are_the_images_the_studies_and_the_patients_in_time_order():
    groups = list(task_groups(sorted(ROWS, key=lambda r: r["image_key"])))
    assert [(unit, keys(group)) for unit, group in groups] == [
        ("image", "a"),
        ("image", "b"),
        ("image", "c"),
        ("image", "d"),
        ("image", "e"),
        ("study", ["a"]),
        ("study", ["c", "d"]),
        ("study", ["e"]),
        ("patient", [["a"], ["c", "d"]]),
        ("patient", [["e"]]),
    ]


def test_a_shard_holds_whole_patients_and_studies():
    def ref(key, subject=None, study=None):
        return ImageRef(
            image_key=f"x/{key}",
            source="x",
            native_id=key,
            uri=f"/{key}.png",
            format="png",
            subject_id=subject,
            study_id=study,
        )

    assert shard_group(ref("1", "p", "s")) == shard_group(ref("2", "p", "t")) == "x/p"
    assert shard_group(ref("1", None, "s")) == shard_group(ref("2", None, "s")) == "x/study/s"
    assert shard_group(ref("1")) != shard_group(ref("2"))


def fake_generator(task):
    """One instruction row per group; the study task fails on study s2."""

    def generate(group, profile, seed):
        first = group_rows(group)[0]
        if task == MULTI_IMAGE and first["study_id"] == "s2":
            raise ValueError("study s2 cannot be rendered")
        return [{"id": f"{task}:{keys(group)}", "source": first["source"], "split": first["split"]}]

    return generate


def test_fragments_hold_every_row_sorted_and_a_failed_group_rejects_each_of_its_images(tmp_path, monkeypatch):
    monkeypatch.setattr(task_stage, "generator", fake_generator)
    path = tmp_path / "train-00000-of-00001.pkl"
    path.write_bytes(pickle.dumps(ShardResult(annotation_rows=ROWS)))
    checkpoint = Checkpoint("train", "train-00000-of-00001", str(path))
    outputs = list(task_stage.RunTasks(str(tmp_path / "out"), [PROFILE], seed=0).process(checkpoint, EMPTY_IDF))

    fragments = {(f.table_dir, f.split): f for f in outputs if isinstance(f, task_stage.Fragment)}
    tagged = [o for o in outputs if not isinstance(o, task_stage.Fragment)]
    rejects = [o.value for o in tagged if o.tag == "rejects"]
    counts = dict(o.value for o in tagged if o.tag == "instruction_counts")

    failed = "study of 2 image(s) from mimic/c: ValueError('study s2 cannot be rendered')"
    assert rejects == [
        Reject(key=f"mimic/{key}", source="mimic", stage="tasks", level="item", reason="value-error", detail=failed)
        for key in "cd"
    ]  # every image of the failed study
    assert counts == {
        ("m4cxr", IMAGE_TASK, "mimic", "train"): 5,
        ("m4cxr", MULTI_IMAGE, "mimic", "train"): 2,
        ("m4cxr", MULTI_STUDY, "mimic", "train"): 2,
    }
    for fragment in fragments.values():
        entries = read_fragment(fragment.path)
        assert fragment.rows == len(entries) and fragment.shard == "train-00000-of-00001"
        assert entries == sorted(entries)
    annotations = [unpack(packed) for _, packed in read_fragment(fragments[("annotations", "train")].path)]
    assert [r["image_key"] for r in annotations] == [f"mimic/{k}" for k in "abcde"]
    assert all(r["severity_tfidf"] == 0.0 for r in annotations)  # filled from the fitted table
    study_rows = read_fragment(fragments[(f"instructions/m4cxr/{MULTI_IMAGE}", "train")].path)
    studies = [unpack(packed)["id"] for _, packed in study_rows]
    assert studies == [f"{MULTI_IMAGE}:['a']", f"{MULTI_IMAGE}:['e']"]  # s2 failed, the others were written
