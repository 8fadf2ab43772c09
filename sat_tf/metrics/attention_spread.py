"""How spread over the image a caption's attention is: does each word look somewhere else, or does the whole
caption stare at one cell?

For each generated caption, take the attention alpha of the step that produced each word (not the <end> step)
and its peak cell (argmax over the L locations). Per caption:

    distinct cells   the number of different peak cells among its words (1 = every word peaks at one cell);
    top-cell share   the share of its words whose peak is the caption's most common peak cell (1 = one cell);
    entropy          the mean attention entropy -sum_i alpha_i log alpha_i of its words, in nats (log L = uniform).

`AttentionSpread` averages them over captions (each caption counts once, whatever its length). A soft-attention
model on Flickr8k's 7x7 grid peaks at ~5 cells per caption; a hard-attention model whose attention collapsed onto
one cell per photo at ~2 (docs/results.md, "Hard vs soft attention"). Used by `sat_tf.evaluation` (the metrics
JSON and the report) and the training history.

Shapes: S decoded steps, L locations.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class AttentionSpread:
    """Caption means of the module docstring's three figures, over `captions` captions with at least one word."""

    distinct_cells: float
    top_cell_share: float
    entropy: float
    max_entropy: float  # log L
    captions: int

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    def __str__(self) -> str:
        return (f"attention spread: {self.distinct_cells:.2f} distinct peak cells per caption, "
                f"{100 * self.top_cell_share:.0f}% of words at the caption's top cell, entropy {self.entropy:.2f} "
                f"of {self.max_entropy:.2f} nats ({self.captions} captions)")


def caption_spread(alpha: np.ndarray, words: int) -> tuple[int, float, float]:
    """(distinct cells, top-cell share, mean entropy) of one caption.

    Args:
        alpha: (S, L) attention per decoded step; row t produced word t.
        words: int >= 1. The caption's word count (rows 0 .. words - 1 are used).
    """
    alpha = np.asarray(alpha, np.float64)[:words]  # (W, L)
    if alpha.ndim != 2 or len(alpha) < words or words < 1:
        raise ValueError(f"alpha of shape {np.shape(alpha)} does not cover {words} words")
    peaks = alpha.argmax(axis=1)  # (W,)
    counts = np.bincount(peaks)
    entropy = -np.sum(np.where(alpha > 0, alpha * np.log(np.where(alpha > 0, alpha, 1.0)), 0.0), axis=1)  # (W,)
    return int(np.count_nonzero(counts)), float(counts.max() / words), float(entropy.mean())


def attention_spread(samples: Iterable[tuple[Sequence[str], np.ndarray]]) -> AttentionSpread:
    """The spread over (words, alpha (S, L)) pairs, one per caption; captions without words are skipped.

    Raises:
        ValueError: no caption has a word.
    """
    figures, locations = [], None
    for words, alpha in samples:
        if len(words) == 0:
            continue
        locations = np.shape(alpha)[-1]
        figures.append(caption_spread(alpha, len(words)))
    if not figures:
        raise ValueError("attention_spread needs at least one caption with a word")
    distinct, share, entropy = (float(np.mean(column)) for column in zip(*figures))
    return AttentionSpread(distinct, share, entropy, float(np.log(locations)), len(figures))
