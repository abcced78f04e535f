"""The synthetic corpus (``cxr-instruct synth``): one case model, the native layouts of the six
sources and of the two VQA datasets about MIMIC images.

``generate(out, studies, seed)`` writes under ``out``::

    build.yaml              relative roots of every source (schemas/config.py resolves them)
    SYNTHETIC_TRUTH.json    the truth the tests check the pipeline against (not a native file)
    mimic-cxr/  vindr-cxr/  chexmask/  siim-acr/  chest-imagenome/  padchest/
    mimic-cxr-vqa/  medical-diff-vqa/       (pipelines/synth/vqa_datasets.py)

``studies`` is the number of MIMIC studies; VinDr, SIIM and PadChest get ``max(5, studies)``
cases each (PadChest cases may add a lateral image). Output is byte-identical for the same
``(studies, seed)``: all randomness is seeded from SHA-256 hashes of record keys, gzip headers
carry mtime 0, DICOM UIDs derive from hashes, and nothing records the time of the run.

``SYNTHETIC_TRUTH.json`` keys:

- ``seed``, ``studies``: the arguments.
- ``images``: image key (``mimic/<dicom_id>``, ``vindr/<image_id>``, ``siim/<SOPInstanceUID>``,
  ``padchest/<ImageID>``) -> entry with
    - ``source``, ``subject_id`` (None for VinDr; the SIIM PatientID UUID; the PadChest PatientID),
      ``study_id`` (None for VinDr), ``view`` (``PA``/``AP``/``LATERAL``), ``width``, ``height``;
    - ``split``: the official split for MIMIC (``train``/``validate``/``test``, spelled as MIMIC-CXR's
      split file spells it; the build names the output split ``validation``) and VinDr
      (``train``/``test``); None for SIIM and PadChest, which the pipeline splits by patient;
    - ``findings``: ``{CheXpert-14 name: 1 | 0 | -1}`` for the names the case states (MIMIC: the
      report states them in FINDINGS and IMPRESSION alike; ``No Finding`` is only ever 1);
    - ``finding_details``: name -> ``{presence, laterality, zone, severity, change, detail}`` of the
      case's findings (MIMIC: every stated one; VinDr and PadChest: the positive ones; SIIM: the
      pneumothorax): the patient's side (``right``/``left``/``bilateral``), severity 1..3, the change
      against the prior study, and the device of Support Devices;
    - ``ctr``, ``ctr_band`` (``normal``/``mild``/``moderate``/``severe``), measured on the lung and
      heart masks the corpus writes; None for lateral images;
    - ``chexmask``: None, or ``{"dice_rca_mean": float, "passes": bool}`` (passes = mean >= 0.7);
    - ``imagenome``: whether a scene graph exists; ``imagenome_gold``: listed in images_to_avoid;
    - ``lesion_boxes``: finding -> ``[[x1, y1, x2, y2], ...]`` in original pixels, exclusive ends
      (None for lateral images);
    - per source extras: MIMIC ``study_date``, ``study_time`` (HHMMSS.fff), ``study_order``,
      ``photometric``, ``imagenome_split``; VinDr ``photometric``, ``transfer_syntax``; SIIM
      ``pneumothorax_components``, ``pneumothorax_area``; PadChest ``image_dir``, ``labels_missing``;
    - ``planted_phi``: the fake identifying values planted in the image's DICOM header and report
      header, each ``{"in", "field", "value"}`` (pipelines/synth/phi.py); no output may contain one.
- ``patients``: ``"<source>/<subject_id>"`` -> study ids in time order (MIMIC, SIIM, PadChest).
- ``mimic_cxr_vqa``: ``questions``, one entry per question written, in file order: ``file``
  (``dataset/<split>.json``), ``idx``, ``image`` (its image key), ``subject_id``, ``study_id``,
  ``split`` (as written: ``train``/``valid``/``test``), ``mimic_split``, ``content_type``,
  ``semantic_type``, ``template_program``, ``question``, ``answer`` (the list as written), ``facts``
  (the scene-graph statements ``{region, attribute, stated}`` or ``{view}`` the answer rests on) and
  ``expected`` (None, or the ``{stage, reason}`` that filters it: ``split``/``vqa-split-differs``,
  ``tasks``/``empty-answer``); ``split_differs``: the subject ids whose questions sit in another split
  than MIMIC's.
- ``mimic_diff_vqa``: ``questions``, one entry per ``mimic_pair_questions.csv`` row: ``file``, ``row``
  (1-based data row), ``study_id``, ``ref_id``, ``image`` and ``reference_image`` (the image keys
  mimic_all.csv gives them), ``subject_id``, ``split`` (``train``/``val``/``test``), ``mimic_split``,
  ``question_type``, ``question``, ``answer``, ``facts`` (the findings, view or difference
  ``{added, missing, levels, changes}`` the answer rests on) and ``expected`` (``split``/
  ``vqa-split-differs``, or ``tasks``/``reference-not-earlier`` for the reversed pair's difference
  row); ``reversed_pairs``: ``{study_id, ref_id, image, reference_image}`` of the pair written with a
  later reference; ``split_differs``: as above; ``studies``: study id -> its mimic_all image key.
- with ``faults=True`` (``synth --faults``) also ``faults`` and ``faulted``: every planted bad input with
  its file, row, expected reject key, stage and reason, and the images and annotations the faults
  lose (see :mod:`pipelines.synth.faults`; the kinds are ``manifests/faults.yaml``). ``images`` still
  describes the clean cases.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml

from pipelines.synth import chexmask, imagenome, mimic, padchest, siim, vindr, vqa_datasets
from pipelines.synth.cases import make_image_cases, make_mimic_patients
from pipelines.synth.faults import NotEnoughVictims
from pipelines.synth.faults import inject as inject_faults

SOURCE_ROOTS = {
    "mimic": "mimic-cxr",
    "vindr": "vindr-cxr",
    "chexmask": "chexmask",
    "siim": "siim-acr",
    "imagenome": "chest-imagenome",
    "padchest": "padchest",
    "mimic_cxr_vqa": "mimic-cxr-vqa",
    "mimic_diff_vqa": "medical-diff-vqa",
}
TRUTH_FILE = "SYNTHETIC_TRUTH.json"


def _prepare(out: Path) -> None:
    """Create ``out``; clear a previous synthetic corpus there, refuse any other non-empty folder."""
    out.mkdir(parents=True, exist_ok=True)
    if not any(out.iterdir()):
        return
    if not (out / TRUTH_FILE).exists():
        raise FileExistsError(f"{out} is not empty and holds no synthetic corpus; choose an empty folder")
    _clear(out)


def _clear(out: Path) -> None:
    for name in SOURCE_ROOTS.values():
        if (out / name).exists():
            shutil.rmtree(out / name)


def _build_yaml(seed: int) -> str:
    config = {"seed": seed, "image_size": 512, "sources": {name: {"root": root} for name, root in SOURCE_ROOTS.items()}}
    return yaml.safe_dump(config, sort_keys=False)


def generate(out: str | Path, studies: int = 40, seed: int = 0, faults: bool = False) -> Path:
    """Write the synthetic corpus of every source, ``build.yaml`` and the truth file; returns ``out``.

    With ``faults``, one bad input of every kind in ``manifests/faults.yaml`` is then planted in the
    native files (:mod:`pipelines.synth.faults`) and listed in the truth file."""
    if studies < 1:
        raise ValueError(f"studies must be at least 1, got {studies}")
    out = Path(out)
    _prepare(out)
    patients = make_mimic_patients(studies, seed)
    others = max(5, studies)
    images, mimic_frontals = mimic.write(out / SOURCE_ROOTS["mimic"], patients, seed)
    vindr_images, vindr_frontals = vindr.write(
        out / SOURCE_ROOTS["vindr"], make_image_cases("vindr", others, seed), seed
    )
    siim_images = siim.write(out / SOURCE_ROOTS["siim"], make_image_cases("siim", others, seed), seed)
    padchest_images, padchest_frontals = padchest.write(
        out / SOURCE_ROOTS["padchest"], make_image_cases("padchest", others, seed), seed
    )
    images.update(vindr_images)
    images.update(siim_images)
    images.update(padchest_images)
    masks = chexmask.write(
        out / SOURCE_ROOTS["chexmask"],
        {"MIMIC-CXR-JPG": mimic_frontals, "VinDr-CXR": vindr_frontals, "Padchest": padchest_frontals},
        seed,
    )
    for key, entry in masks.items():
        images[key]["chexmask"] = entry
    for key, entry in imagenome.write(out / SOURCE_ROOTS["imagenome"], patients, mimic_frontals, seed).items():
        images[key].update(entry)
    truth = {"seed": seed, "studies": studies, "images": images, "patients": _patients(patients, images)}
    truth.update(vqa_datasets.write(out, SOURCE_ROOTS, patients, images, seed))
    if faults:
        try:
            truth.update(inject_faults(out, SOURCE_ROOTS, images, seed, questions=truth))
        except NotEnoughVictims:
            _clear(out)  # no half-faulted corpus without its truth file
            raise
    (out / TRUTH_FILE).write_text(json.dumps(truth, indent=1, sort_keys=True) + "\n")
    (out / "build.yaml").write_text(_build_yaml(seed))
    return out


def _patients(patients: list, images: dict[str, dict]) -> dict[str, list[str]]:
    """``"<source>/<subject_id>"`` -> study ids in time order (SIIM and PadChest in generation order)."""
    timeline = {f"mimic/{p.subject_id}": [s.study_id for s in p.studies] for p in patients}
    for entry in images.values():
        if entry["source"] in ("siim", "padchest"):
            studies = timeline.setdefault(f"{entry['source']}/{entry['subject_id']}", [])
            if entry["study_id"] not in studies:
                studies.append(entry["study_id"])
    return timeline
