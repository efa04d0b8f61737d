"""Tests for sketch_rnn.render: SVG text, PNG files, grids, pairs and strips, atomic writes."""

import xml.etree.ElementTree as ET

import numpy as np
import pytest
from PIL import Image

from sketch_rnn import data, render
from sketch_rnn.synthetic import synthetic

SVG = "{http://www.w3.org/2000/svg}"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
HOUSE = synthetic(3, seed=0, classes=["house"]).train[0]  # three strokes
SKETCHES = synthetic(3, seed=0).test


def test_svg_parses_with_one_polyline_per_stroke(tmp_path):
    text = render.to_svg(HOUSE, tmp_path / "house.svg", size=100)
    root = ET.fromstring(text)
    assert root.tag == f"{SVG}svg" and root.get("width") == "100"
    polylines = root.findall(f".//{SVG}polyline")
    assert len(polylines) == HOUSE[:, 2].sum() == 3
    assert sum(len(p.get("points").split()) for p in polylines) == len(HOUSE)
    assert (tmp_path / "house.svg").read_text() == text


def test_svg_view_box_holds_every_point():
    root = ET.fromstring(render.to_svg(HOUSE))
    x0, y0, width, height = map(float, root.get("viewBox").split())
    assert width == height
    points = np.concatenate(data.strokes_to_lines(HOUSE))
    assert np.all(points >= [x0, y0]) and np.all(points <= [x0 + width, y0 + height])


def test_svg_of_a_single_point_and_of_nothing():
    [dot] = ET.fromstring(render.to_svg(np.array([[3, 4, 1]]))).findall(f".//{SVG}polyline")
    assert dot.get("points") == "3,4 3,4"  # zero length: round caps draw a dot
    assert ET.fromstring(render.to_svg(np.zeros((0, 3)))).findall(f".//{SVG}polyline") == []


def test_png_signature_and_size(tmp_path):
    path = render.to_png(HOUSE, tmp_path / "house.png", size=77)
    assert path.read_bytes().startswith(PNG_SIGNATURE)
    with Image.open(path) as image:
        assert image.size == (77, 77)
        pixels = np.asarray(image.convert("L"))
    assert pixels.min() < 100 and pixels.max() == 255  # black strokes on white


@pytest.mark.parametrize("suffix", [".png", ".svg"])
def test_tables_write_files(tmp_path, suffix):
    titles = [f"sketch {i}" for i in range(len(SKETCHES))]
    written = [
        render.grid(SKETCHES, tmp_path / f"grid{suffix}", ncols=4, titles=titles),
        render.pairs(SKETCHES[:3], SKETCHES[3:6], tmp_path / f"pairs{suffix}"),
        render.strip(SKETCHES[:5], tmp_path / f"strip{suffix}", cell_size=64),
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in written)  # no temporaries
    if suffix == ".svg":
        root = ET.parse(written[0]).getroot()
        assert len(root.findall(f".//{SVG}polyline")) == sum(s[:, 2].sum() for s in SKETCHES)
        assert [t.text for t in root.findall(f"{SVG}text")] == titles
    else:
        sizes = [Image.open(p).size for p in written]
        assert sizes[1] == (3 * 128, int(2 * 128 * (1 + render.TITLE_HEIGHT))) and sizes[2] == (5 * 64, 64)
        assert sizes[0][0] == 4 * 128


def test_a_one_point_sketch_is_a_dot_in_its_cell(tmp_path):
    render.grid([np.array([[3, 4, 1]])], tmp_path / "dot.png", ncols=1)
    pixels = np.asarray(Image.open(tmp_path / "dot.png").convert("L"))
    assert pixels.min() < 100 and (pixels < 128).sum() < 100


def test_completions_draw_the_kept_part_in_another_colour(tmp_path):
    kept = len(HOUSE) // 2
    root = ET.fromstring(render.to_svg(HOUSE, prefix=kept))
    polylines = root.findall(f".//{SVG}polyline")
    colours = [p.get("stroke") for p in polylines]
    assert colours[0] == render.PREFIX_COLOUR and colours[-1] == render.STROKE_COLOUR
    red = sum(len(p.get("points").split()) for p in polylines if p.get("stroke") == render.PREFIX_COLOUR)
    assert red == kept
    path = render.completions([HOUSE[:kept]], [HOUSE], tmp_path / "completions.png")
    rgb = np.asarray(Image.open(path).convert("RGB")).astype(int)
    reddish = (rgb[..., 0] > 150) & (rgb[..., 1] < 100) & (rgb[..., 2] < 100)
    top, bottom = reddish[: rgb.shape[0] // 2], reddish[rgb.shape[0] // 2 :]
    assert top.sum() > 20 and bottom.sum() > 20
    assert ((rgb.sum(axis=-1) < 100) & ~reddish)[rgb.shape[0] // 2 :].sum() > 20  # the completion in black


def test_table_errors(tmp_path):
    with pytest.raises(ValueError, match="use a .png or .svg"):
        render.grid(SKETCHES, tmp_path / "grid.jpg")
    with pytest.raises(ValueError, match="2 titles for 3 sketches"):
        render.grid(SKETCHES[:3], tmp_path / "grid.png", titles=["a", "b"])
    with pytest.raises(ValueError, match="2 originals for 1 reconstructions"):
        render.pairs(SKETCHES[:2], SKETCHES[:1], tmp_path / "pairs.png")
    assert list(tmp_path.iterdir()) == []


def test_failed_write_leaves_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "house.svg"
    path.write_text("old")

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr(render.os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        render.to_svg(HOUSE, path)
    assert path.read_text() == "old" and list(tmp_path.iterdir()) == [path]
