"""``cxr-instruct hydrate RECIPE --sources build.yaml --out OUT``: rebuild a recipe's build from your copies.

Three steps, each with one account:

1. **Inputs.** Every file each of your sources' read plans reads is hashed and compared with the
   recipe's ``inputs/<source>.sha256``: the source's anchors (its tables) by their SHA-256 first, then,
   with the key their bytes give, every other file by its sealed SHA-256. Per source the files that
   match, are missing, changed or extra (named), and whether it looks like another release of the
   dataset; an anchor that differs is said first (another release or a modified copy), and the other
   files, whose seals need it, are then named only when missing or extra (never called changed). A source the recipe has
   and your build.yaml does not is absent: hydration is partial. A source whose plan cannot be made
   (a required file missing) stops here (exit 2), as ``build`` would.
2. **Build.** The recipe's config with your roots (and your tokenizer and translation model folders),
   your sources only, run by the build's own entry point (pipelines/beam/build.py ``run_build``: the same
   Beam graph, lock, resume and summary as ``cxr-instruct build``).
3. **Verify.** Every output file against the recipe's SHA-256 and rows; every image's rows, table by
   table, against the recipe's sealed digests (pipelines/tools/recipe.py), so what a partial build or a
   changed file leaves intact is verified row by row even where shards mix sources. Each mismatch is
   explained: the rows rest on a source you lack, carry the severity score fitted over reports you lack,
   come from a named input file that differs, or (if none of that) it is unexplained. The outcome goes
   to ``OUT/hydrate.json`` (per output file, per table, per reason with the images it costs) and to
   ``manifest.json`` (``hydration``), recorded among the manifest's files so ``verify`` checks it.

Exit status: 0 when the build is byte-identical to the recipe's, or when it is partial and everything
your sources make matches; 1 when something your sources make differs (a changed input, other library
versions, or unexplained); 2 when hydration cannot start (a whole-input problem, one line each).
"""

from __future__ import annotations

import json
import re
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyarrow.parquet as pq
import yaml

from pipelines.output.atomic import write_bytes_atomically
from pipelines.output.manifest import LISTING_THREADS, Manifest, input_files, record_view_files, versions
from pipelines.tools.recipe import (
    Recipe,
    RecipeError,
    Sealed,
    digest_files,
    group_of,
    hex64,
    input_key,
    is_sealed,
    open_rests_on,
    read_recipe,
    runtime_versions,
    seal_build,
    seal_input,
    severity_digest,
)
from schemas.config import BuildConfig, check_config
from schemas.records import IMAGE_SOURCES
from transforms import io

FILE = "hydrate.json"
EXAMPLES = 5
"""Files and images named per line of the terminal account (hydrate.json names them all)."""


# ------------------------------------------------------------------ config


def hydration_config(recipe: Recipe, user: BuildConfig, user_path: str) -> tuple[BuildConfig, list[str], list[str]]:
    """The recipe's config with the user's roots and model folders, only the sources both name; the
    recipe's sources the user lacks; notes on what of the user's file is not used."""
    doc = json.loads(json.dumps(recipe.doc["config"]))
    wanted = {name for name, source in doc["sources"].items() if source.get("enabled", True)}
    mine = user.enabled_sources()
    present = sorted(wanted & set(mine))
    absent = sorted(wanted - set(mine))
    notes = [f"{user_path}: sources.{name} is not in the recipe; left out" for name in sorted(set(mine) - wanted)]
    doc["sources"] = {name: {"root": mine[name].root, "enabled": True} for name in present}
    if doc.get("tokenizer"):
        if user.tokenizer is None:
            doc["tokenizer"] = None
            notes.append(
                f"{user_path}: no tokenizer: vq/ is not built (the recipe's tokenizer is "
                f"{(recipe.doc.get('tokenizer') or {}).get('id', '?')})"
            )
        else:
            doc["tokenizer"]["model"] = user.tokenizer.model
            doc["tokenizer"]["vocabulary"] = user.tokenizer.vocabulary if doc["tokenizer"].get("vocabulary") else None
            doc["tokenizer"]["device"] = user.tokenizer.device
    if doc.get("translation") and "padchest" not in present:
        doc["translation"] = None  # only PadChest's reports are translated
    if doc.get("translation"):
        if user.translation is None:
            raise RecipeError(
                f"{user_path}: the recipe translates PadChest reports with "
                f"{recipe.doc['translation'].get('model')!r}: add translation: {{model: <folder>}}"
            )
        doc["translation"]["model"] = user.translation.model
        doc["translation"]["device"] = user.translation.device
    written = yaml.safe_load(Path(user_path).read_text()) if Path(user_path).is_file() else {}
    settings = sorted(set(written or {}) - {"sources", "tokenizer", "translation"})
    if settings:
        notes.append(f"{user_path}: {', '.join(settings)}: the recipe's settings are used, not these")
    return BuildConfig.model_validate(doc), absent, notes


# ------------------------------------------------------------------ inputs


@dataclass
class SourceCheck:
    """One source's inputs against the recipe's (paths relative to its root): its anchors by their plain
    SHA-256, every other file by its seal, which needs the key the anchors give."""

    name: str
    files: int  # in the recipe
    matched: int = 0
    missing: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    problem: str | None = None  # the read plan's whole-input error
    another_release: bool = False
    unused: list[str] = field(default_factory=list)  # recipe files this build does not read (sources left out)
    anchors_differ: list[str] = field(default_factory=list)  # anchors missing or changed: no key, files unchecked
    unchecked: list[str] = field(default_factory=list)  # present files whose seals cannot be checked without it

    @property
    def differs(self) -> bool:
        return bool(self.missing or self.changed or self.extra or self.problem or self.unchecked)


def _reader(plan) -> Callable[[str], bool]:
    """Whether ``plan`` reads a file at this path when it is there: a table it names, or a path one of
    its listing patterns matches (Beam's glob syntax, as transforms.io.match reads it)."""
    from apache_beam.io.filesystem import FileSystem

    tables = {table.path for table in plan.tables}
    patterns = [
        re.compile(FileSystem.translate_pattern(pattern)).match
        for listing in plan.listings
        for pattern in listing.patterns()
    ]
    return lambda path: path in tables or any(match(path) for match in patterns)


def _stem(path: str) -> str:
    return re.sub(r"\d+", "#", path)


def check_inputs(recipe: Recipe, config: BuildConfig) -> dict[str, SourceCheck]:
    """Hash the files each present source's read plan reads and compare them with the recipe's: the
    anchors by SHA-256 first (read wherever they are, also when the plan does not read one: the key
    needs them all); with every anchor as the recipe's, each other file by its seal; without, those
    files are named only when missing or extra, never called changed."""
    from transforms.sources import reader

    sources = config.enabled_sources()
    image_sources = tuple(name for name in IMAGE_SOURCES if name in sources)
    checks = {}
    for name in sorted(sources):
        listing = recipe.inputs(name)
        expected = listing.paths()
        check = SourceCheck(name=name, files=len(expected))
        root = sources[name].root
        try:
            plan = reader(name).plan(root, image_sources)
        except (FileNotFoundError, ValueError, OSError) as unusable:
            check.problem = str(unusable).splitlines()[0]
            paths = [io.join(root, rel) for rel in sorted(expected) if io.exists(io.join(root, rel))]
        else:
            paths = sorted(input_files({name: plan})[name])
            reads = _reader(plan)
            listed_rel = {io.relative(path, root) for path in paths}
            check.unused = sorted(rel for rel in expected if rel not in listed_rel and not reads(io.join(root, rel)))
            expected -= set(check.unused)
            check.files = len(expected)
        anchors = {io.join(root, rel) for rel in listing.anchors}
        extra_anchors = sorted(path for path in anchors - set(paths) if io.exists(path))  # read for the key only
        found, parts = digest_files(paths + extra_anchors, anchors & {*paths, *extra_anchors}, LISTING_THREADS)
        listed = {io.relative(path, root): found[path] for path in paths}
        mine = {io.relative(path, root): digest for path, digest in found.items() if path in anchors}
        keyless = sorted(rel for rel, digest in listing.anchors.items() if mine.get(rel) != digest)
        key = None if keyless else input_key(name, {io.relative(path, root): part for path, part in parts.items()})
        check.anchors_differ = [rel for rel in keyless if rel in expected]
        matched: list[str] = []
        changed: list[str] = []
        for rel, digest in listed.items():
            if rel in listing.anchors and rel in expected:
                (matched if listing.anchors[rel] == digest else changed).append(rel)
            elif rel in listing.sealed and rel in expected:
                if key is None:
                    check.unchecked.append(rel)
                else:
                    (matched if seal_input(key, rel, digest) == listing.sealed[rel] else changed).append(rel)
        check.matched, check.changed, check.unchecked = len(matched), sorted(changed), sorted(check.unchecked)
        check.missing = sorted(expected - set(listed))
        check.extra = sorted(set(listed) - listing.paths()) if check.problem is None else []
        renamed = {_stem(rel) for rel in check.missing} & {_stem(rel) for rel in check.extra}
        check.another_release = (
            bool(check.anchors_differ)
            or bool(renamed)
            or (check.files > 0 and check.matched < (check.files - len(check.unchecked)) / 2)
        )
        checks[name] = check
    return checks


def _some(paths: list[str]) -> str:
    shown = ", ".join(paths[:EXAMPLES])
    return shown + (f", ... ({len(paths)} in all)" if len(paths) > EXAMPLES else "")


def anchor_account(recipe: Recipe, check: SourceCheck) -> str:
    """One line: which anchor differs, what that most likely means, and what it leaves unchecked."""
    entry = recipe.sources[check.name]
    release = f" {entry['release']}" if entry.get("release") else ""
    states = [f"{rel} ({'missing' if rel in check.missing else 'differs'})" for rel in check.anchors_differ]
    unchecked = (
        f"; so its other {len(check.unchecked)} files cannot be checked one by one (their SHA-256s are "
        f"sealed with a key these tables give) and none of them is called changed"
        if check.unchecked
        else ""
    )
    return (
        f"anchor {_some(states)}: another release of {entry['name']} than the recipe's{release}, or a modified "
        f"copy{unchecked}"
    )


def input_lines(recipe: Recipe, checks: dict[str, SourceCheck], absent: list[str]) -> list[str]:
    lines = []
    for name in sorted([*checks, *absent]):
        entry = recipe.sources[name]
        if name in absent:
            images = f"its {entry['images']:,} images and " if entry["images"] else ""
            lines.append(f"  {name:<15} not in your build.yaml: {images}the rows resting on it are not built")
            continue
        check = checks[name]
        if check.problem:
            lines.append(f"  {name:<15} cannot be read: {check.problem}")
        if check.anchors_differ:
            lines.append(f"  {name:<15} {anchor_account(recipe, check)}")
        elif check.unchecked:
            lines.append(
                f"  {name:<15} {len(check.unchecked)} files cannot be checked one by one: an anchor they "
                f"need serves only sources you left out and is not in your copy"
            )
        parts = [
            f"{label} {len(paths)} ({_some(paths)})"
            for label, paths in (("missing", check.missing), ("changed", check.changed), ("extra", check.extra))
            if paths
        ]
        if check.unchecked:
            parts.append(f"not checkable {len(check.unchecked)}")
        state = "all match" if not parts else "; ".join(parts)
        unused = f" ({len(check.unused)} more serve only sources you left out)" if check.unused else ""
        lines.append(f"  {name:<15} {check.matched}/{check.files} files match the recipe's: {state}{unused}")
        if check.another_release and check.differs and not check.anchors_differ:
            release = f" {entry['release']}" if entry.get("release") else ""
            lines.append(f"  {'':<15} this looks like another release of {entry['name']} than the recipe's{release}")
    return lines


# ------------------------------------------------------------------ verification


@dataclass
class Reason:
    kind: str  # absent | severity | file | shared | tokenizer | versions | unexplained | not-in-recipe | not-built
    text: str
    expected: bool  # a consequence of leaving sources out, not a difference
    images: set[str] = field(default_factory=set)
    rows: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # group -> rows on those images
    needs: tuple[str, ...] = ()  # kind "absent": the sources left out that these rows rest on


def _files_of(key_ids: tuple[str, ...], check: SourceCheck) -> list[str]:
    """The changed or missing files of a source whose path names one of an image's ids."""
    tokens = [token for token in key_ids if len(token) >= 6]
    return [rel for rel in [*check.changed, *check.missing] if any(token in rel for token in tokens)]


def _unchecked_of(key_ids: tuple[str, ...], check: SourceCheck | None) -> str | None:
    """Why an image's own files could not be checked (its source's anchors differ), when that is so."""
    if check is None or not check.unchecked:
        return None
    tokens = [token for token in key_ids if len(token) >= 6]
    files = [rel for rel in check.unchecked if any(token in rel for token in tokens)]
    if not files:
        return None
    cause = (
        f"{_some(check.anchors_differ)} differing (another release or a modified copy)"
        if check.anchors_differ
        else "an anchor they need is not in your copy"
    )
    return f"{_some(files)} cannot be checked one by one, {cause}"


def verify_hydration(
    recipe: Recipe,
    out_dir: str,
    config: BuildConfig,
    checks: dict[str, SourceCheck],
    absent: list[str],
    other_versions: list[str],
) -> dict:
    """Everything :data:`FILE` holds: per output file, per table, per reason; and the outcome."""
    manifest = Manifest.read(out_dir)
    doc = recipe.doc
    built = {entry["path"]: entry for entry in manifest["outputs"]}
    expected_entries = {entry["path"]: entry for entry in doc["outputs"]}
    sealed = seal_build(out_dir, manifest)  # hashes every output file's bytes itself: the manifest's word is not taken
    identical = {
        path
        for path, entry in expected_entries.items()
        if path in sealed.sealed_sha256 and sealed.sealed_sha256[path] == entry["sealed_sha256"]
    }
    recipe_sealed = recipe.sealed()
    recipe_keys = {name: set(recipe.image_keys(name)) for name in recipe.sources}
    idf_differs = doc.get("severity_idf_sha256") != severity_digest(manifest.get("severity_idf"))
    vq_missing = bool(doc.get("tokenizer")) and config.tokenizer is None
    tokenizer_differs = (
        bool(doc.get("tokenizer"))
        and config.tokenizer is not None
        and (doc["tokenizer"] or {}).get("id") != manifest.get("tokenizer")
    )
    reasons: dict[str, Reason] = {}
    why: dict[tuple[int, int], str] = {}  # (image, group) that does not verify -> its reason's text
    verified: set[tuple[int, int]] = set()
    matched_tags = set()

    unbuilt: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    # (group, source) -> reason text -> images whose recipe rows in that group were not built here

    def blame(
        kind: str,
        text: str,
        expected: bool,
        key: str,
        at: tuple[int, int] | None,
        needs: tuple[str, ...] = (),
        group: str | None = None,
    ) -> None:
        reasons.setdefault(text, Reason(kind, text, expected, needs=needs)).images.add(key)
        if at is not None:
            why[at] = text
        if group is not None and (at is None or not sealed.present[at]):
            unbuilt[(group, sealed.source[key])][text] += 1

    for i, key in enumerate(sealed.keys):
        source = sealed.source[key]
        tag = hex64(int(sealed.tags[i]))
        entry = recipe_sealed.get(tag)
        groups = [g for g in range(len(sealed.groups)) if sealed.present[i, g]]
        if entry is None:
            if key not in recipe_keys.get(source, set()):
                text, kind = (
                    (f"{source}: images the recipe's build did not write (extra input files, or another release)"),
                    "not-in-recipe",
                )
            else:
                files = _files_of(sealed.ids[key], checks[source]) if source in checks else []
                unchecked = _unchecked_of(sealed.ids[key], checks.get(source))
                text, kind = (
                    (f"{source}: the image itself differs: {', '.join(files)} changed", "file")
                    if files
                    else (f"{source}: the image itself differs: {unchecked}", "file")
                    if unchecked
                    else (
                        f"{source}: the image itself differs from the recipe's, every input file of it "
                        f"matching (unexplained: please report it)",
                        "unexplained",
                    )
                )
            for g in groups:
                blame(kind, text, False, key, (i, g))
            continue
        matched_tags.add(tag)
        rests_on = open_rests_on(sealed.secrets[key], entry.rests_on)
        for group in sorted(set(entry.digests) | {sealed.groups[g] for g in groups}):
            column = sealed.groups.index(group) if group in sealed.groups else None
            at = (i, column) if column is not None else None
            theirs = entry.digests.get(group)
            if theirs is None and (column is None or column not in groups):
                continue  # a folder the recipe has not, and no rows of this image in it
            if hex64(sealed.seal_of(i, group)) == theirs:
                if at is not None and sealed.present[at]:
                    verified.add(at)
                continue
            if group == "vq" and vq_missing:
                continue
            lacking = sorted(set(rests_on) & set(absent))
            own = [
                f"{name}:{rel}"
                for name in rests_on
                if name in checks
                for rel in _files_of(sealed.ids[key], checks[name])
            ]
            shared = [
                f"{name}:{rel}"
                for name in rests_on
                if name in checks
                for rel in [*checks[name].changed, *checks[name].missing]
            ]
            if lacking:
                blame(
                    "absent",
                    f"rows resting on {', '.join(lacking)}, which your build.yaml leaves out",
                    True,
                    key,
                    at,
                    tuple(lacking),
                    group,
                )
            elif idf_differs and at in sealed.severity:
                report_sources = sorted(set(absent) & {"mimic", "padchest"})
                blame(
                    "severity",
                    "rows carrying MediVLM's severity score, whose IDF is fitted over every train "
                    "report of the build"
                    + (
                        f" (yours lack {', '.join(report_sources)})"
                        if report_sources
                        else " (your reports differ: see the changed files)"
                    ),
                    bool(report_sources) and not any(check.differs for check in checks.values()),
                    key,
                    at,
                    group=group,
                )
            elif group == "vq" and tokenizer_differs:
                blame(
                    "tokenizer",
                    f"vq rows: your tokenizer is {manifest.get('tokenizer')}, the recipe's "
                    f"{doc['tokenizer'].get('id')}",
                    False,
                    key,
                    at,
                    group=group,
                )
            elif own:
                blame(
                    "file",
                    f"{source}: rows of images whose own files differ ({', '.join(own[:EXAMPLES])})",
                    False,
                    key,
                    at,
                    group=group,
                )
            elif shared:
                blame(
                    "shared",
                    f"rows resting on files that differ ({', '.join(shared[:EXAMPLES])}"
                    f"{', ...' if len(shared) > EXAMPLES else ''})",
                    False,
                    key,
                    at,
                    group=group,
                )
            elif other_versions:
                blame(
                    "versions",
                    f"rows made with other library versions ({', '.join(other_versions)})",
                    False,
                    key,
                    at,
                    group=group,
                )
            else:
                blame(
                    "unexplained",
                    f"{source}: rows that differ with every input of theirs matching the recipe "
                    f"(unexplained: please report it)",
                    False,
                    key,
                    at,
                    group=group,
                )
    built_keys = set(sealed.keys)
    for name, keys in sorted(recipe_keys.items()):
        if name in absent:
            continue  # counted under "left_out"
        for key in sorted(keys - built_keys):
            files = _files_of((key.split("/", 1)[1],), checks[name]) if name in checks else []
            unchecked = _unchecked_of((key.split("/", 1)[1],), checks.get(name))
            if files:
                blame(
                    "file",
                    f"{name}: images not built: {', '.join(files[:EXAMPLES])} missing or changed",
                    False,
                    key,
                    None,
                )
            elif unchecked:
                blame("file", f"{name}: images not built: {unchecked}", False, key, None)
            else:
                blame(
                    "unexplained",
                    f"{name}: images not built, their files matching (unexplained: please report it)",
                    False,
                    key,
                    None,
                )
    shard_reasons: dict[str, set[str]] = defaultdict(set)
    tables = _table_rows(out_dir, manifest, sealed, verified, identical, why, reasons, doc, shard_reasons)
    for (group, source), texts in sorted(unbuilt.items()):  # rows of the recipe's not built here at all
        entry = tables.get(group)
        missing = entry["recipe"].get(source, 0) - entry["built"].get(source, 0) if entry else 0
        if missing > 0:  # to the reason of most of those images (an absent source first)
            text = max(texts, key=lambda t: (reasons[t].kind == "absent", texts[t], t))
            reasons[text].rows[group] += missing
    left_out = {}
    for name in absent:
        own_rows = {group: entry["recipe"][name] for group, entry in tables.items() if name in entry["recipe"]}
        needing: dict[str, int] = defaultdict(int)
        for reason in reasons.values():
            if reason.kind == "absent" and name in reason.needs:
                for group, n in reason.rows.items():
                    needing[group] += n
        left_out[name] = {
            "images": len(recipe_keys.get(name, ())),
            "rows": own_rows,
            "rows_of_other_sources": dict(sorted(needing.items())),
        }
    shards = []
    for path, entry in sorted(expected_entries.items()):
        state = "verified" if path in identical else ("differs" if path in built else "not built")
        shard_why: str | None = None
        if state != "verified":
            lacking = sorted(set(entry.get("sources", {})) & set(absent))
            found = sorted(shard_reasons.get(path, ()))
            shard_why = "; ".join(
                [*([f"holds rows of {', '.join(lacking)}, not in your build"] if lacking else []), *found]
            ) or ("no rows of it were built" if state == "not built" else "its rows all verify, its bytes differ")
        shards.append({"path": path, "rows": entry["rows"], "state": state, "why": shard_why})
    extra_shards = sorted(set(built) - set(expected_entries))
    files_state = []
    for entry in doc["files"]:  # hashed here, as the output files are
        path = io.join(out_dir, entry["path"])
        mine = io.sha256_of(path) if io.exists(path) else None
        files_state.append(
            {
                "path": entry["path"],
                "state": "verified" if mine == entry["sha256"] else ("differs" if mine else "not built"),
            }
        )
    files_identical = (
        len(identical) == len(expected_entries)
        and not extra_shards
        and all(f["state"] == "verified" for f in files_state)
    )
    differences = [r for r in reasons.values() if not r.expected]
    if differences:  # a row that differs wins over anything the files say
        outcome = "differs"
    elif files_identical:
        outcome = "byte-identical"
    elif any(check.differs for check in checks.values()):
        outcome = "differs"
    elif absent or vq_missing:
        outcome = "partial-verified"
    else:  # every row matches, yet files differ and every source is there
        outcome = "differs"
        differing = (
            [s["path"] for s in shards if s["state"] != "verified"]
            + [f["path"] for f in files_state if f["state"] != "verified"]
            + extra_shards
        )
        text = (
            f"{_count(len(differing), 'output file')} differ byte for byte though every row matches "
            f"({_some(differing)}): made by another revision of cxr-instruct than the recipe's "
            f"{doc['versions'].get('cxr-instruct')}, or with other library versions"
        )
        reasons[text] = Reason("versions", text, False)
    return {
        "recipe": {"folder": str(recipe.folder), "sha256": recipe.sha256},
        "outcome": outcome,
        "byte_identical": outcome == "byte-identical",
        "sources": {"present": sorted(checks), "absent": absent},
        "left_out": left_out,
        "versions_differ": other_versions,
        "inputs": {name: asdict(check) for name, check in sorted(checks.items())},
        "shards": {
            "verified": len(identical),
            "in_recipe": len(shards),
            "rows_in_verified": sum(s["rows"] for s in shards if s["state"] == "verified"),
            "files": shards,
            "not_in_recipe": extra_shards,
        },
        "files": files_state,
        "images": {
            "in_recipe": sum(len(keys) for keys in recipe_keys.values()),
            "built": len(sealed.keys),
            "in_recipe_and_built": len(matched_tags),
        },
        "tables": tables,
        "reasons": [
            {
                "kind": r.kind,
                "text": r.text,
                "expected": r.expected,
                "images": len(r.images),
                "rows": dict(sorted(r.rows.items())),
                "image_keys": sorted(r.images),
            }
            for r in sorted(reasons.values(), key=lambda r: (r.expected, -len(r.images), r.text))
        ],
    }


def _key_column(out_dir: str, path: str) -> list[list[str]]:
    with io.open_file(io.join(out_dir, path)) as handle:
        parquet = pq.ParquetFile(handle)
        column = "image_keys" if "image_keys" in parquet.schema_arrow.names else "image_key"
        values = parquet.read(columns=[column]).column(column).to_pylist()
    return values if column == "image_keys" else [[value] for value in values]


def _table_rows(
    out_dir: str,
    manifest: dict,
    sealed: Sealed,
    verified: set,
    identical: set,
    why: dict,
    reasons: dict,
    doc: dict,
    shard_reasons: dict[str, set[str]],
) -> dict:
    """Per sealed table folder: rows in the recipe, built here and verified, each per source. A row is
    verified when its file is byte-identical to the recipe's, or when the sealed digest of one of its
    images' rows in that folder matches; a row that is not adds to the rows of its image's reason."""
    position = sealed.index()
    recipe_rows: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for entry in doc["outputs"]:
        if is_sealed(entry["table"]):
            for source, n in entry.get("sources", {}).items():
                recipe_rows[group_of(entry["path"])][source] += n
    built_rows: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    verified_rows: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for entry in manifest["outputs"]:
        if not is_sealed(entry["table"]):
            continue
        group = group_of(entry["path"])
        g = sealed.groups.index(group)
        for keys in _key_column(out_dir, entry["path"]):
            source = keys[0].split("/", 1)[0]
            built_rows[group][source] += 1
            places = [(position[key], g) for key in keys if key in position]
            if entry["path"] in identical or any(at in verified for at in places):
                verified_rows[group][source] += 1
                continue
            texts = [why[at] for at in places if at in why]
            if texts:
                reasons[texts[0]].rows[group] += 1
                shard_reasons[entry["path"]].add(texts[0])
    return {
        group: {
            "recipe": dict(sorted(recipe_rows[group].items())),
            "built": dict(sorted(built_rows[group].items())),
            "verified": dict(sorted(verified_rows[group].items())),
        }
        for group in sorted(set(recipe_rows) | set(built_rows))
    }


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}" + ("" if n == 1 else "s")


def account_lines(report: dict) -> list[str]:
    """The terminal account of a verification."""
    shards = report["shards"]
    lines = [
        f"output files: {shards['verified']} of {shards['in_recipe']} byte-identical to the recipe's "
        f"({shards['rows_in_verified']:,} rows in them)"
    ]
    not_ok = [s for s in shards["files"] if s["state"] != "verified"]
    for state in ("differs", "not built"):
        some = [s for s in not_ok if s["state"] == state]
        if some:
            lines.append(
                f"  {state}: {len(some)} ({sum(s['rows'] for s in some):,} rows in the recipe's): "
                f"{_some([s['path'] for s in some])}"
            )
    if shards["not_in_recipe"]:
        lines.append(f"  not in the recipe: {_some(shards['not_in_recipe'])}")
    for shard in not_ok[:EXAMPLES]:
        lines.append(f"    {shard['path']}: {shard['why']}")
    lines.append("rows, checked image by image against the sealed digests (verified / built here / in the recipe):")
    for group, entry in report["tables"].items():
        recipe_n = sum(entry["recipe"].values())
        built_n = sum(entry["built"].values())
        verified_n = sum(entry["verified"].values())
        mark = (
            ""
            if verified_n == recipe_n
            else "  <- "
            + ", ".join(
                f"{source} {entry['verified'].get(source, 0)}/{n}"
                for source, n in entry["recipe"].items()
                if entry["verified"].get(source, 0) != n
            )
        )
        lines.append(f"  {group:<52} {verified_n:>7,} / {built_n:>7,} / {recipe_n:>7,}{mark}")
    whole: list[str] = []
    part: list[str] = []
    none: list[str] = []
    for group, entry in report["tables"].items():
        if group.startswith("instructions/"):
            verified_n, recipe_n = sum(entry["verified"].values()), sum(entry["recipe"].values())
            task = group.removeprefix("instructions/")
            (whole if verified_n == recipe_n else part if verified_n else none).append(task)
    if part or none:
        lines.append(
            f"tasks verified whole: {len(whole)} ({_some(whole)}); in part: {len(part)} ({_some(part)}); "
            f"with no verified row: {len(none)}"
        )
    for name, entry in report["left_out"].items():
        instructions = sum(n for group, n in entry["rows"].items() if group.startswith("instructions/"))
        others = sum(n for group, n in entry["rows_of_other_sources"].items() if group.startswith("instructions/"))
        if entry["images"]:
            lines.append(
                f"left out: {name}: {entry['images']} images and {instructions:,} instruction rows on them "
                f"(they need {name})"
            )
        if others:
            lines.append(
                f"left out: {name}: {others:,} instruction rows on images of your sources that rest on "
                f"{name} (they need it)"
            )
    if report["reasons"]:
        lines.append("why rows are not verified:")
        for reason in report["reasons"]:
            rows = sum(reason["rows"].values())
            tag = "expected" if reason["expected"] else "DIFFERS"
            cost = (
                f"{_count(reason['images'], 'image')}, {_count(rows, 'row')} not verified" if reason["images"] else ""
            )
            lines.append(
                f"  [{tag}] {reason['text']}"
                + (f": {cost}" if cost else "")
                + (f" (e.g. {_some(reason['image_keys'])})" if reason["image_keys"] and not reason["expected"] else "")
            )
    outcome = report["outcome"]
    all_files = shards["in_recipe"] + len(report["files"])
    differing_files = all_files - shards["verified"] - sum(f["state"] == "verified" for f in report["files"])
    unverified = sum(
        sum(n for source, n in e["recipe"].items() if source not in report["sources"]["absent"])
        - sum(e["verified"].values())
        for e in report["tables"].values()
    )
    instructions = [entry for group, entry in report["tables"].items() if group.startswith("instructions/")]
    verified_rows = sum(sum(entry["verified"].values()) for entry in instructions)
    recipe_rows = sum(sum(entry["recipe"].values()) for entry in instructions)
    summary = {
        "byte-identical": "byte-identical: every output file is the recipe's, byte for byte",
        "partial-verified": f"partial and verified: everything your sources make matches the recipe "
        f"({verified_rows:,} of its {recipe_rows:,} instruction rows); the rest needs "
        f"{', '.join(report['sources']['absent']) or 'the tokenizer'}",
        "differs": f"DIFFERS from the recipe: {differing_files} of {all_files} files differ, "
        f"{_count(unverified, 'row')} not verified ({verified_rows:,} of its {recipe_rows:,} instruction "
        f"rows are); hydrate.json names the images of every reason",
    }[outcome]
    lines.append(f"result: {summary}")
    return lines


def mark_output(out_dir: str, report: dict) -> None:
    """Write :data:`FILE` and record it, and the outcome, in manifest.json (atomically)."""
    write_bytes_atomically(io.join(out_dir, FILE), json.dumps(report, indent=2).encode("utf-8") + b"\n")
    doc = record_view_files(out_dir, "hydrate", [FILE])
    tables = report["tables"]
    doc["hydration"] = {
        "file": FILE,
        "recipe_sha256": report["recipe"]["sha256"],
        "outcome": report["outcome"],
        "byte_identical": report["byte_identical"],
        "verified": report["outcome"] != "differs",
        "shards_verified": report["shards"]["verified"],
        "shards_in_recipe": report["shards"]["in_recipe"],
        "shards_not_verified": [s["path"] for s in report["shards"]["files"] if s["state"] != "verified"],
        "rows_verified": sum(sum(e["verified"].values()) for e in tables.values()),
        "rows_in_recipe": sum(sum(e["recipe"].values()) for e in tables.values()),
        "sources_absent": report["sources"]["absent"],
    }
    write_bytes_atomically(io.join(out_dir, Manifest.FILE), json.dumps(doc, indent=2).encode("utf-8") + b"\n")


# ------------------------------------------------------------------ the command


def version_differences(recipe: Recipe) -> list[str]:
    """The recipe's pins (the build's ``versions``, the code fingerprint among them, and the recipe's
    ``runtime``: Python, machine, further libraries) that differ here."""
    doc = recipe.doc
    here = {**versions(), **runtime_versions(bool(doc["config"].get("tokenizer") or doc["config"].get("translation")))}
    wanted_all = {**doc["versions"], **doc["runtime"]}

    def shown(name: str, value: str | None) -> str:
        return value[:12] + "..." if name == "cxr-instruct code" and value else str(value or "not installed")

    return [
        f"{name} {shown(name, wanted)} (recipe) vs {shown(name, here.get(name))} (here)"
        for name, wanted in sorted(wanted_all.items())
        if here.get(name) != wanted
    ]


def _hydrate_command():
    import click
    from rich.console import Console

    console = Console()

    def say(line: str, style: str | None = None) -> None:
        console.print(line, style=style, markup=False, highlight=False, soft_wrap=True)

    def refuse(message: str) -> None:
        for line in str(message).splitlines():
            say(f"hydrate: {line}", "red")
        raise SystemExit(2)

    @click.command("hydrate", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
    @click.argument("recipe_path", metavar="RECIPE", type=click.Path(path_type=Path))
    @click.option(
        "--sources",
        "sources_path",
        required=True,
        help="Your build.yaml: a root per source you have (tokenizer/translation model folders too).",
    )
    @click.option("--out", "out", required=True, help="Output folder (local path or gs:// URI).")
    @click.option("--runner", default="FnApiRunner", show_default=True, help="Beam runner, as for build.")
    @click.option("--workers", default=1, show_default=True, help="Local worker processes, as for build.")
    @click.option("--replace", is_flag=True, help="OUT holds a build of another config: delete its files first.")
    @click.option("--check-only", is_flag=True, help="Check your input files against the recipe; build nothing.")
    @click.option(
        "--other-versions",
        is_flag=True,
        help="Build even though installed library versions differ from the recipe's (files may differ).",
    )
    @click.option("-v", "--verbose", is_flag=True, help="Show the traceback of an error that stops the build.")
    @click.pass_context
    def hydrate(
        ctx: click.Context,
        recipe_path: Path,
        sources_path: str,
        out: str,
        runner: str,
        workers: int,
        replace: bool,
        check_only: bool,
        other_versions: bool,
        verbose: bool,
    ) -> None:
        """Rebuild a recipe's build from your own copies of its sources and verify it: inputs against the
        recipe's file hashes first, then the build with the recipe's settings and your roots, then every
        output file and every image's rows against the recipe (docs/recipes.md). Extra arguments go to Beam.

        Exit 0: byte-identical, or partial with everything your sources make verified; 1: something
        differs (hydrate.json says what, why and what it costs); 2: hydration cannot start."""
        from pipelines.beam import preflight as checks_module
        from pipelines.beam.build import run_build
        from pipelines.beam.launch import beam_arguments, print_summary, resumable_on_ctrl_c
        from pipelines.beam.progress import Progress, watching
        from pipelines.output.manifest import finished_build, input_fingerprints
        from pipelines.output.out_lock import OutputRefused, locked
        from pipelines.output.run_record import run_record, write_run_record
        from transforms.sources import read_plans

        verbose = verbose or bool((ctx.obj or {}).get("verbose"))
        started = time.time()
        try:
            recipe = read_recipe(recipe_path)
            user = check_config(sources_path) if Path(sources_path).is_file() else None
            if user is None:
                raise RecipeError(f"--sources {sources_path}: no such file; write a build.yaml naming your roots")
            config, absent, notes = hydration_config(recipe, user, sources_path)
        except (RecipeError, ValueError) as unusable:
            refuse(str(unusable))
        doc = recipe.doc
        say(
            f"recipe {recipe.folder} (sha256 {recipe.sha256[:12]}...; cxr-instruct "
            f"{doc['versions'].get('cxr-instruct')}, {len(doc['sources'])} sources, {len(doc['outputs'])} output "
            f"files, {doc['sealed']['images']:,} images)"
        )
        for note in notes:
            say(f"note: {note}", "yellow")
        if not config.enabled_sources():
            refuse(f"{sources_path}: names none of the recipe's sources ({', '.join(doc['sources'])})")
        with console.status("hashing your input files"):
            input_checks = check_inputs(recipe, config)
        say("inputs, against the recipe's SHA-256s (each source's tables plain, its other files sealed):")
        for line in input_lines(recipe, input_checks, absent):
            say(line)
        broken = [check for check in input_checks.values() if check.problem]
        if check_only:  # inputs do not depend on library versions
            raise SystemExit(1 if any(check.differs for check in input_checks.values()) else 0)
        differing = version_differences(recipe)
        if differing and not other_versions:
            refuse(
                "installed versions differ from the recipe's, so its files cannot be expected byte for byte: "
                + "; ".join(differing)
                + ". Install the recipe's versions, or pass --other-versions"
            )
        if broken:
            refuse("\n".join(f"{sources_path}: sources.{check.name}: {check.problem}" for check in broken))
        try:
            checks_module.check_out(out)
            checks_module.check_config(config, sources_path)
            checks_module.check_roots(config, sources_path)
            plans = read_plans(config)
            checks_module.check_compressed_tables(plans)
        except (FileNotFoundError, ValueError) as unusable:
            refuse(str(unusable))
        beam_args = beam_arguments(runner, workers, ctx.args)
        with resumable_on_ctrl_c("hydrate", verbose):
            try:
                with locked(out, "hydrate"):
                    with console.status("listing the inputs"):
                        inputs = input_fingerprints(config, plans)
                    finished = finished_build(out, config, inputs)
                    if finished is not None:
                        say(f"{out} is already built from these inputs and this config; verifying it")
                    else:
                        with watching(runner, console) as display:
                            manifest = run_build(
                                config,
                                out,
                                beam_args,
                                progress=display.reporter if display else Progress(None),
                                inputs=inputs,
                                plans=plans,
                                replace=replace,
                            )
                        record = run_record(
                            out, manifest, display.state.record() if display else {}, started, time.time()
                        )
                        write_run_record(out, record)
                        print_summary(record)
                    with console.status("verifying against the recipe"):
                        report = verify_hydration(
                            recipe, out, config, input_checks, absent, differing if other_versions else []
                        )
                        mark_output(out, report)
            except OutputRefused as refused:
                refuse(str(refused))
        for line in account_lines(report):
            say(line, "red" if line.startswith("result: DIFFERS") else None)
        say(f"hydrate.json: {io.join(out, FILE)} (marked in {io.join(out, Manifest.FILE)})")
        if report["outcome"] == "differs":
            raise SystemExit(1)

    return hydrate


hydrate_command = _hydrate_command()
