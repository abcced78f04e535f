"""The preview (``cxr-instruct preview``): answers decoded in each profile's coordinate convention,
deterministic atomic output inside OUT/preview/, and the page itself driven in headless Chromium
over the DevTools protocol: a screenshot per section, drawn shapes found by their pixels where the
decoded coordinates put them, and the load time of a 5,000-row preview.

Chromium is a system package: ``.ci/run`` installs Debian's ``chromium`` (``apt-get install chromium``)
before ``make test``. Without it the browser tests skip, except under CI (``CI`` set), where they fail.
"""

from __future__ import annotations

import base64
import copy
import fcntl
import hashlib
import io
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pyarrow.dataset as ds
import pytest
from builds import writable_copy
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from pipelines.tools.preview import (
    CHUNK_ROWS,
    collect,
    decode_conversation,
    row_record,
    sample_ids,
    target_check,
    write_files,
    write_preview,
)
from transforms.geometry import render_box, render_polygon

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
WINDOW = (1280, 900)
LOAD_BUDGET_MS = 3000  # a 5,000-row preview must be ready (first page rendered, its images decoded) sooner


# ------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def build(clean_build, tmp_path_factory) -> Path:
    return writable_copy(clean_build.out, tmp_path_factory.mktemp("preview") / "out")


@pytest.fixture(scope="module")
def preview(build):
    return write_preview(build, rows_per_task=8)


@pytest.fixture(scope="module")
def records(preview, build) -> dict[str, dict]:
    """The previewed rows as the viewer reads them, by id (from the written chunks)."""
    rows = {}
    for path in sorted(preview.path.parent.glob("data-*/rows-*.js")):
        text = path.read_text(encoding="utf-8")
        rows.update({r["id"]: r for r in json.loads(text[text.index(",") + 1 : text.rindex(")")])["rows"]})
    return rows


def chromium_binary() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    message = "chromium is not installed (.ci/run installs it: apt-get install -y chromium)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


class Chromium:
    """Headless Chromium driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``:
    commands in on fd 3, replies out on fd 4, each a JSON message ending in a NUL byte)."""

    def __init__(self, binary: str, profile: Path):
        commands_read, self.commands = os.pipe()
        self.replies, replies_write = os.pipe()

        def wire():
            high_in = fcntl.fcntl(commands_read, fcntl.F_DUPFD, 10)
            high_out = fcntl.fcntl(replies_write, fcntl.F_DUPFD, 10)
            os.dup2(high_in, 3)
            os.dup2(high_out, 4)

        self.process = subprocess.Popen(
            [
                binary,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={profile}",
                "--remote-debugging-pipe",
                f"--window-size={WINDOW[0]},{WINDOW[1]}",
                "--hide-scrollbars",
                "about:blank",
            ],
            preexec_fn=wire,
            close_fds=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(commands_read)
        os.close(replies_write)
        self.buffer, self.last_id, self.events = b"", 0, []
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for method in ("Page.enable", "Runtime.enable"):
            self.call(method, session=True)
        self.call(
            "Emulation.setDeviceMetricsOverride",
            session=True,
            width=WINDOW[0],
            height=WINDOW[1],
            deviceScaleFactor=1,
            mobile=False,
        )

    def _message(self) -> dict:
        while b"\0" not in self.buffer:
            chunk = os.read(self.replies, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe")
            self.buffer += chunk
        raw, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(raw)

    def call(self, method: str, session: bool = False, **params) -> dict:
        self.last_id += 1
        message = {"id": self.last_id, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        os.write(self.commands, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._message()
            if reply.get("id") == self.last_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def evaluate(self, expression: str):
        result = self.call(
            "Runtime.evaluate",
            session=True,
            expression=expression,
            awaitPromise=True,
            returnByValue=True,
            timeout=60000,
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def _navigate(self, url: str) -> None:
        self.events = []
        self.call("Page.navigate", session=True, url=url)
        while not any(e.get("method") == "Page.loadEventFired" for e in self.events):
            self.events.append(self._message())

    def load(self, url: str) -> dict:
        """Open ``url`` as a new document (by way of about:blank, so a URL differing only in its
        fragment loads afresh too); the viewer's state once its first view is ready."""
        self._navigate("about:blank")
        self._navigate(url)
        return self.evaluate("PREVIEW.whenReady()")

    def go(self, fragment: str) -> dict:
        """Switch the open preview to ``#fragment`` (same document); its state once ready."""
        return self.evaluate(f"PREVIEW.go({json.dumps(fragment)})")

    def screenshot(self, clip: dict | None = None) -> bytes:
        params = {"format": "png"}
        if clip:
            params["clip"] = {
                "x": clip["x"],
                "y": clip["y"],
                "width": clip["width"],
                "height": clip["height"],
                "scale": 1,
            }
        return base64.b64decode(self.call("Page.captureScreenshot", session=True, **params)["data"])

    def close(self) -> None:
        try:
            self.call("Browser.close")
            self.process.wait(timeout=20)
        except (RuntimeError, OSError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait()
        os.close(self.commands)
        os.close(self.replies)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    chromium = Chromium(chromium_binary(), tmp_path_factory.mktemp("chromium-profile"))
    yield chromium
    chromium.close()


# ------------------------------------------------------------------------------------ decoding, no build


def turns(question: str, answer: str) -> list[dict]:
    return [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]


def instruction(profile: str, task: str, question: str, answer: str, target: dict, row_id: str = "r1") -> dict:
    return {
        "id": row_id,
        "profile": profile,
        "task": task,
        "source": "vindr",
        "split": "train",
        "image_keys": ["k"],
        "conversations": turns(question, answer),
        "target": json.dumps(target),
        "template_id": "t",
    }


def test_sample_takes_every_source_first_and_ignores_row_order():
    ids = [f"row-{i}" for i in range(60)]
    sources = ["mimic" if i % 10 else "siim" for i in range(60)]
    chosen = sample_ids(ids, 5, sources)
    assert len(chosen) == 5 and chosen == sample_ids(ids[::-1], 5, sources[::-1])
    assert {sources[ids.index(c)] for c in chosen[:2]} == {"mimic", "siim"}
    assert sample_ids(ids[:3], 5) == sample_ids(ids[:3][::-1], 5) and len(sample_ids(ids[:3], 5)) == 3


def test_labelled_percent_answer_decodes_to_canvas_boxes_with_labels():
    answer = "Aortic enlargement: [51, 22, 59, 31]; Cardiomegaly: [31, 46, 74, 68], [10, 10, 20, 20]"
    shapes, error = decode_conversation(turns("<image>\nList the abnormalities.", answer), "percent", 512)
    assert error is None
    assert [(s["role"], s["label"], s["box"]) for s in shapes] == [
        ("answer", "Aortic enlargement", [261.12, 112.64, 302.08, 158.72]),
        ("answer", "Cardiomegaly", [158.72, 235.52, 378.88, 348.16]),
        ("answer", "Cardiomegaly", [51.2, 51.2, 102.4, 102.4]),
    ]
    assert [answer[slice(*s["span"])] for s in shapes] == ["[51, 22, 59, 31]", "[31, 46, 74, 68]", "[10, 10, 20, 20]"]


def test_spans_are_utf16_offsets_as_javascript_counts_them():
    answer = "\U0001f600 heart: [10, 10, 20, 20]"  # one astral character: two UTF-16 code units
    (shape,), _ = decode_conversation(turns("q", answer), "percent", 512)
    assert shape["span"] == [len(answer.encode("utf-16-le")) // 2 - 16, len(answer.encode("utf-16-le")) // 2]


@given(
    box=st.tuples(st.floats(0, 1), st.floats(0, 1), st.floats(0, 1), st.floats(0, 1)).map(
        lambda b: (min(b[0], b[2]), min(b[1], b[3]), max(b[0], b[2]), max(b[1], b[3]))
    ),
    convention=st.sampled_from(["bins1000", "percent", "fixed3"]),
)
def test_an_answer_box_is_drawn_within_half_a_step_of_its_unit_box(box, convention):
    (shape,), error = decode_conversation(turns("q", render_box(box, convention)), convention, 512)
    step = {"bins1000": 0.0005, "percent": 0.005, "fixed3": 0.0005}[convention]
    assert error is None and shape["kind"] == "box"
    assert max(abs(drawn - unit * 512) for drawn, unit in zip(shape["box"], box)) <= step * 512 + 0.01


def test_rows_are_classified_by_what_their_image_shows():
    box = (0.2, 0.3, 0.6, 0.7)
    located = row_record(
        instruction(
            "imt-cxr",
            "lesion_localization",
            "<image>\nWhere is effusion?",
            render_box(box, "bins1000"),
            {"boxes": [{"box": list(box), "label": "Effusion"}]},
        ),
        512,
    )
    assert located["kind"] == "answer" and located["check"] == 1 and located["shapes"][0]["label"] == "Effusion"
    named = row_record(
        instruction(
            "m4cxr",
            "grounded_organ",
            f"<image>\nWhat occupies {render_box(box, 'percent')}?",
            "heart",
            {"box": list(box), "label": "heart"},
        ),
        512,
    )
    assert named["kind"] == "question" and named["shapes"][0]["role"] == "question" and named["check"] == 1
    absent = row_record(
        instruction(
            "m4cxr",
            "finding_grounding",
            "<image>\nLocate Nodule/Mass.",
            "Not present.",
            {"boxes": [], "label": "Nodule/Mass", "present": False},
        ),
        512,
    )
    assert absent["kind"] == "negative" and absent["shapes"] == [] and absent["check"] == 1
    for text in ("Not found.", "No abnormality."):
        task = "multi_finding_grounding" if text == "Not found." else "abnormality_detection"
        assert row_record(instruction("m4cxr", task, "<image>\nq", text, {"boxes": []}), 512)["kind"] == "negative"
    ring = [(0.1, 0.1), (0.4, 0.1), (0.4, 0.5), (0.1, 0.5)]
    segmented = row_record(
        instruction(
            "imt-cxr",
            "segmentation",
            "<image>\nSegment the heart.",
            render_polygon([ring], "bins1000"),
            {"rings": [ring]},
        ),
        512,
    )
    assert segmented["kind"] == "answer" and segmented["shapes"][0]["kind"] == "polygon" and segmented["check"] == 1
    assert (
        row_record(instruction("m4cxr", "triage", "<image>\nHow urgent?", "mild", {"bucket": "mild"}), 512)["kind"]
        == "text"
    )
    broken = row_record(instruction("imt-cxr", "lesion_localization", "q", "<bin_1><bin_2><bin_3>", {"boxes": []}), 512)
    assert broken["kind"] == "error" and "neither a box" in broken["error"]
    for target in ("[0.1, 0.2, 0.3, 0.4]", "{not json"):
        row = instruction("m4cxr", "triage", "<image>\nHow urgent?", "mild", {})
        row["target"] = target
        assert row_record(row, 512)["error"] == "target is not a JSON object"


def test_an_answer_box_that_is_not_the_targets_is_flagged():
    wrong = row_record(
        instruction(
            "m4cxr",
            "organ_grounding",
            "<image>\nLocate the heart.",
            "[10, 10, 20, 20]",
            {"box": [0.3, 0.4, 0.7, 0.66], "label": "heart"},
        ),
        512,
    )
    assert wrong["kind"] == "answer" and wrong["check"] == 0 and "differ" in wrong["check_text"]
    check, text = target_check(
        {"rings": [[[0.1, 0.1], [0.2, 0.1], [0.2, 0.2]]] * 2},
        turns("q", render_polygon([[(0.1, 0.1), (0.2, 0.1), (0.2, 0.2)]], "percent")),
        "percent",
    )
    assert check == 0 and "1 ring(s) written, 2 in the target" in text


# ------------------------------------------------------------------------------------ the written preview


def _tree(root: Path, skip: Path | None = None) -> dict[str, tuple]:
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file() and (skip is None or skip not in p.parents)
    }


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_preview_is_deterministic_atomic_and_stays_inside_preview(build, preview):
    folder = preview.path.parent
    before, first = _tree(build, skip=folder), _hashes(folder)
    again = write_preview(build, rows_per_task=8)  # in place: same generation, nothing left behind
    assert again == preview and _hashes(folder) == first
    assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == []
    assert len(list(folder.glob("data-*"))) == 1
    shutil.rmtree(folder)
    write_preview(build, rows_per_task=8)
    assert _hashes(folder) == first  # byte-identical from scratch
    after = _tree(build, skip=folder)
    assert after.pop("manifest.json") != before.pop("manifest.json")  # it lists the preview's files ...
    assert after == before  # ... and nothing else outside OUT/preview/ was touched
    listed = {e["path"] for e in json.loads((build / "manifest.json").read_text())["files"]}
    assert {f"preview/{p.relative_to(folder).as_posix()}" for p in folder.rglob("*") if p.is_file()} <= listed
    fewer = write_preview(build, rows_per_task=2)  # a new generation replaces the old one entirely
    assert len(list(folder.glob("data-*"))) == 1 and fewer.items < preview.items
    referenced = set()
    for path in folder.glob("data-*/rows-*.js"):
        referenced |= {
            v["file"] for v in json.loads(path.read_text()[path.read_text().index(",") + 1 : -3])["images"].values()
        }
    assert {p.name for p in (folder / "images").iterdir()} == referenced
    write_preview(build, rows_per_task=8)
    assert _hashes(folder) == first
    for path in folder.rglob("*"):
        if path.is_file() and path.suffix in (".js", ".html"):
            assert str(build) not in path.read_text(encoding="utf-8"), path  # no local paths in the preview


def test_a_preview_that_fails_half_way_leaves_the_previous_one_whole(build, preview, monkeypatch):
    folder = preview.path.parent
    before = _hashes(folder)
    real_write = Path.write_bytes
    calls = []

    def failing_write(self, data):
        calls.append(self)
        if len(calls) == 5:
            raise OSError("disk full")
        return real_write(self, data)

    monkeypatch.setattr(Path, "write_bytes", failing_write)
    with pytest.raises(OSError, match="disk full"):
        write_preview(build, rows_per_task=3)
    monkeypatch.undo()
    assert {k: v for k, v in _hashes(folder).items() if not k.startswith(".staging-")} == before
    assert write_preview(build, rows_per_task=8) == preview and _hashes(folder) == before  # staging cleaned


def test_index_html_is_small_and_rows_live_in_chunks(preview, records):
    assert preview.path.stat().st_size < 8_000
    assert len(records) == preview.items
    assert len(list(preview.path.parent.glob("data-*/rows-*.js"))) == -(-preview.items // CHUNK_ROWS)


def test_every_previewed_row_decodes_and_draws_its_targets_boxes(build, preview, records):
    assert preview.decode_errors == 0 and preview.mismatches == 0
    by_task: dict[str, list[dict]] = {}
    for r in records.values():
        by_task.setdefault(r["task"], []).append(r)
    for task in (
        "m4cxr/organ_grounding",
        "m4cxr/phrase_grounding",
        "imt-cxr/lesion_localization",
        "imt-cxr/segmentation",
    ):
        assert by_task[task] and all(r["kind"] in ("answer", "negative") for r in by_task[task]), task
    for task in ("m4cxr/grounded_organ", "m4cxr/grounded_anatomical_region", "m4cxr/grounded_finding"):
        assert all(r["kind"] == "question" and len(r["shapes"]) == 1 for r in by_task[task]), task
    negatives = [r for r in records.values() if r["kind"] == "negative"]
    assert negatives and preview.negatives == len(negatives)
    assert all(
        r["shapes"] == [] and r["conversations"][-1]["value"] in ("Not present.", "Not found.", "No abnormality.")
        for r in negatives
    )
    for r in records.values():  # every box of an answer is one of the target's boxes, to the rendering's step
        target = json.loads(r["target"])
        units = [b["box"] for b in target.get("boxes") or []] + ([target["box"]] if "box" in target else [])
        for shape in (s for s in r["shapes"] if s["kind"] == "box"):
            assert any(
                max(abs(d - u * 512) for d, u in zip(shape["box"], unit)) <= 0.005 * 512 + 0.01 for unit in units
            )


def test_rejects_are_listed_with_stage_reason_and_detail(build, preview):
    rejects = ds.dataset(str(build / "rejects"), format="parquet").to_table().to_pylist()
    (path,) = preview.path.parent.glob("data-*/rejects-00000.js")
    listed = json.loads(path.read_text(encoding="utf-8")[len("PREVIEW.rejects(0,") : -3])
    assert preview.rejects == len(listed) == len(rejects) > 0
    assert sorted(map(tuple, listed)) == sorted(
        (r["key"], r["source"], r["stage"], r["kind"], r["level"], r["reason"], r["detail"]) for r in rejects
    )


# ------------------------------------------------------------------------------------ in Chromium


def coloured_box(png: bytes) -> tuple[int, int, int, int] | None:
    """Bounding box (x1, y1, x2, y2, inclusive) of the saturated pixels of a screenshot of a grey X-ray:
    the drawn shapes."""
    image = Image.open(io.BytesIO(png)).convert("RGB")
    width, height = image.size
    data = image.load()
    xs, ys = [], []
    for y in range(height):
        for x in range(width):
            r, g, b = data[x, y]
            if max(r, g, b) - min(r, g, b) > 80:
                xs.append(x)
                ys.append(y)
    return (min(xs), min(ys), max(xs), max(ys)) if xs else None


def figure_rect(browser: Chromium, row_id: str) -> dict:
    return browser.evaluate(f"""(function () {{
        var r = document.querySelector('article[data-id="{row_id}"] .canvas').getBoundingClientRect();
        return {{x: r.x, y: r.y, width: r.width, height: r.height}};
    }})()""")


def assert_drawn_at(browser: Chromium, row_id: str, unit_box: tuple[float, ...], tolerance: float = 2.5) -> None:
    rect = figure_rect(browser, row_id)
    found = coloured_box(browser.screenshot(rect))
    assert found is not None, f"nothing drawn on row {row_id}"
    scale = rect["width"]
    expected = [unit_box[0] * scale, unit_box[1] * scale, unit_box[2] * scale, unit_box[3] * scale]
    assert all(abs(f - e) <= tolerance for f, e in zip(found, expected)), (row_id, found, expected)


def first(records: dict, task: str, kind: str, shapes: int = 1) -> dict:
    return next(
        r for _, r in sorted(records.items()) if r["task"] == task and r["kind"] == kind and len(r["shapes"]) == shapes
    )


def test_each_section_renders_in_chromium(build, preview, records, browser, tmp_path):
    url = preview.path.as_uri()
    state = browser.load(url)
    assert state["view"] == "overview" and state["errors"] == 0
    tasks = browser.evaluate(
        "Array.prototype.map.call(document.querySelectorAll('#task-counts tr[data-task]'), "
        "function (tr) { return tr.dataset.task; })"
    )
    assert sorted(tasks) == sorted({r["task"] for r in records.values()})
    profiles = browser.evaluate(
        "Array.prototype.map.call(document.querySelectorAll('#profiles tr[data-profile]'), "
        "function (tr) { return tr.innerText; })"
    )
    assert [line.split("\t")[:3] for line in profiles] == [
        ["chexmix", "CheXmix", "as built"],
        ["imt-cxr", "IMT-CXR", "as built"],
        ["m4cxr", "M4CXR", "as built"],
        ["medivlm", "MediVLM", "224x224"],
        ["radixpert", "Radixpert", "224x224"],
    ]
    assert "Severity Score" in profiles[3] and "PadChest" in profiles[4]
    shots = {"overview": browser.screenshot()}

    state = browser.go("#rows")
    assert state["rows"] == min(20, preview.items) and state["matching"] == preview.items
    assert state["images"] == state["loaded"] > 0 and state["errors"] == 0 and state["source"] == 0
    assert (
        browser.evaluate(
            "Array.prototype.map.call(document.querySelectorAll('.pager a'), "
            "function (a) { return a.className + ' ' + a.getAttribute('href'); })"
        )
        == ["next #rows?page=2"] * 2
    )
    shots["rows"] = browser.screenshot()

    task = "m4cxr/organ_grounding"
    state = browser.go(f"#rows?task={task}&source=vindr")
    expected = [r for r in records.values() if r["task"] == task and r["source"] == "vindr"]
    assert state["matching"] == len(expected) > 0 and state["answer"] == len(expected)
    shown = browser.evaluate(
        "Array.prototype.map.call(document.querySelectorAll('article.item'), function (a) { return a.dataset.id; })"
    )
    assert sorted(shown) == sorted(r["id"] for r in expected)
    shots["filtered"] = browser.screenshot()

    state = browser.go("#rows?size=10&page=3")
    assert state["rows"] == min(10, preview.items - 20) and state["loaded"] == state["images"]
    assert browser.evaluate("document.querySelector('.pager a.prev').getAttribute('href')") == "#rows?size=10&page=2"

    state = browser.go("#rejects")
    assert state["rows"] == preview.rejects and state["errors"] == 0
    table = browser.evaluate("document.querySelector('#reject-list').innerText")
    for reject in ds.dataset(str(build / "rejects"), format="parquet").to_table().to_pylist():
        assert (
            f"{reject['stage']}\t{reject['kind']}\t{reject['level']}\t{reject['reason']}\t{reject['detail']}" in table
        )
    shots["rejects"] = browser.screenshot()
    for name, png in shots.items():
        (tmp_path / f"{name}.png").write_bytes(png)
        assert Image.open(io.BytesIO(png)).size == WINDOW


def test_drawn_shapes_sit_where_the_decoded_coordinates_put_them(preview, records, browser):
    browser.load(preview.path.as_uri())
    percent = first(records, "m4cxr/organ_grounding", "answer")
    bins = first(records, "imt-cxr/lesion_localization", "answer")
    question = first(records, "m4cxr/grounded_organ", "question")
    for row in (percent, bins, question):
        state = browser.go(f"#row?id={row['id']}")
        assert state["answer"] + state["question"] == 1 and state["source"] == 0 and state["loaded"] == 1
        target = json.loads(row["target"])
        unit = target["box"] if "box" in target else target["boxes"][0]["box"]
        assert_drawn_at(browser, row["id"], unit, tolerance=0.005 * 320 + 2.5)  # the rendering's step, then pixels
        assert_drawn_at(browser, row["id"], [v / 512 for v in row["shapes"][0]["box"]])
    segmentation = first(records, "imt-cxr/segmentation", "answer")
    browser.go(f"#row?id={segmentation['id']}")
    rings = segmentation["shapes"][0]["rings"]
    xs = [v for ring in rings for v in ring[0::2]]
    ys = [v for ring in rings for v in ring[1::2]]
    assert_drawn_at(browser, segmentation["id"], [min(xs) / 512, min(ys) / 512, max(xs) / 512, max(ys) / 512])


def test_negative_rows_draw_nothing_and_say_so(preview, records, browser):
    browser.load(preview.path.as_uri())
    negative = next(r for _, r in sorted(records.items()) if r["kind"] == "negative")
    state = browser.go(f"#row?id={negative['id']}")
    assert state["answer"] == state["question"] == 0 and state["loaded"] == 1
    assert coloured_box(browser.screenshot(figure_rect(browser, negative["id"]))) is None
    assert "nothing is drawn" in browser.evaluate("document.querySelector('article.item .nothing').textContent")


def test_source_annotations_are_off_by_default_and_toggle_on(build, preview, records, browser, tmp_path):
    browser.load(preview.path.as_uri())
    row = first(records, "m4cxr/organ_grounding", "answer")
    state = browser.go(f"#row?id={row['id']}")
    assert state["source"] == 0
    without = coloured_box(browser.screenshot(figure_rect(browser, row["id"])))
    annotation = (
        ds.dataset(str(build / "annotations"), format="parquet")
        .to_table(filter=ds.field("image_key") == row["image_keys"][0])
        .to_pylist()[0]
    )
    shapes = len(annotation["boxes"]) + sum(len(p["rings_unit"]) for p in annotation["polygons"])
    assert shapes > 1
    state = browser.go(f"#row?id={row['id']}&ann=1")
    assert state["source"] == shapes and state["answer"] == 1
    shot = browser.screenshot(figure_rect(browser, row["id"]))
    (tmp_path / "annotations.png").write_bytes(shot)
    with_annotations = coloured_box(shot)
    assert with_annotations[0] <= without[0] and with_annotations[2] >= without[2]
    drawn = browser.evaluate("""(function () {
        var box = document.querySelector('article.item input.ann-toggle');
        box.checked = false; box.dispatchEvent(new Event('change'));
        return document.querySelectorAll('svg .shape.source').length; })()""")
    assert drawn == 0


def test_a_5000_row_preview_loads_in_under_three_seconds(build, browser, tmp_path):
    data = collect(build, rows_per_task=50)
    base, rows = data.rows, []
    for i in range(5000):
        row = copy.deepcopy(base[i % len(base)])
        row["id"] = f"{row['id']}-{i:04d}"
        rows.append(row)
    data.rows = sorted(rows, key=lambda r: r["task"])
    index = write_files(data, tmp_path / "preview")
    assert index.stat().st_size < 8_000
    sizes = sorted(p.stat().st_size for p in index.parent.glob("data-*/*.js"))
    assert sizes[-1] < 1_500_000  # the row index of 5,000 rows, and every chunk, stay small
    timings = []
    for fragment in ("", "#rows", "#rows?source=vindr&page=7", f"#rows?page={5000 // 20}"):
        start = time.monotonic()
        state = browser.load(index.as_uri() + fragment)
        wall_ms = (time.monotonic() - start) * 1000
        ready_ms = browser.evaluate("PREVIEW.firstReadyMs")
        timings.append((fragment, ready_ms, round(wall_ms)))
        assert state["errors"] == 0 and state["loaded"] == state["images"], state
        assert ready_ms < LOAD_BUDGET_MS and wall_ms < LOAD_BUDGET_MS + 2000, timings
    assert browser.go("#rows")["matching"] == 5000
    print("5,000-row preview ready after (fragment, in-page ms, wall ms):", timings)
