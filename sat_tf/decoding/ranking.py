"""How a search scores hypotheses: the one ranking formula and the score of a token that must never be chosen.

Beam search keeps its K hypotheses by summed log-probability, and ranks the finished ones by

    score = log p / length**alpha          (alpha = `length_penalty`; 0: plain log-probability, 1: mean per token)

The same function runs in numpy (the LiteRT runtime `sat_tf.lite`, the length sweep) and inside TensorFlow graphs
(`sat_tf.decoding.beam_search`, which passes `tf.experimental.numpy` as the array namespace), so every decoder
ranks alike. This module imports numpy only: devices without TensorFlow use it.

Shapes: K beams; `...` any leading axes (B images).
"""

from __future__ import annotations

import numpy as np

NEG_INF = -1e9  # the log-probability of a banned token: finite, so that 0 * NEG_INF never makes a NaN


def ranking_scores(log_probs, lengths, length_penalty: float, xp=np):
    """(..., K) float32 scores that rank finished hypotheses: log p / length**alpha, alpha = `length_penalty`.

    Args:
        log_probs: float (..., K). Summed log-probabilities of the hypotheses.
        lengths: int (..., K). Their lengths in tokens (<end> included); 0 counts as 1.
        length_penalty: float. alpha (0: the log-probabilities themselves).
        xp: the array namespace: numpy (default; returns an ndarray) or `tf.experimental.numpy` (returns a
            tf.Tensor, usable inside tf.function).
    """
    log_probs = xp.asarray(log_probs, xp.float32)  # (..., K)
    if not length_penalty:
        return log_probs
    lengths = xp.maximum(xp.asarray(lengths, xp.float32), xp.asarray(1.0, xp.float32))  # (..., K)
    return log_probs / lengths ** xp.asarray(length_penalty, xp.float32)
