"""The exported TFLite models in the LiteRT interpreter (`ai_edge_litert`): what an app calls, in numpy.

`TFLiteCaptioner` calls the one-call `caption` signature of `captioner_<variant>.tflite` (greedy decoding inside the
model, n-gram blocking fixed at export). `StepDecoder` drives the `encode` / `step` signatures of
`decoder_steps_<variant>.tflite` with the numpy searches of `sat_tf.lite.search` (greedy and beam search, n-gram
blocking at any size), which return the SavedModel's beams on the float32 model. Both take pixels: float32
(B, S, S, 3), RGB 0..255, decoded and squashed to S x S (`sat_tf.images.load_pixels`).

Shapes: B batch, K beams, N rows, S image side, T max tokens, L locations, D depth, A attention size, H units,
V vocabulary.
"""

from __future__ import annotations

import os

import numpy as np

from sat_tf.lite import search


def interpreter(model_path: str | os.PathLike | None = None, model_content: bytes | None = None,
                num_threads: int | None = None):
    """A LiteRT `Interpreter` for a .tflite file or its bytes.

    Args:
        model_path: path of the model (or pass model_content).
        model_content: bytes of the model.
        num_threads: int or None. CPU threads (None: LiteRT's default).
    """
    from ai_edge_litert.interpreter import Interpreter

    if (model_path is None) == (model_content is None):
        raise ValueError("pass exactly one of model_path and model_content")
    if model_path is not None:
        return Interpreter(model_path=os.fspath(model_path), num_threads=num_threads)
    return Interpreter(model_content=model_content, num_threads=num_threads)


class TFLiteCaptioner:
    """The one-call model: pixels float32 (B, S, S, 3) RGB 0..255 -> greedy tokens and attention.

    Args:
        model_path: path of a `captioner_<variant>.tflite` (or pass model_content).
        model_content: bytes of the model.
        num_threads: int or None. Interpreter threads.
    """

    def __init__(self, model_path=None, model_content: bytes | None = None, num_threads: int | None = None):
        self.interpreter = interpreter(model_path, model_content, num_threads)
        self.runner = self.interpreter.get_signature_runner("caption")

    def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """images (B, S, S, 3) -> {"tokens" (B, T) int32, "lengths" (B,), "log_probs" (B,), "alpha" (B, T, L)}."""
        return self.runner(images=np.asarray(images, np.float32))


class StepDecoder:
    """App-side decoding over the `encode` and `step` signatures of a `decoder_steps_<variant>.tflite`.

    Subclasses may replace `encode` and `step` (the tests drive the same searches with a table model).

    Args:
        model_path: path of the model (or pass model_content).
        model_content: bytes of the model.
        num_threads: int or None. Interpreter threads.
    """

    def __init__(self, model_path=None, model_content: bytes | None = None, num_threads: int | None = None):
        self.interpreter = interpreter(model_path, model_content, num_threads)
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
        """Greedy decoding (`sat_tf.lite.search.greedy_search`).

        Args:
            images: (B, S, S, 3) float32 RGB 0..255.
            max_tokens: T, most tokens per caption (<end> included).
            no_repeat_ngram_size: n; never emit a token that completes an n-gram already in the caption (0: off).

        Returns:
            tokens int32 (B, T), lengths int32 (B,), log_probs float32 (B,), alpha float32 (B, T, L).
        """
        return search.greedy_search(self.step, self.encode(images), max_tokens, no_repeat_ngram_size)

    def beam_search(self, images: np.ndarray, beam_size: int, max_tokens: int, length_penalty: float = 0.0,
                    no_repeat_ngram_size: int = 0) -> dict[str, np.ndarray]:
        """Batched beam search (`sat_tf.lite.search.beam_search`).

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
        return search.beam_search(self.step, self.encode(images), beam_size, max_tokens, length_penalty,
                                  no_repeat_ngram_size)
