"""Greedy and beam search in numpy over an `encode` / `step` model: what an app runs around the TFLite step model.

The rules are `sat_tf.decoding.beam_search`'s, step for step, so on the float32 model the results are the
SavedModel's: only beam 0 is live at t = 0; a finished beam continues with <end> at no cost and keeps its place;
the K best of the K x V candidates are kept by summed log-probability, ties to the lower index (`tf.math.top_k`'s
order); finished beams are ranked by `sat_tf.decoding.ranking.ranking_scores` (log p / length**alpha) with a stable
sort. n-gram blocking (`no_repeat_ngram_size` n) bans, at every step, each token that would complete an n-gram
already in the hypothesis' own words (`ngram_ban`: the graph's rule, <start> not counted). A phone app ports these
few dozen lines to Kotlin or Swift.

`step` is any callable (tokens int32 (N,), h (N, H), c (N, H), annotations (N, L, D), projected (N, L, A)) ->
{"log_probs" (N, V), "h", "c", "alpha" (N, L)}, and `encoded` the `encode` signature's outputs {"annotations"
(B, L, D), "projected" (B, L, A), "h" (B, H), "c" (B, H)}.

Shapes: B images, K beams, N rows (B, or B x K with row b*K + j beam j of image b), T max tokens, L locations,
D depth, A attention size, H units, V vocabulary, R rows of a ban.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from sat_tf.decoding.ranking import NEG_INF, ranking_scores
from sat_tf.text.vocabulary import END_ID, PAD_ID, START_ID

Step = Callable[..., dict]


def top_k(values: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest values per row, largest first, ties to the lower index: `tf.math.top_k`'s order.

    argpartition finds the k-th largest value in O(V) per row (a full sort of K x V candidates per step would
    dominate the loop); only the few candidates at or above it are then sorted.

    Args:
        values: (R, C) array.
        k: int, <= C.

    Returns:
        int64 (R, k).
    """
    kth = np.take_along_axis(values, np.argpartition(-values, k - 1, axis=-1)[:, k - 1:k], axis=-1)  # (R, 1)
    out = np.empty((values.shape[0], k), np.int64)
    for row, threshold in enumerate(kth[:, 0]):
        above = np.flatnonzero(values[row] > threshold)
        tied = np.flatnonzero(values[row] == threshold)[:k - len(above)]
        chosen = np.concatenate([above, tied])
        out[row] = chosen[np.lexsort((chosen, -values[row, chosen]))]  # by value descending, then index
    return out


def ngram_ban(prefixes: np.ndarray, t: int, n: int, vocab: int) -> np.ndarray:
    """(R, V) bool: True for the tokens that would complete an n-gram already in each row's prefix; numpy's
    `sat_tf.decoding.beam_search.ngram_ban` (same rule: the words after <start>, <start> not counted).

    Args:
        prefixes: int (R, >= t) array, row r's words so far in columns 0 .. t-1.
        t: int. Words generated so far.
        n: int >= 1. The n-gram size.
        vocab: int. V.
    """
    banned = np.zeros((prefixes.shape[0], vocab), bool)
    if n < 1 or t < n:
        return banned
    windows = np.lib.stride_tricks.sliding_window_view(prefixes[:, :t], n, axis=1)  # (R, t-n+1, n)
    last = prefixes[:, t - n + 1:t]  # (R, n-1) the words a new n-gram would start with
    match = np.all(windows[:, :, :n - 1] == last[:, None, :], axis=-1)  # (R, t-n+1)
    rows, starts = np.nonzero(match)
    banned[rows, windows[rows, starts, n - 1]] = True
    return banned


def block_ngrams(step_log_probs: np.ndarray, prefixes: np.ndarray, t: int, n: int) -> np.ndarray:
    """(R, V) float32 log-probs with the tokens `ngram_ban` bans at NEG_INF (unchanged for n = 0).

    Args:
        step_log_probs: float (R, V).
        prefixes, t, n: as in `ngram_ban`.
    """
    step_log_probs = np.asarray(step_log_probs, np.float32)
    if not n:
        return step_log_probs
    banned = ngram_ban(prefixes, t, n, step_log_probs.shape[-1])
    return np.where(banned, np.float32(NEG_INF), step_log_probs).astype(np.float32)


def _check(max_tokens: int, no_repeat_ngram_size: int) -> None:
    if int(max_tokens) < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    if int(no_repeat_ngram_size) < 0:
        raise ValueError(f"no_repeat_ngram_size must be >= 0 (0: off), got {no_repeat_ngram_size}")


def greedy_search(step: Step, encoded: dict, max_tokens: int, no_repeat_ngram_size: int = 0) -> dict[str, np.ndarray]:
    """Greedy decoding, as `sat_tf.decoding.beam_search.greedy_search`.

    Args:
        step: the step model (module docstring).
        encoded: the `encode` outputs of B images.
        max_tokens: T, most tokens per caption (<end> included).
        no_repeat_ngram_size: n; never emit a token that completes an n-gram already in the caption (0: off).

    Returns:
        tokens int32 (B, T), lengths int32 (B,), log_probs float32 (B,), alpha float32 (B, T, L).
    """
    _check(max_tokens, no_repeat_ngram_size)
    annotations, projected = encoded["annotations"], encoded["projected"]  # (B, L, D), (B, L, A)
    batch, locations = annotations.shape[:2]
    h, c = encoded["h"], encoded["c"]  # (B, H)
    tokens = np.full(batch, START_ID, np.int32)
    finished = np.zeros(batch, bool)
    out_tokens = np.full((batch, max_tokens), PAD_ID, np.int32)
    lengths = np.zeros(batch, np.int32)
    log_probs = np.zeros(batch, np.float32)
    alpha = np.zeros((batch, max_tokens, locations), np.float32)
    for t in range(max_tokens):
        out = step(tokens, h, c, annotations, projected)
        h, c = out["h"], out["c"]
        live = ~finished
        step_log_probs = block_ngrams(out["log_probs"], out_tokens, t, no_repeat_ngram_size)  # (B, V)
        token = np.argmax(step_log_probs, axis=-1).astype(np.int32)  # (B,)
        log_probs += np.where(live, step_log_probs[np.arange(batch), token], 0.0).astype(np.float32)
        out_tokens[live, t] = token[live]
        alpha[live, t] = out["alpha"][live]
        lengths += live
        finished |= live & (token == END_ID)
        tokens = np.where(live, token, END_ID).astype(np.int32)
        if finished.all():
            break
    return {"tokens": out_tokens, "lengths": lengths, "log_probs": log_probs, "alpha": alpha}


def beam_search(step: Step, encoded: dict, beam_size: int, max_tokens: int, length_penalty: float = 0.0,
                no_repeat_ngram_size: int = 0) -> dict[str, np.ndarray]:
    """Batched beam search, as `sat_tf.decoding.beam_search.beam_search`.

    Args:
        step: the step model (module docstring).
        encoded: the `encode` outputs of B images.
        beam_size: K >= 1.
        max_tokens: T, most tokens per hypothesis (<end> included).
        length_penalty: alpha of the ranking score log p / length**alpha (0: plain log-probability).
        no_repeat_ngram_size: n; no hypothesis emits a token that completes an n-gram already in its prefix
            (0: off).

    Returns:
        tokens int32 (B, K, T), lengths (B, K), log_probs (B, K), scores (B, K), alpha (B, K, T, L); best beam
        first.
    """
    _check(max_tokens, no_repeat_ngram_size)
    if int(beam_size) < 1:
        raise ValueError(f"beam_size must be >= 1, got {beam_size}")
    k = int(beam_size)
    batch, locations = encoded["annotations"].shape[:2]
    annotations = np.repeat(encoded["annotations"], k, axis=0)  # (N, L, D), row b*K + j is beam j of image b
    projected = np.repeat(encoded["projected"], k, axis=0)  # (N, L, A)
    h, c = np.repeat(encoded["h"], k, axis=0), np.repeat(encoded["c"], k, axis=0)  # (N, H)
    tokens = np.full(batch * k, START_ID, np.int32)
    log_probs = np.tile(np.array([[0.0] + [NEG_INF] * (k - 1)], np.float32), (batch, 1))  # (B, K)
    finished = np.zeros((batch, k), bool)
    lengths = np.zeros((batch, k), np.int32)
    sequences = np.full((batch, k, max_tokens), PAD_ID, np.int32)
    alpha = np.zeros((batch, k, max_tokens, locations), np.float32)
    rows = np.arange(batch)[:, None]
    for t in range(max_tokens):
        out = step(tokens, h, c, annotations, projected)
        vocab = out["log_probs"].shape[-1]
        step_log_probs = block_ngrams(out["log_probs"], sequences.reshape(batch * k, -1), t,
                                      no_repeat_ngram_size).reshape(batch, k, vocab)  # (B, K, V)
        only_end = np.full(vocab, NEG_INF, np.float32)
        only_end[END_ID] = 0.0
        step_log_probs = np.where(finished[:, :, None], only_end, step_log_probs)
        candidates = (log_probs[:, :, None] + step_log_probs).reshape(batch, k * vocab)  # (B, K*V)
        index = top_k(candidates, k)  # (B, K)
        log_probs = np.take_along_axis(candidates, index, axis=-1)
        parent, token = index // vocab, (index % vocab).astype(np.int32)  # (B, K)
        flat = (parent + rows * k).reshape(-1)  # (N,)
        was_finished = np.take_along_axis(finished, parent, axis=-1)
        live = ~was_finished
        token = np.where(live, token, PAD_ID)
        sequences = sequences[rows, parent]
        sequences[:, :, t] = np.where(live, token, sequences[:, :, t])
        alpha = alpha[rows, parent]
        alpha[:, :, t] = np.where(live[:, :, None], out["alpha"][flat].reshape(batch, k, locations), 0.0)
        lengths = np.take_along_axis(lengths, parent, axis=-1) + live
        finished = was_finished | (token == END_ID)
        h, c = out["h"][flat], out["c"][flat]
        tokens = np.where(live, token, END_ID).reshape(-1).astype(np.int32)
        if finished.all():
            break
    scores = ranking_scores(log_probs, lengths, length_penalty)  # (B, K)
    order = np.argsort(-scores, axis=-1, kind="stable")
    return {"tokens": sequences[rows, order], "lengths": np.take_along_axis(lengths, order, -1),
            "log_probs": np.take_along_axis(log_probs, order, -1), "scores": np.take_along_axis(scores, order, -1),
            "alpha": alpha[rows, order]}
