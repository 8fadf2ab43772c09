"""Running the exported TFLite models with the LiteRT interpreter: what an app does, written in numpy.

`TFLiteCaptioner` calls the one-call `caption` signature. `StepDecoder` drives the `encode` / `step` signatures
with greedy or beam search in the app; its beam search follows `sat_tf.decoding.beam_search` step for step (only
beam 0 is live at t = 0, a finished beam continues with <end> at no cost, ties go to the lower index, final sort by
score), so on the float32 model it returns the SavedModel's beams. A phone app ports this loop to Kotlin/Swift.
Both loops take `no_repeat_ngram_size` (n-gram blocking, `ngram_ban`: the rule of the graph's search, in numpy).

Shapes: B batch, K beams, N = B x K rows, S image side, T max tokens, L locations, V vocabulary, H units.
"""

from __future__ import annotations

import os

import numpy as np

from sat_tf.decoding.beam_search import NEG_INF, ranking_scores
from sat_tf.text.vocabulary import END_ID, PAD_ID, START_ID


def _interpreter(model_path: str | os.PathLike | None, model_content: bytes | None, num_threads: int | None):
    from ai_edge_litert.interpreter import Interpreter

    if (model_path is None) == (model_content is None):
        raise ValueError("pass exactly one of model_path and model_content")
    if model_path is not None:
        return Interpreter(model_path=os.fspath(model_path), num_threads=num_threads)
    return Interpreter(model_content=model_content, num_threads=num_threads)


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


def _block(step_log_probs: np.ndarray, prefixes: np.ndarray, t: int, n: int) -> np.ndarray:
    """(R, V) log-probs with the tokens `ngram_ban` bans at NEG_INF (unchanged for n = 0)."""
    if not n:
        return step_log_probs
    banned = ngram_ban(prefixes, t, n, step_log_probs.shape[-1])
    return np.where(banned, np.float32(NEG_INF), step_log_probs).astype(np.float32)


class TFLiteCaptioner:
    """The one-call model: images float32 (B, S, S, 3) RGB 0..255 -> greedy tokens and attention.

    Args:
        model_path: path of a `captioner_<variant>.tflite` (or pass model_content).
        model_content: bytes of the model.
        num_threads: int or None. Interpreter threads.
    """

    def __init__(self, model_path=None, model_content: bytes | None = None, num_threads: int | None = None):
        self.interpreter = _interpreter(model_path, model_content, num_threads)
        self.runner = self.interpreter.get_signature_runner("caption")

    def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """images (B, S, S, 3) -> {"tokens" (B, T) int32, "lengths" (B,), "log_probs" (B,), "alpha" (B, T, L)}."""
        return self.runner(images=np.asarray(images, np.float32))


class StepDecoder:
    """App-side decoding over the `encode` and `step` signatures of a `decoder_steps_<variant>.tflite`.

    Args:
        model_path: path of the model (or pass model_content).
        model_content: bytes of the model.
        num_threads: int or None. Interpreter threads.
    """

    def __init__(self, model_path=None, model_content: bytes | None = None, num_threads: int | None = None):
        self.interpreter = _interpreter(model_path, model_content, num_threads)
        self._encode = self.interpreter.get_signature_runner("encode")
        self._step = self.interpreter.get_signature_runner("step")

    def encode(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """images (B, S, S, 3) -> annotations (B, L, D), projected (B, L, A), h (B, H), c (B, H)."""
        return self._encode(images=np.asarray(images, np.float32))

    def step(self, tokens: np.ndarray, h, c, annotations, projected) -> dict[str, np.ndarray]:
        """One decoder step on N rows -> log_probs (N, V), h, c (N, H), alpha (N, L)."""
        return self._step(tokens=np.asarray(tokens, np.int32), h=h, c=c, annotations=annotations,
                          projected=projected)

    def greedy(self, images: np.ndarray, max_tokens: int, no_repeat_ngram_size: int = 0) -> dict[str, np.ndarray]:
        """Greedy decoding, as `sat_tf.decoding.beam_search.greedy_search`.

        Args:
            images: (B, S, S, 3) float32 RGB 0..255.
            max_tokens: T, most tokens per caption (<end> included).
            no_repeat_ngram_size: n; never emit a token that completes an n-gram already in the caption (0: off).

        Returns:
            tokens int32 (B, T), lengths int32 (B,), log_probs float32 (B,), alpha float32 (B, T, L).
        """
        enc = self.encode(images)
        batch, locations = enc["annotations"].shape[:2]
        h, c = enc["h"], enc["c"]
        tokens = np.full(batch, START_ID, np.int32)
        finished = np.zeros(batch, bool)
        out_tokens = np.full((batch, max_tokens), PAD_ID, np.int32)
        lengths = np.zeros(batch, np.int32)
        log_probs = np.zeros(batch, np.float32)
        alpha = np.zeros((batch, max_tokens, locations), np.float32)
        for t in range(max_tokens):
            out = self.step(tokens, h, c, enc["annotations"], enc["projected"])
            h, c = out["h"], out["c"]
            live = ~finished
            step_log_probs = _block(out["log_probs"], out_tokens, t, no_repeat_ngram_size)  # (B, V)
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

    def beam_search(self, images: np.ndarray, beam_size: int, max_tokens: int,
                    length_penalty: float = 0.0, no_repeat_ngram_size: int = 0) -> dict[str, np.ndarray]:
        """Batched beam search, as `sat_tf.decoding.beam_search.beam_search`.

        Args:
            images: (B, S, S, 3) float32 RGB 0..255.
            beam_size: K.
            max_tokens: T, most tokens per hypothesis (<end> included).
            length_penalty: ranking score log p / length**alpha (0: plain log-probability).
            no_repeat_ngram_size: n; no hypothesis emits a token that completes an n-gram already in its prefix
                (0: off).

        Returns:
            tokens (B, K, T), lengths (B, K), log_probs (B, K), scores (B, K), alpha (B, K, T, L); best beam first.
        """
        k = beam_size
        enc = self.encode(images)
        batch, locations = enc["annotations"].shape[:2]
        annotations = np.repeat(enc["annotations"], k, axis=0)  # (N, L, D), row b*K + j is beam j of image b
        projected = np.repeat(enc["projected"], k, axis=0)  # (N, L, A)
        h, c = np.repeat(enc["h"], k, axis=0), np.repeat(enc["c"], k, axis=0)  # (N, H)
        tokens = np.full(batch * k, START_ID, np.int32)
        log_probs = np.tile(np.array([[0.0] + [NEG_INF] * (k - 1)], np.float32), (batch, 1))  # (B, K)
        finished = np.zeros((batch, k), bool)
        lengths = np.zeros((batch, k), np.int32)
        sequences = np.full((batch, k, max_tokens), PAD_ID, np.int32)
        alpha = np.zeros((batch, k, max_tokens, locations), np.float32)
        rows = np.arange(batch)[:, None]
        for t in range(max_tokens):
            out = self.step(tokens, h, c, annotations, projected)
            vocab = out["log_probs"].shape[-1]
            step_log_probs = _block(out["log_probs"].astype(np.float32), sequences.reshape(batch * k, -1), t,
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
        scores = ranking_scores(log_probs, lengths, length_penalty).numpy()
        order = np.argsort(-scores, axis=-1, kind="stable")
        return {"tokens": sequences[rows, order], "lengths": np.take_along_axis(lengths, order, -1),
                "log_probs": np.take_along_axis(log_probs, order, -1), "scores": np.take_along_axis(scores, order, -1),
                "alpha": alpha[rows, order]}
