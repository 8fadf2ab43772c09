"""What every exporter starts from: the trained decoder, the encoder put back in front of it, the vocabulary and the
configs, plus the `config.json` written beside every export.

Training works on precomputed annotations (the paper's frozen-CNN setting), so a work dir's checkpoint holds only
the Captioner. An exported model takes images, so `load_source` rebuilds the encoder the features were extracted
with (`DataConfig.encoder`, `encoder_layer`, `image_size`) and checks that its depth D is the Captioner's.

Shapes: B batch, S image side, L locations, D depth.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import keras

import sat_tf
from sat_tf.config import DataConfig, ModelConfig, TrainConfig
from sat_tf.files import write_json_atomic
from sat_tf.models.captioner import Captioner
from sat_tf.models.encoder import EncoderSpec, build_encoder, encoder_spec
from sat_tf.pipelines.extract import MANIFEST
from sat_tf.text.vocabulary import Vocabulary
from sat_tf.workdir import load_captioner

CONFIG = "config.json"
VOCAB = "vocab.txt"


@dataclasses.dataclass
class ExportSource:
    """A captioning model ready to export: image (B, S, S, 3) -> encoder -> annotations (B, L, D) -> Captioner.

    Args:
        captioner: Captioner. The trained decoder.
        encoder: keras.Model. RGB 0..255 (B, S, S, 3) -> (B, L, D), see `sat_tf.models.encoder.build_encoder`.
        vocabulary: Vocabulary. Token ids -> words.
        model_config, train_config, data_config: the work dir's configs.
        encoder_spec: EncoderSpec. What the encoder is (grid, D, image size), written into config.json.
        checkpoint_path: str or None. The checkpoint the decoder weights came from.
    """

    captioner: Captioner
    encoder: keras.Model
    vocabulary: Vocabulary
    model_config: ModelConfig
    train_config: TrainConfig
    data_config: DataConfig
    encoder_spec: EncoderSpec
    checkpoint_path: str | None = None

    def __post_init__(self):
        self.vocabulary.check_model_config(self.model_config)
        depth = self.encoder.output_shape[-1]
        if depth != self.model_config.feature_dim:
            raise ValueError(f"the encoder gives D={depth} features but the Captioner expects "
                             f"feature_dim={self.model_config.feature_dim}: DataConfig.encoder/encoder_layer do not "
                             f"match the model that was trained")

    @property
    def image_size(self) -> int:
        """S, the encoder's square input side."""
        return self.encoder_spec.image_size

    @property
    def max_tokens(self) -> int:
        """Most tokens a decoded caption has, <end> included: TrainConfig.max_length words + 1."""
        return self.train_config.max_length + 1


def load_source(workdir: str, which: str = "best", encoder_weights: str | None = "imagenet") -> ExportSource:
    """Restores a work dir's Captioner and rebuilds its encoder.

    Where the work dir's feature manifest exists, the rebuilt encoder must be the one it records (name, layer,
    image size, depth and weights), otherwise the served model would see other features than the decoder learnt on.

    Args:
        workdir: str. A sat_tf work dir (config.json, vocab.txt, checkpoints).
        which: "best", "latest" or a checkpoint prefix (see `sat_tf.workdir.find_checkpoint`).
        encoder_weights: "imagenet", None (random init, for tests) or a weights file path: the encoder weights the
            training features were extracted with.
    """
    experiment = load_captioner(workdir, which)
    source = source_from_models(experiment.captioner, experiment.vocabulary, experiment.model_config,
                                experiment.train_config, experiment.data_config, encoder_weights=encoder_weights,
                                checkpoint_path=experiment.checkpoint_path)
    manifest_path = os.path.join(experiment.features_dir, MANIFEST)
    if os.path.isfile(manifest_path):
        with open(manifest_path, encoding="utf-8") as f:
            recorded = json.load(f).get("encoder") or {}
        rebuilt = source.encoder_spec.to_dict()
        different = {k: (recorded[k], rebuilt.get(k)) for k in recorded if recorded[k] != rebuilt.get(k)}
        if different:
            raise ValueError(f"the encoder rebuilt for export differs from the one in {manifest_path} "
                             f"(recorded, rebuilt): {different}; pass the encoder weights the features were "
                             f"extracted with (--encoder-weights)")
    return source


def source_from_models(captioner: Captioner, vocabulary: Vocabulary, model_config: ModelConfig,
                       train_config: TrainConfig, data_config: DataConfig, encoder: keras.Model | None = None,
                       encoder_weights: str | None = "imagenet", checkpoint_path: str | None = None) -> ExportSource:
    """An ExportSource from in-memory objects; builds the encoder from `data_config` unless one is given.

    Args:
        captioner, vocabulary, model_config, train_config, data_config: as in `ExportSource`.
        encoder: keras.Model or None. An already built encoder matching `data_config`.
        encoder_weights: used when `encoder` is None, see `load_source`.
        checkpoint_path: str or None. Recorded in config.json.
    """
    layer = data_config.encoder_layer or None
    spec = encoder_spec(data_config.encoder, layer, encoder_weights, data_config.image_size)
    if encoder is None:
        encoder = build_encoder(data_config.encoder, layer, encoder_weights, data_config.image_size)
    return ExportSource(captioner, encoder, vocabulary, model_config, train_config, data_config, spec,
                        checkpoint_path)


def export_config(source: ExportSource, fmt: str, **details: Any) -> dict[str, Any]:
    """The config.json payload of an export: the three configs plus an `export` section.

    Args:
        source: ExportSource.
        fmt: str. "saved_model", "tflite" or "keras".
        **details: format-specific facts (beam size, signatures, files ...), stored under `export`.
    """
    export = {
        "format": fmt,
        "sat_tf_version": sat_tf.__version__,
        "keras_version": keras.__version__,
        "checkpoint": source.checkpoint_path,
        "encoder": source.encoder_spec.to_dict(),
        "image_size": source.image_size,
        "max_tokens": source.max_tokens,
        "vocabulary": {"file": VOCAB, "size": source.vocabulary.size, "sha256": source.vocabulary.checksum(),
                       "pad_id": source.vocabulary.pad_id, "start_id": source.vocabulary.start_id,
                       "end_id": source.vocabulary.end_id, "unk_id": source.vocabulary.unk_id},
    }
    export.update(details)
    return {"model": dataclasses.asdict(source.model_config), "train": dataclasses.asdict(source.train_config),
            "data": dataclasses.asdict(source.data_config), "export": export}


def write_config(directory: str, payload: dict[str, Any]) -> str:
    """Writes `payload` as `directory/config.json` (atomically) and returns the path.

    `sat_tf.config.load_config` reads it back (it ignores the extra `export` section).
    """
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, CONFIG)
    return write_json_atomic(path, payload, sort_keys=True)


def write_vocabulary(directory: str, vocabulary: Vocabulary) -> str:
    """Writes `directory/vocab.txt` and returns the path."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, VOCAB)
    vocabulary.save(path)
    return path
