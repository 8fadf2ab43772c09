"""The preset format: a trained work dir (or another preset) written as a preset directory (`sat_tf.presets`) that
`ImageCaptioner.from_preset(DIR)` and `--preset DIR` load, scored as stored.

    python -m sat_tf.export --workdir runs/f8k_soft --format preset --out presets/my_model

The weights are stored (float16 by default), read back, and the stored model is scored on the work dir's evaluation
split with the work dir's decoding, so the scores in metadata.json and the model card are those of the files a user
gets, not of the float32 checkpoint. The scores of the first `SUBSET_IMAGES` images are recorded as well: a test
can re-score that subset in seconds and hold the card to it.
"""

from __future__ import annotations

import os

from sat_tf.presets import load_metadata, load_preset, save_preset, write_metadata

SUBSET_IMAGES = 100


def score_experiment(experiment, features_dir: str, split: str, *, subset_images: int = SUBSET_IMAGES,
                     limit: int = 0, batch_size: int = 32) -> dict:
    """Scores a loaded model on a split of a feature directory with its own decoding settings; returns the
    `evaluation` entry of metadata.json: split, images, decoding, scores, and the scores of the first
    `subset_images` images (same captions, scored alone)."""
    from sat_tf.evaluation.scoring import evaluate
    from sat_tf.metrics.coco_caption import score_captions

    train = experiment.train_config
    result = evaluate(experiment.captioner, experiment.vocabulary, features_dir, split=split,
                      beam_size=train.beam_size, max_length=train.max_length, length_penalty=train.length_penalty,
                      min_length=train.min_length, suppress_unk=train.suppress_unk, limit=limit,
                      batch_size=batch_size, **_blocking(train))
    evaluation = {"split": split, "images": len(result.decoded), "decoding": result.decoding,
                  "scores": _rounded(result.scores.as_dict()), "subsets": []}
    if 0 < subset_images < len(result.decoded):
        first = result.decoded[:subset_images]
        scores = score_captions({d.image_id: d.references for d in first}, {d.image_id: d.caption for d in first})
        evaluation["subsets"].append({"images": subset_images, "scores": _rounded(scores.as_dict())})
    return evaluation


def _blocking(train) -> dict:
    """The n-gram blocking setting, where the decoding has one."""
    value = getattr(train, "no_repeat_ngram_size", None)
    return {} if value is None else {"no_repeat_ngram_size": value}


def _rounded(scores: dict) -> dict:
    """The metric values (0-100, 4 decimals) plus what says how they were computed: BLEU's length ratio, the
    tokenizer, and the metrics that could not run with the reason."""
    out = {k: round(float(v), 4) for k, v in scores["scores"].items()}
    out.update(length_ratio=round(float(scores["length_ratio"]), 4), tokenizer=scores["tokenizer"],
               unavailable=scores["unavailable"])
    return out


def export_preset(experiment, out_dir: str, *, features_dir: str | None = None, split: str | None = None,
                  weights_dtype: str = "float16", commands: list[str] | None = None, description: str = "",
                  name: str = "", score: bool = True, limit: int = 0, log=print) -> str:
    """Writes `experiment` (from `sat_tf.presets.load_model`) as a preset and scores the stored weights.

    Args:
        experiment: Experiment with its Captioner.
        out_dir: str. The preset directory.
        features_dir: str or None. Features to score on (default: the work dir's, where they exist).
        split: str or None. Split to score (default: the work dir's data.eval_split).
        weights_dtype: "float16" or "float32".
        commands: the training commands to record.
        description, name: the preset's one-line description and name.
        score: bool. Score the stored model (skipped with a message where no features are at hand).
        limit: int. Score only the first `limit` images (0 = all).
        log: callable for progress lines.
    """
    save_preset(experiment, out_dir, name=name, weights_dtype=weights_dtype, commands=commands,
                description=description)
    features_dir = features_dir or experiment.features_dir
    split = split or experiment.data_config.eval_split
    evaluation = None
    if score and os.path.isfile(os.path.join(features_dir, "manifest.json")):
        stored = load_preset(out_dir)
        log(f"scoring the stored preset on the {split} split of {features_dir}")
        evaluation = score_experiment(stored, features_dir, split, limit=limit)
        write_metadata(out_dir, {**load_metadata(out_dir), "evaluation": evaluation})  # the weights stay as written
    elif score:
        log(f"not scored: no features in {features_dir} (pass --features-dir)")
    return out_dir
