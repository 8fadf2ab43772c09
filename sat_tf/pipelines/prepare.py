"""From a `DataConfig` to training-ready features: read the dataset, build the vocabulary, extract the shards.

`prepare_features(config, features_dir)` is what `python -m sat_tf.train` and `python -m sat_tf.pipelines.extract`
both call. It is idempotent: when `features_dir/manifest.json` already describes the same encoder and vocabulary
settings, it returns that manifest without touching an image; when shards are missing (a killed run), extraction
resumes.

A run that starts from another model's weights (`train.init_from`: fine-tuning on new photos) passes that model's
vocabulary instead of building one from the new captions, so the output layer and the embeddings keep their
meaning; words of the new captions that it lacks encode as <unk>. The manifest then records the given vocabulary's
checksum in its vocabulary settings and how much of the training captions it covers (`vocabulary_coverage`).
"""

from __future__ import annotations

import json
import os

from sat_tf.config import DataConfig
from sat_tf.pipelines.extract import extract_features
from sat_tf.pipelines.manifest import MANIFEST, VOCAB, FeatureError, check_features, load_manifest
from sat_tf.pipelines.sources.record import CaptionRecord, ReadReport
from sat_tf.text.vocabulary import Vocabulary


def scenes_dir(config: DataConfig, features_dir: str) -> str:
    """Where the embedded scenes are generated: data_dir if given, else `<features_dir>/scenes`."""
    return config.data_dir or os.path.join(features_dir, "scenes")


def read_dataset(config: DataConfig, features_dir: str = "") -> tuple[list[CaptionRecord], ReadReport]:
    """Runs the reader that `config.dataset` names (generating the embedded scenes first when needed)."""
    if config.dataset == "scenes":
        from sat_tf.pipelines.sources import scenes

        root = scenes_dir(config, features_dir)
        counts = {"num_train": scenes.DEFAULT_NUM_TRAIN, "num_val": scenes.DEFAULT_NUM_VAL,
                  "num_test": scenes.DEFAULT_NUM_TEST}
        if config.max_images:
            counts = {k: min(v, config.max_images) for k, v in counts.items()}
        scenes.write_scenes(root, **counts)
        return scenes.read_scenes(root)
    if not config.data_dir:
        raise ValueError(f"--data-dir is required for the {config.dataset} dataset")
    if not os.path.isdir(config.data_dir):
        raise FileNotFoundError(f"data dir {config.data_dir} does not exist")
    if config.dataset == "imagefolder":
        from sat_tf.pipelines.sources import read_imagefolder

        return read_imagefolder(config.data_dir)
    if config.dataset == "flickr8k":
        from sat_tf.pipelines.sources import read_flickr8k

        return read_flickr8k(config.data_dir)
    if config.dataset == "coco":
        from sat_tf.pipelines.sources import read_coco

        if config.eval_split != config.train_split:
            # One captions file is one split: training would fail at its first dev scoring, an epoch later.
            raise ValueError(f"--dataset coco reads one captions file ({config.coco_annotations or 'captions_*.json'})"
                             f", i.e. one split, but training also scores the {config.eval_split!r} split after "
                             f"every epoch. Use Karpathy's splits: put dataset_coco.json beside the train2014/ and "
                             f"val2014/ image folders and run python -m sat_tf.train --dataset karpathy --data-dir "
                             f"{config.data_dir}")
        if not config.coco_annotations:
            raise ValueError("the coco dataset needs --coco-annotations (a captions_*.json file)")
        records, report = read_coco(config.coco_annotations, config.data_dir, split=config.train_split)
        return records, report
    from sat_tf.pipelines.sources import read_karpathy

    candidates = [os.path.join(config.data_dir, name) for name in
                  ("dataset_coco.json", "dataset_flickr8k.json", "dataset_flickr30k.json")]
    found = [path for path in candidates if os.path.exists(path)]
    if not found:
        raise FileNotFoundError(f"no dataset_*.json Karpathy split file in {config.data_dir}")
    return read_karpathy(found[0], config.data_dir)


def first_per_split(records: list[CaptionRecord], count: int) -> list[CaptionRecord]:
    """The first `count` records of every split, in reader order."""
    seen: dict[str, int] = {}
    kept = []
    for record in records:
        seen[record.split] = seen.get(record.split, 0) + 1
        if seen[record.split] <= count:
            kept.append(record)
    return kept


def encoder_info(config: DataConfig, weights: str = "imagenet") -> dict:
    """The manifest's description of the encoder the config names."""
    from sat_tf.models.encoder import encoder_spec

    return encoder_spec(config.encoder, config.encoder_layer or None, weights, config.image_size).to_dict()


def encoder_function(config: DataConfig, weights: str | None = "imagenet"):
    """The encoder `config` names as extraction calls it: uint8 images (B, S, S, 3) numpy -> annotations (B, L, D)
    numpy, one traced tf.function (`weights`: "imagenet", None = random for tests)."""
    import tensorflow as tf

    from sat_tf.models.encoder import build_encoder

    encoder = build_encoder(config.encoder, config.encoder_layer or None, weights=weights,
                            image_size=config.image_size)
    run = tf.function(lambda images: encoder(images, training=False), reduce_retracing=True)
    return lambda images: run(tf.convert_to_tensor(images)).numpy()


def encoder_differences(recorded: dict, wanted: dict, keys=None) -> dict:
    """{field: (recorded, wanted)} for every field (of `keys`, default all recorded ones) where a manifest's encoder
    description differs from the wanted one."""
    return {k: (recorded.get(k), wanted.get(k)) for k in (keys or recorded) if recorded.get(k) != wanted.get(k)}


def check_encoder(features_dir: str, config: DataConfig) -> dict:
    """The manifest of `features_dir`, refused by name unless its features come from the encoder, layer and image
    size that `config` names (the vocabulary and the depth are checked where the shards are read)."""
    manifest = load_manifest(features_dir)
    recorded = manifest.get("encoder") or {}
    wanted = encoder_info(config, recorded.get("weights", "imagenet"))
    different = encoder_differences(recorded, wanted, ("name", "layer", "image_size", "grid", "feature_dim"))
    if different:
        raise FeatureError(f"{features_dir} holds features of another encoder than the model was trained on "
                           f"(features, model): {different}")
    return manifest


def _matches(manifest: dict, config: DataConfig, info: dict, vocabulary: Vocabulary | None = None) -> bool:
    # features with mirrored views serve a config that does not ask for them (the extra view is never read)
    if not (manifest.get("encoder") == info and manifest.get("max_caption_length") == config.max_caption_length
            and (manifest.get("mirrored_views", False) or not config.mirrored_views)):
        return False
    if vocabulary is None:  # manifests written before vocabularies could be given match as before
        return manifest.get("vocabulary_settings") == _vocab_settings(config)
    # A given vocabulary: the features of the same images encoded with it, however that vocabulary was made (the
    # same-dataset warm start reuses the features its source was trained on).
    recorded = manifest.get("vocabulary_settings") or {}
    return ((manifest.get("vocabulary") or {}).get("checksum") == vocabulary.checksum()
            and all(recorded.get(key) == getattr(config, key) for key in _IMAGE_SETTINGS))


# The vocabulary settings that also choose the images (data_dir, max_images); the others only shape the vocabulary.
_IMAGE_SETTINGS = ("data_dir", "max_images")


def _vocab_settings(config: DataConfig, vocabulary: Vocabulary | None = None) -> dict:
    settings = {"min_count": config.min_count, "max_vocab": config.max_vocab, "train_split": config.train_split,
                "max_images": config.max_images, "data_dir": config.data_dir}
    if vocabulary is not None:  # not built from these captions: features made with it serve no other vocabulary
        settings["given_vocabulary"] = vocabulary.checksum()
    return settings


def prepare_features(config: DataConfig, features_dir: str, *, weights: str = "imagenet", batch_size: int = 32,
                     progress: bool = True, vocabulary: Vocabulary | None = None) -> dict:
    """Reads, builds the vocabulary from the training split, extracts; returns the manifest (see extract.py).

    Args:
        config: DataConfig. Dataset, encoder and vocabulary settings.
        features_dir: str. Output directory (shards, manifest.json, vocab.txt).
        weights: encoder weights ("imagenet" works offline for efficientnet_lite0; None = random, for tests).
        batch_size: int. Images per encoder call.
        progress: bool. Print the progress bar.
        vocabulary: Vocabulary or None. Encode the captions with this one (the model a fine-tuning run starts
            from) instead of building one from the training captions (`config.min_count` and `config.max_vocab`
            are then unused); recorded in the manifest's vocabulary settings, with its `vocabulary_coverage` of the
            training captions.
    """
    info = encoder_info(config, weights if weights is not None else "random")
    manifest_path = os.path.join(features_dir, MANIFEST)
    if os.path.exists(manifest_path):
        with open(manifest_path, encoding="utf-8") as f:
            manifest = json.load(f)
        if _matches(manifest, config, info, vocabulary):
            try:  # a shard deleted or damaged since: fall through and let the extraction rewrite it
                for split in manifest["splits"]:
                    check_features(features_dir, split, manifest=manifest, verify="size")
                return manifest
            except FeatureError:
                pass
    records, report = read_dataset(config, features_dir)
    if config.max_images:
        records = first_per_split(records, config.max_images)
    train_captions = [c for r in records if r.split == config.train_split for c in r.captions]
    if not train_captions:
        raise ValueError(f"the {config.dataset} dataset has no captions in the {config.train_split!r} split: "
                         f"{report.summary()}")
    vocab_path = os.path.join(features_dir, VOCAB)
    extra = {"dataset": config.dataset, "vocabulary_settings": _vocab_settings(config, vocabulary)}
    if vocabulary is None:
        vocabulary = Vocabulary.build(train_captions, min_count=config.min_count, max_size=config.max_vocab)
        made = "these settings build"
    else:
        extra["vocabulary_coverage"] = vocabulary.coverage(train_captions)
        made = "this run was given (the vocabulary of the model it starts from, train.init_from)"
    if os.path.exists(vocab_path) and Vocabulary.load(vocab_path) != vocabulary:
        raise ValueError(f"{vocab_path} differs from the vocabulary {made}: the features in {features_dir} were "
                         f"made with another vocabulary; use another features dir")
    manifest = extract_features(records, encoder_function(config, weights), info, vocabulary,
                                features_dir, max_caption_length=config.max_caption_length,
                                shard_size=config.shard_size, batch_size=batch_size, progress=progress,
                                reader_report=report.counts(), extra=extra, mirrored=config.mirrored_views)
    return manifest
