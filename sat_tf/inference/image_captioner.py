"""Captioning image files with a trained work dir: decode ▸ resize ▸ encoder ▸ batched beam search ▸ words.

The same image path as extraction (`sat_tf.images`), so a photo gets the features the model was trained on. Bad
files are reported per file and never stop the others.

Shapes: B images, S image side, L locations, D depth, T decoded steps.
"""

from __future__ import annotations

from typing import Iterable, Iterator, Sequence

import numpy as np

from sat_tf.images.load import ImageError, load_and_resize, load_image
from sat_tf.inference.captioned import Captioned
from sat_tf.training.workdir import Experiment


class ImageCaptioner:
    """Encoder + restored Captioner of a work dir, ready to caption files.

    Args:
        experiment: from `sat_tf.training.workdir.load_captioner` (or `load_ensemble`: an ensemble over several encoders
            gets one encoder per input, each image resized for each).
        weights: encoder weights ("imagenet" as at extraction; None only for tests with random features).
        mirror: bool. Test-time mirroring: every image is also encoded mirrored left-right and the decoder averages
            both views' next-word distributions (`sat_tf.decoding.mirrored`); figures show the photo's attention.
    """

    def __init__(self, experiment: Experiment, weights: str | None = "imagenet", mirror: bool = False):
        from sat_tf.models.encoder import build_encoder, encoder_spec

        self.experiment = experiment
        self.mirror = mirror
        self.decoder = experiment.captioner
        if mirror:
            from sat_tf.decoding.mirrored import with_mirrored_views

            self.decoder = with_mirrored_views(experiment.captioner)  # built once: its compiled search is cached
        self.specs, self.encoders = [], []
        for source in experiment.inputs or [experiment]:
            data = source.data_config
            self.specs.append(encoder_spec(data.encoder, data.encoder_layer or None, weights or "random",
                                           data.image_size))
            self.encoders.append(build_encoder(data.encoder, data.encoder_layer or None, weights=weights,
                                               image_size=data.image_size))

    @classmethod
    def from_preset(cls, name_or_dir: str = "flickr8k_soft", mirror: bool = False,
                    hard_inference: str | None = None) -> "ImageCaptioner":
        """A ready captioner from a preset shipped with sat_tf (`sat_tf.presets.list_presets()`) or a preset
        directory (`python -m sat_tf.export --format preset`): no work dir, no download.

            ImageCaptioner.from_preset("flickr8k_soft").caption(["a.jpg", "b.png"])[0].caption
        """
        from sat_tf.presets import load_preset

        return cls(load_preset(name_or_dir, hard_inference=hard_inference), mirror=mirror)

    def caption(self, paths: Sequence[str], beam_size: int | None = None, max_length: int | None = None,
                batch_size: int = 16) -> list[Captioned]:
        """Captions every file of `paths` (in order); unreadable files come back with `error` set. `beam_size`
        and `max_length` default to the model's own decoding settings (`TrainConfig.beam_size`, `max_length`)."""
        return list(self.caption_stream(paths, beam_size, max_length, batch_size))

    def caption_stream(self, paths: Iterable[str], beam_size: int | None = None, max_length: int | None = None,
                       batch_size: int = 16) -> Iterator[Captioned]:
        """Yields one Captioned per file of `paths`, in order, reading and decoding `batch_size` files at a time:
        memory stays flat however many files there are (keep no more of the results than you need)."""
        batch: list[str] = []
        for path in paths:
            batch.append(str(path))
            if len(batch) == batch_size:
                yield from self._caption_batch(batch, beam_size, max_length)
                batch = []
        if batch:
            yield from self._caption_batch(batch, beam_size, max_length)

    def _caption_batch(self, paths: list[str], beam_size: int | None, max_length: int | None) -> list[Captioned]:
        """Captions up to one batch of files; unreadable files come back with `error` set."""
        train = self.experiment.train_config
        max_length = max_length or train.max_length
        beam_size = beam_size or train.beam_size
        results = [Captioned(path=p) for p in paths]
        good: list[tuple[int, list[np.ndarray]]] = []
        for i, path in enumerate(paths):
            try:
                good.append((i, [load_and_resize(path, spec.image_size) for spec in self.specs]))  # (S, S, 3) each
            except ImageError as e:
                results[i].error = e.reason
        if not good:
            return results
        vocabulary = self.experiment.vocabulary
        pixels = [np.stack([images[k] for _, images in good]) for k in range(len(self.encoders))]  # (B, S, S, 3)
        annotations = [encoder(x, training=False) for x, encoder in zip(pixels, self.encoders)]  # (B, L, D)
        inputs = annotations[0] if len(annotations) == 1 else tuple(annotations)
        if self.mirror:
            from sat_tf.decoding.mirrored import mirrored_inputs

            inputs = mirrored_inputs(inputs, tuple(encoder(np.ascontiguousarray(x[:, :, ::-1]), training=False)
                                                   for x, encoder in zip(pixels, self.encoders)))
        out = self.decoder.generate(
            inputs, beam_size=beam_size,
            max_length=max_length, length_penalty=train.length_penalty, suppress_unk=train.suppress_unk,
            min_length=train.min_length, no_repeat_ngram_size=train.no_repeat_ngram_size)
        tokens, alphas = out["tokens"].numpy(), out["alpha"].numpy()  # (B, T), (B, T, L)
        locations = out["location"].numpy() if "location" in out else None
        log_probs = out["log_probs"].numpy()  # (B,)
        for row, (i, _) in enumerate(good):
            caption = vocabulary.decode(tokens[row])
            words = caption.split()
            results[i].caption, results[i].words = caption, words
            results[i].alpha = alphas[row, :len(words)].copy()  # a copy: no view keeps the batch's array alive
            results[i].location = None if locations is None else locations[row, :len(words)].copy()
            results[i].log_prob = float(log_probs[row])
        return results

    def save_figure(self, result: Captioned, path: str) -> str:
        """The paper's attention figure of one captioned image (one panel per word)."""
        from sat_tf.visualize import save_attention_figure

        if result.error or not result.words:
            raise ValueError(f"{result.path}: nothing to draw ({result.error or 'empty caption'})")
        image = load_image(result.path)
        return save_attention_figure(path, image, result.words, result.alpha, tuple(self.specs[0].grid),
                                     locations=None if result.location is None else list(result.location))
