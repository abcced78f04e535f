"""transforms.io.match: the same files as Beam's FileSystems.match, for any tree and pattern.

Locally io.match walks only the folders that can hold a match (Beam walks and stats the whole folder
above the pattern's literal prefix, once per pattern); what it returns must not differ, except that
io.match follows links to folders (each folder once) and reports what it cannot list.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
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
        expected = sorted(
            (m.path, m.size_in_bytes) for m in FileSystems.match([pattern])[0].metadata_list if Path(m.path).is_file()
        )  # Beam also returns a folder named by a literal path
        assert sorted((m.path, m.size_in_bytes) for m in io.match(pattern)) == expected
        assert io.any_match(pattern) == bool(expected)


def test_a_literal_path_matches_itself_only_when_it_is_a_file(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "b.csv").write_text("x")
    assert [m.path for m in io.match(str(tmp_path / "a" / "b.csv"))] == [str(tmp_path / "a" / "b.csv")]
    assert io.match(str(tmp_path / "a")) == [] and io.match(str(tmp_path / "missing")) == []


# Links. Beam's local listing does not follow links to folders; io.match does, so the oracle is Beam's
# listing of a copy of the tree with every link replaced by what it points to.

link_places = st.lists(st.tuples(st.lists(names, min_size=1, max_size=2), st.integers(0, 7)), max_size=4)


@settings(max_examples=150, deadline=None)
@given(trees, trees, link_places, patterns, st.booleans())
def test_links_are_listed_as_the_tree_they_point_into(tree, elsewhere, links, pattern_parts, glued):
    with tempfile.TemporaryDirectory() as folder:
        root, outside, twin = Path(folder) / "root", Path(folder) / "outside", Path(folder) / "twin"
        root.mkdir()
        make(root, tree)
        make(outside, elsewhere)
        targets = sorted(outside.iterdir())  # each link to a different top entry: no folder is reached twice
        for place, target in links:
            link = root.joinpath(*place)
            if not targets or os.path.lexists(link) or any(p.is_file() or p.is_symlink() for p in link.parents):
                continue
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(targets.pop(target % len(targets)))
        shutil.copytree(root, twin, symlinks=False)
        tail = "".join(pattern_parts) if glued else "/".join(pattern_parts)
        expected = sorted(
            (str(root) + m.path[len(str(twin)) :], m.size_in_bytes)
            for m in FileSystems.match([f"{twin}/{tail}"])[0].metadata_list
            if Path(m.path).is_file()
        )
        problems = []
        assert sorted((m.path, m.size_in_bytes) for m in io.match(f"{root}/{tail}", problems=problems)) == expected
        assert problems == []


def test_a_link_cycle_is_listed_once_with_a_warning(tmp_path, caplog):
    (tmp_path / "p10" / "s1").mkdir(parents=True)
    (tmp_path / "p10" / "s1" / "a.dcm").write_bytes(b"x")
    (tmp_path / "p10" / "s1" / "up").symlink_to(tmp_path / "p10")  # p10/s1/up/s1/up/... for ever
    with caplog.at_level("WARNING", logger="transforms.io"):
        assert io.glob(str(tmp_path / "**")) == [str(tmp_path / "p10" / "s1" / "a.dcm")]
    assert f"{tmp_path}/p10/s1/up is the folder {tmp_path}/p10 again" in caplog.text


def test_two_links_to_one_folder_list_it_once_at_the_first_path(tmp_path):
    (tmp_path / "real" / "s1").mkdir(parents=True)
    (tmp_path / "real" / "s1" / "a.dcm").write_bytes(b"x")
    (tmp_path / "tree").mkdir()
    (tmp_path / "tree" / "x").symlink_to(tmp_path / "real")
    (tmp_path / "tree" / "y").symlink_to(tmp_path / "real")
    assert io.glob(str(tmp_path / "tree" / "**")) == [str(tmp_path / "tree" / "x" / "s1" / "a.dcm")]


def test_a_broken_link_is_reported_never_skipped(tmp_path):
    (tmp_path / "a.dcm").write_bytes(b"x")
    (tmp_path / "b.dcm").symlink_to(tmp_path / "gone.dcm")
    problems = []
    assert [m.path for m in io.match(str(tmp_path / "*.dcm"), problems=problems)] == [str(tmp_path / "a.dcm")]
    assert problems == [
        io.Unlisted(str(tmp_path / "b.dcm"), "broken-link", f"a link to {tmp_path / 'gone.dcm'}, which does not exist")
    ]
    with pytest.raises(io.ListingError, match=r"b.dcm: broken-link"):
        io.match(str(tmp_path / "*.dcm"))
    assert io.glob(str(tmp_path / "a*")) == [str(tmp_path / "a.dcm")]  # not matched by the pattern: no problem


def test_an_unreadable_folder_is_reported_and_the_rest_listed(tmp_path, unreadable_folder):
    for study in ("s1", "s2"):
        (tmp_path / "p10" / study).mkdir(parents=True)
        (tmp_path / "p10" / study / "a.dcm").write_bytes(b"x")
    unreadable_folder(tmp_path / "p10" / "s1")
    problems = []
    assert [m.path for m in io.match(str(tmp_path / "**"), problems=problems)] == [str(tmp_path / "p10/s2/a.dcm")]
    assert problems == [
        io.Unlisted(str(tmp_path / "p10" / "s1"), "unreadable-folder", "cannot be listed: Permission denied")
    ]
    with pytest.raises(io.ListingError, match="p10/s1: unreadable-folder"):
        io.glob(str(tmp_path / "**"))
    assert io.glob(str(tmp_path / "p10" / "s2" / "*")) == [str(tmp_path / "p10/s2/a.dcm")]  # not walked into s1


def test_a_missing_folder_is_empty_not_a_problem(tmp_path):
    problems = []
    assert io.match(str(tmp_path / "missing" / "**"), problems=problems) == [] and problems == []
