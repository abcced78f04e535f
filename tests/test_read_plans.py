"""Read plans (transforms/sources/plan.py) and their two executors: one process and a Beam graph.

A two-round toy plan over a small tree: files and CSV rows keyed by item id, joined into "item"
facts keyed by group, then joined per group into records. Both executors must give the same
records and rejects whatever order the items arrive in, and every real source's plan must pickle.
"""

from __future__ import annotations

import pickle

import pytest
from apache_beam.internal import pickler
from hypothesis import given, settings
from hypothesis import strategies as st
from plans import assert_beam_matches_serial

from schemas.records import ImageRef, Reject, SourceRecord
from transforms import io
from transforms.sources.plan import Keyed, Listing, ReadPlan, Row, Table, order_items, run_serially


class GroupPlan(ReadPlan):
    """``<root>/<shard>/<id>.img`` files and ``ids.csv`` rows ``id,group``; a record per id with a file
    and a row, named after its group's member count (a fact of the second round)."""

    source = "siim"
    rounds = (frozenset({"file", "row"}), frozenset({"member"}))

    def __init__(self, root: str):
        self.listings = (Listing("file", root, "*/*.img", shards=("a", "b")),)
        self.tables = (Table("row", io.join(root, "ids.csv")),)

    def key_file(self, tag, path):
        yield Keyed(io.basename(path)[:-4], "file", (path,))

    def key_row(self, tag, row: Row):
        if row.problem is not None:
            yield Reject(
                key=f"siim/row-{row.number}", source="siim", stage="read", reason="malformed-row", detail=row.problem
            )
        else:
            yield Keyed(row.cells[0], "row", (row.number, row.cells[1]))

    def join(self, key, items):
        if "member" in items:
            for image_id, path in items["member"]:
                yield SourceRecord(
                    image=ImageRef(
                        image_key=f"siim/{image_id}",
                        source="siim",
                        native_id=image_id,
                        uri=path,
                        format="dicom",
                        subject_id=key,
                        study_id=str(len(items["member"])),
                    )
                )
        elif not items["file"]:
            yield Reject(key=f"siim/{key}", source="siim", stage="read", reason="image-not-present", detail=key)
        else:
            group = items["row"][0][1] if items["row"] else "none"
            yield Keyed(group, "member", (key, items["file"][0][0]))


def make_tree(root, ids: dict[str, str], extra_rows: list[str] = ()) -> str:
    """Files ``a*/<id>.img`` or ``b*/<id>.img`` for each id (by its first letter) and ids.csv."""
    for image_id in ids:
        folder = root / f"{image_id[0]}x"
        folder.mkdir(exist_ok=True)
        (folder / f"{image_id}.img").write_bytes(b"")
    lines = ["id,group", *(f"{i},{g}" for i, g in ids.items()), *extra_rows]
    (root / "ids.csv").write_text("\n".join(lines) + "\n")
    return str(root)


def test_two_rounds_serially_and_on_beam_agree(tmp_path):
    ids = {"a1": "g1", "a2": "g1", "b1": "g2", "b2": "g1"}
    root = make_tree(tmp_path, ids, extra_rows=["a9,g2", "broken"])
    plan = GroupPlan(root)
    serial = list(run_serially(plan))
    records = {o.key: o for o in serial if isinstance(o, SourceRecord)}
    assert {k: (r.image.subject_id, r.image.study_id) for k, r in records.items()} == {
        "siim/a1": ("g1", "3"),
        "siim/a2": ("g1", "3"),
        "siim/b2": ("g1", "3"),
        "siim/b1": ("g2", "1"),
    }
    assert sorted(o.reason for o in serial if isinstance(o, Reject)) == ["image-not-present", "malformed-row"]
    assert_beam_matches_serial(plan)


def test_a_plan_with_nothing_to_read_reads_nothing(tmp_path):
    """CheXmask when none of its datasets' image sources is ingested: no listing, no table."""
    from transforms.sources import chexmask

    empty = chexmask.plan(str(tmp_path), image_sources=("siim",))
    assert (empty.listings, empty.tables) == ((), ())
    assert assert_beam_matches_serial(empty) == []


def test_listing_shards_are_the_patterns_of_one_listing():
    listing = Listing("file", "gs://bucket/root", "*.dicom", shards=("0", "1"))
    assert listing.patterns() == ["gs://bucket/root/0*.dicom", "gs://bucket/root/1*.dicom"]
    assert Listing("file", "/data", "**").patterns() == ["/data/**"]


@settings(max_examples=50, deadline=None)
@given(
    st.permutations([("row", (3, "c")), ("file", ("/x/b",)), ("row", (1, "a")), ("file", ("/x/a",)), ("row", (2, "b"))])
)
def test_a_join_sees_the_same_items_whatever_order_they_arrive_in(arrival):
    items = order_items(GroupPlan.__new__(GroupPlan), 0, arrival)
    assert items == {"file": [("/x/a",), ("/x/b",)], "row": [(1, "a"), (2, "b"), (3, "c")]}


def test_an_unknown_tag_is_a_plan_error():
    with pytest.raises(KeyError, match="belongs to no round"):
        GroupPlan.__new__(GroupPlan).round_of("nothing")


def test_every_source_plan_pickles_for_the_workers(tmp_path_factory):
    from pipelines.synth import generate
    from schemas.config import load_config
    from transforms.sources import read_plans

    corpus = generate(tmp_path_factory.mktemp("corpus"), studies=3, seed=1)
    plans = read_plans(load_config(corpus / "build.yaml"))
    assert sorted(plans) == [
        "chexmask",
        "imagenome",
        "mimic",
        "mimic_cxr_vqa",
        "mimic_diff_vqa",
        "padchest",
        "siim",
        "vindr",
    ]
    for plan in plans.values():
        assert type(pickler.loads(pickler.dumps(plan))) is type(plan)
        assert len(pickle.dumps(plan)) < 20_000  # nothing per image rides on the plan
