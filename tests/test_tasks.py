"""Task generation from enriched annotation rows: only stated findings, seeded, stable ids."""

import json

import pytest

from transforms.labels import TAXONOMY
from transforms.tasks import generator, load_profile
from transforms.tasks.classification import classes


def annotation_row(presence: dict, key="vindr/0123456789abcdef0123456789abcdef", source="vindr", split="train"):
    return {
        "image_key": key,
        "source": source,
        "split": split,
        "findings": [{"name": n, "presence": presence.get(n), "systems": [], "raw": []} for n in TAXONOMY],
        "sections": [],
        "report_language": None,
    }


@pytest.fixture(scope="module")
def profiles():
    return {name: load_profile(name) for name in ("imt-cxr", "m4cxr", "chexmix")}


def test_null_presence_is_never_asked_as_negative(profiles):
    row = annotation_row({"Cardiomegaly": 1, "Pneumothorax": 0, "Edema": -1})
    positives, negatives, complete = classes(row, "exclude")
    assert positives == ["Cardiomegaly"] and negatives == ["Pneumothorax"] and not complete
    rows = generator("disease_classification")(row, profiles["imt-cxr"], seed=0)
    asked = {json.loads(r["target"]).get("finding") for r in rows} - {None}
    assert asked == {"Cardiomegaly", "Pneumothorax"}  # Edema (uncertain) and unannotated findings never asked
    (listed,) = [json.loads(r["target"]) for r in rows if "candidates" in json.loads(r["target"])]
    assert listed["question"] == "candidates" and listed["candidates"] == ["Cardiomegaly", "Pneumothorax"]


def test_the_open_question_only_where_the_source_states_every_finding(profiles):
    complete = annotation_row({n: 0 for n in TAXONOMY[1:]} | {"Cardiomegaly": 1, "Pleural Other": 1})
    opened = [
        r
        for r in generator("disease_classification")(complete, profiles["imt-cxr"], seed=0)
        if "candidates" in json.loads(r["target"])
    ]
    assert json.loads(opened[0]["target"])["question"] == "open"
    assert opened[0]["conversations"][1]["value"] == "cardiomegaly, pleural thickening"  # natural phrases
    assert "pleural other" not in " ".join(t["value"] for r in opened for t in r["conversations"])
    siim = annotation_row({"Pneumothorax": 0}, key="siim/1.2.3", source="siim")
    rows = [json.loads(r["target"]) for r in generator("disease_classification")(siim, profiles["imt-cxr"], seed=0)]
    assert not any(t.get("question") == "open" for t in rows)  # SIIM labels pneumothorax alone


def test_yes_no_negatives_are_balanced_and_answers_true(profiles):
    row = annotation_row(
        {"Cardiomegaly": 1, "Pleural Effusion": 1, "Pneumothorax": 0, "Edema": 0, "Fracture": 0, "Atelectasis": 0}
    )
    rows = generator("disease_classification")(row, profiles["imt-cxr"], seed=3)
    yes_no = [json.loads(r["target"]) for r in rows if r["template_id"].startswith("imt-dc-yn")]
    assert sum(t["present"] for t in yes_no) == 2 and sum(not t["present"] for t in yes_no) == 2
    for r in rows:
        target = json.loads(r["target"])
        answer = r["conversations"][1]["value"]
        if "finding" in target:
            assert answer == ("Yes." if target["present"] else "No.")
            assert target["finding"].lower() in r["conversations"][0]["value"]
        else:
            assert answer == "cardiomegaly, pleural effusion"
        assert r["conversations"][0]["value"].startswith("<image>")
        assert r["split"] == "train" and r["image_keys"] == [row["image_key"]]


def test_m4cxr_candidates_are_the_annotated_findings(profiles):
    row = annotation_row({"Pneumothorax": 0}, key="siim/1.2.3", source="siim")
    (only,) = generator("disease_classification")(row, profiles["m4cxr"], seed=0)
    assert only["conversations"][0]["value"].endswith("pneumothorax.")
    assert only["conversations"][1]["value"] == "Not found."  # never "No Finding": nothing else is known


def test_generation_is_deterministic_and_seeded(profiles):
    row = annotation_row({n: 0 for n in TAXONOMY[1:]} | {"Cardiomegaly": 1})
    first = generator("disease_classification")(row, profiles["imt-cxr"], seed=0)
    again = generator("disease_classification")(row, profiles["imt-cxr"], seed=0)
    assert first == again
    seeds = {
        tuple(
            r["template_id"] + json.loads(r["target"]).get("finding", "")
            for r in generator("disease_classification")(row, profiles["imt-cxr"], seed=s)
        )
        for s in range(12)
    }
    assert len(seeds) > 1  # the seed changes template and negative choices
    assert len({r["id"] for r in first}) == len(first)


def test_nothing_is_generated_when_the_source_states_nothing(profiles):
    assert generator("disease_classification")(annotation_row({}), profiles["imt-cxr"], seed=0) == []


def test_pretraining_uses_findings_and_impression(profiles):
    row = annotation_row({}, key="mimic/a", source="mimic")
    row["report_language"] = "en"
    row["sections"] = [
        {"name": "indication", "text": "cough"},
        {"name": "findings", "text": " Heart is enlarged. "},
        {"name": "impression", "text": "Cardiomegaly."},
    ]
    (only,) = generator("report_pretraining")(row, profiles["chexmix"], seed=0)
    assert only["conversations"][1]["value"] == "FINDINGS: Heart is enlarged.\nIMPRESSION: Cardiomegaly."
    row["sections"][1]["text"] = "Heart is\r\n enlarged.  "  # line layout and CR LF are cleaned away
    assert (
        json.loads(generator("report_pretraining")(row, profiles["chexmix"], seed=0)[0]["target"])["findings"]
        == "Heart is enlarged."
    )
    assert json.loads(only["target"]) == {"findings": "Heart is enlarged.", "impression": "Cardiomegaly."}
    row["report_language"] = "es-stemmed"
    assert generator("report_pretraining")(row, profiles["chexmix"], seed=0) == []


def test_every_task_is_declared_once_with_a_unit_template_sets_and_a_check():
    """The registry is the one list of tasks: every module of transforms/tasks declares its tasks, each
    names template sets that exist, and the row audit has a check for each (transforms/audit.py)."""
    import pkgutil

    import transforms.tasks
    from transforms.audit import CHECKS
    from transforms.tasks import registry
    from transforms.templates import load_template_set

    tasks = registry()
    declaring = {task.generate.__module__ for task in tasks.values()}
    modules = {f"transforms.tasks.{info.name}" for info in pkgutil.iter_modules(transforms.tasks.__path__)}
    assert declaring == modules
    assert set(CHECKS) == set(tasks)
    for task in tasks.values():
        assert task.unit in ("image", "study", "patient") and task.template_sets, task.name
        for name in task.template_sets:
            load_template_set(name)


def test_a_profile_uses_only_registered_tasks_with_their_template_sets(monkeypatch):
    import manifests
    from schemas.config import PROFILES
    from transforms.tasks import registry

    used = {spec.template_set for name in PROFILES for spec in load_profile(name).tasks.values()}
    assert used == {name for task in registry().values() for name in task.template_sets}  # no set left unused

    real_load = manifests.load
    for tasks, message in (
        ({"disease_classificaton": {"template_set": "disease_classification_imt"}}, "unknown task"),
        ({"disease_classification": {"template_set": "grounding_imt"}}, "cannot be rendered by template set"),
    ):
        mixture = {**real_load("mixtures/imt-cxr.yaml"), "groups": None, "tasks": tasks}
        monkeypatch.setattr(
            manifests, "load", lambda path, m=mixture: m if path.startswith("mixtures/") else real_load(path)
        )
        with pytest.raises(ValueError, match=message):
            load_profile("imt-cxr")
