"""Manifest pieces: input fingerprints in both modes, and the reconciliation arithmetic."""

import os

from pipelines.output.manifest import input_fingerprints, reconcile
from schemas.config import BuildConfig


def config(root, mode):
    return BuildConfig(sources={"siim": {"root": str(root)}}, fingerprint=mode)


def test_fingerprints_notice_what_their_mode_promises(tmp_path):
    rle = tmp_path / "train-rle.csv"
    rle.write_text("ImageId, EncodedPixels\n1.2.3, -1\n")
    (tmp_path / "dicom-images-train" / "study" / "series").mkdir(parents=True)
    (tmp_path / "dicom-images-train" / "study" / "series" / "a.dcm").write_bytes(b"x" * 10)
    (tmp_path / "notes.txt").write_text("not an input: no read plan lists it")
    first = {mode: input_fingerprints(config(tmp_path, mode))["siim"] for mode in ("size-mtime", "sha256")}
    assert first["sha256"]["files"] == 2 and first["sha256"]["bytes"] == rle.stat().st_size + 10
    stat = rle.stat()
    rle.write_text("ImageId, EncodedPixels\n1.2.4, -1\n")  # same size, other content, same mtime
    os.utime(rle, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert input_fingerprints(config(tmp_path, "size-mtime"))["siim"] == first["size-mtime"]
    assert input_fingerprints(config(tmp_path, "sha256"))["siim"]["sha256"] != first["sha256"]["sha256"]
    os.utime(rle, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert input_fingerprints(config(tmp_path, "size-mtime"))["siim"]["sha256"] != first["size-mtime"]["sha256"]


def test_reconcile_counts_every_unit_once():
    counts = [
        (("siim", "emitted"), 10),
        (("siim", "rejected:read"), 2),
        (("siim", "filtered:read"), 1),
        (("siim", "written"), 9),
        (("siim", "rejected:image"), 1),
        (("siim", "item-rejected:geometry:zero-area-box"), 4),
    ]
    entry = reconcile(counts, ["siim", "vindr"])["siim"]
    assert entry["read"] == 13 and entry["reconciled"]
    assert entry["item_rejects"] == {"rejected:geometry:zero-area-box": 4}
    dropped = reconcile([(("siim", "emitted"), 10), (("siim", "written"), 9)], ["siim"])["siim"]
    assert not dropped["reconciled"]  # one unit vanished without a reject row
