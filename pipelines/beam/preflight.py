"""Whole-input checks of ``build``, run before any pipeline starts.

Each check raises :class:`InputError` (a ValueError) whose message is one line naming the file, folder
or key at fault and what to do; the command line prints it and exits with status 2. The order is
cheapest first: the config file, the output folder, the config's values, the source roots, then the
read plans (transforms/sources: required files and their headers), then the compressed CSVs the run
will stream.
"""

from __future__ import annotations

import os
from pathlib import Path

from pipelines.output.paths import is_uri
from schemas.config import BuildConfig, TranslationConfig
from schemas.records import IMAGE_SOURCES
from transforms import io, translation
from transforms.sources.csvrows import CORRUPT

CHECKED_GZIP_BYTES = 256 << 20
"""Compressed CSVs up to this size are read through once at plan time, so one cut short stops the build
before it starts (MIMIC's and PadChest's label and metadata CSVs are a few to tens of MB). Larger ones
(CheXmask's per-dataset mask CSVs, GBs) are not: a damaged one stops the run when the read reaches the
cut, with one line naming the file (transforms/sources/csvrows.py)."""


class InputError(ValueError):
    """A whole-input problem: the build cannot start."""


def check_config_file(config_path: str) -> None:
    """``--config`` names a readable local file."""
    path = Path(config_path)
    if not path.exists():
        raise InputError(
            f"--config {config_path}: no such file; name the build's build.yaml "
            f"(cxr-instruct synth --out DIR writes an example, DIR/build.yaml)"
        )
    if not path.is_file():
        raise InputError(f"--config {config_path}: is a folder, not a config file; name its build.yaml")
    if not os.access(path, os.R_OK):
        raise InputError(f"--config {config_path}: not readable by this user; fix its permissions")


def check_out(out: str) -> None:
    """``--out`` must be a folder, or creatable as one; a local one must be writable. A URI is left to
    its filesystem (nothing to test without writing)."""
    if is_uri(out):
        return
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise InputError(f"--out {out}: is a file, not a folder; name a folder (new or an earlier build's)")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"--out {out}: {existing} is a file, so the folder cannot be made; name another folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"--out {out}: {existing} is not writable by this user; name a folder you can write")


def check_config(config: BuildConfig, config_path: str) -> None:
    """At least one source is enabled, and one of them has images (annotation sources alone write none)."""
    enabled = config.enabled_sources()
    if not enabled:
        raise InputError(
            f"{config_path}: no enabled source under 'sources:'; add at least one image source "
            f"({', '.join(IMAGE_SOURCES)}) with its root"
        )
    if not any(name in IMAGE_SOURCES for name in enabled):
        raise InputError(
            f"{config_path}: the enabled sources ({', '.join(sorted(enabled))}) only annotate other "
            f"sources' images, so the build would write no image; enable one of "
            f"{', '.join(IMAGE_SOURCES)}"
        )


def check_roots(config: BuildConfig, config_path: str) -> None:
    """Every enabled local root is a readable folder (a URI root is checked by its read plan); a local
    tokenizer model folder exists; a translation model is a readable MarianMT folder."""
    for name, source in sorted(config.enabled_sources().items()):
        _readable_folder(
            source.root,
            f"{config_path}: sources.{name}.root",
            f"set sources.{name}.root to the {name} dataset's folder, or enabled: false",
        )
    if config.tokenizer is not None:
        _readable_folder(
            config.tokenizer.model,
            f"{config_path}: tokenizer.model",
            "set tokenizer.model to a local HF-format ChameleonVQVAE folder",
        )
    if config.translation is not None:
        check_translation(config.translation, config_path)


def check_translation(options: TranslationConfig, config_path: str) -> None:
    """``translation.model`` is a local MarianMT folder (transforms/translation.py) and the packages that
    run it are installed; the model itself is loaded by the workers."""
    try:
        translation.translator(options)
    except ValueError as error:
        raise InputError(f"{config_path}: {error}") from None
    missing = translation.missing_packages()
    if missing:
        raise InputError(
            f"{config_path}: translation needs {', '.join(missing)}, not installed here; "
            f"{translation.INSTALL}, or remove the translation: key"
        )


def _readable_folder(location: str, what: str, remedy: str) -> None:
    if is_uri(location):
        return
    path = Path(location)
    if not path.exists():
        raise InputError(f"{what} {location}: no such folder; {remedy}")
    if not path.is_dir():
        raise InputError(f"{what} {location}: is a file, not a folder; {remedy}")
    if not os.access(path, os.R_OK | os.X_OK):
        raise InputError(f"{what} {location}: not readable by this user; fix its permissions")


def check_compressed_tables(plans: dict) -> list[str]:
    """Read through every ``.gz`` CSV the plans stream that is at most :data:`CHECKED_GZIP_BYTES`;
    return the paths checked. A stream that is cut short or damaged raises InputError naming the file."""
    checked = []
    for plan in plans.values():
        for table in plan.tables:
            if not table.path.endswith(".gz") or io.size_of(table.path) > CHECKED_GZIP_BYTES:
                continue
            try:
                with io.open_binary(table.path) as stream:
                    while stream.read(1 << 20):
                        pass
            except CORRUPT as error:
                raise InputError(
                    f"{table.path}: compressed file cut short or damaged ({error}); download it again"
                ) from None
            checked.append(table.path)
    return checked
