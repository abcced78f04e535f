"""The build configuration (``build.yaml``), validated with pydantic."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from schemas.records import ALL_SOURCES

PROFILES = ("imt-cxr", "m4cxr", "chexmix")


class SourceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    root: str  # local path or gs:// URI; relative paths are resolved against the config file
    enabled: bool = True


class ShardingConfig(BaseModel):
    """Target rows per Parquet shard; the shard count per split follows from the row count."""

    model_config = ConfigDict(extra="forbid")

    images: int = 500
    annotations: int = 5000
    instructions: int = 20000
    rejects: int = 50000


class TokenizerConfig(BaseModel):
    """When present, ``build`` also writes ``vq/`` (the same stage as ``cxr-instruct tokenize``)."""

    model_config = ConfigDict(extra="forbid")

    model: str  # local HF-format ChameleonVQVAE folder; relative to the config file
    device: str = "cpu"
    batch_size: int | None = None
    precision: Literal["fp32", "bf16"] | None = None
    vocabulary: str | None = None  # Chameleon text_tokenizer.json for lm_ids


class BuildConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sources: dict[str, SourceConfig]
    image_size: int = 512
    profiles: list[Literal["imt-cxr", "m4cxr", "chexmix"]] = Field(default_factory=lambda: list(PROFILES))
    seed: int = 0
    rows_per_shard: ShardingConfig = Field(default_factory=ShardingConfig)
    tokenizer: TokenizerConfig | None = None
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
            raise ValueError(f"unknown source(s) {unknown}; expected some of {list(ALL_SOURCES)}")
        return value

    @field_validator("image_size")
    @classmethod
    def _positive(cls, value: int) -> int:
        if value < 16:
            raise ValueError("image_size must be at least 16")
        return value

    @field_validator("png_compression")
    @classmethod
    def _png_level(cls, value: int) -> int:
        if not 0 <= value <= 9:
            raise ValueError(f"png_compression must be a zlib level from 0 (no compression) to 9 (smallest, "
                             f"slowest), got {value}")
        return value

    def enabled_sources(self) -> dict[str, SourceConfig]:
        return {name: src for name, src in self.sources.items() if src.enabled}


def load_config(path: str | Path) -> BuildConfig:
    """Read ``build.yaml``; relative source roots are made absolute against the file's folder."""
    path = Path(path)
    data = yaml.safe_load(path.read_text())
    config = BuildConfig.model_validate(data)
    for src in config.sources.values():
        src.root = _resolve(src.root, path.parent)
    if config.tokenizer is not None:
        config.tokenizer.model = _resolve(config.tokenizer.model, path.parent)
        if config.tokenizer.vocabulary:
            config.tokenizer.vocabulary = _resolve(config.tokenizer.vocabulary, path.parent)
    return config


def _resolve(location: str, base: Path) -> str:
    if "://" in location or Path(location).is_absolute():
        return location
    return str((base / location).resolve())
