"""Scoring a captioner the paper's way: decode a split with batched beam search, never teacher forcing, and score
with the coco-caption code on the 0-100 scale (`sat_tf.metrics.coco_caption`).

`decode_split` runs the model over `pipelines.dataset.evaluation_dataset` (B images x K beams per call) and
returns the generated captions with their attention; `evaluate` adds the scores, the COCO results JSON, a metrics
JSON, and for the embedded scenes dataset the attention-grounding rate (`sat_tf.metrics.grounding`).

Shapes: B images per batch, S decoded steps, L locations.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import time

import numpy as np

from sat_tf.decoding.mirrored import mirrored_inputs, with_mirrored_views
from sat_tf.files import write_json_atomic
from sat_tf.metrics.attention_spread import attention_spread
from sat_tf.metrics.coco_caption import CaptionScores, score_captions, write_coco_results
from sat_tf.metrics.repetition import REPORTED_SIZES, repeat_rate
from sat_tf.pipelines.dataset import evaluation_dataset
from sat_tf.pipelines.manifest import load_manifest
from sat_tf.pipelines.tfrecord import MIRRORED
from sat_tf.text.vocabulary import Vocabulary


@dataclasses.dataclass
class Decoded:
    """One image's generated caption.

    Args:
        image_id, image_path: str.
        caption: str. The detokenised caption.
        words: list of str. Its words (no <start>/<end>).
        alpha: (S, L) float32. Attention of the step that produced each word (row t -> words[t]); the <end>
            step's row follows the last word.
        location: (S,) int or None. Hard attention's chosen location per step.
        references: list of str. The image's reference captions.
        log_prob: float. Sum of the caption's token log-probabilities.
    """

    image_id: str
    image_path: str
    caption: str
    words: list[str]
    alpha: np.ndarray
    location: np.ndarray | None
    references: list[str]
    log_prob: float


def decode_split(captioner, vocabulary: Vocabulary, features_dir, *, split: str = "val", beam_size: int = 3,
                 max_length: int = 20, batch_size: int = 32, limit: int = 0, length_penalty: float = 0.0,
                 suppress_unk: bool = True, verify: str = "sha256", mirror: bool = False,
                 min_length: int = 0, no_repeat_ngram_size: int = 0) -> list[Decoded]:
    """Generates a caption for every image of `split` (the first `limit` images when limit > 0).

    `features_dir` is a feature directory, or for a multi-input CaptionEnsemble a list of them, one per input
    (the same images in the same order, each from its own encoder). With `mirror`, every input's mirrored view is
    read too and the captioner decodes both views as one model (`sat_tf.decoding.mirrored`)."""
    dirs = _feature_dirs(features_dir)
    depths = captioner.input_feature_dims if len(dirs) > 1 else [captioner.model_config.feature_dim]
    if len(depths) != len(dirs):
        raise ValueError(f"{len(dirs)} feature directories for a captioner that reads {len(depths)} input(s)")
    if mirror:
        captioner = with_mirrored_views(captioner)
    datasets = []
    for directory, depth in zip(dirs, depths):
        manifest = load_manifest(directory)
        datasets.append(evaluation_dataset(
            directory, batch_size, split=split, limit=limit, manifest=manifest,
            vocabulary_checksum=vocabulary.checksum(),
            # L may differ from training only if the encoder changed; D must match the model
            feature_shape=(manifest["feature_shape"][0], depth), verify=verify, mirrored=mirror))
    results: list[Decoded] = []
    for batches in itertools.zip_longest(*datasets):
        _check_same_images(batches, dirs, split)
        batch = batches[0]
        annotations = batch["annotations"] if len(dirs) == 1 else tuple(b["annotations"] for b in batches)
        if mirror:
            annotations = mirrored_inputs(annotations, tuple(b[MIRRORED] for b in batches))
        out = captioner.generate(annotations, beam_size=beam_size, max_length=max_length,
                                 length_penalty=length_penalty, suppress_unk=suppress_unk, min_length=min_length,
                                 no_repeat_ngram_size=no_repeat_ngram_size)
        tokens = out["tokens"].numpy()  # (B, S)
        alphas = out["alpha"].numpy()  # (B, S, L)
        locations = out["location"].numpy() if "location" in out else None  # (B, S)
        log_probs = out["log_probs"].numpy()  # (B,)
        for i, image_id in enumerate(batch["image_id"].numpy()):
            caption = vocabulary.decode(tokens[i])
            results.append(Decoded(
                image_id=image_id.decode(), image_path=batch["image_path"][i].numpy().decode(), caption=caption,
                words=caption.split(), alpha=alphas[i], location=None if locations is None else locations[i],
                references=[c.decode() for c in batch["captions"][i].numpy() if c], log_prob=float(log_probs[i])))
    return results


def _feature_dirs(features_dir) -> list:
    """One feature directory, or a list of them (one per input of a multi-input ensemble), as a list."""
    return [features_dir] if isinstance(features_dir, (str, os.PathLike)) else list(features_dir)


def _check_same_images(batches, dirs: list[str], split: str) -> None:
    """Batches of several feature directories must hold the same images in the same order."""
    first = batches[0]
    for batch, directory in zip(batches[1:], dirs[1:]):
        if batch is None or first is None:
            shorter = directory if batch is None else dirs[0]
            raise ValueError(f"{shorter} has fewer {split} images than the other feature directories {dirs}")
        if not np.array_equal(batch["image_id"].numpy(), first["image_id"].numpy()):
            raise ValueError(f"{directory} holds other {split} images, or the same in another order, than {dirs[0]}: "
                             f"an ensemble's inputs must be features of the same images")


@dataclasses.dataclass
class Evaluation:
    """Scores of one split: `scores` (coco-caption, 0-100), `grounding` (scenes only), the decoded captions."""

    split: str
    beam_size: int
    scores: CaptionScores
    decoded: list[Decoded]
    grounding: object | None = None
    seconds: float = 0.0
    decoding: dict = dataclasses.field(default_factory=dict)

    def mean_words(self) -> dict:
        """Mean caption length in words: {"generated": ..., "references": ...} (detokenised, split on spaces)."""
        generated = [len(d.words) for d in self.decoded]
        references = [len(r.split()) for d in self.decoded for r in d.references]
        return {"generated": float(np.mean(generated)) if generated else float("nan"),
                "references": float(np.mean(references)) if references else float("nan")}

    def repeat_rates(self) -> dict:
        """Share of captions (0..1) that repeat an n-gram (`sat_tf.metrics.repetition`), for n = 3 and 2:
        {"generated": {"3": ..., "2": ...}, "references": {...}} (every reference caption counts once)."""
        generated = [d.words for d in self.decoded]
        references = [r for d in self.decoded for r in d.references]
        return {name: {str(n): repeat_rate(captions, n) for n in REPORTED_SIZES}
                for name, captions in (("generated", generated), ("references", references))}

    def attention_spread(self):
        """`sat_tf.metrics.attention_spread.AttentionSpread` of the generated captions (None when none has a word)."""
        samples = [(d.words, d.alpha) for d in self.decoded if d.words]
        return attention_spread(samples) if samples else None

    def summary(self) -> dict:
        out = {"split": self.split, "beam_size": self.beam_size, "images": len(self.decoded),
               "scores": self.scores.as_dict(), "seconds": round(self.seconds, 1), "decoding": self.decoding,
               "mean_words": self.mean_words(), "repeat_rate": self.repeat_rates()}
        spread = self.attention_spread()
        if spread is not None:
            out["attention_spread"] = spread.as_dict()
        if self.grounding is not None:
            g = self.grounding
            out["grounding"] = {"rate": g.rate, "hits": g.hits, "total": g.total, "chance": g.chance,
                                "chance_cells": g.chance_cells}
        return out


def _decoder_info(captioner) -> dict:
    """What the metrics JSON records about the decoder: for a hard-attention Captioner how z_t was chosen
    ({"hard_inference": ...}), for a CaptionEnsemble its members and combination ({"ensemble": ...}), else {}."""
    if hasattr(captioner, "describe"):
        return {"ensemble": captioner.describe()}
    config = getattr(captioner, "model_config", None)
    if config is None or config.attention != "hard":
        return {}
    return {"hard_inference": config.hard_inference}


def evaluate(captioner, vocabulary: Vocabulary, features_dir: str, *, split: str = "val", beam_size: int = 3,
             max_length: int = 20, batch_size: int = 32, limit: int = 0, length_penalty: float = 0.0,
             suppress_unk: bool = True, scene_objects: dict | None = None,
             out_dir: str | None = None, metrics=("bleu", "meteor", "rouge", "cider"),
             verify: str = "sha256", mirror: bool = False, min_length: int = 0,
             no_repeat_ngram_size: int = 0) -> Evaluation:
    """Decodes and scores a split; writes `<out_dir>/captions_<split>.json` (COCO results format) and
    `<out_dir>/metrics_<split>.json` when out_dir is given.

    Args:
        captioner: a Captioner or a CaptionEnsemble (`sat_tf.decoding.ensemble`).
        vocabulary: its Vocabulary.
        features_dir: str. Feature shards (pipelines.extract); a list of them, one per input, for a multi-input
            CaptionEnsemble.
        split, beam_size, max_length, batch_size, limit, length_penalty, suppress_unk, min_length,
            no_repeat_ngram_size: decoding settings (limit 0 = every image; see `Captioner.generate` for the length
            penalty, the minimum length, <unk> suppression and n-gram blocking).
        scene_objects: dict image_id -> objects, for the attention-grounding rate (embedded scenes dataset).
        out_dir: str or None. Where to write the JSON files.
        metrics: which coco-caption metrics to compute.
        mirror: bool. Test-time mirroring: also decode each image's mirrored view, averaging the next-word
            distributions of both (the features must have mirrored views).
    """
    start = time.perf_counter()
    decoded = decode_split(captioner, vocabulary, features_dir, split=split, beam_size=beam_size,
                           max_length=max_length, batch_size=batch_size, limit=limit,
                           length_penalty=length_penalty, suppress_unk=suppress_unk, verify=verify, mirror=mirror,
                           min_length=min_length, no_repeat_ngram_size=no_repeat_ngram_size)
    references = {d.image_id: d.references for d in decoded}
    candidates = {d.image_id: d.caption for d in decoded}
    scores = score_captions(references, candidates, metrics=metrics)
    grounding = None
    if scene_objects is not None:
        from sat_tf.metrics.grounding import grounding_rate
        from sat_tf.pipelines.sources.scenes import IMAGE_SIZE

        # the grid of the attention maps: input 0's
        grid = tuple(load_manifest(_feature_dirs(features_dir)[0])["encoder"]["grid"])
        samples = [(d.words, d.alpha, scene_objects[d.image_id]) for d in decoded if d.image_id in scene_objects]
        grounding = grounding_rate(samples, grid, tuple(IMAGE_SIZE))
    result = Evaluation(split, beam_size, scores, decoded, grounding, time.perf_counter() - start,
                        decoding={"beam_size": beam_size, "max_length": max_length, "length_penalty": length_penalty,
                                  "min_length": min_length, "no_repeat_ngram_size": no_repeat_ngram_size,
                                  "suppress_unk": suppress_unk, "mirror": mirror,
                                  **_decoder_info(with_mirrored_views(captioner) if mirror else captioner)})
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        write_coco_results(os.path.join(out_dir, f"captions_{split}.json"), candidates)
        write_json_atomic(os.path.join(out_dir, f"metrics_{split}.json"), result.summary(), sort_keys=True)
    return result


def prepare_split_features(experiment, dataset: str, data_dir: str, split: str, features_dir: str, *,
                           limit: int = 0, coco_annotations: str = "", weights: str | None = "imagenet",
                           progress: bool = True) -> str:
    """Extracts the features of one split of a dataset folder for a trained model (a preset or a work dir), with
    the model's encoder and vocabulary, so `evaluate` can score the model on a dataset it was not trained on.

    Resumable and reused: a rerun with the same arguments reads the finished shards. Only `split`'s images (the
    first `limit` when limit > 0) are read.

    Args:
        experiment: Experiment with `vocabulary` and `data_config` (encoder, layer, image size).
        dataset, data_dir, coco_annotations: the dataset folder (`python -m sat_tf.pipelines.check` layouts).
        split: str. "train", "val" or "test".
        features_dir: str. Where the shards go (never inside a preset).
        limit: int. Only the first `limit` images of the split (0 = all).
        weights: encoder weights ("imagenet"; None = random, for tests).
        progress: bool. Print the progress bar.

    Returns:
        features_dir.
    """
    import dataclasses as dc

    from sat_tf.pipelines.extract import extract_features
    from sat_tf.pipelines.prepare import encoder_function, encoder_info, read_dataset

    data = dc.replace(experiment.data_config, dataset=dataset, data_dir=data_dir, coco_annotations=coco_annotations,
                      train_split=split, eval_split=split, max_images=0, mirrored_views=False,
                      mirror_probability=0.0)
    records, report = read_dataset(data, features_dir)
    records = [r for r in records if r.split == split]
    if limit:
        records = records[:limit]
    if not records:
        raise ValueError(f"the {dataset} dataset in {data_dir} has no {split!r} images: {report.summary()}")
    info = encoder_info(data, weights if weights is not None else "random")
    extract_features(records, encoder_function(data, weights), info, experiment.vocabulary,
                     features_dir, max_caption_length=data.max_caption_length, shard_size=data.shard_size,
                     progress=progress, reader_report=report.counts(),
                     extra={"dataset": dataset, "split": split, "limit": limit})
    return features_dir
