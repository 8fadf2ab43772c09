"""The trainer behind `python -m sat_tf.train`: features -> `Captioner.fit` -> scored checkpoints, under any
tf.distribute strategy.

`train(workdir, model_config, train_config, data_config, strategy=...)`:

1. writes `config.json` before anything else (then again once the vocabulary and the feature shape are known,
   before step 0), prepares the features (`pipelines.prepare`, resumable; a run with `init_from` encodes its
   captions with the source model's vocabulary) and copies the vocabulary; under a multi-worker strategy the chief
   does this while the other workers wait, then every worker reads the work dir (which must be shared);
2. builds the Captioner and Adam (global-norm clipping) in `strategy.scope()`, and restores `<workdir>/checkpoints`
   if present: model, optimizer slots, REINFORCE baseline, random-generator states and the epoch counter, so a
   killed run goes on from its last finished epoch (never a silent restart from scratch); a fresh run with
   `init_from` starts from another work dir's best weights instead of a random initialisation
   (`sat_tf.training.warm_start`);
3. trains with one `model.fit(epochs=..., initial_epoch=..., steps_per_epoch=...)` (`Captioner.train_step`,
   replica-correct under any strategy) over the epochs left (`fit_epochs`): epoch e reads the data in the order
   seeded by seed + e (each replica its share of every global batch, `TrainConfig.batch_size` being the global
   batch), so a resumed run sees exactly the data an uninterrupted one would (the kill-and-resume test compares
   final weights);
4. after every epoch the callbacks of `sat_tf.training.callbacks` score the dev split, keep `best/`, write the
   history, TensorBoard and the epoch checkpoint, stop after `patience` epochs without a better BLEU-4, and stop at
   once on a NaN or Inf loss (raised here as `TrainingDiverged`, the last good checkpoint staying the latest);
5. finally scores the best model on the whole dev split (with METEOR) and writes `<workdir>/eval/` (the chief).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import shutil
import time
from typing import Callable

import keras
import tensorflow as tf

from sat_tf.config import DataConfig, ModelConfig, TrainConfig, load_config
from sat_tf.evaluation.scoring import Evaluation, evaluate
from sat_tf.pipelines.dataset import steps_per_epoch, training_dataset
from sat_tf.pipelines.manifest import check_features, load_manifest
from sat_tf.pipelines.prepare import prepare_features, scenes_dir
from sat_tf.text.vocabulary import Vocabulary
from sat_tf.training import workdir as wd
from sat_tf.training.callbacks import training_callbacks
from sat_tf.training.strategy import is_chief, make_strategy, num_workers, replica_sum
from sat_tf.training.weight_average import optimizer_options


class TrainingDiverged(RuntimeError):
    """The loss became NaN or Inf; the message names the epoch, the step and the checkpoint that survives."""


@dataclasses.dataclass
class TrainResult:
    """What `train` did: epochs run in this call, best epoch and its dev BLEU-4, the final evaluation."""

    workdir: str
    epochs_done: int
    best_epoch: int
    best_bleu4: float
    stopped_early: bool
    history: list[dict]
    final: Evaluation | None
    seconds: float


def _comparable(configs: dict) -> dict:
    """Config entries that must not change when a work dir is reused (epochs and patience may: a finished run can
    be extended; so may the beam's length settings and n-gram blocking, which change decoding, not the model)."""
    out = {}
    for name, cfg in configs.items():
        values = dataclasses.asdict(cfg)
        if name == "train":
            for extendable in ("epochs", "patience", "length_penalty", "min_length", "no_repeat_ngram_size"):
                values.pop(extendable, None)
        if name == "model":
            values.pop("vocab_size")
            values.pop("feature_dim")
        out[name] = values
    return out


def prepare_workdir(workdir: str, model_config: ModelConfig, train_config: TrainConfig, data_config: DataConfig, *,
                    weights: str | None = "imagenet", progress: bool = True) -> wd.Experiment:
    """Steps 1 of the module docstring: config.json, features, vocabulary; returns the final Experiment."""
    os.makedirs(workdir, exist_ok=True)
    config_path = os.path.join(workdir, wd.CONFIG)
    wanted = {"model": model_config, "train": train_config, "data": data_config}
    if os.path.exists(config_path):
        stored = load_config(config_path)
        old = _comparable({k: stored[k] for k in ("model", "train", "data")})
        new = _comparable(wanted)
        if old != new:
            diff = {f"{section}.{key}": (old[section][key], new[section][key]) for section in old
                    for key in old[section] if old[section][key] != new[section][key]}
            raise ValueError(f"{workdir} was started with other settings {diff} (stored, requested): use another "
                             f"--workdir, or the same settings to resume")
    wd.save_experiment(workdir, model_config, train_config, data_config)  # written first
    features_dir = data_config.features_dir or os.path.join(workdir, "features")
    given = _init_from_vocabulary(workdir, train_config.init_from) if train_config.init_from else None
    manifest = prepare_features(data_config, features_dir, weights=weights, progress=progress, vocabulary=given)
    vocabulary = Vocabulary.load(os.path.join(features_dir, "vocab.txt"), manifest["vocabulary"]["checksum"])
    if not os.path.exists(os.path.join(workdir, wd.VOCAB)):
        shutil.copyfile(os.path.join(features_dir, "vocab.txt"), os.path.join(workdir, wd.VOCAB))
    model_config = dataclasses.replace(model_config, vocab_size=len(vocabulary),
                                       feature_dim=int(manifest["feature_shape"][1]))
    wd.save_experiment(workdir, model_config, train_config, data_config)
    experiment = wd.load_experiment(workdir)
    experiment.vocabulary = vocabulary
    return experiment


def _shared_workdir(workdir: str, model_config: ModelConfig, train_config: TrainConfig, data_config: DataConfig,
                    strategy: tf.distribute.Strategy, **prepare) -> wd.Experiment:
    """The prepared work dir's Experiment in every process: the chief prepares it (`prepare_workdir`) while the
    other workers of a multi-worker job wait, then read it (the work dir must be shared)."""
    if is_chief(strategy):
        experiment = prepare_workdir(workdir, model_config, train_config, data_config, **prepare)
    if num_workers(strategy) > 1:
        replica_sum(strategy)(1.0)  # the other workers wait here until the chief has prepared the work dir
    if is_chief(strategy):
        return experiment
    experiment = wd.load_experiment(workdir)
    if experiment.vocabulary is None:
        raise FileNotFoundError(f"{workdir}/{wd.VOCAB} is missing: every worker must see the chief's work dir")
    return experiment


def _init_from_vocabulary(workdir: str, init_from: str) -> Vocabulary:
    """The vocabulary of a run with `train.init_from`: its source's (`warm_start.source_vocabulary`), or, once the
    work dir has one, the work dir's own (a resumed run keeps what it started with, even if the source is gone)."""
    from sat_tf.training.warm_start import check_source_path, source_vocabulary

    check_source_path(init_from, workdir)
    own = os.path.join(workdir, wd.VOCAB)
    return Vocabulary.load(own) if os.path.exists(own) else source_vocabulary(init_from)


def build_model(model_config: ModelConfig, train_config: TrainConfig) -> keras.Model:
    """The Captioner, compiled with Adam (global-norm clipping) and every optimizer slot created."""
    keras.utils.set_random_seed(train_config.seed)
    # Set either way: Keras' policy is global, so an earlier mixed-precision build must not leak into this one.
    keras.mixed_precision.set_global_policy("mixed_bfloat16" if train_config.mixed_precision else "float32")
    model = wd.build_captioner(model_config, seed=train_config.seed)
    optimizer = keras.optimizers.Adam(train_config.learning_rate, global_clipnorm=train_config.clip_norm or None,
                                      **optimizer_options(train_config))
    model.compile(optimizer=optimizer, jit_compile=train_config.jit_compile)
    optimizer.build(model.trainable_variables)
    return model


def train(workdir: str, model_config: ModelConfig, train_config: TrainConfig, data_config: DataConfig, *,
          strategy: str | tf.distribute.Strategy | None = None, weights: str | None = "imagenet", verbose: int = 1,
          log: Callable[[str], None] = print, final_evaluation: bool = True, tensorboard: bool = True) -> TrainResult:
    """Trains (or resumes) the model of a work dir; see the module docstring.

    Args:
        workdir: str. Created if needed; reusing one resumes it (the settings must match).
        model_config, train_config, data_config: the experiment.
        strategy: a `sat_tf.training.strategy.make_strategy` name ("default", "mirrored", "multi_worker", "tpu"),
            a tf.distribute strategy, or None (the current one). Run the same call in every process of a
            multi-worker job.
        weights: encoder weights for feature extraction ("imagenet"; None = random, for tests).
        verbose: int. Keras progress bar (1), one line per epoch (2) or silent (0).
        log: where progress lines go (the chief's only).
        final_evaluation: bool. Score the best model on the whole dev split at the end (with METEOR).
        tensorboard: bool. Write TensorBoard logs to <workdir>/logs.

    Returns:
        TrainResult (on other workers than the chief without the final evaluation).
    """
    start = time.perf_counter()
    if isinstance(strategy, str):
        strategy = make_strategy(strategy)
    strategy = strategy or tf.distribute.get_strategy()
    chief = is_chief(strategy)
    say = log if chief else (lambda line: None)
    if train_config.batch_size % strategy.num_replicas_in_sync:
        raise ValueError(f"TrainConfig.batch_size={train_config.batch_size} is the global batch and must be "
                         f"divisible by the {strategy.num_replicas_in_sync} replicas in sync")
    experiment = _shared_workdir(workdir, model_config, train_config, data_config, strategy, weights=weights,
                                 progress=verbose > 0)
    cfg, data = experiment.train_config, experiment.data_config
    features_dir = experiment.features_dir
    with strategy.scope():
        model = build_model(experiment.model_config, cfg)
    scene_objects = None
    if data.dataset == "scenes":
        from sat_tf.pipelines.sources.scenes import read_scene_objects

        scene_objects = read_scene_objects(scenes_dir(data, features_dir))
    callbacks = training_callbacks(experiment, model, strategy=strategy, log=say, tensorboard=tensorboard,
                                   scene_objects=scene_objects)
    end = callbacks[0]
    if end.latest_checkpoint() is None and cfg.init_from:
        apply_init_from(model, experiment, say)
    if strategy.num_replicas_in_sync > 1:
        say(f"{type(strategy).__name__}: {strategy.num_replicas_in_sync} replicas, global batch {cfg.batch_size}")
    initial_epoch = end.initial_epoch
    if initial_epoch < cfg.epochs and not end.patience_exhausted:
        epoch_data, steps = training_input(experiment, strategy)
        fit_epochs(model, epoch_data, strategy, initial_epoch, cfg.epochs, callbacks, verbose, steps=steps)
        if end.diverged:
            raise TrainingDiverged(f"{end.diverged}; stopped. The last good checkpoint is "
                                   f"{end.latest_checkpoint() or '(none: no epoch finished)'}; lower the learning "
                                   f"rate or check the features for NaN/Inf, then rerun to resume from it")
    final = None
    best = tf.train.latest_checkpoint(experiment.path(wd.BEST))
    if chief and final_evaluation and best:
        wd.checkpoint_for(model).restore(best).expect_partial()
        final = evaluate(model, experiment.vocabulary, features_dir, split=data.eval_split,
                         beam_size=cfg.beam_size, max_length=cfg.max_length, length_penalty=cfg.length_penalty,
                         min_length=cfg.min_length, suppress_unk=cfg.suppress_unk,
                         no_repeat_ngram_size=cfg.no_repeat_ngram_size, scene_objects=scene_objects,
                         out_dir=experiment.path("eval"))
    return TrainResult(workdir, end.initial_epoch - initial_epoch, int(end.progress.best_epoch),
                       float(end.progress.best_bleu4), end.patience_exhausted, end.history, final,
                       time.perf_counter() - start)


def training_input(experiment: wd.Experiment, strategy: tf.distribute.Strategy
                   ) -> tuple[Callable[..., tf.data.Dataset], int]:
    """The work dir's training data for `fit_epochs`: `epoch_data(epoch, input_context=None)`, the batches of one
    epoch (`training_dataset` seeded by seed + epoch; with an input context, this input pipeline's per-replica
    batches), and the global steps of an epoch. Every byte of the features is checked here once; each epoch then
    checks only the sizes."""
    cfg, data, features_dir = experiment.train_config, experiment.data_config, experiment.features_dir
    manifest = load_manifest(features_dir)
    checksum = experiment.vocabulary.checksum()
    feature_shape = (manifest["feature_shape"][0], experiment.model_config.feature_dim)
    check_features(features_dir, data.train_split, manifest=manifest, vocabulary_checksum=checksum,
                   feature_shape=feature_shape)

    def epoch_data(epoch: int, input_context=None) -> tf.data.Dataset:
        return training_dataset(features_dir, cfg.batch_size, split=data.train_split, epoch=epoch, seed=cfg.seed,
                                input_context=input_context, manifest=manifest, vocabulary_checksum=checksum,
                                feature_shape=feature_shape, verify="size",
                                mirror_probability=data.mirror_probability)

    return epoch_data, _steps_per_epoch(manifest, data.train_split, cfg.batch_size, strategy)


def _steps_per_epoch(manifest: dict, split: str, batch_size: int, strategy: tf.distribute.Strategy) -> int:
    """Global steps of an epoch of `training_dataset`.

    One input pipeline (every strategy on one machine): the exact count, R replicas taking consecutive
    per-replica batches. Several workers, each reading its own shard of the files: the exact count is unknown
    without reading the data, so an epoch is N // G global steps (N captions, G global batch), which every run
    reaches (a step consumes at most G captions); the few batches beyond it are left out of that epoch.
    """
    if num_workers(strategy) > 1:
        captions = sum(int(count) for count in manifest["splits"][split]["length_histogram"].values())
        return max(1, captions // batch_size)
    replicas = strategy.num_replicas_in_sync
    return math.ceil(steps_per_epoch(manifest, split, batch_size // replicas) / replicas)


def fit_epochs(model, epoch_data: Callable[..., tf.data.Dataset], strategy: tf.distribute.Strategy,
               initial_epoch: int, epochs: int, callbacks, verbose: int = 1, *, steps: int):
    """Epochs `initial_epoch` .. `epochs` - 1 in one `model.fit(epochs=epochs, initial_epoch=initial_epoch,
    steps_per_epoch=steps)`: epoch e trains on `epoch_data(e, input_context)` (one input pipeline per worker under a
    strategy, its consecutive batches going to its replicas in order), so each epoch has its own seeded order
    whatever the strategy and wherever a run resumes. Stops where a callback sets `model.stop_training`. Returns
    fit's History (None where no epoch is left).

    The epochs' datasets are concatenated, each made exactly `steps` global steps long: given `steps_per_epoch`,
    Keras 3 keeps one iterator across epochs (`EpochIterator`), so epoch e + 1 must begin where the last step of
    epoch e ends. An input pipeline whose epoch has fewer batches (a partial last global step; under several
    workers, a smaller share of the files) is padded with empty batches, which is what the strategy hands a replica
    without data. Giving `steps` also keeps Keras from reading past the data: a `fit` that finds the end of a
    dataset of unknown length advances the optimizer's step counter once more (the increment does not wait for
    the input), which would shift Adam's bias correction and the step seeds.
    """
    if initial_epoch >= epochs:
        return None

    def run_data(input_context=None) -> tf.data.Dataset:
        replicas = 1 if input_context is None else \
            input_context.num_replicas_in_sync // input_context.num_input_pipelines  # this pipeline's replicas
        return functools.reduce(tf.data.Dataset.concatenate, [
            _exactly(epoch_data(epoch, input_context), steps * replicas) for epoch in range(initial_epoch, epochs)])

    if strategy.num_replicas_in_sync > 1:
        dataset = strategy.distribute_datasets_from_function(run_data)
    else:
        dataset = run_data()
    # shuffle=False: each epoch's dataset is shuffled already (fit's default True only warns on a tf.data input)
    return model.fit(dataset, epochs=epochs, initial_epoch=initial_epoch, steps_per_epoch=steps, shuffle=False,
                     callbacks=list(callbacks), verbose=verbose)


def _exactly(dataset: tf.data.Dataset, count: int) -> tf.data.Dataset:
    """The first `count` batches of `dataset`, padded with empty batches where it has fewer. An empty batch is
    what tf.distribute's partial-batch handling makes from the element spec: zeros with every unknown dimension 0
    (the first one where all are known)."""

    def empty(spec: tf.TensorSpec) -> tf.Tensor:
        dims = [0 if d is None else d for d in spec.shape.as_list()]
        if spec.shape.is_fully_defined() and dims:
            dims[0] = 0
        return tf.zeros(dims, spec.dtype)

    padding = tf.data.Dataset.from_tensors(tf.nest.map_structure(empty, dataset.element_spec)).repeat()
    return dataset.concatenate(padding).take(count)


def apply_init_from(model, experiment: wd.Experiment, log: Callable[[str], None]) -> None:
    """A fresh run with `train.init_from`: the source's weights (`sat_tf.training.warm_start`), and how many words of
    the training captions its vocabulary lacks where the features were made with it (`describe_coverage`)."""
    from sat_tf.training.warm_start import describe_coverage, warm_start

    path = warm_start(model, experiment, experiment.train_config.init_from)
    log(f"starting from the weights of {path} (train.init_from)")
    coverage = load_manifest(experiment.features_dir).get("vocabulary_coverage")
    if coverage:
        log(describe_coverage(coverage, experiment.train_config.init_from, len(experiment.vocabulary)))
