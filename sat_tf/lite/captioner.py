"""Captioning image files with a TFLite export, without TensorFlow: image ▸ pixels ▸ LiteRT model ▸ search ▸ words.

`LiteCaptioner` reads an export directory (`python -m sat_tf.export --formats tflite`: config.json, vocab.txt,
`captioner_<variant>.tflite`, `decoder_steps_<variant>.tflite`) and decodes the way the export says (config.json:
beam size and length penalty of its `train` section, n-gram blocking of its `export` section, `max_tokens`), each
overridable. Pixels come from `sat_tf.images.load_pixels` (Pillow: EXIF orientation, colour modes, alpha over white;
TensorFlow's antialiased squash resize in numpy), so the model sees what the SavedModel's in-graph decoder feeds it.
Beam size 1 runs the one-call `caption` signature when the export's n-gram blocking is asked for (the loop inside
the model), otherwise the `encode` / `step` signatures with the numpy searches of `sat_tf.lite.search`.

Bad files come back as a `Captioned` with `error` set (the reason, as `sat_tf.images.ImageError` words it) and never
stop the others. Needs numpy, Pillow and ai-edge-litert only.

Shapes: B images, S image side, T max tokens, L locations, K beams, W words.
"""

from __future__ import annotations

import json
import os
from typing import Iterable, Iterator, Sequence

import numpy as np

from sat_tf.images.load import ImageError, load_pixels
from sat_tf.inference.captioned import Captioned
from sat_tf.lite.runtime import StepDecoder, TFLiteCaptioner
from sat_tf.text.vocabulary import Vocabulary

VARIANTS = ("int8", "float32", "float16")  # the default variant is the first one exported (int8: smallest, fastest)
CONFIG = "config.json"
CAPTIONER = "captioner_{}.tflite"  # signature `caption`
DECODER_STEPS = "decoder_steps_{}.tflite"  # signatures `encode`, `step`


def read_export_config(model_dir: str | os.PathLike) -> dict:
    """config.json of a TFLite export directory, checked to be one.

    Raises:
        FileNotFoundError: no config.json in `model_dir`.
        ValueError: config.json is not a TFLite export's.
    """
    path = os.path.join(os.fspath(model_dir), CONFIG)
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} does not exist: --model names the folder written by "
                                f"`python -m sat_tf.export --formats tflite` (<out>/<name>_tflite)") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    fmt = config.get("export", {}).get("format")
    if fmt != "tflite":
        raise ValueError(f"{path} describes a {fmt!r} export, not a TFLite one: name the <name>_tflite folder")
    return config


class LiteCaptioner:
    """A TFLite export ready to caption image files in the LiteRT interpreter (no TensorFlow).

    Args:
        model_dir: str. The export directory.
        variant: "int8", "float16", "float32" or None (the first of int8, float32, float16 that was exported).
        beam_size: int or None. K (None: config.json's train.beam_size).
        length_penalty: float or None. alpha of log p / length**alpha (None: config.json's train.length_penalty).
        no_repeat_ngram_size: int or None. n-gram blocking (None: the export's, config.json's
            export.no_repeat_ngram_size).
        max_tokens: int or None. Most tokens per caption, <end> included (None: config.json's export.max_tokens).
        num_threads: int or None. Interpreter threads (None: LiteRT's default).
    """

    def __init__(self, model_dir: str | os.PathLike, variant: str | None = None, beam_size: int | None = None,
                 length_penalty: float | None = None, no_repeat_ngram_size: int | None = None,
                 max_tokens: int | None = None, num_threads: int | None = None):
        self.model_dir = os.fspath(model_dir)
        self.config = read_export_config(self.model_dir)
        export, train = self.config["export"], self.config.get("train", {})
        files = export.get("files", {})
        exported = [v for v in VARIANTS if CAPTIONER.format(v) in files or DECODER_STEPS.format(v) in files]
        if variant is None:
            if not exported:
                raise ValueError(f"{self.model_dir}: config.json lists no TFLite model")
            variant = exported[0]
        elif variant not in VARIANTS:
            raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
        elif variant not in exported:
            raise ValueError(f"{self.model_dir} has no {variant} models (exported: {', '.join(exported) or 'none'})")
        self.variant = variant
        self.image_size = int(export["image_size"])
        self.export_ngram_size = int(export.get("no_repeat_ngram_size", train.get("no_repeat_ngram_size", 0)))
        self.beam_size = int(train.get("beam_size", 1) if beam_size is None else beam_size)
        self.length_penalty = float(train.get("length_penalty", 0.0) if length_penalty is None else length_penalty)
        self.no_repeat_ngram_size = int(self.export_ngram_size if no_repeat_ngram_size is None
                                        else no_repeat_ngram_size)
        self.max_tokens = int(export["max_tokens"] if max_tokens is None else max_tokens)
        for name in ("beam_size", "max_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.no_repeat_ngram_size < 0:
            raise ValueError(f"no_repeat_ngram_size must be >= 0 (0: off), got {self.no_repeat_ngram_size}")
        vocabulary = export.get("vocabulary", {})
        self.vocabulary = Vocabulary.load(os.path.join(self.model_dir, vocabulary.get("file", "vocab.txt")),
                                          expected_checksum=vocabulary.get("sha256"))
        grid = export.get("encoder", {}).get("grid")
        self.grid = tuple(grid) if grid else None  # attention map layout: L = rows x columns
        self.num_threads = num_threads
        self.decoding = self._decoding()
        self._model = None

    def _decoding(self) -> str:
        """"caption" (the one-call signature) or "steps" (encode / step with the numpy search); FileNotFoundError
        where the model the settings need was not exported."""
        one_call = os.path.join(self.model_dir, CAPTIONER.format(self.variant))
        steps = os.path.join(self.model_dir, DECODER_STEPS.format(self.variant))
        if (self.beam_size == 1 and self.no_repeat_ngram_size == self.export_ngram_size
                and self.max_tokens == int(self.config["export"]["max_tokens"]) and os.path.isfile(one_call)):
            return "caption"
        if os.path.isfile(steps):
            return "steps"
        why = (f"beam size {self.beam_size}" if self.beam_size > 1
               else f"n-gram blocking {self.no_repeat_ngram_size} (the one-call model blocks "
                    f"{self.export_ngram_size}) or max_tokens {self.max_tokens}")
        raise FileNotFoundError(f"{steps} does not exist: {why} needs the encode/step model")

    @property
    def model_path(self) -> str:
        """The .tflite file this captioner runs."""
        name = CAPTIONER if self.decoding == "caption" else DECODER_STEPS
        return os.path.join(self.model_dir, name.format(self.variant))

    def _runner(self):
        if self._model is None:  # loaded on first use: building the captioner costs no model load
            model = TFLiteCaptioner if self.decoding == "caption" else StepDecoder
            self._model = model(self.model_path, num_threads=self.num_threads)
        return self._model

    def decode_pixels(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        """Decodes a batch of pixels with this captioner's settings.

        Args:
            pixels: float32 (B, S, S, 3) RGB 0..255 (`sat_tf.images.load_pixels`).

        Returns:
            tokens int32 (B, T), lengths (B,), log_probs (B,), alpha (B, T, L): the best beam of each image.
        """
        model = self._runner()
        if self.decoding == "caption":
            return model(pixels)
        if self.beam_size == 1:
            return model.greedy(pixels, self.max_tokens, self.no_repeat_ngram_size)
        beams = model.beam_search(pixels, self.beam_size, self.max_tokens, self.length_penalty,
                                  self.no_repeat_ngram_size)
        return {name: beams[name][:, 0] for name in ("tokens", "lengths", "log_probs", "alpha")}

    def caption(self, paths: Sequence[str], batch_size: int = 1) -> list[Captioned]:
        """Captions every file of `paths` (in order); unreadable files come back with `error` set.

        Args:
            paths: image files.
            batch_size: int >= 1. Images decoded together.
        """
        return list(self.caption_stream(paths, batch_size))

    def caption_stream(self, paths: Iterable[str], batch_size: int = 1) -> Iterator[Captioned]:
        """Yields one Captioned per file of `paths`, in order, `batch_size` images per model call.

        Args:
            paths: image files (str or path-like).
            batch_size: int >= 1. Images decoded together (1: each result as soon as it is ready).
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        batch: list[str] = []
        for path in paths:
            batch.append(os.fspath(path))
            if len(batch) == batch_size:
                yield from self._caption_batch(batch)
                batch = []
        if batch:
            yield from self._caption_batch(batch)

    def _caption_batch(self, paths: list[str]) -> list[Captioned]:
        """Captions up to one batch of files; unreadable files come back with `error` set."""
        results = [Captioned(path=p) for p in paths]
        good, pixels = [], []
        for i, path in enumerate(paths):
            try:
                pixels.append(load_pixels(path, self.image_size))  # (S, S, 3)
                good.append(i)
            except ImageError as e:
                results[i].error = e.reason
        if not good:
            return results
        out = self.decode_pixels(np.stack(pixels))  # (B, S, S, 3) -> (B, T), (B, T, L) ...
        for row, i in enumerate(good):
            caption = self.vocabulary.decode(out["tokens"][row])
            words = caption.split()
            results[i].caption, results[i].words = caption, words
            results[i].alpha = np.array(out["alpha"][row, :len(words)])  # (W, L) a copy, not a view of the batch
            results[i].log_prob = float(out["log_probs"][row])
        return results

    def describe(self) -> str:
        """One line: the file and the decoding, e.g. "decoder_steps_int8.tflite: beam 10 over encode/step, length
        penalty 1, no_repeat_ngram_size 0, max_tokens 21"."""
        if self.decoding == "caption":
            how = "greedy in the model (signature caption)"
        elif self.beam_size == 1:
            how = "greedy over encode/step"
        else:
            how = f"beam {self.beam_size} over encode/step, length penalty {self.length_penalty:g}"
        return (f"{os.path.basename(self.model_path)}: {how}, no_repeat_ngram_size {self.no_repeat_ngram_size}, "
                f"max_tokens {self.max_tokens}")
