"""transforms.io.match: the same files as Beam's FileSystems.match, for any tree and pattern.

Locally io.match walks only the folders that can hold a match (Beam walks and stats the whole folder
above the pattern's literal prefix, once per pattern); what it returns must not differ.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from apache_beam.io.filesystems import FileSystems
from hypothesis import given, settings
from hypothesis import strategies as st

from transforms import io

names = st.text(alphabet="ab0.-_", min_size=1, max_size=4).filter(lambda name: name not in (".", ".."))
trees = st.lists(st.lists(names, min_size=1, max_size=3), min_size=1, max_size=12)
parts = st.sampled_from(["a", "b", "0", "*", "?", "**", "[ab]", "[!a]", "a*", "*.", "b?", "**a", "[!0]*"])
patterns = st.lists(parts, min_size=1, max_size=3)


def make(root: Path, tree: list[list[str]]) -> None:
    for path in tree:
        target = root.joinpath(*path)
        if any(parent.is_file() for parent in target.parents) or target.is_dir():
            continue  # a name cannot be a file and a folder at once
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"x" * len(path))


@settings(max_examples=300, deadline=None)
@given(trees, patterns, st.booleans())
def test_local_match_finds_what_beam_finds(tree, pattern_parts, glued):
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        make(root, tree)
        pattern = str(root) + "/" + ("".join(pattern_parts) if glued else "/".join(pattern_parts))
        expected = sorted((m.path, m.size_in_bytes) for m in FileSystems.match([pattern])[0].metadata_list
                          if Path(m.path).is_file())  # Beam also returns a folder named by a literal path
        assert sorted((m.path, m.size_in_bytes) for m in io.match(pattern)) == expected
        assert io.any_match(pattern) == bool(expected)


def test_a_literal_path_matches_itself_only_when_it_is_a_file(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "b.csv").write_text("x")
    assert [m.path for m in io.match(str(tmp_path / "a" / "b.csv"))] == [str(tmp_path / "a" / "b.csv")]
    assert io.match(str(tmp_path / "a")) == [] and io.match(str(tmp_path / "missing")) == []
