"""The repository stands on its own: no tracked file points at anything outside it.

A fresh clone with nothing beside it must build, test and read. Every tracked text file (``git ls-files``;
files that are not UTF-8 text, such as PNGs, are skipped) is checked line by line, after removing URLs
(``scheme://...``, so ``https://`` and ``gs://`` addresses are fine), for:

1. **Places outside the checkout**: the notes folder beside the checkout (``..`` then ``shared``) or
   its ``reference`` / ``formats`` subfolders, anything under the machine's ``/work`` folder, home
   directories (``/home/<name>``, ``/Users/<name>``, ``/root/``, ``~/`` followed by a path), and "the
   shared notes". ``/tmp`` is allowed: a scratch folder in an example is not something the project reads.
2. **Path arithmetic that climbs out** (Python files): ``Path(__file__)`` followed by ``.parents[k]``,
   a chain of ``.parent`` and any ``/ ".."`` steps is resolved against the file's own place in the
   repository, and must not end above the repository root.
3. **Notes that are not here**: a Markdown file cited by bare name (``LANGUAGE.md``) or by a path
   starting with ``docs/``, ``formats/``, ``reference/``, ``shared/`` or ``../`` must exist in the
   repository, relative to the root or to the citing file's folder (a bare name may also be any tracked
   file's name). Files of other repositories are cited with their own directory
   (``website/content/data/reports.md``), which this rule leaves alone.

This file is exempt from the scan (it spells the patterns out, and builds its bad examples from pieces
so that no scan of the repository finds a real outside reference in it). The committed test data also obeys the
rules written in its ``SOURCES.md`` files: every data file is named there, and the OpenI gold labels hold
even report ids only (``tests/realdata.py``).
"""

from __future__ import annotations

import csv
import functools
import re
import subprocess
from pathlib import Path, PurePosixPath

import pytest
from realdata import DATA, is_development_id

ROOT = Path(__file__).resolve().parents[1]
THIS = Path(__file__).resolve().relative_to(ROOT).as_posix()

URL = re.compile(r"\b[a-z][a-z0-9+.-]*://\S+", re.IGNORECASE)
WORK = "/" + "work/"
SIBLING = ".." + "/shared"
OUTSIDE = [
    ("the sibling notes folder", re.compile(r"\.\./shared\b|\bshared/(?:reference|formats)\b")),
    ("a path under the machine's work folder", re.compile(r"(?<![\w.-])" + WORK)),
    ("a home directory", re.compile(r"(?<![\w.-])(?:/home/\w|/Users/\w|/root/|~/[\w.])")),
    ("the shared notes", re.compile(r"\bshared notes\b", re.IGNORECASE)),
]
FILE_PATH = re.compile(
    r"Path\(__file__\)(?:\.resolve\(\))?"
    r"(?P<climb>\.parents\[(?P<index>\d+)\]|(?:\.parent)+)"
    r"(?P<dots>(?:\s*/\s*[\"']\.\.[\"'])*)"
)
NOTE = re.compile(r"(?<![\w./-])((?:\.\./|docs/|formats/|reference/|shared/)?[\w.-]*[\w-]\.md)\b")
NOTE_PREFIXES = ("../", "docs/", "formats/", "reference/", "shared/")


@functools.cache
def tracked_names() -> frozenset[str]:
    """Every path ``git ls-files`` lists."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    return frozenset(name for name in listed.decode().split("\0") if name)


def tracked_text_files() -> dict[str, str]:
    """Tracked path -> text, for files that decode as UTF-8 and hold no NUL byte."""
    files = {}
    for name in sorted(tracked_names()):
        if name == THIS or not (ROOT / name).is_file():
            continue
        data = (ROOT / name).read_bytes()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            continue
        if "\0" not in text:
            files[name] = text
    return files


def climbs_out(path: str, match: re.Match) -> bool:
    """Whether ``Path(__file__)...`` in ``path`` resolves above the repository root."""
    depth = len(PurePosixPath(path).parts) - 1  # folders between the root and the file
    if match["index"] is not None:
        depth -= int(match["index"])  # parents[0] is the file's folder
    else:
        depth -= match["climb"].count(".parent") - 1  # .parent is the file's folder
    depth -= match["dots"].count("..")
    return depth < 0


def note_exists(path: str, note: str, names: set[str], basenames: set[str]) -> bool:
    folder = PurePosixPath(path).parent
    for candidate in (PurePosixPath(note), folder / note):
        parts: list[str] = []
        for part in candidate.parts:
            if part == "..":
                if not parts:
                    break
                parts.pop()
            elif part != ".":
                parts.append(part)
        else:
            if "/".join(parts) in names:
                return True
    return "/" not in note and note in basenames


def problems_in(files: dict[str, str]) -> list[str]:
    names = set(files) | tracked_names()
    basenames = {PurePosixPath(name).name for name in names}
    found = []
    for path, text in sorted(files.items()):
        for number, line in enumerate(text.splitlines(), start=1):
            line = URL.sub("", line)
            for what, pattern in OUTSIDE:
                if pattern.search(line):
                    found.append(f"{path}:{number}: {what}: {line.strip()[:120]}")
            if path.endswith(".py"):
                for match in FILE_PATH.finditer(line):
                    if climbs_out(path, match):
                        found.append(f"{path}:{number}: Path(__file__) climbs above the repository: {match[0]}")
            for note in NOTE.findall(line):
                if ("/" not in note or note.startswith(NOTE_PREFIXES)) and not note_exists(
                    path, note, names, basenames
                ):
                    found.append(f"{path}:{number}: cites {note}, which is not in the repository")
    return found


def test_no_tracked_file_refers_outside_the_repository():
    problems = problems_in(tracked_text_files())
    assert not problems, f"{len(problems)} reference(s) outside the repository:\n" + "\n".join(problems)


@pytest.mark.parametrize(
    ("path", "line"),
    [
        ("tests/x.py", 'REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference"'),
        ("tests/x.py", 'ROOT = Path(__file__).resolve().parent.parent / ".."'),
        ("tests/x.py", 'data = Path(__file__).resolve().parents[1] / ".." / "data"'),
        ("transforms/x.py", '"""Facts: LANGUAGE.md section 3."""'),
        ("transforms/x.py", "# see formats/mimic-cxr.md §7"),
        ("README.md", f"Read {SIBLING}/reference/README.md first."),
        ("Makefile", f"WHEEL := {WORK}main/build/cache/x.whl"),
        ("docs/x.md", "Copy it to /home/alice/models."),
        ("docs/x.md", "Facts live in the shared notes."),
    ],
)
def test_the_scan_catches_each_kind_of_outside_reference(path, line):
    assert problems_in({path: line}), line


@pytest.mark.parametrize(
    ("path", "line"),
    [
        ("tests/x.py", "ROOT = Path(__file__).resolve().parents[1]"),
        ("benchmarks/x.py", "sys.path.insert(0, str(Path(__file__).resolve().parent.parent))"),
        ("docs/formats/x.md", "See [the language notes](../language.md) and chexmask.md §3."),
        ("transforms/x.py", "# docs/formats/mimic-cxr.md §7.1, README.md"),
        ("docs/x.md", "Output goes to gs://bucket/out and https://example.org/home/alice; scratch in /tmp/x."),
        ("tests/data/x/SOURCES.md", "`owner/repo` @ 0123abc, `website/content/data/reports.md`"),
    ],
)
def test_the_scan_leaves_legitimate_references_alone(path, line):
    assert problems_in({path: line}) == [], line


def test_every_committed_data_file_is_described_in_its_sources_file():
    folders = sorted(path for path in DATA.iterdir() if path.is_dir())
    assert folders
    for folder in folders:
        sources = (folder / "SOURCES.md").read_text()
        for path in sorted(folder.iterdir()):
            if path.name != "SOURCES.md":
                assert f"`{path.name}`" in sources, f"{path} is not described in {folder / 'SOURCES.md'}"


def test_committed_openi_gold_labels_hold_even_ids_only():
    """Odd report ids are reserved for an independent evaluation: not one may be in the repository."""
    with (DATA / "reports" / "negbio_openi_gld_std14_even_ids.csv").open(newline="") as handle:
        ids = [row["filename"] for row in csv.DictReader(handle)]
    assert len(ids) == 1927 and len(set(ids)) == len(ids)
    assert all(is_development_id(report_id) for report_id in ids)
