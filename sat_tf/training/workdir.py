"""The work directory: the one place where training writes and every later command (evaluate, caption, export)
reads. Its layout is the contract between them:

    <workdir>/config.json          {"model": ModelConfig, "train": TrainConfig, "data": DataConfig}, written first
    <workdir>/vocab.txt            the vocabulary file (sat_tf.text.vocabulary), its sha256 in the manifest
    <workdir>/features/            TFRecord shards + manifest.json (pipelines.extract), unless data.features_dir
    <workdir>/checkpoints/         tf.train.Checkpoint of model, optimizer and progress, one per epoch (resume)
    <workdir>/best/                tf.train.Checkpoint of the model with the best dev BLEU-4, + config.json
    <workdir>/logs/                TensorBoard event files
    <workdir>/history.json         per-epoch losses and dev scores
    <workdir>/commands.txt         every `python -m sat_tf.train` command run on it, one per line (a preset's card)

Checkpoints are TensorFlow object-based checkpoints: `CheckpointManager` writes them under temporary names and
updates the `checkpoint` index file last, so a process killed while saving leaves the previous checkpoint as
the latest one.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Sequence

import keras
import tensorflow as tf

from sat_tf.config import DataConfig, ModelConfig, TrainConfig, load_config, save_config
from sat_tf.models.captioner import Captioner
from sat_tf.text.vocabulary import Vocabulary

CONFIG = "config.json"
VOCAB = "vocab.txt"
CHECKPOINTS = "checkpoints"
BEST = "best"
LOGS = "logs"
HISTORY = "history.json"
COMMANDS = "commands.txt"


@dataclasses.dataclass
class Experiment:
    """A work dir's configs, vocabulary and (optionally) restored model.

    Args:
        workdir: str. The directory.
        model_config, train_config, data_config: the configs from config.json.
        vocabulary: Vocabulary or None (None before the vocabulary is built).
        captioner: Captioner or None (set by `load_captioner`).
        checkpoint_path: str or None. The checkpoint the weights came from.
        inputs: list of Experiment or None. For an ensemble over several encoders (`load_ensemble`), a member
            Experiment per input, saying where its features are and which encoder computes them.
    """

    workdir: str
    model_config: ModelConfig
    train_config: TrainConfig
    data_config: DataConfig
    vocabulary: Vocabulary | None = None
    captioner: Captioner | None = None
    checkpoint_path: str | None = None
    inputs: list["Experiment"] | None = None

    @property
    def input_features_dirs(self):
        """The feature directory the captioner reads: one str, or for a multi-input ensemble one per input."""
        return [e.features_dir for e in self.inputs] if self.inputs else self.features_dir

    def path(self, *parts: str) -> str:
        return os.path.join(self.workdir, *parts)

    @property
    def features_dir(self) -> str:
        return self.data_config.features_dir or self.path("features")


def save_experiment(workdir: str, model_config: ModelConfig, train_config: TrainConfig,
                    data_config: DataConfig) -> None:
    """Writes `<workdir>/config.json` (creating the directory)."""
    os.makedirs(workdir, exist_ok=True)
    save_config(os.path.join(workdir, CONFIG), model=model_config, train=train_config, data=data_config)


def load_experiment(workdir: str) -> Experiment:
    """Reads config.json and, where present, vocab.txt of a work dir (or of a `best/` directory)."""
    if not os.path.isdir(workdir):
        raise FileNotFoundError(f"work dir {workdir} does not exist")
    configs = load_config(os.path.join(workdir, CONFIG))
    missing = [k for k in ("model", "train", "data") if k not in configs]
    if missing:
        raise ValueError(f"{os.path.join(workdir, CONFIG)} has no {missing} section(s): not a sat_tf work dir")
    vocabulary = None
    vocab_path = os.path.join(workdir, VOCAB)
    if os.path.exists(vocab_path):
        vocabulary = Vocabulary.load(vocab_path)
        vocabulary.check_model_config(configs["model"])
    return Experiment(workdir, configs["model"], configs["train"], configs["data"], vocabulary)


def record_command(workdir: str, argv: Sequence[str], program: str = "python -m sat_tf.train") -> None:
    """Appends the command that ran on a work dir to `<workdir>/commands.txt` (a rerun that resumes or extends a run
    is recorded again)."""
    import shlex

    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, COMMANDS), "a", encoding="utf-8") as f:
        f.write(" ".join([program, shlex.join(list(argv))]).strip() + "\n")


def recorded_commands(workdir: str) -> list[str]:
    """The commands of `<workdir>/commands.txt`, oldest first, each once ([] where none was recorded)."""
    path = os.path.join(workdir, COMMANDS)
    if not os.path.isfile(path):
        return []
    with open(path, encoding="utf-8") as f:
        return list(dict.fromkeys(line.strip() for line in f if line.strip()))


def build_captioner(model_config: ModelConfig, seed: int | None = None) -> Captioner:
    """A Captioner with every weight created (so checkpoints restore into it eagerly)."""
    return Captioner.from_model_config(model_config, seed=seed)


def checkpoint_for(captioner: Captioner, optimizer: keras.optimizers.Optimizer | None = None,
                   **progress: tf.Variable) -> tf.train.Checkpoint:
    """The object graph every sat_tf checkpoint uses: `model`, optionally `optimizer` and progress counters."""
    objects = {"model": captioner}
    # Keras SeedGenerator states (dropout, hard-attention sampling, the expected-context coin) are not part of
    # the Keras object graph that tf.train.Checkpoint follows; without them a resumed run would draw other
    # dropout masks than an uninterrupted one.
    objects["rng"] = [v.value for v in captioner.variables if "seed_generator_state" in v.path]
    if optimizer is not None:
        objects["optimizer"] = optimizer
    objects.update(progress)
    return tf.train.Checkpoint(**objects)


def find_checkpoint(workdir: str, which: str = "best") -> str:
    """Path prefix of a work dir's checkpoint: "best", "latest", or an explicit checkpoint prefix."""
    if which in ("best", "latest"):
        directory = os.path.join(workdir, BEST if which == "best" else CHECKPOINTS)
        path = tf.train.latest_checkpoint(directory)
        if path is None and which == "best":
            path = tf.train.latest_checkpoint(os.path.join(workdir, CHECKPOINTS))
        if path is None:
            raise FileNotFoundError(f"no checkpoint in {directory}: has `python -m sat_tf.train --workdir "
                                    f"{workdir}` finished an epoch?")
        return path
    if not tf.io.gfile.exists(which + ".index"):
        raise FileNotFoundError(f"checkpoint {which} not found (no {which}.index)")
    return which


def load_captioner(workdir: str, which: str = "best", hard_inference: str | None = None) -> Experiment:
    """Rebuilds the model from config.json and restores its weights from a checkpoint of the work dir.

    `which`: "best" (the best dev BLEU-4 epoch, falling back to the latest epoch), "latest", or a checkpoint
    prefix. `hard_inference`: hard attention only, how decoding picks z_t ("expected", "argmax", "sample"; see
    `ModelConfig`), instead of the work dir's setting (it does not change the weights). Returns the Experiment
    with `captioner`, `vocabulary` and `checkpoint_path` set (and `model_config` as the captioner was built).
    """
    experiment = load_experiment(workdir)
    if hard_inference is not None:
        if experiment.model_config.attention != "hard":
            raise ValueError(f"hard_inference={hard_inference!r} needs a hard-attention model; {workdir} is "
                             f"{experiment.model_config.attention}")
        experiment.model_config = dataclasses.replace(experiment.model_config, hard_inference=hard_inference)
    if experiment.vocabulary is None:
        raise FileNotFoundError(f"{os.path.join(workdir, VOCAB)} is missing: the work dir is incomplete")
    path = find_checkpoint(workdir, which)
    captioner = build_captioner(experiment.model_config)
    status = checkpoint_for(captioner).restore(path)
    status.expect_partial()  # the optimizer and progress counters are not needed here
    try:
        status.assert_existing_objects_matched()
    except AssertionError as e:
        raise ValueError(f"checkpoint {path} does not match the model of {workdir}/config.json: {e}") from e
    experiment.captioner = captioner
    experiment.checkpoint_path = path
    return experiment


def load_ensemble(workdirs: Sequence[str], which: str = "best", hard_inference: str | None = None,
                  combine: str = "probability") -> Experiment:
    """Restores several work dirs' models as one `CaptionEnsemble` (`sat_tf.decoding.ensemble`).

    Every member must have the same vocabulary file. Members trained on the same encoder, feature layer and image
    size read one set of annotations; if there are several such encoders, the ensemble reads one input per
    encoder (in the order they first appear) and the returned Experiment's `inputs` lists, per input, the
    Experiment of its first member (whose `features_dir` and `data_config` say where that input's features are
    and how to compute them). The first work dir's Experiment is returned with `captioner` set to the ensemble
    and `checkpoint_path` listing every member's checkpoint, comma-separated. `hard_inference` applies to the
    hard members only.
    """
    workdirs = list(workdirs)
    if not workdirs:
        raise ValueError("an ensemble needs at least one work dir")
    configs = [load_experiment(w) for w in workdirs]  # configs and vocabularies: checked before any checkpoint
    if hard_inference is not None and all(c.model_config.attention != "hard" for c in configs):
        raise ValueError(f"hard_inference={hard_inference!r} needs a hard-attention model; none of {workdirs} is")
    groups: list[tuple] = []  # (encoder, encoder_layer, image_size) of each input
    inputs = []
    for config in configs:
        if config.vocabulary is None:
            raise FileNotFoundError(f"{os.path.join(config.workdir, VOCAB)} is missing: the work dir is incomplete")
        if config.vocabulary.checksum() != configs[0].vocabulary.checksum():
            raise ValueError(f"{os.path.join(config.workdir, VOCAB)} differs from "
                             f"{os.path.join(configs[0].workdir, VOCAB)}: ensemble members must share one vocabulary")
        data = config.data_config
        key = (data.encoder, data.encoder_layer, data.image_size)
        if key not in groups:
            groups.append(key)
        inputs.append(groups.index(key))
    experiments = [load_captioner(c.workdir, which,
                                  hard_inference=hard_inference if c.model_config.attention == "hard" else None)
                   for c in configs]
    from sat_tf.decoding.ensemble import CaptionEnsemble

    ensemble = CaptionEnsemble([e.captioner for e in experiments], combine=combine,
                               names=[e.checkpoint_path for e in experiments],
                               inputs=inputs if len(groups) > 1 else None)
    return dataclasses.replace(
        experiments[0], captioner=ensemble, checkpoint_path=",".join(e.checkpoint_path for e in experiments),
        inputs=[experiments[inputs.index(i)] for i in range(len(groups))] if len(groups) > 1 else None)
