"""The build config: profiles are the files of manifests/mixtures/, a bad name is one line naming its key."""

from pathlib import Path

import pytest

from manifests import MANIFEST_DIR
from schemas.config import PROFILES, ConfigError, check_config


def write_config(tmp_path: Path, profiles: str) -> Path:
    path = tmp_path / "build.yaml"
    path.write_text(f"sources:\n  mimic:\n    root: {tmp_path}\n{profiles}")
    return path


def test_profiles_are_discovered_from_the_mixtures_folder(tmp_path):
    assert tuple(sorted(p.stem for p in (MANIFEST_DIR / "mixtures").glob("*.yaml"))) == PROFILES
    assert {"imt-cxr", "m4cxr", "chexmix", "radixpert", "medivlm"} <= set(PROFILES)
    assert check_config(write_config(tmp_path, "")).profiles == list(PROFILES)  # default: every profile
    assert check_config(write_config(tmp_path, "profiles: [m4cxr]\n")).profiles == ["m4cxr"]


def test_an_unknown_profile_is_one_line_naming_the_key(tmp_path):
    path = write_config(tmp_path, "profiles: [imt-cxr, imtcxr]\n")
    with pytest.raises(ConfigError) as raised:
        check_config(path)
    (line,) = str(raised.value).splitlines()
    assert line.startswith(f"{path}: profiles.1: unknown profile (did you mean 'imt-cxr'?); expected one of ")
    assert line.endswith("(got 'imtcxr')")
