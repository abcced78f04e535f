"""The build configuration (``build.yaml``), validated with pydantic."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator

from manifests import MANIFEST_DIR
from schemas.records import ALL_SOURCES

PROFILES = tuple(sorted(path.stem for path in (MANIFEST_DIR / "mixtures").glob("*.yaml")))
"""The mixture profiles: one ``manifests/mixtures/<name>.yaml`` each, found by their files."""

IMAGE_SIZE_RANGE = (16, 4096)
"""Output canvas side in pixels. Above 4096 a canvas is larger than any source radiograph (PadChest and
MIMIC are ~3000 px a side), so it only upsamples, and one image's stage takes minutes."""


def _known_profile(name: str) -> str:
    if name not in PROFILES:
        close = difflib.get_close_matches(name, PROFILES, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown profile{hint}; expected one of {list(PROFILES)}, the files of manifests/mixtures/")
    return name


class SourceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    root: str  # local path or gs:// URI; relative paths are resolved against the config file
    enabled: bool = True


class ShardingConfig(BaseModel):
    """Target rows per Parquet shard; the shard count per split follows from the row count."""

    model_config = ConfigDict(extra="forbid")

    images: int = Field(default=500, ge=1)
    annotations: int = Field(default=5000, ge=1)
    instructions: int = Field(default=20000, ge=1)
    rejects: int = Field(default=50000, ge=1)


class TokenizerConfig(BaseModel):
    """When present, ``build`` also writes ``vq/`` (the same stage as ``cxr-instruct tokenize``)."""

    model_config = ConfigDict(extra="forbid")

    model: str  # local HF-format ChameleonVQVAE folder; relative to the config file
    device: str = "cpu"
    batch_size: int | None = None
    precision: Literal["fp32", "bf16"] | None = None
    vocabulary: str | None = None  # Chameleon text_tokenizer.json for lm_ids


class TranslationConfig(BaseModel):
    """When present, PadChest's Spanish reports are also machine translated (transforms/translation.py)."""

    model_config = ConfigDict(extra="forbid")

    model: str  # local MarianMT folder (transformers save_pretrained); relative to the config file
    batch_size: int = Field(default=16, ge=1)  # sentences per model call
    num_beams: int = Field(default=1, ge=1)  # 1: greedy decoding
    max_new_tokens: int = Field(default=256, ge=1)  # per sentence
    device: Literal["cpu", "cuda"] = "cpu"


class BuildConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sources: dict[str, SourceConfig]
    image_size: int = 512
    profiles: list[Annotated[str, AfterValidator(_known_profile)]] = Field(default_factory=lambda: list(PROFILES))
    seed: int = 0
    rows_per_shard: ShardingConfig = Field(default_factory=ShardingConfig)
    tokenizer: TokenizerConfig | None = None
    translation: TranslationConfig | None = None
    # how manifest.json fingerprints input files: size + mtime of each (cheap), or a content hash
    fingerprint: Literal["size-mtime", "sha256"] = "size-mtime"
    # zlib level of the images/ PNGs, 0 (stored) to 9 (smallest); every level is lossless, so it trades
    # only encoding time against bytes. Default 1, measured by benchmarks/bench_decode.py on one core for
    # the 512 x 512 canvas of the RG1 chest radiograph (pydicom-data) and of the synthetic 3000 x 2500 one:
    # level 1 takes 5 ms for 115 KB (synthetic 82 KB); level 3 takes 1.7x that time for 4.5% fewer bytes
    # (7%), level 6 (the old fixed level) 5x for 10% fewer (14%), level 9 20-35x for 11% fewer (17%);
    # level 0 stores 263 KB. At level 6, encoding an uncompressed RG1 file's canvas took longer than
    # decoding, windowing and resizing the file.
    png_compression: int = Field(default=1, strict=True)

    @field_validator("sources")
    @classmethod
    def _known_sources(cls, value: dict[str, SourceConfig]) -> dict[str, SourceConfig]:
        unknown = sorted(set(value) - set(ALL_SOURCES))
        if unknown:
            close = {name: difflib.get_close_matches(name, ALL_SOURCES, n=1) for name in unknown}
            hints = "".join(f" ({name!r}: did you mean {match[0]!r}?)" for name, match in close.items() if match)
            raise ValueError(f"unknown source(s) {unknown}{hints}; expected some of {list(ALL_SOURCES)}")
        return value

    @field_validator("image_size")
    @classmethod
    def _canvas_size(cls, value: int) -> int:
        low, high = IMAGE_SIZE_RANGE
        if not low <= value <= high:
            raise ValueError(f"image_size must be from {low} to {high} pixels, got {value}")
        return value

    @field_validator("png_compression")
    @classmethod
    def _png_level(cls, value: int) -> int:
        if not 0 <= value <= 9:
            raise ValueError(
                f"png_compression must be a zlib level from 0 (no compression) to 9 (smallest, slowest), got {value}"
            )
        return value

    def enabled_sources(self) -> dict[str, SourceConfig]:
        return {name: src for name, src in self.sources.items() if src.enabled}


class ConfigError(ValueError):
    """A config file that cannot be used; ``str()`` is one line per problem, each naming the file."""


def load_config(path: str | Path) -> BuildConfig:
    """Read ``build.yaml``; relative source roots are made absolute against the file's folder.

    Raises :class:`ConfigError` for a file that is not YAML or not a mapping, pydantic's
    ``ValidationError`` for values the schema refuses (:func:`check_config` renders both)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(f"{path}:{where}: not valid YAML ({problem}); fix the syntax") from None
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"{path}: not UTF-8 text ({error.reason} at byte {error.start}); is it the build.yaml?"
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: expected a mapping of settings (sources:, image_size:, ...), "
            f"found {type(data).__name__ if data is not None else 'an empty file'}"
        )
    config = BuildConfig.model_validate(data)
    for src in config.sources.values():
        src.root = _resolve(src.root, path.parent)
    if config.tokenizer is not None:
        config.tokenizer.model = _resolve(config.tokenizer.model, path.parent)
        if config.tokenizer.vocabulary:
            config.tokenizer.vocabulary = _resolve(config.tokenizer.vocabulary, path.parent)
    if config.translation is not None:
        config.translation.model = _resolve(config.translation.model, path.parent)
    return config


def _resolve(location: str, base: Path) -> str:
    if "://" in location or Path(location).is_absolute():
        return location
    return str((base / location).resolve())


def check_config(path: str | Path) -> BuildConfig:
    """:func:`load_config`, with every problem raised as one :class:`ConfigError`: one line per
    problem, naming the file and the key path, and what to do."""
    try:
        return load_config(path)
    except ValidationError as error:
        raise ConfigError("\n".join(f"{path}: {line}" for line in describe(error))) from None


def describe(error: ValidationError) -> list[str]:
    """One line per problem of a ``BuildConfig`` validation: the key path (``rows_per_shard.images``),
    what is wrong, and for an unknown key the closest known spelling."""
    lines = []
    for problem in error.errors():
        location = [str(part) for part in problem["loc"]]
        key = ".".join(location) or "(top level)"
        if problem["type"] == "extra_forbidden":
            known = _known_keys(location[:-1])
            close = difflib.get_close_matches(location[-1], known, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"known keys here: {', '.join(known)}"
            lines.append(f"unknown key {key!r}: {hint}")
        elif problem["type"] == "missing":
            lines.append(f"{key}: required, missing")
        else:
            message = problem["msg"].removeprefix("Value error, ").removeprefix(f"{location[-1]} " if location else "")
            given = problem.get("input")
            if "got" not in message and not isinstance(given, (dict, list)):
                message += f" (got {given!r})"
            lines.append(f"{key}: {message}")
    return lines


def _known_keys(location: list[str]) -> list[str]:
    """The keys allowed at ``location``, the path of the mapping that holds an unknown key."""
    if not location:
        return list(BuildConfig.model_fields)
    if location[0] == "sources" and len(location) == 2:
        return list(SourceConfig.model_fields)
    nested: dict[str, type[BaseModel]] = {
        "rows_per_shard": ShardingConfig,
        "tokenizer": TokenizerConfig,
        "translation": TranslationConfig,
    }
    return list(nested[location[0]].model_fields) if len(location) == 1 and location[0] in nested else []
