"""The attention-spread figures (`sat_tf.metrics.attention_spread`) on hand-made attention maps."""

import numpy as np
import pytest

from sat_tf.metrics.attention_spread import attention_spread, caption_spread

L = 4


def _one_hot(cells, extra_rows=1):
    alpha = np.zeros((len(cells) + extra_rows, L), np.float32)  # the <end> row (and padding) follow the words
    alpha[np.arange(len(cells)), cells] = 1.0
    alpha[len(cells):] = 1.0 / L
    return alpha


def test_one_caption_counts_its_peaks_and_ignores_the_end_row():
    alpha = _one_hot([2, 2, 0, 2])
    alpha[-1] = [0.0, 0.0, 0.0, 1.0]  # an <end> row peaking elsewhere must not count as a fifth cell
    distinct, share, entropy = caption_spread(alpha, 4)
    assert distinct == 2
    assert share == pytest.approx(0.75)
    assert entropy == pytest.approx(0.0)


def test_uniform_attention_has_the_maximum_entropy_and_peaks_at_the_first_cell():
    alpha = np.full((3, L), 1.0 / L)
    distinct, share, entropy = caption_spread(alpha, 3)
    assert (distinct, share) == (1, 1.0)
    assert entropy == pytest.approx(np.log(L))


def test_captions_count_once_each_and_empty_ones_are_skipped():
    spread = attention_spread([(["a", "b"], _one_hot([0, 1])), ("a b c d".split(), _one_hot([3, 3, 3, 3])),
                               ([], _one_hot([]))])
    assert spread.captions == 2
    assert spread.distinct_cells == pytest.approx((2 + 1) / 2)
    assert spread.top_cell_share == pytest.approx((0.5 + 1.0) / 2)
    assert spread.max_entropy == pytest.approx(np.log(L))
    assert "1.50 distinct peak cells" in str(spread)


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="at least one caption"):
        attention_spread([([], _one_hot([]))])
    with pytest.raises(ValueError, match="does not cover 3 words"):
        caption_spread(np.ones((2, L)) / L, 3)
