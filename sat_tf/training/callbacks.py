"""The Keras callbacks of a sat_tf work dir: dev scoring, best model, early stopping, NaN stop, history,
TensorBoard and the epoch checkpoints, for `python -m sat_tf.train` and for any `model.fit` call.

`WorkdirCallback(experiment)` owns the work dir's training state: the epoch checkpoints (model, optimizer slots,
REINFORCE baseline, random-generator states and progress: epoch, best dev BLEU-4, its epoch, epochs without gain)
and `best/`. Use it with a plain `model.fit`:

    experiment = sat_tf.training.trainer.prepare_workdir(workdir, model_config, train_config, data_config)
    with strategy.scope():
        model = sat_tf.training.trainer.build_model(experiment.model_config, experiment.train_config)
    callbacks = training_callbacks(experiment, model, strategy=strategy)   # restores the latest checkpoint
    model.fit(dataset, epochs=train_config.epochs, initial_epoch=callbacks[0].initial_epoch, callbacks=callbacks)

After every epoch it decodes the dev split (batched beam search, never teacher forcing) with the weight average
where the optimizer keeps one, scores it with the coco-caption code, keeps the best-BLEU-4 model in `<workdir>/best`
(the paper's early-stopping criterion), appends the epoch to `<workdir>/history.json`, writes dev scores, sample
captions and an attention figure to TensorBoard, saves the epoch checkpoint (raw weights, to resume from) and stops
training after `patience` epochs without a better BLEU-4. A loss that becomes NaN or Inf stops training at once and
nothing of that epoch is saved (`diverged` says where).

Under a multi-worker strategy every worker runs the callbacks: the chief (`sat_tf.training.strategy.is_chief`)
scores and writes the work dir, the others save their checkpoint into a temporary directory they delete at once
(saving may run collectives) and follow the chief's stop decision, which is summed over the workers.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from sat_tf.evaluation.scoring import Evaluation, evaluate
from sat_tf.files import write_json_atomic
from sat_tf.training import workdir as wd
from sat_tf.training.strategy import is_chief, num_workers, replica_sum
from sat_tf.training.weight_average import averaged_weights

EPOCH_METRICS = ("bleu", "rouge", "cider")  # METEOR (a java process, slowest) only in the final evaluation


class Progress:
    """Training progress kept in the checkpoint beside the model and the optimizer."""

    def __init__(self):
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.best_bleu4 = tf.Variable(-1.0, dtype=tf.float64, trainable=False, name="best_bleu4")
        self.best_epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="best_epoch")
        self.bad_epochs = tf.Variable(0, dtype=tf.int64, trainable=False, name="bad_epochs")

    def variables(self) -> dict[str, tf.Variable]:
        return {"epoch": self.epoch, "best_bleu4": self.best_bleu4, "best_epoch": self.best_epoch,
                "bad_epochs": self.bad_epochs}


class WorkdirCallback(keras.callbacks.Callback):
    """Dev scoring, best model, early stopping, NaN stop, history, TensorBoard extras and the epoch checkpoint of
    a work dir (see the module docstring).

    Args:
        experiment: sat_tf.training.workdir.Experiment with its vocabulary (`trainer.prepare_workdir`).
        model: the Captioner to train, compiled (its optimizer is checkpointed with it).
        strategy: the tf.distribute strategy the model was built under (None: the current one).
        log: where progress lines go (the chief's only).
        tensorboard: bool. Write dev scores, samples and an attention figure to `<workdir>/logs`.
        scene_objects: optional {image id: objects} of the scenes dataset (dev grounding rate).
    """

    def __init__(self, experiment: wd.Experiment, model, *, strategy: tf.distribute.Strategy | None = None,
                 log: Callable[[str], None] = print, tensorboard: bool = True, scene_objects: dict | None = None):
        super().__init__()
        strategy = strategy or tf.distribute.get_strategy()
        self.experiment, self.scene_objects = experiment, scene_objects
        self.is_chief = is_chief(strategy)
        self.log = log if self.is_chief else (lambda line: None)
        self.progress = Progress()
        self.checkpoint = wd.checkpoint_for(model, model.optimizer, **self.progress.variables())
        cfg = experiment.train_config
        self.manager = tf.train.CheckpointManager(self.checkpoint, experiment.path(wd.CHECKPOINTS),
                                                  max_to_keep=cfg.keep_checkpoints) if self.is_chief else None
        self.best_manager = tf.train.CheckpointManager(wd.checkpoint_for(model), experiment.path(wd.BEST),
                                                       max_to_keep=1) if self.is_chief else None
        self.writer = tf.summary.create_file_writer(experiment.path(wd.LOGS)) if tensorboard and self.is_chief \
            else None
        self._workers_sum = replica_sum(strategy) if num_workers(strategy) > 1 else None
        self.diverged: str | None = None
        self.history: list[dict] = []  # the epochs trained since this callback was made (all: history.json)
        self.epoch_start = time.perf_counter()
        self.set_model(model)

    # -- state ----------------------------------------------------------------------------------------------

    @property
    def initial_epoch(self) -> int:
        """Epochs the work dir has finished (after `restore`)."""
        return int(self.progress.epoch)

    @property
    def patience_exhausted(self) -> bool:
        patience = self.experiment.train_config.patience
        return bool(patience) and int(self.progress.bad_epochs) >= patience

    def latest_checkpoint(self) -> str | None:
        return tf.train.latest_checkpoint(self.experiment.path(wd.CHECKPOINTS))

    def restore(self) -> str | None:
        """Restores the work dir's latest epoch checkpoint (every object must match); returns its path or None.
        Every worker of a multi-worker job restores the chief's checkpoint (the work dir must be shared)."""
        path = self.latest_checkpoint()
        if path is None:
            return None
        try:
            self.checkpoint.restore(path).assert_existing_objects_matched()
        except AssertionError as e:
            raise ValueError(f"checkpoint {path} does not match this model and optimizer: {e}") from e
        self.log(f"resuming from {path} (epoch {self.initial_epoch} done, best dev BLEU-4 "
                 f"{float(self.progress.best_bleu4):.2f})")
        return path

    def save(self, epoch: int) -> str | None:
        """The epoch checkpoint: the chief's into the work dir, the others' into a deleted temporary directory."""
        if self.is_chief:
            return self.manager.save(checkpoint_number=epoch)
        scratch = tempfile.mkdtemp(prefix="sat_tf_worker_checkpoint_")
        try:
            tf.train.CheckpointManager(self.checkpoint, scratch, max_to_keep=1).save()
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return None

    # -- Keras hooks ----------------------------------------------------------------------------------------

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(np.reshape(loss, ()))):  # the same on every worker
            self.diverged = f"the training loss became {float(np.reshape(loss, ()))} at epoch " \
                            f"{int(self.progress.epoch) + 1}, step {batch + 1}"
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        if self.diverged:
            return  # the broken epoch is not saved: the latest checkpoint stays the last good one
        logs = {k: float(np.reshape(v, ())) for k, v in (logs or {}).items()}
        record = {"epoch": epoch + 1, "train_seconds": round(time.perf_counter() - self.epoch_start, 1), **logs}
        result, improved = None, False
        if self.is_chief:
            result, improved = self._score(epoch)
            record["eval_seconds"] = round(result.seconds, 1)
            record.update({f"dev_{k}": float(v) for k, v in result.scores.scores.items()})
            if result.grounding is not None:
                record["dev_grounding"] = result.grounding.rate
        self.progress.epoch.assign(epoch + 1)
        self.history.append(record)
        self.save(epoch + 1)
        if self.is_chief:
            _append_history(self.experiment.path(wd.HISTORY), record)
            self._tensorboard(epoch + 1, result, logs)
            self._log_epoch(record, result, improved)
        stop = self.patience_exhausted
        if self._workers_sum is not None:
            stop = self._workers_sum(1.0 if stop else 0.0) > 0  # the chief's decision reaches every worker
        if stop:
            cfg = self.experiment.train_config
            self.log(f"early stopping: dev BLEU-4 has not improved for {cfg.patience} epochs "
                     f"(best {float(self.progress.best_bleu4):.2f} at epoch {int(self.progress.best_epoch)})")
            self.model.stop_training = True

    # -- pieces ---------------------------------------------------------------------------------------------

    def _score(self, epoch: int) -> tuple[Evaluation, bool]:
        """Dev scores of the weight average (where kept), which becomes `best/` when its BLEU-4 is the best."""
        exp, cfg = self.experiment, self.experiment.train_config
        with averaged_weights(self.model):
            result = evaluate(self.model, exp.vocabulary, exp.features_dir, split=exp.data_config.eval_split,
                              beam_size=cfg.beam_size, max_length=cfg.max_length,
                              length_penalty=cfg.length_penalty, min_length=cfg.min_length,
                              no_repeat_ngram_size=cfg.no_repeat_ngram_size, suppress_unk=cfg.suppress_unk,
                              limit=exp.data_config.eval_images, metrics=EPOCH_METRICS,
                              scene_objects=self.scene_objects, verify="size")
            bleu4 = result.scores["BLEU-4"]
            improved = bleu4 > float(self.progress.best_bleu4)
            if improved:
                self.best_manager.save(checkpoint_number=epoch + 1)
                wd.save_experiment(exp.path(wd.BEST), exp.model_config, exp.train_config, exp.data_config)
        if improved:
            self.progress.best_bleu4.assign(bleu4)
            self.progress.best_epoch.assign(epoch + 1)
            self.progress.bad_epochs.assign(0)
        else:
            self.progress.bad_epochs.assign_add(1)
        return result, improved

    def _log_epoch(self, record: dict, result: Evaluation, improved: bool) -> None:
        samples = "\n".join(f"    {d.image_id}: {d.caption!r}   (ref: {d.references[0]!r})" for d in result.decoded[:3])
        self.log(f"epoch {record['epoch']}: loss {record.get('loss', float('nan')):.3f}  dev "
                 f"{result.scores.format_table().replace(chr(10), ', ')}"
                 + (f"  grounding {result.grounding.rate:.2f}" if result.grounding is not None else "")
                 + ("  (best)" if improved else f"  (no gain for {int(self.progress.bad_epochs)} epoch(s))")
                 + f"\n{samples}")

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
            figure = _figure(result, self.experiment.features_dir)
            if figure is not None:
                tf.summary.image("dev/attention", figure[None])
        self.writer.flush()


def training_callbacks(experiment: wd.Experiment, model, *, strategy: tf.distribute.Strategy | None = None,
                       log: Callable[[str], None] = print, tensorboard: bool = True,
                       scene_objects: dict | None = None, restore: bool = True) -> list[keras.callbacks.Callback]:
    """[WorkdirCallback, and on the chief Keras' TensorBoard (batch-level losses every 50 steps)], the first one
    restored from the work dir's latest checkpoint unless `restore` is False. See `WorkdirCallback`."""
    main = WorkdirCallback(experiment, model, strategy=strategy, log=log, tensorboard=tensorboard,
                           scene_objects=scene_objects)
    if restore:
        main.restore()
    out = [main]
    if tensorboard and main.is_chief:
        out.append(keras.callbacks.TensorBoard(experiment.path(wd.LOGS), update_freq=50, write_graph=False))
    return out


def _append_history(path: str, record: dict) -> None:
    history = []
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            history = json.load(f)
    write_json_atomic(path, [h for h in history if h["epoch"] < record["epoch"]] + [record])


def _figure(result: Evaluation, features_dir: str) -> np.ndarray | None:
    """The first decoded image's attention figure as (H, W, 3) uint8, or None if the image cannot be read."""
    from sat_tf.images.load import ImageError, load_image
    from sat_tf.pipelines.manifest import load_manifest
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
