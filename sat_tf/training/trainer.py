"""The single-process trainer behind `python -m sat_tf.train`: features -> `Captioner.fit` -> scored checkpoints.

`train(workdir, model_config, train_config, data_config)`:

1. writes `config.json` before anything else (then again once the vocabulary and the feature shape are known,
   before step 0), prepares the features (`pipelines.prepare`, resumable) and copies the vocabulary;
2. builds the Captioner and Adam (global-norm clipping), and restores `<workdir>/checkpoints` if present: model,
   optimizer slots, REINFORCE baseline, random-generator states and the epoch counter, so a killed run goes on
   from its last finished epoch (never a silent restart from scratch); a fresh run with `init_from` starts from
   another work dir's best weights instead of a random initialisation (`sat_tf.training.warm_start`);
3. trains with `model.fit` on the streaming pipeline; epoch e reads the data in the order seeded by seed + e, so a
   resumed run sees exactly the data an uninterrupted one would (the kill-and-resume test compares final weights);
4. after every epoch decodes the dev split (batched beam search, never teacher forcing), scores it with the
   coco-caption code, keeps the best-BLEU-4 model in `<workdir>/best` (the paper's early-stopping criterion),
   logs losses, learning rate, dev scores, sample captions and an attention figure to TensorBoard, and saves the
   epoch checkpoint; it stops after `patience` epochs without a better BLEU-4;
5. a loss that becomes NaN or Inf stops the run with `TrainingDiverged`, leaving the last good checkpoint as the
   latest one (nothing of the broken epoch is saved);
6. with `scst_epochs` > 0, a second phase of self-critical epochs (`sat_tf.training.self_critical`) follows the
   teacher-forced ones: it starts from the best teacher-forced model, numbers its epochs on from the last one,
   and is scored, checkpointed, resumed and early-stopped the same way (the phase's first epoch is recorded in
   the checkpoint, so a killed run resumes in the right phase);
7. finally scores the best model on the whole dev split (with METEOR) and writes `<workdir>/eval/`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import time
from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from sat_tf import workdir as wd
from sat_tf.config import DataConfig, ModelConfig, TrainConfig, load_config
from sat_tf.evaluation import Evaluation, evaluate
from sat_tf.files import write_json_atomic
from sat_tf.pipelines.dataset import steps_per_epoch, training_dataset
from sat_tf.pipelines.prepare import prepare_features, scenes_dir
from sat_tf.text.vocabulary import Vocabulary
from sat_tf.training.weight_average import averaged_weights, optimizer_options

EPOCH_METRICS = ("bleu", "rouge", "cider")  # METEOR (a java process, slowest) only in the final evaluation


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
    """Config entries that must not change when a work dir is reused (epochs, patience, the self-critical
    settings and the beam's length settings may: a finished run can be extended, e.g. by a self-critical phase)."""
    out = {}
    for name, cfg in configs.items():
        values = dataclasses.asdict(cfg)
        if name == "train":
            for extendable in ("epochs", "patience", "scst_epochs", "scst_learning_rate", "scst_samples",
                               "scst_images", "length_penalty", "min_length"):
                values.pop(extendable)
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
    manifest = prepare_features(data_config, features_dir, weights=weights, progress=progress)
    vocabulary = Vocabulary.load(os.path.join(features_dir, "vocab.txt"), manifest["vocabulary"]["checksum"])
    if not os.path.exists(os.path.join(workdir, wd.VOCAB)):
        shutil.copyfile(os.path.join(features_dir, "vocab.txt"), os.path.join(workdir, wd.VOCAB))
    model_config = dataclasses.replace(model_config, vocab_size=len(vocabulary),
                                       feature_dim=int(manifest["feature_shape"][1]))
    wd.save_experiment(workdir, model_config, train_config, data_config)
    experiment = wd.load_experiment(workdir)
    experiment.vocabulary = vocabulary
    return experiment


class _Progress:
    """Training progress kept in the checkpoint beside the model and the optimizer."""

    def __init__(self):
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.best_bleu4 = tf.Variable(-1.0, dtype=tf.float64, trainable=False, name="best_bleu4")
        self.best_epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="best_epoch")
        self.bad_epochs = tf.Variable(0, dtype=tf.int64, trainable=False, name="bad_epochs")
        # Epochs done when the self-critical phase began (0: not begun).
        self.scst_start = tf.Variable(0, dtype=tf.int64, trainable=False, name="scst_start")

    def variables(self, with_scst: bool = True) -> dict[str, tf.Variable]:
        out = {"epoch": self.epoch, "best_bleu4": self.best_bleu4, "best_epoch": self.best_epoch,
               "bad_epochs": self.bad_epochs}
        if with_scst:
            out["scst_start"] = self.scst_start
        return out


class _EpochEnd(keras.callbacks.Callback):
    """Dev scoring, best model, early stopping, history, TensorBoard extras and the epoch checkpoint."""

    def __init__(self, experiment: wd.Experiment, progress: _Progress, manager: tf.train.CheckpointManager,
                 best_manager: tf.train.CheckpointManager, features_dir: str, log: Callable[[str], None],
                 writer, scene_objects: dict | None):
        super().__init__()
        self.experiment, self.progress, self.manager, self.best_manager = experiment, progress, manager, best_manager
        self.features_dir, self.log, self.writer, self.scene_objects = features_dir, log, writer, scene_objects
        self.diverged: str | None = None
        self.history: list[dict] = []
        self.epoch_start = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.diverged = f"the training loss became {float(loss)} at epoch {int(self.progress.epoch) + 1}, " \
                            f"step {batch + 1}"
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        if self.diverged:
            return  # the broken epoch is not saved: the latest checkpoint stays the last good one
        exp, cfg = self.experiment, self.experiment.train_config
        train_seconds = time.perf_counter() - self.epoch_start
        with averaged_weights(self.model):  # scored and kept as the best: the weight average, where kept
            result = evaluate(self.model, exp.vocabulary, self.features_dir, split=exp.data_config.eval_split,
                              beam_size=cfg.beam_size, max_length=cfg.max_length,
                              length_penalty=cfg.length_penalty, min_length=cfg.min_length,
                              suppress_unk=cfg.suppress_unk, limit=exp.data_config.eval_images, metrics=EPOCH_METRICS,
                              scene_objects=self.scene_objects, verify="size")
            bleu4 = result.scores["BLEU-4"]
            improved = bleu4 > float(self.progress.best_bleu4)
            if improved:
                self.best_manager.save(checkpoint_number=epoch + 1)
                wd.save_experiment(os.path.join(exp.workdir, wd.BEST), exp.model_config, exp.train_config,
                                   exp.data_config)
        if improved:
            self.progress.best_bleu4.assign(bleu4)
            self.progress.best_epoch.assign(epoch + 1)
            self.progress.bad_epochs.assign(0)
        else:
            self.progress.bad_epochs.assign_add(1)
        self.progress.epoch.assign(epoch + 1)
        record = {"epoch": epoch + 1, "phase": "self-critical" if self.model.self_critical else "teacher forcing",
                  "train_seconds": round(train_seconds, 1),
                  "eval_seconds": round(result.seconds, 1),
                  **{k: float(v) for k, v in (logs or {}).items()},
                  **{f"dev_{k}": float(v) for k, v in result.scores.scores.items()}}
        if result.grounding is not None:
            record["dev_grounding"] = result.grounding.rate
        self.history.append(record)
        self.manager.save(checkpoint_number=epoch + 1)  # the raw weights, to resume from
        _append_history(os.path.join(exp.workdir, wd.HISTORY), record)
        self._tensorboard(epoch + 1, result, logs or {})
        samples = "\n".join(f"    {d.image_id}: {d.caption!r}   (ref: {d.references[0]!r})" for d in result.decoded[:3])
        self.log(f"epoch {epoch + 1}: loss {record.get('loss', float('nan')):.3f}  dev "
                 f"{result.scores.format_table().replace(chr(10), ', ')}"
                 + (f"  grounding {result.grounding.rate:.2f}" if result.grounding is not None else "")
                 + ("  (best)" if improved else f"  (no gain for {int(self.progress.bad_epochs)} epoch(s))")
                 + f"\n{samples}")
        if cfg.patience and int(self.progress.bad_epochs) >= cfg.patience:
            self.log(f"early stopping: dev BLEU-4 has not improved for {cfg.patience} epochs "
                     f"(best {float(self.progress.best_bleu4):.2f} at epoch {int(self.progress.best_epoch)})")
            self.model.stop_training = True

    def _tensorboard(self, step: int, result: Evaluation, logs: dict) -> None:
        if self.writer is None:
            return
        with self.writer.as_default(step=step):
            for key, value in result.scores.scores.items():
                tf.summary.scalar(f"dev/{key}", value)
            lr = self.model.optimizer.learning_rate
            tf.summary.scalar("learning_rate", float(lr.numpy() if hasattr(lr, "numpy") else lr))
            for key, value in logs.items():
                tf.summary.scalar(f"train/{key}", float(value))
            if result.grounding is not None:
                tf.summary.scalar("dev/grounding", result.grounding.rate)
            table = "\n".join(f"| {d.image_id} | {d.caption} | {d.references[0]} |" for d in result.decoded[:8])
            tf.summary.text("dev/samples", "| image | generated | reference |\n|---|---|---|\n" + table)
            figure = _figure(result, self.features_dir)
            if figure is not None:
                tf.summary.image("dev/attention", figure[None])
        self.writer.flush()


def _figure(result: Evaluation, features_dir: str) -> np.ndarray | None:
    """The first decoded image's attention figure as (H, W, 3) uint8, or None if the image cannot be read."""
    from sat_tf.images import ImageError, load_image
    from sat_tf.pipelines.dataset import load_manifest
    from sat_tf.visualize import attention_figure

    if not result.decoded:
        return None
    d = result.decoded[0]
    try:
        image = load_image(d.image_path)
    except ImageError:
        return None
    grid = tuple(load_manifest(features_dir)["encoder"]["grid"])
    steps = len(d.words)
    if steps == 0:
        return None
    figure = attention_figure(image, d.words, d.alpha[:steps], grid,
                              locations=None if d.location is None else list(d.location[:steps]))
    return np.asarray(figure.convert("RGB"))


def _append_history(path: str, record: dict) -> None:
    history = []
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            history = json.load(f)
    write_json_atomic(path, [h for h in history if h["epoch"] < record["epoch"]] + [record])


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
          weights: str | None = "imagenet", verbose: int = 1, log: Callable[[str], None] = print,
          final_evaluation: bool = True, tensorboard: bool = True) -> TrainResult:
    """Trains (or resumes) the model of a work dir; see the module docstring.

    Args:
        workdir: str. Created if needed; reusing one resumes it (the settings must match).
        model_config, train_config, data_config: the experiment.
        weights: encoder weights for feature extraction ("imagenet"; None = random, for tests).
        verbose: int. Keras progress bar (1), one line per epoch (2) or silent (0).
        log: where progress lines go.
        final_evaluation: bool. Score the best model on the whole dev split at the end (with METEOR).
        tensorboard: bool. Write TensorBoard logs to <workdir>/logs.
    """
    start = time.perf_counter()
    experiment = prepare_workdir(workdir, model_config, train_config, data_config, weights=weights,
                                 progress=verbose > 0)
    cfg, data = experiment.train_config, experiment.data_config
    features_dir = experiment.features_dir
    manifest_vocab = experiment.vocabulary.checksum()
    model = build_model(experiment.model_config, cfg)
    progress = _Progress()
    checkpoint = wd.checkpoint_for(model, model.optimizer, **progress.variables())
    manager = tf.train.CheckpointManager(checkpoint, experiment.path(wd.CHECKPOINTS), max_to_keep=cfg.keep_checkpoints)
    best_manager = tf.train.CheckpointManager(wd.checkpoint_for(model), experiment.path(wd.BEST), max_to_keep=1)
    if manager.latest_checkpoint:
        names = {name for name, _ in tf.train.list_variables(manager.latest_checkpoint)}
        # Checkpoints written before the self-critical phase existed have no scst_start (it stays 0).
        restoring = checkpoint if any(n.startswith("scst_start") for n in names) else wd.checkpoint_for(
            model, model.optimizer, **progress.variables(with_scst=False))
        restoring.restore(manager.latest_checkpoint).assert_existing_objects_matched()
        log(f"resuming from {manager.latest_checkpoint} (epoch {int(progress.epoch)} done, best dev BLEU-4 "
            f"{float(progress.best_bleu4):.2f})")
    elif cfg.init_from:
        apply_init_from(model, experiment, log)
    initial_epoch = int(progress.epoch)
    stopped = bool(cfg.patience) and int(progress.bad_epochs) >= cfg.patience
    scene_objects = None
    if data.dataset == "scenes":
        from sat_tf.pipelines.sources.scenes import read_scene_objects

        scene_objects = read_scene_objects(scenes_dir(data, features_dir))
    writer = tf.summary.create_file_writer(experiment.path(wd.LOGS)) if tensorboard else None
    end = _EpochEnd(experiment, progress, manager, best_manager, features_dir, log, writer, scene_objects)
    if initial_epoch < cfg.epochs and not stopped and not int(progress.scst_start):
        from sat_tf.pipelines.dataset import load_manifest

        manifest = load_manifest(features_dir)
        steps = steps_per_epoch(manifest, data.train_split, cfg.batch_size)
        ds = training_dataset(features_dir, cfg.batch_size, split=data.train_split, epoch=initial_epoch,
                              seed=cfg.seed, num_epochs=cfg.epochs - initial_epoch, manifest=manifest,
                              vocabulary_checksum=manifest_vocab,
                              feature_shape=(manifest["feature_shape"][0], experiment.model_config.feature_dim),
                              mirror_probability=data.mirror_probability)
        callbacks = [end]
        if tensorboard:
            callbacks.append(keras.callbacks.TensorBoard(experiment.path(wd.LOGS), update_freq=50,
                                                         write_graph=False))
        model.fit(ds, epochs=cfg.epochs, initial_epoch=initial_epoch, steps_per_epoch=steps, callbacks=callbacks,
                  verbose=verbose)
        if end.diverged:
            raise TrainingDiverged(f"{end.diverged}; stopped. The last good checkpoint is "
                                   f"{manager.latest_checkpoint or '(none: no epoch finished)'}; lower the learning "
                                   f"rate or check the features for NaN/Inf, then rerun to resume from it")
        stopped = bool(cfg.patience) and int(progress.bad_epochs) >= cfg.patience
    if cfg.scst_epochs:
        stopped = _self_critical_phase(model, experiment, progress, manager, best_manager, end, tensorboard,
                                       verbose, log)
    final = None
    if final_evaluation and best_manager.latest_checkpoint:
        wd.checkpoint_for(model).restore(best_manager.latest_checkpoint).expect_partial()
        final = evaluate(model, experiment.vocabulary, features_dir, split=data.eval_split,
                         beam_size=cfg.beam_size, max_length=cfg.max_length, length_penalty=cfg.length_penalty,
                         min_length=cfg.min_length, suppress_unk=cfg.suppress_unk, scene_objects=scene_objects,
                         out_dir=experiment.path("eval"))
    return TrainResult(workdir, int(progress.epoch) - initial_epoch, int(progress.best_epoch),
                       float(progress.best_bleu4), stopped, end.history, final, time.perf_counter() - start)


def apply_init_from(model, experiment: wd.Experiment, log: Callable[[str], None]) -> None:
    """A fresh run with `train.init_from`: the source's weights (`sat_tf.training.warm_start`)."""
    from sat_tf.training.warm_start import warm_start

    path = warm_start(model, experiment, experiment.train_config.init_from)
    log(f"starting from the weights of {path} (train.init_from)")


def _self_critical_phase(model, experiment: wd.Experiment, progress: _Progress, manager, best_manager,
                         end: _EpochEnd, tensorboard: bool, verbose: int, log: Callable[[str], None]) -> bool:
    """Step 6 of the module docstring; returns whether early stopping ended it."""
    from sat_tf.metrics.cider_d import CiderD
    from sat_tf.pipelines.dataset import image_batches, images_per_epoch, load_manifest
    from sat_tf.training.self_critical import SelfCritical, training_references

    cfg, data = experiment.train_config, experiment.data_config
    features_dir = experiment.features_dir
    if not int(progress.scst_start):
        if best_manager.latest_checkpoint:
            wd.checkpoint_for(model).restore(best_manager.latest_checkpoint).expect_partial()
        progress.scst_start.assign(progress.epoch)
        progress.bad_epochs.assign(0)
        log(f"self-critical phase: {cfg.scst_epochs} epoch(s) from the best teacher-forced model (epoch "
            f"{int(progress.best_epoch)}, dev BLEU-4 {float(progress.best_bleu4):.2f})")
    last = int(progress.scst_start) + cfg.scst_epochs
    first = int(progress.epoch)
    if first >= last or (cfg.patience and int(progress.bad_epochs) >= cfg.patience):
        return bool(cfg.patience) and int(progress.bad_epochs) >= cfg.patience
    manifest = load_manifest(features_dir)
    vocabulary = experiment.vocabulary
    references = training_references(features_dir, data.train_split, manifest=manifest,
                                     vocabulary_checksum=vocabulary.checksum())
    mc = experiment.model_config
    model.self_critical = SelfCritical(CiderD(references), samples=cfg.scst_samples, max_length=cfg.max_length,
                                       start_id=mc.start_id, end_id=mc.end_id, pad_id=mc.pad_id)
    model.optimizer.learning_rate.assign(cfg.scst_learning_rate)
    model.jit_compile = False  # the CIDEr-D reward is a py_function
    model.train_function = None  # retrace fit's step for the self-critical train_step
    ds = image_batches(features_dir, cfg.scst_images, split=data.train_split, epoch=first, seed=cfg.seed,
                       num_epochs=last - first, manifest=manifest, vocabulary_checksum=vocabulary.checksum(),
                       feature_shape=(manifest["feature_shape"][0], mc.feature_dim))
    callbacks = [end]
    if tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(experiment.path(wd.LOGS), update_freq=50, write_graph=False))
    try:
        model.fit(ds, epochs=last, initial_epoch=first,
                  steps_per_epoch=images_per_epoch(manifest, data.train_split, cfg.scst_images),
                  callbacks=callbacks, verbose=verbose)
    finally:
        model.self_critical = None
        model.train_function = None
    if end.diverged:
        raise TrainingDiverged(f"{end.diverged}; stopped. The last good checkpoint is {manager.latest_checkpoint}")
    return bool(cfg.patience) and int(progress.bad_epochs) >= cfg.patience
