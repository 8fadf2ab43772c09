"""The attention comparison (tools.attention_compare) of the two shipped presets on small generated photos: the SVG
has one row per model per photo and one h x w grid per word with its peak outlined at the argmax of that word's
alpha (as a direct captioner call gives it), the same bytes on a second run and no raster; the PNG has the layout's
size; a corrupt photo is skipped by name with exit status 1; an unknown model lists the presets."""

from __future__ import annotations

import contextlib
import io
import os
import re
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from PIL import Image, ImageDraw

from sat_tf.visualize import figure_size
from tools import attention_compare
from tools.attention_compare import (BLOCK_GAP, HEADER_HEIGHT, SVG_CELL, TITLE_HEIGHT, load_models, main, run)

SVG = "{http://www.w3.org/2000/svg}"
LABELS = ("soft", "hard")
BEAM = 3


@pytest.fixture(scope="module")
def models():
    """Both shipped presets, each loaded once for the module."""
    return load_models(["flickr8k_soft", "flickr8k_hard"], list(LABELS), beam_sizes=[BEAM])


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Two 64 x 64 pictures of coloured shapes and a corrupt JPEG, in that order (corrupt one in the middle)."""
    folder = tmp_path_factory.mktemp("photos")
    disc = Image.new("RGB", (64, 64), (120, 170, 230))
    draw = ImageDraw.Draw(disc)
    draw.rectangle([0, 40, 64, 64], fill=(60, 150, 60))
    draw.ellipse([20, 20, 44, 44], fill=(200, 30, 30))
    disc.save(folder / "disc.png")
    triangle = Image.new("RGB", (64, 64), (240, 240, 240))
    ImageDraw.Draw(triangle).polygon([(32, 4), (60, 60), (4, 60)], fill=(30, 30, 200))
    triangle.save(folder / "triangle.jpg", quality=95)
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is no JPEG")
    return [str(folder / "disc.png"), str(folder / "corrupt.jpg"), str(folder / "triangle.jpg")]


@pytest.fixture(scope="module")
def outputs(models, photos, tmp_path_factory):
    """One run: exit status, stdout, stderr, the SVG's bytes, the PNG's path."""
    out = tmp_path_factory.mktemp("out")
    captured = _run(models, photos, out / "compare.svg", out / "compare.png")
    return {**captured, "svg": (out / "compare.svg").read_bytes(), "png": out / "compare.png"}


def _run(models, photos, svg, png=None) -> dict:
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = run(models, photos, out_svg=str(svg), out_png=str(png) if png else "")
    return {"code": code, "stdout": stdout.getvalue(), "stderr": stderr.getvalue()}


@pytest.fixture(scope="module")
def direct(models, photos):
    """{(label, photo name): Captioned} from each model's ImageCaptioner, called directly on the good photos."""
    good = [photos[0], photos[2]]
    found = {}
    for model in models:
        for result in model.captioner.caption(good, beam_size=BEAM):
            assert result.error is None and result.words
            found[(model.label, os.path.basename(result.path))] = result
    return found


def test_the_corrupt_photo_is_skipped_by_name_and_the_others_compared(outputs):
    assert outputs["code"] == 1
    assert re.search(r"corrupt\.jpg\terror: ", outputs["stderr"])
    assert "corrupt.jpg" not in outputs["stdout"]
    assert "2 photo(s) compared with 2 models, 1 skipped" in outputs["stderr"]


def test_the_svg_has_a_row_per_model_and_a_grid_per_word_with_the_peak_at_the_argmax(outputs, models, direct):
    root = ET.fromstring(outputs["svg"])
    assert root.tag == SVG + "svg"
    assert not list(root.iter(SVG + "image"))
    assert b"data:image" not in outputs["svg"] and b"base64" not in outputs["svg"]
    blocks = root.findall(SVG + "g[@class='photo']")
    assert [b.get("data-file") for b in blocks] == ["disc.png", "triangle.jpg"]
    for block in blocks:
        assert block.find(SVG + "text[@class='title']").text == block.get("data-file")
        rows = block.findall(SVG + "g[@class='model']")
        assert [r.get("data-label") for r in rows] == list(LABELS)
        for row, model in zip(rows, models):
            assert row.find(SVG + "text[@class='label']").text == model.label
            expected = direct[(model.label, block.get("data-file"))]
            h, w = model.grid
            words = row.findall(SVG + "g[@class='word']")
            assert [g.find(SVG + "text[@class='word']").text for g in words] == expected.words
            for k, word in enumerate(words):
                cells = word.find(SVG + "g[@class='grid']").findall(SVG + "rect")
                assert len(cells) == h * w
                # cells are row-major at (col, row) in grid units; the darkest is the peak and is fully shaded
                assert [(int(c.get("y")), int(c.get("x"))) for c in cells] == [divmod(i, w) for i in range(h * w)]
                shade = np.array([float(c.get("fill-opacity", "0")) for c in cells])
                row_col = divmod(int(np.argmax(expected.alpha[k])), w)
                peak = word.find(SVG + "rect[@class='peak']")
                assert (int(peak.get("y")) // SVG_CELL, int(peak.get("x")) // SVG_CELL) == row_col
                assert shade[row_col[0] * w + row_col[1]] == 1.0
                np.testing.assert_allclose(shade, expected.alpha[k] / expected.alpha[k].max(), atol=0.006)


def test_the_summary_names_each_words_peak_cell_and_the_distinct_cells(outputs, models, direct):
    from sat_tf.metrics.attention_spread import caption_spread

    widths = {model.label: model.grid[1] for model in models}
    for (label, name), result in direct.items():
        block = outputs["stdout"].split(f"== {name}\n")[1].split("\n== ")[0]
        lines = block.splitlines()
        i = next(k for k, line in enumerate(lines) if line.startswith(f"{label} ") and result.caption in line)
        peaks = [divmod(int(j), widths[label]) for j in np.argmax(result.alpha, axis=1)]
        assert lines[i + 1].split() == [t for word, (r, c) in zip(result.words, peaks) for t in (word, f"({r},{c})")]
        distinct = caption_spread(result.alpha, len(result.words))[0]
        assert lines[i + 2].strip().startswith(f"{distinct} distinct peak cells over {len(result.words)} words")


def test_the_svg_is_the_same_bytes_on_a_second_run(outputs, models, photos, tmp_path):
    again = _run(models, [photos[0], photos[2]], tmp_path / "again.svg")
    assert again["code"] == 0 and again["stderr"].count("error") == 0
    assert (tmp_path / "again.svg").read_bytes() == outputs["svg"]
    assert len(outputs["svg"]) < 200_000


def test_the_png_has_the_layouts_size(outputs, direct):
    panel = 128
    width, height = panel, 0
    for name in ("disc.png", "triangle.jpg"):
        height += TITLE_HEIGHT + BLOCK_GAP
        for label in LABELS:
            w, h = figure_size(len(direct[(label, name)].words), panel, len(direct[(label, name)].words))
            width, height = max(width, w), height + HEADER_HEIGHT + h
    with Image.open(outputs["png"]) as image:
        assert image.format == "PNG" and image.size == (width, height)


def test_an_unknown_model_lists_the_presets(photos, capsys):
    assert main(["--model", "flickr8k_soft", "--model", "no_such_preset", photos[0]]) == 1
    err = capsys.readouterr().err
    assert "no_such_preset" in err and "flickr8k_soft" in err and "flickr8k_hard" in err


def test_per_model_values_must_match_the_number_of_models():
    with pytest.raises(ValueError, match="one for all or one per model"):
        attention_compare._per_model("beam size", [3, 5, 7], 2)
    assert attention_compare._per_model("beam size", [3], 2) == [3, 3]
    assert attention_compare._per_model("beam size", None, 2) == [None, None]
