"""Tests of the attention-grounding metric on hand-built alphas: peaks inside and outside boxes, the cell-to-pixel
mapping at the grid's edges, the step alignment of words and alpha rows, and the chance baselines."""

import math

import numpy as np
import pytest

from sat_tf.metrics.grounding import GroundingResult, attention_peak_in_box, cell_centre, grounding_rate

GRID = (14, 14)
IMAGE = (224, 224)
L = GRID[0] * GRID[1]


def _peak(r, c, grid=GRID):
    """(L,) alpha, uniform but for a peak at cell (r, c)."""
    alpha = np.full(grid[0] * grid[1], 0.1 / (grid[0] * grid[1]))
    alpha[r * grid[1] + c] += 0.9
    return alpha / alpha.sum()


def test_cell_centre_mapping():
    assert cell_centre(0, GRID, IMAGE) == (8.0, 8.0)
    assert cell_centre(L - 1, GRID, IMAGE) == (216.0, 216.0)
    assert cell_centre(13, GRID, IMAGE) == (216.0, 8.0)  # row-major: location 13 is row 0, column 13
    assert cell_centre(14, GRID, IMAGE) == (8.0, 24.0)
    assert cell_centre(7, (2, 4), (100, 200)) == (175.0, 75.0)  # non-square grid and image: (r, c) = (1, 3)
    with pytest.raises(ValueError):
        cell_centre(L, GRID, IMAGE)


@pytest.mark.parametrize("r, c, box, inside", [
    (0, 0, (0, 0, 16, 16), True),
    (0, 0, (9, 0, 16, 16), False),          # the centre (8, 8) is left of the box
    (0, 0, (0, 0, 8, 8), False),            # half-open: x1 = 8 excludes x = 8
    (0, 0, (8, 8, 9, 9), True),             # ... and x0 = 8 includes it
    (13, 13, (200, 200, 224, 224), True),   # last cell, centre (216, 216)
    (13, 13, (0, 0, 216, 216), False),
    (13, 13, (0, 0, 217, 217), True),
    (0, 13, (200, 0, 224, 16), True),       # top-right corner: x from the column, y from the row
    (0, 13, (0, 200, 16, 224), False),
])
def test_attention_peak_in_box(r, c, box, inside):
    assert attention_peak_in_box(_peak(r, c), GRID, box, IMAGE) is inside
    assert attention_peak_in_box(_peak(r, c).reshape(GRID), GRID, box, IMAGE) is inside  # (h, w) also accepted


def test_peak_on_a_coarser_grid_and_larger_image():
    # A 7 x 7 grid over a 448 x 448 image: cells are 64 px, cell (3, 3) is centred on (224, 224).
    assert attention_peak_in_box(_peak(3, 3, (7, 7)), (7, 7), (200, 200, 240, 240), (448, 448))
    assert not attention_peak_in_box(_peak(3, 3, (7, 7)), (7, 7), (0, 0, 224, 224), (448, 448))


def test_wrong_alpha_size():
    with pytest.raises(ValueError, match="locations"):
        attention_peak_in_box(np.ones(10), GRID, (0, 0, 1, 1), IMAGE)


# Two objects: a red circle in the top-left 112 x 112 quarter and a blue square in the bottom-right one.
OBJECTS = [{"shape": "circle", "colour": "red", "size": "large", "box": (0, 0, 112, 112)},
           {"shape": "square", "colour": "blue", "size": "large", "box": (112, 112, 224, 224)}]
WORDS = "a red circle above a blue square <end>".split()  # object words at 1, 2 (circle) and 5, 6 (square)
IN_CIRCLE, IN_SQUARE, IN_NEITHER = _peak(2, 2), _peak(10, 10), _peak(2, 10)


def _alphas(rows):
    """(T, L) from a list of (L,) rows, padded with a uniform row for the <end> step."""
    return np.stack(list(rows) + [np.full(L, 1 / L)])


def test_rate_one_and_zero():
    right = _alphas([IN_SQUARE, IN_CIRCLE, IN_CIRCLE, IN_SQUARE, IN_SQUARE, IN_SQUARE, IN_SQUARE])
    result = grounding_rate([(WORDS, right, OBJECTS)], GRID, IMAGE)
    assert (result.rate, result.hits, result.total) == (1.0, 4, 4)
    assert result.per_word == {"blue": (1, 1), "circle": (1, 1), "red": (1, 1), "square": (1, 1)}

    wrong = _alphas([IN_CIRCLE, IN_SQUARE, IN_SQUARE, IN_CIRCLE, IN_CIRCLE, IN_CIRCLE, IN_CIRCLE])
    result = grounding_rate([(WORDS, wrong, OBJECTS)], GRID, IMAGE)
    assert (result.rate, result.hits, result.total) == (0.0, 0, 4)


def test_word_t_uses_alpha_row_t():
    """Row t is the alpha that produced word t; rows shifted by one (the alpha of the step that reads word t as
    its input, one step later) score only where neighbouring words attend alike."""
    produced = [IN_NEITHER, IN_CIRCLE, IN_CIRCLE, IN_NEITHER, IN_NEITHER, IN_SQUARE, IN_SQUARE]
    shifted = [IN_NEITHER] + produced[:-1]
    assert grounding_rate([(WORDS, _alphas(produced), OBJECTS)], GRID, IMAGE).rate == 1.0
    result = grounding_rate([(WORDS, _alphas(shifted), OBJECTS)], GRID, IMAGE)
    assert result.per_word == {"blue": (0, 1), "circle": (1, 1), "red": (0, 1), "square": (1, 1)}


def test_several_samples_and_unlinked_words():
    half = _alphas([IN_CIRCLE] * 7)  # right for the circle, wrong for the square
    hallucinated = "a yellow triangle".split()  # names nothing in the scene: not counted
    result = grounding_rate([(WORDS, half, OBJECTS), (hallucinated, np.full((4, L), 1 / L), OBJECTS)], GRID, IMAGE)
    assert (result.hits, result.total, result.rate) == (2, 4, 0.5)


def test_chance_baselines():
    result = grounding_rate([(WORDS, _alphas([IN_CIRCLE] * 7), OBJECTS)], GRID, IMAGE)
    assert result.chance == pytest.approx(0.25)  # each box is a quarter of the image
    assert result.chance_cells == pytest.approx(0.25)  # 7 x 7 of the 14 x 14 cell centres

    small = [{"shape": "circle", "colour": "red", "size": "small", "box": (0, 0, 20, 20)}]
    result = grounding_rate([(["a", "circle"], np.stack([IN_CIRCLE, IN_CIRCLE]), small)], GRID, IMAGE)
    assert result.chance == pytest.approx(400 / 224 ** 2)
    assert result.chance_cells == pytest.approx(1 / L)  # only the centre (8, 8) is inside
    # Averaged over linked words: one word on a quarter box, one on the small box.
    result = grounding_rate([(["a", "circle"], np.stack([IN_CIRCLE, IN_CIRCLE]), small),
                             (["a", "square"], np.stack([IN_CIRCLE, IN_CIRCLE]), OBJECTS)], GRID, IMAGE)
    assert result.chance == pytest.approx((400 / 224 ** 2 + 0.25) / 2)


def test_nothing_linked_is_nan():
    result = grounding_rate([(["two", "shapes"], np.full((2, L), 1 / L), OBJECTS)], GRID, IMAGE)
    assert result.total == 0 and math.isnan(result.rate) and math.isnan(result.chance)
    assert isinstance(result, GroundingResult) and "0/0" in str(result)


def test_custom_link_fn():
    link_everything_to_circle = lambda words, objects: [(t, 0) for t in range(len(words))]  # noqa: E731
    result = grounding_rate([(["x", "y"], np.stack([IN_CIRCLE, IN_SQUARE]), OBJECTS)], GRID, IMAGE,
                            link_fn=link_everything_to_circle)
    assert result.per_word == {"x": (1, 1), "y": (0, 1)}


def test_shape_errors():
    with pytest.raises(ValueError, match="alpha rows"):
        grounding_rate([(WORDS, np.full((3, L), 1 / L), OBJECTS)], GRID, IMAGE)
    with pytest.raises(ValueError, match=r"\(T, L=196\)"):
        grounding_rate([(WORDS, np.full((8, 10), 0.1), OBJECTS)], GRID, IMAGE)
    with pytest.raises(ValueError, match="outside"):
        grounding_rate([(["a"], np.full((1, L), 1 / L), OBJECTS)], GRID, IMAGE, link_fn=lambda w, o: [(0, 5)])
