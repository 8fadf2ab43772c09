"""Tests of the attention figure: one panel per word at the documented places, each panel brightest where its
word's attention is, hard-attention locations, the written PNG and argument errors."""

import numpy as np
import pytest
from PIL import Image

from sat_tf.visualize import (DIM, GLOW, LABEL_HEIGHT, PANEL_MARGIN, attention_figure, figure_panel_boxes, figure_size,
                              save_attention_figure)

GRID = (3, 4)  # not square, so a transposed reshape would put the bright cell elsewhere
PANEL = 96     # divisible by 3 and 4: each grid cell is a 32 x 24 pixel block of the panel
WORDS = ["a", "dog", "runs", "on", "the", "green", "grass"]


def _image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(50, 70, 3), dtype=np.uint8)  # (H, W, 3)


def _one_hot_alphas(cells: list[int]) -> np.ndarray:
    alphas = np.full((len(cells), GRID[0] * GRID[1]), 1e-4)  # (T, L): a faint floor, all mass on one cell
    alphas[np.arange(len(cells)), cells] = 1.0
    return alphas / alphas.sum(axis=1, keepdims=True)


def _panels(figure: Image.Image, num_words: int, columns: int) -> list[np.ndarray]:
    return [np.asarray(figure.crop(box), dtype=np.float64)
            for box in figure_panel_boxes(num_words, PANEL, columns)]  # each (P, P, 3)


def _brightest_cell(panel: np.ndarray) -> int:
    """Index (row-major on GRID) of the grid block with the highest mean brightness."""
    gray = panel.mean(axis=2)  # (P, P)
    blocks = gray.reshape(GRID[0], PANEL // GRID[0], GRID[1], PANEL // GRID[1]).mean(axis=(1, 3))  # (h, w)
    return int(np.argmax(blocks))


def test_one_panel_per_word_at_the_documented_places(tmp_path):
    columns = 3
    cells = [0, 5, 11, 7, 3, 8, 5]  # word k attends to cells[k]; words 1 and 6 share a cell
    path = save_attention_figure(tmp_path / "figs" / "fig.png", _image(), WORDS, _one_hot_alphas(cells), GRID,
                                 panel_size=PANEL, columns=columns)
    figure = Image.open(path)
    assert figure.format == "PNG" and figure.mode == "RGB"
    cell_w, cell_h = PANEL + 2 * PANEL_MARGIN, LABEL_HEIGHT + PANEL + 2 * PANEL_MARGIN
    assert figure.size == figure_size(7, PANEL, columns) == (3 * cell_w, 3 * cell_h)  # 7 words -> 3 rows of 3

    panels = _panels(figure, len(WORDS), columns)
    for k, panel in enumerate(panels):
        assert _brightest_cell(panel) == cells[k], f"panel {k} ({WORDS[k]!r})"
        assert panel.std() > 10  # an image, not background
    # Same attention -> same panel; different attention -> different panel.
    np.testing.assert_array_equal(panels[1], panels[6])
    assert np.abs(panels[1] - panels[2]).mean() > 10
    # Exactly seven panels: the two unused slots of the last row are background, as is every label strip's edge.
    for box in figure_panel_boxes(9, PANEL, columns)[7:]:
        assert np.all(np.asarray(figure.crop(box)) == 255)
    # Each word is written in the strip above its panel (some dark text pixels there, none in unused slots).
    for box in figure_panel_boxes(9, PANEL, columns):
        strip = np.asarray(figure.crop((box[0], box[1] - LABEL_HEIGHT, box[2], box[1])))
        assert (strip.min() < 128) == (box in figure_panel_boxes(7, PANEL, columns))


def test_attended_cell_is_brighter_than_the_darkened_rest():
    image = np.full((64, 64, 3), 128, dtype=np.uint8)
    figure = attention_figure(image, ["dog"], _one_hot_alphas([6]), GRID, panel_size=PANEL)
    (panel,) = _panels(figure, 1, 5)
    gray = panel.mean(axis=2)
    # Block (1, 2) is cell 6: rows 32..63, columns 48..71. Its centre gets the full white glow, far corners are
    # only darkened: the paper's look, white where attended.
    assert gray[48, 60] == pytest.approx(128 * (1 - GLOW) + 255 * GLOW, abs=1.0)
    assert gray[5, 5] == pytest.approx(128 * DIM, abs=1.0)
    assert gray[48, 60] > 128 > gray[48, 10]


def test_uniform_attention_lights_the_whole_panel():
    image = np.full((32, 32, 3), 100, dtype=np.uint8)
    alphas = np.full((1, 12), 1 / 12)
    (panel,) = _panels(attention_figure(image, ["a"], alphas, GRID, panel_size=PANEL), 1, 5)
    assert panel.std() < 1.0 and panel.mean() > 100  # flat and bright, no division by zero


def test_hard_attention_locations_highlight_one_cell():
    locations = [4, 0, 11]
    uniform = np.full((3, 12), 1 / 12)  # the soft map would light everything; locations must win
    figure = attention_figure(_image(1), WORDS[:3], uniform, GRID, locations=locations, panel_size=PANEL,
                              columns=2)
    assert figure.size == figure_size(3, PANEL, 2)
    panels = _panels(figure, 3, 2)
    for k, panel in enumerate(panels):
        assert _brightest_cell(panel) == locations[k]
    # A hard mask is (nearly) a box: the chosen block is lit evenly, a far block is fully darkened.
    gray = panels[1].mean(axis=2)  # location 0 = block rows 0..31, columns 0..23
    lit, dark = gray[4:28, 4:20], gray[70:90, 75:90]
    base = np.asarray(Image.fromarray(_image(1)).resize((PANEL, PANEL), Image.BICUBIC), np.float64).mean(axis=2)
    assert lit.mean() > base[4:28, 4:20].mean() + 40
    np.testing.assert_allclose(dark, DIM * base[70:90, 75:90], atol=1.5)
    # alphas may be omitted for hard attention.
    np.testing.assert_array_equal(
        np.asarray(attention_figure(_image(1), WORDS[:3], None, GRID, locations=locations, panel_size=PANEL,
                                    columns=2)), np.asarray(figure))


def test_long_and_unicode_words_are_drawn():
    figure = attention_figure(_image(), ["a" * 200, "café", "<end>"], _one_hot_alphas([0, 1, 2]), GRID,
                              panel_size=PANEL)
    assert figure.size == figure_size(3, PANEL, 5)


@pytest.mark.parametrize("kwargs, message", [
    (dict(words=WORDS[:2]), "alphas has T=3 rows but words has 2"),
    (dict(alphas=np.full((3, 10), 0.1)), r"alphas has L=10 locations but grid \(3, 4\)"),
    (dict(grid=(4, 4)), r"grid \(4, 4\) has h\*w=16"),
    (dict(grid=(3, 0)), "grid must be two positive ints"),
    (dict(alphas=np.full((3,), 0.1)), r"alphas must be a \(T, L\) array"),
    (dict(alphas=np.full((3, 12), np.nan)), "alphas has non-finite"),
    (dict(alphas=None), "alphas is None"),
    (dict(image=np.zeros((8, 8), np.uint8)), r"image must be an \(H, W, 3\) RGB array"),
    (dict(image=np.zeros((8, 8, 4), np.uint8)), r"image must be an \(H, W, 3\) RGB array"),
    (dict(image=np.zeros((8, 8, 3), np.float32)), "image must be uint8"),
    (dict(words="a dog runs"), "words must be a sequence of str"),
    (dict(words=[]), "words is empty"),
    (dict(words=["a", 2, "c"]), r"words\[1\] must be a str"),
    (dict(locations=[0, 1]), "locations must hold one cell index per word"),
    (dict(locations=[0, 1, 12]), r"locations must lie in \[0, 12\)"),
    (dict(locations=[0.0, 1.0, 2.0]), "locations must be integer"),
    (dict(panel_size=0), "panel_size must be a positive int"),
    (dict(columns=0), "columns must be a positive int"),
])
def test_validation_errors_name_the_argument(kwargs, message):
    args = dict(image=_image(), words=WORDS[:3], alphas=_one_hot_alphas([0, 1, 2]), grid=GRID)
    args.update(kwargs)
    extra = {k: args.pop(k) for k in ("locations", "panel_size", "columns") if k in args}
    with pytest.raises(ValueError, match=message):
        attention_figure(args["image"], args["words"], args["alphas"], args["grid"], **extra)
