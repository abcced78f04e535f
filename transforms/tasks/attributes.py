"""IMT-CXR attribute classification: the severity and the location of each finding the source affirms.

Only positive statements are asked (a mention with presence 1; for the measured fallbacks, a positive
harmonised finding as well): a negated or uncertain finding has no severity or place to ask about.

Severity (task ``severity_classification``): the ordinal range stated by the report's positive
mentions of the finding (several mentions: the smallest lower and the largest upper bound), rendered
with the ``severity_render`` words of ``manifests/attributes.yaml``; a stated range stays a range
("mild to moderate", target ``severity_min`` 1 / ``severity_max`` 2).

Which wins when the report states a severity and a measurement exists: the report. The CTR band
(cardiomegaly) and the pneumothorax area band are our measurements on model-derived CheXmask lung and
heart masks, with band edges we chose (``ctr_bands.yaml``, ``ptx_bands.yaml``) and known biases (AP and
supine views enlarge the heart shadow; an area ratio is not the BTS/ACCP size rule); the report is what
the reader of this image stated. So a band answers only when the report states no severity: VinDr
images (no report) get their cardiomegaly grade from the CTR, SIIM images their pneumothorax size from
the mask. A ``normal`` CTR band on a positive cardiomegaly contradicts the label and is not asked. The
target always carries the measurement next to the answer, with ``basis`` naming what answered.

Location (task ``location_classification``), on frontal views only (:mod:`transforms.views`: a lateral
view cannot show a side): for findings that can have a side, each distinct stated
(laterality, zones) of the positive mentions, in report order, joined by " and ". A pneumothorax the
report does not place takes the side of its mask (``ptx_side`` left/right; ``both`` also means the mask
touched neither lung, so it is not used as a side).
"""

from __future__ import annotations

import manifests
from transforms.hashing import seeded_rng
from transforms.phrases import SEVERITY_RENDER, severity_words, zone_words
from transforms.tasks import Profile, Task, finding_phrase, instruction_row
from transforms.templates import load_template_set, render
from transforms.views import is_frontal

SEVERITY = "severity_classification"
LOCATION = "location_classification"
CARDIOMEGALY = "Cardiomegaly"
PNEUMOTHORAX = "Pneumothorax"

_VOCABULARY = manifests.load("attributes.yaml")
_LATERAL = {name for name, entry in _VOCABULARY["findings"].items() if entry["lateral"]}
_DEFAULT_SCALE = {name: entry["scale"] for name, entry in _VOCABULARY["findings"].items()}
_WORD_ORDINALS = {scale: {word: ordinal for ordinal, word in words.items()} for scale, words in SEVERITY_RENDER.items()}
_MEASURED_SEVERITY = {  # finding -> (row column with the band, scale of the band's words, basis)
    CARDIOMEGALY: ("ctr_band", "severity", "ctr"),
    PNEUMOTHORAX: ("ptx_band", "size", "mask"),
}
_MASK_SIDES = ("left", "right")


def location_words(laterality: str | None, zones: list[str]) -> str:
    """ "left apical": side then zones, in the words of the attribute prompt."""
    return " ".join(part for part in (laterality, zone_words(zones)) if part)


def positive_mentions(row: dict) -> dict[str, list[dict]]:
    """Finding -> its presence-1 mentions, findings in order of first mention."""
    grouped: dict[str, list[dict]] = {}
    for mention in row["mentions"] or ():
        if mention["presence"] == 1:
            grouped.setdefault(mention["finding"], []).append(mention)
    return grouped


def _labelled_positive(row: dict, name: str) -> bool:
    return any(f["name"] == name and f["presence"] == 1 for f in row["findings"] or ())


def stated_severity(mentions: list[dict]) -> tuple[int, int, str] | None:
    """(low, high, scale) over the mentions that state a severity; the first stated scale words it."""
    stated = [m for m in mentions if m["severity_min"] is not None]
    if not stated:
        return None
    scale = stated[0]["severity_scale"] or _DEFAULT_SCALE[stated[0]["finding"]]
    return min(m["severity_min"] for m in stated), max(m["severity_max"] for m in stated), scale


def measured_severity(row: dict, finding: str) -> tuple[int, int, str] | None:
    """(ordinal, ordinal, scale) of the finding's measured band, or None (no band, or a "normal" one)."""
    if finding not in _MEASURED_SEVERITY:
        return None
    column, scale, _ = _MEASURED_SEVERITY[finding]
    band = row[column]
    if band is None:
        return None
    ordinal = _WORD_ORDINALS[scale].get(band)
    if ordinal is None:
        if band == "normal":
            return None  # a normal CTR on a positive cardiomegaly: measurement and label disagree
        raise ValueError(f"{column} {band!r} of {row['image_key']} is not a {scale} word of attributes.yaml")
    return ordinal, ordinal, scale


def severity_answers(row: dict) -> list[dict]:
    """One target per positive finding with a stated or measured severity, in report order."""
    mentions = positive_mentions(row)
    findings = list(mentions) + [
        name for name in _MEASURED_SEVERITY if name not in mentions and _labelled_positive(row, name)
    ]
    targets = []
    for finding in findings:
        stated = stated_severity(mentions.get(finding, []))
        graded = stated or measured_severity(row, finding)
        if graded is None:
            continue
        low, high, scale = graded
        target = {
            "finding": finding,
            "severity_min": low,
            "severity_max": high,
            "scale": scale,
            "answer": severity_words(low, high, scale),
            "basis": "report" if stated else _MEASURED_SEVERITY[finding][2],
        }
        if finding in _MEASURED_SEVERITY:
            column = _MEASURED_SEVERITY[finding][0]
            target[column] = row[column]
        targets.append(target)
    return targets


def location_answers(row: dict) -> list[dict]:
    """One target per positive lateral finding with a stated place (or a pneumothorax mask side)."""
    mentions = positive_mentions(row)
    targets = []
    for finding, found in mentions.items():
        if finding not in _LATERAL:
            continue
        places = list(
            dict.fromkeys((m["laterality"], tuple(m["zones"] or ())) for m in found if m["laterality"] or m["zones"])
        )
        if places:
            targets.append(
                {
                    "finding": finding,
                    "basis": "report",
                    "locations": [{"laterality": side, "zones": list(zones)} for side, zones in places],
                    "answer": " and ".join(location_words(side, list(zones)) for side, zones in places),
                }
            )
    placed = {t["finding"] for t in targets}
    side = row["ptx_side"]
    if (
        PNEUMOTHORAX not in placed
        and side in _MASK_SIDES
        and (PNEUMOTHORAX in mentions or _labelled_positive(row, PNEUMOTHORAX))
    ):
        targets.append(
            {"finding": PNEUMOTHORAX, "basis": "mask", "locations": [{"laterality": side, "zones": []}], "answer": side}
        )
    return targets


def _rows(task: str, kind: str, targets: list[dict], row: dict, profile: Profile, seed: int) -> list[dict]:
    if not targets:
        return []
    templates = load_template_set(profile.tasks[task].template_set)
    rng = seeded_rng(seed, profile.name, task, templates.version, row["image_key"])
    rows = []
    for target in targets:
        template = templates.pick(kind, rng)
        rows.append(
            instruction_row(
                profile=profile.name,
                task=task,
                row=row,
                variant=f"{kind}:{target['finding']}",
                conversations=render(template, finding=finding_phrase(target["finding"]), answer=target["answer"]),
                target=target,
                template_id=template.id,
            )
        )
    return rows


def generate_severity(row: dict, profile: Profile, seed: int) -> list[dict]:
    return _rows(SEVERITY, "severity", severity_answers(row), row, profile, seed)


def generate_location(row: dict, profile: Profile, seed: int) -> list[dict]:
    if not is_frontal(row["view"]):
        return []
    return _rows(LOCATION, "location", location_answers(row), row, profile, seed)


TASKS = (
    Task(name=SEVERITY, unit="image", template_sets=("attributes_imt",), generate=generate_severity),
    Task(name=LOCATION, unit="image", template_sets=("attributes_imt",), generate=generate_location),
)
