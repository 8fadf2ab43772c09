"""Distributed training on tf.distribute: strategy construction and a custom training loop.

Why a custom loop: Keras 3.15 `model.fit` fails under `MultiWorkerMirroredStrategy` (keras#20585: a PerReplica
value is reduced eagerly while the model builds, then scalar logs are reduced on axis 0), and Keras' checkpoint
callbacks have no chief logic. The loop below runs `strategy.run` of one replica step per global batch and is
written so that training on R replicas is, up to float summation order, the computation one process does on the
same global batch (tests/training/test_distributed.py checks the final weights):

* Input. `strategy.distribute_datasets_from_function(dataset_fn)` builds one input pipeline per worker; each
  yields per-replica batches of `input_context.get_per_replica_batch_size(TrainConfig.batch_size)` captions from
  its shard only (by file where there are at least as many files as pipelines, else by example:
  `sat_tf.pipelines.dataset.training_dataset` does both). A step's global batch is the concatenation of the
  replica batches in replica order. Replicas of one step may see captions of different lengths.
* Loss scaling. The Captioner divides its sums over tokens by N, the number of real (non-padding) tokens of the
  batch. With replicas, every replica must divide by the GLOBAL token count: the replica step all-reduces N (and
  the caption count, the denominator of the alpha_reg mean) before the forward pass, so each replica's loss is
  its share of the global loss and the SUM of the replica gradients is exactly the single-process gradient.
  (Averaging per-replica means would weight a token of a replica with short captions more.)
* Clipping. The summed gradient is clipped by its global norm in the replica step and applied by
  `SummedGradientsAdam` without a second reduction. (Keras 3's optimizer clips before its own all-reduce, that
  is, it would clip each replica's partial gradient.)
* REINFORCE (hard attention). The baseline b is a mirrored non-trainable weight. Its statistic, the batch mean of
  R_b = log p(y_b | s_b, a), is all-reduced over the global batch and every replica applies the same update
  b <- decay b + (1 - decay) mean, so b stays identical everywhere. The expected-context coin and the location
  samples come from a stateless seed made of `TrainConfig.seed` and the global step (`optimizer.iterations`),
  which every replica shares and every checkpoint restores; no replica-local RNG state is involved. Locations
  are drawn per global row (`Captioner.teacher_forcing(sample_rows=...)`), so they do not depend on how the
  global batch is split.
* Checkpoints. Every worker saves (saving may run collectives), the chief into `<workdir>/checkpoints`, the
  others into a temporary directory they delete at once. On start every worker restores the chief's latest
  checkpoint (model, optimizer, epoch, step within the epoch), so the work dir must be a directory every worker
  mounts (NFS and the like; config.json and history.json are written with Python file I/O, so not gs://); the
  loop checks that all workers restored the same step.

Not the same as one process: dropout. Keras' `Dropout` draws from a per-layer seed generator that is not
replica-aware, so replica r's row i gets the same mask as replica 0's row i (each example's mask is still a fair
Bernoulli draw, so gradients stay unbiased; they are only correlated across replicas).

Entry points: `make_strategy(name)`; `DistributedTrainer(...).fit()` / `train_distributed(...)` for any
`dataset_fn`; `train_with_strategy(workdir, ...)`, what `python -m sat_tf.train --strategy ...` runs (the
single-process trainer's work dir with dev scoring, best model and early stopping). docs/distributed.md tells
how to launch jobs.

Shapes: G global batch, B per-replica batch, R replicas in sync, L locations, D depth, T+1 tokens per caption.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import shutil
import tempfile
import time
from typing import Any, Callable, Sequence

import keras
import tensorflow as tf

from sat_tf import workdir as wd
from sat_tf.config import DataConfig, ModelConfig, TrainConfig
from sat_tf.files import write_json_atomic
from sat_tf.training.weight_average import averaged_weights, optimizer_options

STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")

# Terms a replica returns as its share of the global value (summed over replicas); the rest are averaged.
_REPLICA_SHARES = ("loss", "xent", "alpha_reg", "reinforce", "entropy")

DatasetFn = Callable[..., tf.data.Dataset]


# -- strategies ---------------------------------------------------------------------------------------------


def parse_tf_config(text: str | None = None) -> dict[str, Any]:
    """Reads and checks TF_CONFIG (the environment variable when `text` is None).

    The standard format, one per process: {"cluster": {"worker": ["host0:port", "host1:port", ...]},
    "task": {"type": "worker", "index": i}} (optionally with a one-address "chief" list; the chief, else worker 0,
    writes the outputs).

    Raises:
        ValueError: TF_CONFIG is absent, not JSON, or lacks the cluster or this task.
    """
    example = '{"cluster": {"worker": ["host0:12345", "host1:12345"]}, "task": {"type": "worker", "index": 0}}'
    if text is None:
        text = os.environ.get("TF_CONFIG")
    if not text:
        raise ValueError(f"strategy 'multi_worker' needs TF_CONFIG in every process, e.g. TF_CONFIG='{example}' "
                         f"(see docs/distributed.md)")
    try:
        config = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"TF_CONFIG is not valid JSON ({e}); expected e.g. {example}") from e
    cluster, task = config.get("cluster"), config.get("task")
    if not isinstance(cluster, dict) or not any(cluster.get(k) for k in ("worker", "chief")):
        raise ValueError(f"TF_CONFIG has no cluster.worker (or cluster.chief) address list: {text}")
    if not isinstance(task, dict) or "type" not in task or "index" not in task:
        raise ValueError(f"TF_CONFIG has no task {{'type', 'index'}}: {text}")
    members = cluster.get(task["type"])
    if not isinstance(members, list) or not 0 <= int(task["index"]) < len(members):
        raise ValueError(f"TF_CONFIG task {task} is not in its cluster {cluster}")
    return config


def tf_config(workers: Sequence[str], index: int) -> str:
    """The TF_CONFIG JSON of worker `index` of a cluster of `workers` ("host:port" each); worker 0 is chief."""
    return json.dumps({"cluster": {"worker": list(workers)}, "task": {"type": "worker", "index": int(index)}})


def make_strategy(name: str, *, devices: Sequence[str] | None = None, tpu: str | None = None
                  ) -> tf.distribute.Strategy:
    """Builds the tf.distribute strategy named on the command line (`--strategy`).

    Create it first thing in the program: "multi_worker" and "tpu" configure the TensorFlow runtime, which fails
    once other ops have run.

    Args:
        name: str. "default" (no distribution: this process's default device), "mirrored" (synchronous over the
            local GPUs), "multi_worker" (synchronous over the processes listed in the standard TF_CONFIG
            environment variable, each with its local GPUs or CPU; see `parse_tf_config`) or "tpu" (the TPU
            found by `TPUClusterResolver`; not tested in this project's CI, which has no TPU).
        devices: optional device names for "mirrored" (default: every local GPU, else the CPU).
        tpu: "tpu" only: the TPU's name or grpc:// address (default: $TPU_NAME, else "local", i.e. the TPU VM
            this process runs on).

    Returns:
        The strategy; `strategy.num_replicas_in_sync` is R.
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy(devices=list(devices) if devices else None)
    if name == "multi_worker":
        parse_tf_config()
        resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
        options = tf.distribute.experimental.CommunicationOptions(
            implementation=tf.distribute.experimental.CommunicationImplementation.AUTO)
        return tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver,
                                                         communication_options=options)
    if name == "tpu":
        address = tpu if tpu is not None else os.environ.get("TPU_NAME", "local")
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=address)
        if address != "local":
            tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    raise ValueError(f"unknown strategy {name!r}; choose one of {STRATEGIES}")


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the job's outputs: the "chief" task, else worker 0, else the only process."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return True
    if resolver.task_type == "chief":
        return True
    cluster = resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and int(resolver.task_id or 0) == 0 and "chief" not in cluster


def replica_sum(strategy: tf.distribute.Strategy) -> Callable[[float], float]:
    """A function giving the sum over all replicas of a number each process passes (a barrier between workers:
    it returns once every worker has called it). Build it once per strategy: each build traces a tf.function."""
    total = tf.function(lambda v: strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(tf.identity, args=(v,)),
                                                  axis=None))
    return lambda value: float(total(tf.constant(value, tf.float32)))


# -- the optimizer ------------------------------------------------------------------------------------------


class SummedGradientsAdam(keras.optimizers.Adam):
    """Adam that applies gradients already summed over the replicas (and clipped) as they are.

    Keras 3's TensorFlow optimizer sums the gradients it gets in a replica context over the replicas
    (`_all_reduce_sum_gradients`), after clipping each replica's part. The loop all-reduces and clips the global
    gradient itself, so that reduction must be the identity here. Checkpoints are those of a plain Adam.
    """

    def _all_reduce_sum_gradients(self, grads_and_vars):
        return list(grads_and_vars)


if not hasattr(keras.optimizers.Adam, "_all_reduce_sum_gradients"):  # a Keras upgrade moved the hook
    raise ImportError("sat_tf.training.distributed needs the TensorFlow backend of Keras 3.15 "
                      "(Optimizer._all_reduce_sum_gradients)")


# -- the loop -----------------------------------------------------------------------------------------------


class LoopCallback:
    """Hooks of `DistributedTrainer.fit`, called on every worker with the same (all-reduced) logs.

    `trainer` is set before training starts; work that one process should do (decoding the dev set, writing
    files) can test `self.trainer.is_chief`.
    """

    trainer: "DistributedTrainer | None" = None

    def on_step_end(self, step: int, logs: dict[str, tf.Tensor]) -> None:
        """After each global step; `step` counts the steps trained in this work dir (resumed runs included)."""

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> dict[str, Any] | None:
        """After epoch `epoch` (0-based), before its checkpoint; may return more logs for the history.

        Returning {"stop_training": True} on ANY worker stops every worker after this epoch's checkpoint (early
        stopping: the flag is all-reduced, so no worker is left waiting in a collective).
        """
        return None


class DistributedTrainer:
    """Trains a Captioner with a custom loop under any tf.distribute strategy (see the module docstring).

    Args:
        model_config: ModelConfig. The model to build (inside `strategy.scope()`).
        train_config: TrainConfig. `batch_size` is the GLOBAL batch G (divisible by R); `learning_rate`,
            `clip_norm` (global norm of the summed gradient), `seed`, `epochs`, `keep_checkpoints`,
            `mixed_precision` (bfloat16 compute) and `jit_compile` (XLA on the default strategy only: with
            replicas XLA would have to compile the all-reduces; TPUs compile the step anyway; XLA's stateless
            random numbers differ from TensorFlow's, so hard attention then samples other, equally valid,
            paths) are used.
        dataset_fn: callable (input_context) -> tf.data.Dataset, or (input_context, epoch) -> Dataset. Called
            once per worker and epoch; yields per-replica batches {"annotations": (B, L, D), "tokens": (B, T+1)}
            (or (annotations, tokens) tuples) of `input_context.get_per_replica_batch_size(G)` captions from this
            worker's shard. With the epoch argument it returns that epoch's data, so a resumed run replays the
            order of an uninterrupted one; without, the same dataset is iterated again every epoch.
        strategy: tf.distribute.Strategy, e.g. from `make_strategy`.
        workdir: str. The work dir (`sat_tf.workdir`): checkpoints in `<workdir>/checkpoints` (numbered by global
            step), the history in `<workdir>/history.json` (one record per epoch, the single-process trainer's
            format), epoch scalars for TensorBoard in `<workdir>/logs/train`; the chief writes them.
        steps_per_epoch: int or None. Global steps per epoch; None runs each epoch until the data of every worker
            is exhausted (replicas whose shard ends first get empty batches meanwhile).
        checkpoint_every: int. Also checkpoint every this many global steps inside an epoch (0: at epoch ends
            only). A run resumed mid-epoch fast-forwards the epoch's data past the steps already trained.
        callbacks: LoopCallback instances.
        progress: optional extra tf.Variables to checkpoint with the model (e.g. the trainer's best dev score).
        log: optional callable for progress lines (chief only).
    """

    def __init__(self, model_config: ModelConfig, train_config: TrainConfig, dataset_fn: DatasetFn,
                 strategy: tf.distribute.Strategy, workdir: str, *, steps_per_epoch: int | None = None,
                 checkpoint_every: int = 0, callbacks: Sequence[LoopCallback] = (),
                 progress: dict[str, tf.Variable] | None = None, log: Callable[[str], None] | None = None):
        replicas = strategy.num_replicas_in_sync
        if train_config.batch_size % replicas:
            raise ValueError(f"TrainConfig.batch_size={train_config.batch_size} is the global batch and must be "
                             f"divisible by the {replicas} replicas in sync")
        if steps_per_epoch is not None and steps_per_epoch <= 0:
            raise ValueError(f"steps_per_epoch must be positive or None, got {steps_per_epoch!r}")
        self.model_config = model_config
        self.train_config = train_config
        self.dataset_fn = dataset_fn
        self.strategy = strategy
        self.workdir = workdir
        self.steps_per_epoch = steps_per_epoch
        self.checkpoint_every = int(checkpoint_every)
        self.callbacks = list(callbacks)
        self.is_chief = is_chief(strategy)
        self.log = log if (log is not None and self.is_chief) else (lambda line: None)
        self.checkpoint_dir = os.path.join(workdir, wd.CHECKPOINTS)
        if self.is_chief:
            os.makedirs(self.checkpoint_dir, exist_ok=True)

        keras.utils.set_random_seed(train_config.seed)
        previous_policy = keras.config.dtype_policy()
        if train_config.mixed_precision:
            keras.config.set_dtype_policy("mixed_bfloat16")
        try:
            with strategy.scope():
                self.model = wd.build_captioner(model_config, seed=train_config.seed)
                # Clipping happens on the all-reduced gradient in the replica step, not in the optimizer.
                self.optimizer = SummedGradientsAdam(learning_rate=train_config.learning_rate,
                                                     **optimizer_options(train_config))
                self.optimizer.build(self.model.trainable_variables)
        finally:
            keras.config.set_dtype_policy(previous_policy)
        # Progress, the same on every worker: completed epochs and the steps done in the current one.
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.epoch_step = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch_step")
        self.progress = dict(progress or {})
        # Saved: the single-process trainer's objects (`sat_tf.workdir.checkpoint_for`) plus epoch_step. Restored
        # strictly without epoch_step, then epoch_step on its own, so the trainer's checkpoints resume here too.
        self.checkpoint = wd.checkpoint_for(self.model, self.optimizer, epoch=self.epoch,
                                            epoch_step=self.epoch_step, **self.progress)
        self._strict_checkpoint = wd.checkpoint_for(self.model, self.optimizer, epoch=self.epoch, **self.progress)
        self._manager = None
        if self.is_chief:
            self._manager = tf.train.CheckpointManager(self.checkpoint, self.checkpoint_dir,
                                                       max_to_keep=train_config.keep_checkpoints)
        self._base_seed = tf.constant([train_config.seed, 0x5A7], tf.int32)
        self._step_fn = None  # traced once, for the element spec of the first epoch's distributed dataset
        self._replica_sum = replica_sum(strategy)
        self.history: list[dict[str, Any]] = []

    @property
    def global_step(self) -> int:
        """Global steps trained in this work dir (the optimizer's counter, restored with it)."""
        return int(self.optimizer.iterations.numpy())

    # -- one step -----------------------------------------------------------------------------------------

    def _make_step_fn(self, element_spec):
        jit = bool(self.train_config.jit_compile) and self.strategy.num_replicas_in_sync == 1 \
            and not isinstance(self.strategy, tf.distribute.TPUStrategy)

        def step(batch):
            per_replica = self.strategy.run(self._replica_step, args=(batch,))
            logs = {}
            for name, value in per_replica.items():
                op = tf.distribute.ReduceOp.SUM if name in _REPLICA_SHARES else tf.distribute.ReduceOp.MEAN
                logs[name] = self.strategy.reduce(op, value, axis=None)
            logs["perplexity"] = tf.exp(logs["xent"])
            return logs

        # One trace for every caption length: the spec keeps the pipeline's unknown T, so the Captioner unrolls
        # its cond-guarded steps once instead of tracing per length.
        return tf.function(step, input_signature=[element_spec], jit_compile=jit or None)

    def _replica_step(self, batch) -> dict[str, tf.Tensor]:
        """One replica's share of a global step: forward, global-count-normalised loss, all-reduced update."""
        model, cfg = self.model, self.model_config
        context = tf.distribute.get_replica_context()
        replicas = self.strategy.num_replicas_in_sync
        annotations, tokens = _unpack(batch)  # (B, L, D), (B, T+1)
        tokens = tf.cast(tokens, tf.int32)
        batch_size = tf.shape(tokens)[0]
        mask = tf.cast(tf.not_equal(tokens[:, 1:], cfg.pad_id), tf.float32)  # (B, T)
        # One all-reduce for the global token count N and every replica's batch size (the row offsets of the
        # global batch; they differ only where a final batch is partial).
        replica_id = tf.cast(context.replica_id_in_sync_group, tf.int32)
        sizes = tf.one_hot(replica_id, replicas, dtype=tf.float32) * tf.cast(batch_size, tf.float32)  # (R,)
        counts = context.all_reduce(tf.distribute.ReduceOp.SUM, tf.concat([[tf.reduce_sum(mask)], sizes], 0))
        num_tokens, sizes = counts[0], counts[1:]  # N, (R,)
        num_captions = tf.reduce_sum(sizes)  # G
        offset = tf.cast(tf.reduce_sum(sizes[:replica_id]), tf.int32)

        use_expected, sample_seed, sampled = None, None, False
        if model.is_hard:
            step_seed = tf.random.experimental.stateless_fold_in(self._base_seed, self.optimizer.iterations.value)
            coin_seed, sample_seed = tf.unstack(tf.random.experimental.stateless_split(step_seed, 2))
            use_expected = model.cell.attention.draw_expected_coin(coin_seed)  # the same on every replica
            sampled = tf.logical_not(use_expected)
        variables = model.trainable_variables
        reference = model.reinforce_reference(annotations, tokens, sampled)  # per row: no collective needed
        with tf.GradientTape() as tape:

            def batch_mean(values):  # (B,) stop-gradient values -> their mean over the global batch
                # Off the tape: no gradient (another all-reduce) is built for it, so every replica runs the same
                # collectives in the same order.
                with tape.stop_recording():
                    total = context.all_reduce(tf.distribute.ReduceOp.SUM, tf.reduce_sum(values))
                return total / tf.maximum(num_captions, 1.0)

            out = model.teacher_forcing(annotations, tokens, training=True, seed=sample_seed,
                                        use_expected=use_expected,
                                        sample_rows=(offset, tf.cast(num_captions, tf.int32)))
            terms = model.loss_terms(out, sampled=sampled, num_tokens=num_tokens, num_captions=num_captions,
                                     batch_mean=batch_mean, reference=reference)
        grads = tape.gradient(terms["loss"], variables)
        pairs = [(tf.convert_to_tensor(g), v) for g, v in zip(grads, variables) if g is not None]
        summed = context.all_reduce(tf.distribute.ReduceOp.SUM, [g for g, _ in pairs])
        if self.train_config.clip_norm > 0:
            summed, _ = tf.clip_by_global_norm(summed, self.train_config.clip_norm)
        self.optimizer.apply(summed, [v for _, v in pairs])
        if model.is_hard:
            # The same values on every replica (global statistic, shared coin): the mirrors stay equal.
            model.update_baseline(terms, sampled)
        return {name: value for name, value in terms.items() if name != "perplexity"}

    # -- checkpoints --------------------------------------------------------------------------------------

    def restore(self) -> str | None:
        """Restores the chief's latest checkpoint, if any, on this worker; returns its path."""
        path = tf.train.latest_checkpoint(self.checkpoint_dir)
        if path is not None:
            status = self._strict_checkpoint.restore(path)
            try:
                status.assert_existing_objects_matched()
            except AssertionError as e:
                raise ValueError(f"checkpoint {path} does not match this model and optimizer: {e}") from e
            status.expect_partial()  # epoch_step is restored next, on its own
            self.epoch_step.assign(0)  # absent from the single-process trainer's checkpoints
            tf.train.Checkpoint(epoch_step=self.epoch_step).restore(path).expect_partial()
        step = float(self.global_step)
        if self._replica_sum(step) != step * self.strategy.num_replicas_in_sync:
            raise RuntimeError(f"this worker restored step {int(step)} from {path}, other workers another step: "
                               f"{self.checkpoint_dir} must be one directory shared by every worker")
        return path

    def save(self) -> str | None:
        """Checkpoints on every worker: the chief into the work dir, the others into a deleted temp dir."""
        if self.is_chief:
            return self._manager.save(checkpoint_number=self.global_step)
        scratch = tempfile.mkdtemp(prefix="sat_tf_worker_checkpoint_")
        try:
            tf.train.CheckpointManager(self.checkpoint, scratch, max_to_keep=1).save()
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return None

    # -- epochs -------------------------------------------------------------------------------------------

    def _epoch_dataset(self, epoch: int):
        takes_epoch = _positional_arity(self.dataset_fn) >= 2
        fn = (lambda context: self.dataset_fn(context, epoch)) if takes_epoch else self.dataset_fn
        return self.strategy.distribute_datasets_from_function(fn)

    def fit(self, epochs: int | None = None, restore: bool = True) -> list[dict[str, Any]]:
        """Trains until `epochs` (default TrainConfig.epochs) epochs are done in all, resuming from the chief's
        latest checkpoint.

        Args:
            epochs: int or None. Total epochs of the work dir.
            restore: bool. Restore the latest checkpoint first (False: the caller already called `restore`).

        Returns:
            The history: one record per epoch of this work dir ({"epoch": 1-based, "train_seconds", "steps",
            the mean loss terms, whatever callbacks added}); resumed runs continue the earlier records.

        Raises:
            sat_tf.training.trainer.TrainingDiverged: the loss became NaN or Inf; nothing of that epoch is saved
                after the bad step.
        """
        epochs = self.train_config.epochs if epochs is None else int(epochs)
        for callback in self.callbacks:
            callback.trainer = self
        restored = self.restore() if restore else tf.train.latest_checkpoint(self.checkpoint_dir)
        self.history = _read_history(os.path.join(self.workdir, wd.HISTORY), int(self.epoch)) if restored else []
        if restored:
            self.log(f"resuming from {restored} (epoch {int(self.epoch)} done, {int(self.epoch_step)} step(s) of "
                     f"the next)")
        writer = tf.summary.create_file_writer(os.path.join(self.workdir, wd.LOGS, "train")) if self.is_chief \
            else None
        while int(self.epoch) < epochs:
            epoch, start = int(self.epoch), time.perf_counter()
            dataset = self._epoch_dataset(epoch)
            if self._step_fn is None:
                self._step_fn = self._make_step_fn(dataset.element_spec)
            iterator = iter(dataset)
            for _ in range(int(self.epoch_step)):  # resumed mid-epoch: skip what was trained on
                if not iterator.get_next_as_optional().has_value():
                    break
            sums: dict[str, tf.Tensor] = {}
            steps = 0
            while self.steps_per_epoch is None or int(self.epoch_step) < self.steps_per_epoch:
                batch = iterator.get_next_as_optional()
                if not batch.has_value():  # agreed on by every worker
                    break
                logs = self._step_fn(batch.get_value())
                loss = float(logs["loss"])
                if not math.isfinite(loss):
                    from sat_tf.training.trainer import TrainingDiverged

                    raise TrainingDiverged(
                        f"the training loss became {loss} at epoch {epoch + 1}, step {int(self.epoch_step) + 1}; "
                        f"stopped. The last good checkpoint is "
                        f"{tf.train.latest_checkpoint(self.checkpoint_dir) or '(none)'}")
                for name, value in logs.items():
                    sums[name] = sums[name] + value if name in sums else value
                steps += 1
                self.epoch_step.assign_add(1)
                step = self.global_step
                for callback in self.callbacks:
                    callback.on_step_end(step, logs)
                if self.checkpoint_every and step % self.checkpoint_every == 0:
                    self.save()
            record: dict[str, Any] = {"epoch": epoch + 1, "train_seconds": round(time.perf_counter() - start, 1),
                                      "steps": steps}
            record.update({name: float(value) / max(steps, 1) for name, value in sums.items()})
            stop = False
            for callback in self.callbacks:
                extra = dict(callback.on_epoch_end(epoch, dict(record)) or {})
                stop = bool(extra.pop("stop_training", False)) or stop
                record.update(extra)
            self.epoch.assign(epoch + 1)
            self.epoch_step.assign(0)
            self.save()
            self._record(record, writer)
            self.log(f"epoch {epoch + 1}: " + ", ".join(f"{k} {v:.4g}" for k, v in record.items()
                                                         if k != "epoch" and isinstance(v, float)))
            if self._replica_sum(1.0 if stop else 0.0) > 0:
                break
        return self.history

    def _record(self, record: dict[str, Any], writer) -> None:
        self.history = [h for h in self.history if h["epoch"] < record["epoch"]] + [record]
        if not self.is_chief:
            return
        path = os.path.join(self.workdir, wd.HISTORY)
        write_json_atomic(path, self.history)
        # tf.summary.write with the "scalars" plugin tag is what tf.summary.scalar writes, without needing the
        # tensorboard package at training time.
        metadata = tf.compat.v1.SummaryMetadata(
            plugin_data=tf.compat.v1.SummaryMetadata.PluginData(plugin_name="scalars"))
        with writer.as_default(step=record["epoch"]):
            for name, value in record.items():
                if name != "epoch" and isinstance(value, (int, float)):
                    tf.summary.write(f"epoch_{name}", tf.constant(value, tf.float32), metadata=metadata)
        writer.flush()


def train_distributed(model_config: ModelConfig, train_config: TrainConfig, dataset_fn: DatasetFn,
                      strategy: tf.distribute.Strategy, workdir: str, *, steps_per_epoch: int | None = None,
                      epochs: int | None = None, checkpoint_every: int = 0, callbacks: Sequence[LoopCallback] = (),
                      log: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Builds a `DistributedTrainer` and trains it; returns the per-epoch history. See `DistributedTrainer`.

    Run the same call in every process of a multi-worker job (same configs, same shared work dir); only the
    chief writes to the work dir.
    """
    trainer = DistributedTrainer(model_config, train_config, dataset_fn, strategy, workdir,
                                 steps_per_epoch=steps_per_epoch, checkpoint_every=checkpoint_every,
                                 callbacks=callbacks, log=log)
    return trainer.fit(epochs)


class _DevScoring(LoopCallback):
    """The single-process trainer's epoch end on the chief: dev BLEU-4 by beam search, best model, patience.

    The progress variables are those of `sat_tf.training.trainer` (best_bleu4, best_epoch, bad_epochs), so either
    trainer resumes the other's checkpoints.
    """

    def __init__(self, experiment: wd.Experiment, progress: dict[str, tf.Variable], log: Callable[[str], None]):
        self.experiment, self.progress, self.log = experiment, progress, log
        self.best_manager: tf.train.CheckpointManager | None = None
        self.scene_objects = None
        if experiment.data_config.dataset == "scenes":
            from sat_tf.pipelines.prepare import scenes_dir
            from sat_tf.pipelines.sources.scenes import read_scene_objects

            self.scene_objects = read_scene_objects(scenes_dir(experiment.data_config, experiment.features_dir))

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> dict[str, Any] | None:
        if not self.trainer.is_chief:
            return None  # the chief's stop flag reaches this worker through the all-reduce
        from sat_tf.evaluation import evaluate
        from sat_tf.training.trainer import EPOCH_METRICS

        exp, cfg, progress = self.experiment, self.experiment.train_config, self.progress
        # Scored and kept as the best: the weight average, where the optimizer keeps one.
        with averaged_weights(self.trainer.model, self.trainer.optimizer):
            result = evaluate(self.trainer.model, exp.vocabulary, exp.features_dir,
                              split=exp.data_config.eval_split, beam_size=cfg.beam_size, max_length=cfg.max_length,
                              length_penalty=cfg.length_penalty, min_length=cfg.min_length,
                              suppress_unk=cfg.suppress_unk, limit=exp.data_config.eval_images, metrics=EPOCH_METRICS,
                              scene_objects=self.scene_objects, verify="size")
            bleu4 = result.scores["BLEU-4"]
            improved = bleu4 > float(progress["best_bleu4"].numpy())
            if improved:
                if self.best_manager is None:
                    self.best_manager = tf.train.CheckpointManager(wd.checkpoint_for(self.trainer.model),
                                                                   exp.path(wd.BEST), max_to_keep=1)
                self.best_manager.save(checkpoint_number=epoch + 1)
                wd.save_experiment(exp.path(wd.BEST), exp.model_config, exp.train_config, exp.data_config)
        if improved:
            progress["best_bleu4"].assign(bleu4)
            progress["best_epoch"].assign(epoch + 1)
            progress["bad_epochs"].assign(0)
        else:
            progress["bad_epochs"].assign_add(1)
        extra: dict[str, Any] = {"eval_seconds": round(result.seconds, 1)}
        extra.update({f"dev_{k}": float(v) for k, v in result.scores.scores.items()})
        if result.grounding is not None:
            extra["dev_grounding"] = result.grounding.rate
        bad = int(progress["bad_epochs"].numpy())
        self.log(f"epoch {epoch + 1}: dev BLEU-4 {bleu4:.2f}" + ("  (best)" if improved else
                                                                 f"  (no gain for {bad} epoch(s))"))
        extra["stop_training"] = bool(cfg.patience) and bad >= cfg.patience
        if extra["stop_training"]:
            self.log(f"early stopping: dev BLEU-4 has not improved for {cfg.patience} epochs")
        return extra


def train_with_strategy(workdir: str, model_config: ModelConfig, train_config: TrainConfig,
                        data_config: DataConfig, *, strategy: str | tf.distribute.Strategy = "mirrored",
                        verbose: int = 1, log: Callable[[str], None] = print, weights: str | None = "imagenet",
                        final_evaluation: bool = True, checkpoint_every: int = 0):
    """`python -m sat_tf.train --strategy ...`: `sat_tf.training.trainer.train` with the epochs run by
    `DistributedTrainer` instead of `model.fit`.

    The same work-dir contract: config.json first, features and vocabulary (`trainer.prepare_workdir`), one
    checkpoint per epoch with the same progress variables (either trainer resumes the other's work dir), dev
    BLEU-4 by beam search after every epoch on the chief, `best/`, early stopping after `patience` epochs,
    history.json, a final evaluation of the best model. Under multi_worker the chief prepares the work dir while
    the other workers wait, then every worker reads it: the work dir (and the features dir) must be shared.

    Args:
        workdir, model_config, train_config, data_config, verbose, log, weights, final_evaluation: as
            `sat_tf.training.trainer.train`.
        strategy: a `make_strategy` name or a strategy.
        checkpoint_every: int. Extra mid-epoch checkpoints every this many global steps (0: none).

    Returns:
        sat_tf.training.trainer.TrainResult (on non-chief workers without the final evaluation).
    """
    from sat_tf.pipelines.dataset import check_features, load_manifest, training_dataset
    from sat_tf.training import trainer as single

    if train_config.scst_epochs:
        raise ValueError("TrainConfig.scst_epochs: self-critical training runs with the default strategy only (its "
                         "CIDEr-D reward is a Python function); train with --strategy default")
    start = time.perf_counter()
    strategy = make_strategy(strategy) if isinstance(strategy, str) else strategy
    chief = is_chief(strategy)
    say = log if (verbose and chief) else (lambda line: None)
    if chief:
        experiment = single.prepare_workdir(workdir, model_config, train_config, data_config, weights=weights,
                                            progress=verbose > 0)
    replica_sum(strategy)(1.0)  # the other workers wait here until the chief has prepared the work dir
    if not chief:
        experiment = wd.load_experiment(workdir)
        if experiment.vocabulary is None:
            raise FileNotFoundError(f"{workdir}/{wd.VOCAB} is missing: every worker must see the chief's work dir")
    cfg, data = experiment.train_config, experiment.data_config
    features_dir = experiment.features_dir
    manifest = load_manifest(features_dir)
    checksum = experiment.vocabulary.checksum()
    feature_shape = (manifest["feature_shape"][0], experiment.model_config.feature_dim)
    check_features(features_dir, data.train_split, manifest=manifest, vocabulary_checksum=checksum,
                   feature_shape=feature_shape)  # every byte once; each epoch then checks only the sizes

    def dataset_fn(context: tf.distribute.InputContext, epoch: int) -> tf.data.Dataset:
        return training_dataset(features_dir, cfg.batch_size, split=data.train_split, epoch=epoch, seed=cfg.seed,
                                input_context=context, manifest=manifest, vocabulary_checksum=checksum,
                                feature_shape=feature_shape, verify="size",
                                mirror_probability=data.mirror_probability)

    progress = {"best_bleu4": tf.Variable(-1.0, dtype=tf.float64, trainable=False, name="best_bleu4"),
                "best_epoch": tf.Variable(0, dtype=tf.int64, trainable=False, name="best_epoch"),
                "bad_epochs": tf.Variable(0, dtype=tf.int64, trainable=False, name="bad_epochs")}
    trainer = DistributedTrainer(experiment.model_config, cfg, dataset_fn, strategy, workdir,
                                 checkpoint_every=checkpoint_every,
                                 callbacks=[_DevScoring(experiment, progress, say)], progress=progress, log=say)
    say(f"{type(strategy).__name__}: {strategy.num_replicas_in_sync} replica(s), global batch {cfg.batch_size}")
    restored = trainer.restore()
    if not restored and cfg.init_from:
        single.apply_init_from(trainer.model, experiment, say)
    initial_epoch = int(trainer.epoch)
    stopped = bool(cfg.patience) and int(progress["bad_epochs"].numpy()) >= cfg.patience
    if initial_epoch < cfg.epochs and not stopped:
        trainer.fit(cfg.epochs, restore=False)
        stopped = bool(cfg.patience) and int(progress["bad_epochs"].numpy()) >= cfg.patience
    elif restored:
        trainer.history = _read_history(os.path.join(workdir, wd.HISTORY), initial_epoch)
    final = None
    best = tf.train.latest_checkpoint(experiment.path(wd.BEST))
    if chief and final_evaluation and best:
        from sat_tf.evaluation import evaluate

        wd.checkpoint_for(trainer.model).restore(best).expect_partial()
        scoring = trainer.callbacks[0]
        final = evaluate(trainer.model, experiment.vocabulary, features_dir, split=data.eval_split,
                         beam_size=cfg.beam_size, max_length=cfg.max_length, length_penalty=cfg.length_penalty,
                         min_length=cfg.min_length, suppress_unk=cfg.suppress_unk,
                         scene_objects=scoring.scene_objects,
                         out_dir=experiment.path("eval"))
    return single.TrainResult(workdir, int(trainer.epoch) - initial_epoch, int(progress["best_epoch"].numpy()),
                              float(progress["best_bleu4"].numpy()), stopped, trainer.history, final,
                              time.perf_counter() - start)


def _read_history(path: str, epochs_done: int) -> list[dict[str, Any]]:
    """The history.json records of the epochs a restored checkpoint has finished (a crash may follow a write)."""
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        history = json.load(f)
    return [h for h in history if h.get("epoch", 0) <= epochs_done]


def _unpack(batch):
    """{"annotations", "tokens", ...} dicts or (annotations, tokens) tuples -> (annotations (B, L, D), tokens)."""
    if isinstance(batch, dict):
        return batch["annotations"], batch["tokens"]
    annotations, tokens = batch
    return annotations, tokens


def _positional_arity(fn: Callable) -> int:
    """How many positional arguments `fn` accepts (2 or more for an (input_context, epoch) dataset_fn)."""
    try:
        parameters = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return 1
    if any(p.kind == p.VAR_POSITIONAL for p in parameters):
        return 2
    return sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in parameters)
