"""The preview page: overlay geometry, deterministic sampling, and a real render in headless Chromium.

The browser test installs Debian's ``chromium`` when it is missing and the test runs as root (as CI
does); it reads the summary the page's own script writes into the DOM after every image has loaded.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from builds import synthetic_build
from pipelines.preview import CANVAS, overlay_svg, render_item, sample_ids, write_preview

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def build(tmp_path_factory) -> Path:
    out = synthetic_build(tmp_path_factory, studies=6, seed=2)
    return out


@pytest.fixture(scope="module")
def chromium() -> str:
    """Path of Debian's chromium, installed with apt-get when missing (root only)."""
    found = shutil.which("chromium")
    if found:
        return found
    if os.geteuid() != 0:
        pytest.skip("chromium is not installed and the test is not root (apt-get install -y chromium)")
    install = subprocess.run("apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium",
                             shell=True, capture_output=True, text=True, timeout=900)
    if install.returncode != 0 or not shutil.which("chromium"):
        pytest.fail(f"apt-get install chromium failed:\n{install.stdout[-2000:]}\n{install.stderr[-2000:]}")
    return shutil.which("chromium")


def run_chromium(chromium: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=120)


unit = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)


@given(u1=unit, v1=unit, u2=unit, v2=unit)
def test_a_box_is_drawn_at_its_unit_coordinates_times_the_canvas(u1, v1, u2, v2):
    u1, u2 = sorted((u1, u2))
    v1, v2 = sorted((v1, v2))
    svg, n = overlay_svg({"boxes": [{"label": "heart", "u1": u1, "v1": v1, "u2": u2, "v2": v2}], "polygons": []})
    x, y, w, h = map(float, re.search(r'<rect x="([\d.]+)" y="([\d.]+)" width="([\d.]+)" height="([\d.]+)"',
                                      svg).groups())
    assert n == 1
    assert abs(x - u1 * CANVAS) <= 0.05 and abs(y - v1 * CANVAS) <= 0.05
    assert abs(x + w - u2 * CANVAS) <= 0.1 and abs(y + h - v2 * CANVAS) <= 0.1
    assert f'viewBox="0 0 {CANVAS} {CANVAS}"' in svg


def test_every_ring_of_a_polygon_is_drawn():
    rings = [[[0.1, 0.1], [0.2, 0.1], [0.2, 0.2]], [[0.5, 0.5], [0.75, 0.5], [0.75, 1.0]]]
    svg, n = overlay_svg({"boxes": [], "polygons": [{"label": "left lung", "rings_unit": rings}]})
    assert n == 2
    assert 'points="256.0,256.0 384.0,256.0 384.0,512.0"' in svg


def test_sample_is_the_same_whatever_the_input_order():
    ids = [f"row-{i}" for i in range(50)]
    chosen = sample_ids(ids, 5)
    assert len(chosen) == 5 and chosen == sample_ids(ids[::-1], 5)
    assert sample_ids(ids[:3], 5) == sample_ids(ids[:3][::-1], 5) and len(sample_ids(ids[:3], 5)) == 3


def test_a_row_naming_a_missing_image_is_an_error():
    row = {"id": "x", "image_keys": ["mimic/absent"], "conversations": [], "target": "{}"}
    with pytest.raises(ValueError, match="mimic/absent"):
        render_item(row, images={}, annotations={})


def test_page_renders_every_item_image_and_shape_in_chromium(build, chromium, tmp_path):
    result = write_preview(build, rows_per_task=2)
    tasks = [t for t in (build / "instructions").glob("*/*") if t.is_dir()]
    assert result.items == 2 * len(tasks) and result.shapes > 0
    again = write_preview(build, rows_per_task=2)
    assert again == result

    dom = run_chromium(chromium, tmp_path / "profile", "--dump-dom", result.path.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    summary = re.search(r'<p id="summary"([^>]*)>', dom.stdout)
    assert summary, dom.stdout[:2000]
    data = dict(re.findall(r'data-([a-z-]+)="([^"]*)"', summary.group(1)))
    assert data["errors"] == "0", re.search(r'<p id="summary"[^>]*>([^<]*)', dom.stdout).group(1)
    assert int(data["items"]) == int(data["expected-items"]) == result.items
    assert int(data["images"]) == int(data["loaded"]) == result.images
    assert int(data["shapes"]) == result.shapes

    shot = tmp_path / "preview.png"
    run_chromium(chromium, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1200,900",
                 "--hide-scrollbars", result.path.as_uri())
    header = shot.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", header[16:24]) == (1200, 900)
