"""What every exporter starts from: the trained decoder, the encoder put back in front of it, the vocabulary and the
configs, plus the `config.json` written beside every export.

Training works on precomputed annotations (the paper's frozen-CNN setting), so a work dir's checkpoint holds only
the Captioner. An exported model takes images, so `load_source` rebuilds the encoder the features were extracted
with (`DataConfig.encoder`, `encoder_layer`, `image_size`) and checks that its depth D is the Captioner's.

`load_ensemble_source` does the same for several work dirs decoding as one model (`sat_tf.decoding.ensemble`),
with one encoder per input where the members were trained on different encoders, and optionally test-time
mirroring (`sat_tf.decoding.mirrored`). Such a composite source exports as a SavedModel only: TFLite and Keras
files hold one Captioner.

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
from sat_tf.pipelines.manifest import MANIFEST
from sat_tf.pipelines.prepare import encoder_differences
from sat_tf.text.vocabulary import Vocabulary

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
        checkpoint_path: str or None. The checkpoint the decoder weights came from (comma-separated for an
            ensemble).
        more_encoders, more_specs: the encoders (and specs) of inputs 1, 2, ... of a CaptionEnsemble over several
            encoders (`encoder` computes input 0).
        mirror: bool. Test-time mirroring: the decoder also reads every input's features of the mirrored image.
    """

    captioner: Captioner
    encoder: keras.Model
    vocabulary: Vocabulary
    model_config: ModelConfig
    train_config: TrainConfig
    data_config: DataConfig
    encoder_spec: EncoderSpec
    checkpoint_path: str | None = None
    more_encoders: list = dataclasses.field(default_factory=list)
    more_specs: list = dataclasses.field(default_factory=list)
    mirror: bool = False

    def __post_init__(self):
        self.vocabulary.check_model_config(self.model_config)
        wanted = (self.captioner.input_feature_dims if getattr(self.captioner, "multi_input", False)
                  else [self.model_config.feature_dim])
        if len(wanted) != len(self.encoders) or len(self.more_specs) != len(self.more_encoders):
            raise ValueError(f"the decoder reads {len(wanted)} input(s) but {len(self.encoders)} encoder(s) were "
                             f"given")
        for i, (encoder, depth) in enumerate(zip(self.encoders, wanted)):
            if encoder.output_shape[-1] != depth:
                raise ValueError(f"the encoder of input {i} gives D={encoder.output_shape[-1]} features but the "
                                 f"decoder expects feature_dim={depth}: DataConfig.encoder/encoder_layer do not "
                                 f"match the model that was trained")

    @property
    def encoders(self) -> list:
        """The encoder of every input (one unless the decoder is an ensemble over several encoders)."""
        return [self.encoder, *self.more_encoders]

    @property
    def encoder_specs(self) -> list[EncoderSpec]:
        return [self.encoder_spec, *self.more_specs]

    @property
    def composite(self) -> bool:
        """An ensemble or test-time mirroring: more than one Captioner step per word (SavedModel only)."""
        return self.mirror or not isinstance(self.captioner, Captioner)

    def decoder(self):
        """What decodes the inputs: the captioner, or with `mirror` it wrapped to read both views."""
        if not self.mirror:
            return self.captioner
        from sat_tf.decoding.mirrored import with_mirrored_views

        return with_mirrored_views(self.captioner)

    def refuse_composite(self, fmt: str) -> None:
        """A clear error where a one-Captioner format is asked of an ensemble or a mirrored source."""
        if self.composite:
            raise ValueError(f"{fmt} holds one Captioner: an ensemble or test-time mirroring exports as a "
                             f"SavedModel only (--formats saved_model); export each member for {fmt}")

    @property
    def image_size(self) -> int:
        """S, the encoder's square input side."""
        return self.encoder_spec.image_size

    @property
    def max_tokens(self) -> int:
        """Most tokens a decoded caption has, <end> included: TrainConfig.max_length words + 1."""
        return self.train_config.max_length + 1


def load_source(workdir: str, which: str = "best", encoder_weights: str | None = "imagenet") -> ExportSource:
    """Restores a work dir's (or a preset's) Captioner and rebuilds its encoder.

    Where the work dir's feature manifest exists, the rebuilt encoder must be the one it records (name, layer,
    image size, depth and weights), otherwise the served model would see other features than the decoder learnt on.

    Args:
        workdir: str. A sat_tf work dir (config.json, vocab.txt, checkpoints), or a preset (name or directory).
        which: "best", "latest" or a checkpoint prefix (see `sat_tf.training.workdir.find_checkpoint`).
        encoder_weights: "imagenet", None (random init, for tests) or a weights file path: the encoder weights the
            training features were extracted with.
    """
    from sat_tf.presets import load_model

    experiment = load_model(workdir, which)
    source = source_from_models(experiment.captioner, experiment.vocabulary, experiment.model_config,
                                experiment.train_config, experiment.data_config, encoder_weights=encoder_weights,
                                checkpoint_path=experiment.checkpoint_path)
    _check_manifest(experiment.features_dir, source.encoder_spec)
    return source


def load_ensemble_source(workdirs, which: str = "best", encoder_weights: str | None = "imagenet",
                         combine: str = "probability", mirror: bool = False) -> ExportSource:
    """Several work dirs as one exported model (`sat_tf.training.workdir.load_ensemble`): one encoder per input, each
    checked against its features' manifest like `load_source`; with `mirror`, test-time mirroring.

    Args:
        workdirs: str per member (the first gives the configs written into config.json).
        which, encoder_weights: see `load_source`.
        combine: "probability" or "log_probability" (see `CaptionEnsemble`).
        mirror: bool. Decode the image and its mirror image as one model.
    """
    from sat_tf.training.workdir import load_ensemble

    workdirs = list(workdirs)
    if len(workdirs) == 1:
        source = load_source(workdirs[0], which, encoder_weights)
        source.mirror = bool(mirror)
        return source
    experiment = load_ensemble(workdirs, which, combine=combine)
    sources = experiment.inputs or [experiment]
    specs, encoders = [], []
    for member in sources:
        layer = member.data_config.encoder_layer or None
        spec = encoder_spec(member.data_config.encoder, layer, encoder_weights, member.data_config.image_size)
        _check_manifest(member.features_dir, spec)
        specs.append(spec)
        encoders.append(build_encoder(member.data_config.encoder, layer, encoder_weights,
                                      member.data_config.image_size))
    return ExportSource(experiment.captioner, encoders[0], experiment.vocabulary, experiment.model_config,
                        experiment.train_config, experiment.data_config, specs[0], experiment.checkpoint_path,
                        more_encoders=encoders[1:], more_specs=specs[1:], mirror=bool(mirror))


def _check_manifest(features_dir: str, spec: EncoderSpec) -> None:
    """Where the features' manifest exists, the rebuilt encoder must be the one it records (name, layer, image
    size, depth and weights), otherwise the served model would see other features than the decoder learnt on."""
    manifest_path = os.path.join(features_dir, MANIFEST)
    if not os.path.isfile(manifest_path):
        return
    with open(manifest_path, encoding="utf-8") as f:
        recorded = json.load(f).get("encoder") or {}
    different = encoder_differences(recorded, spec.to_dict())
    if different:
        raise ValueError(f"the encoder rebuilt for export differs from the one in {manifest_path} "
                         f"(recorded, rebuilt): {different}; pass the encoder weights the features were "
                         f"extracted with (--encoder-weights)")


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
        **({"encoders": [spec.to_dict() for spec in source.encoder_specs]} if source.more_specs else {}),
        **({"ensemble": source.captioner.describe()} if hasattr(source.captioner, "describe") else {}),
        "mirror": source.mirror,
        "image_size": source.image_size,
        "max_tokens": source.max_tokens,
        "vocabulary": {"file": VOCAB, "size": source.vocabulary.size, "sha256": source.vocabulary.checksum(),
                       "pad_id": source.vocabulary.pad_id, "start_id": source.vocabulary.start_id,
                       "end_id": source.vocabulary.end_id, "unk_id": source.vocabulary.unk_id},
    }
    export.update(details)
    return {"model": dataclasses.asdict(source.model_config), "train": dataclasses.asdict(source.train_config),
            "data": dataclasses.asdict(source.data_config), "export": export}


def with_decoding(source: ExportSource, no_repeat_ngram_size: int) -> ExportSource:
    """`source` whose train config holds the n-gram blocking an export was built with, so that the config.json
    beside the export (`export_config`, read back by `load_config`) says how the export decodes, not how the work
    dir did.

    Args:
        source: ExportSource.
        no_repeat_ngram_size: int. The export's n-gram blocking (0: off).
    """
    train = dataclasses.replace(source.train_config, no_repeat_ngram_size=int(no_repeat_ngram_size))
    return dataclasses.replace(source, train_config=train)


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
