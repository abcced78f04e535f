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


class BuildConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sources: dict[str, SourceConfig]
    image_size: int = 512
    profiles: list[Literal["imt-cxr", "m4cxr", "chexmix"]] = Field(default_factory=lambda: list(PROFILES))
    seed: int = 0
    rows_per_shard: ShardingConfig = Field(default_factory=ShardingConfig)

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

    def enabled_sources(self) -> dict[str, SourceConfig]:
        return {name: src for name, src in self.sources.items() if src.enabled}


def load_config(path: str | Path) -> BuildConfig:
    """Read ``build.yaml``; relative source roots are made absolute against the file's folder."""
    path = Path(path)
    data = yaml.safe_load(path.read_text())
    config = BuildConfig.model_validate(data)
    for src in config.sources.values():
        if "://" not in src.root and not Path(src.root).is_absolute():
            src.root = str((path.parent / src.root).resolve())
    return config
