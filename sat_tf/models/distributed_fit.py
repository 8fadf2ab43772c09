"""What makes `Captioner.train_step` replica-correct under `model.fit` with any tf.distribute strategy, and the one
workaround Keras 3.15's `fit` needs under a strategy scope.

Under `with strategy.scope(): model.fit(distributed_dataset)` Keras runs `train_step` once per replica (inside
`strategy.run`), each on its replica batch, and its optimizer SUMS the replica gradients. The train step therefore
makes each replica's loss its share of the global-batch loss: sums over tokens and captions are divided by the
GLOBAL counts (`global_counts`), so the summed gradient is exactly the single-process gradient of the global batch.
(Averaging per-replica means instead would weight a token of a replica with short captions more.) With one
replica (the default strategy) every function here is the identity and adds no op.

Keras-side workarounds, each with the reason:

* Clipping. Keras' optimizer clips each replica's partial gradient BEFORE its cross-replica sum, so
  `global_clipnorm` would bound the wrong norm. `global_gradients` sums and clips the global gradient itself and
  hands every replica 1/R of it; the optimizer's own sum then rebuilds the clipped global gradient (its own clip
  sees a norm <= clipnorm / R and changes nothing).
* keras#20585 (`SymbolicBuildFree`). Under a strategy scope `fit` first pulls one batch and reduces it EAGERLY
  across replicas to build the model symbolically, whether or not anything is left to build. Under
  MultiWorkerMirroredStrategy that reduction fails ("Attempt to convert a value ({'annotations': PerReplica...})"),
  and with replicas whose batches differ in caption length it cannot work at all (AddN of [4,5] and [4,7]). No
  public setting skips it: building the model and the optimizer in the scope beforehand does not, since the batch
  is pulled and reduced first. The Captioner creates every weight in its constructor, so the mixin overrides
  Keras' private `_maybe_symbolic_build` to build only the optimizer. Private methods change between releases
  without notice, so the override applies only to the Keras versions it was checked on (`VERIFIED_KERAS`); with
  any other Keras it warns and leaves Keras' own build in place. tests/training/test_distributed.py fails without
  it (both the mirrored run, whose replica batches differ in length, and the two workers).
* keras#20585, second half (`fit_logs`). Under MultiWorkerMirroredStrategy `fit` reduces the step's logs with
  `strategy.reduce("MEAN", value, axis=0)`, which fails on scalars; the logs go out with shape (1,) there.

tests/models/test_distributed_fit.py checks the pieces in one process, tests/training/test_distributed.py `fit` under
MirroredStrategy (2 logical CPUs) and two worker processes against one process.
"""

from __future__ import annotations

import re
import warnings

import keras
import tensorflow as tf

# Keras versions (lowest, highest, both included) on which overriding `_maybe_symbolic_build` was checked:
# tests/training/test_distributed.py passes with the override and fails without it. Widen the range only
# after running those tests on the new version.
VERIFIED_KERAS = ((3, 15, 1), (3, 15, 1))


def num_replicas() -> int:
    """R, the replicas in sync of the replica context this runs in (1 outside any strategy)."""
    context = tf.distribute.get_replica_context()
    return 1 if context is None else int(context.num_replicas_in_sync)


def global_sum(value):
    """The sum over replicas of a tensor (or a list of tensors) every replica passes."""
    if num_replicas() == 1:
        return value
    return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, value)


def global_counts(batch_size, num_tokens):
    """One all-reduce for the global batch: (offset, captions, tokens).

    Args:
        batch_size: int32 scalar, this replica's B (replicas may differ where a last batch is partial).
        num_tokens: float32 scalar, this replica's real-token count.

    Returns:
        offset: int32 scalar, the global row of this replica's first caption (replica order).
        num_captions: float32 scalar, G, the captions of the global batch.
        num_tokens: float32 scalar, N, the real tokens of the global batch.
    """
    size = tf.cast(batch_size, tf.float32)
    replicas = num_replicas()
    if replicas == 1:
        return tf.constant(0, tf.int32), size, tf.cast(num_tokens, tf.float32)
    context = tf.distribute.get_replica_context()
    replica_id = tf.cast(context.replica_id_in_sync_group, tf.int32)
    sizes = tf.one_hot(replica_id, replicas, dtype=tf.float32) * size  # (R,)
    counts = global_sum(tf.concat([[tf.cast(num_tokens, tf.float32)], sizes], 0))  # (1 + R,)
    sizes = counts[1:]
    offset = tf.cast(tf.reduce_sum(sizes[:replica_id]), tf.int32)
    return offset, tf.reduce_sum(sizes), counts[0]


def global_gradients(grads, optimizer):
    """What each replica hands `optimizer.apply` so that the update is the clipped gradient of the global batch.

    With one replica: `grads` (the optimizer's `global_clipnorm` clips them). With R > 1: the sum over replicas,
    clipped to `optimizer.global_clipnorm`, divided by R (see the module docstring). Either way sparse gradients
    (the embedding's `tf.IndexedSlices`) come back dense where clipping is on: Keras' global norm squares the
    slices before duplicate rows are summed, which is not the norm of the gradient (a word seen twice in a batch
    counts 2 g^2 instead of (2 g)^2).
    """
    replicas = num_replicas()
    if optimizer.global_clipnorm:
        grads = [tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g for g in grads]
    if replicas == 1:
        return grads
    if optimizer.clipnorm or optimizer.clipvalue:
        raise ValueError("with several replicas the Captioner clips by the global norm only: use the optimizer's "
                         "global_clipnorm, not clipnorm or clipvalue")
    present = [i for i, g in enumerate(grads) if g is not None]
    summed = global_sum([tf.convert_to_tensor(grads[i]) for i in present])
    if optimizer.global_clipnorm:
        summed, _ = tf.clip_by_global_norm(summed, optimizer.global_clipnorm)
    out = list(grads)
    for i, g in zip(present, summed):
        out[i] = g / tf.cast(replicas, g.dtype)
    return out


def _multi_worker(strategy) -> bool:
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return False
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None:
        return False
    cluster = resolver.cluster_spec().as_dict()
    return sum(len(cluster.get(kind, [])) for kind in ("chief", "worker")) > 1


def fit_logs(logs: dict) -> dict:
    """The step's logs in the shape `fit` can reduce: scalars, or (1,) under a multi-worker strategy."""
    if not _multi_worker(tf.distribute.get_strategy()):
        return logs
    return {name: tf.reshape(value, [1]) for name, value in logs.items()}


def keras_version() -> tuple[int, int, int]:
    """The installed Keras version as (major, minor, patch); a pre-release suffix ("3.16.0.dev1") is ignored."""
    numbers = [int(n) for n in re.findall(r"\d+", keras.version())[:3]]
    return tuple(numbers + [0] * (3 - len(numbers)))


def keras_verified() -> bool:
    """Whether the installed Keras lies in `VERIFIED_KERAS`, where `SymbolicBuildFree` was checked."""
    low, high = VERIFIED_KERAS
    return low <= keras_version() <= high


class SymbolicBuildFree:
    """Mixin for a `keras.Model` that creates all its weights in its constructor: `fit`/`evaluate` skip Keras'
    symbolic build (keras#20585, see the module docstring) and only build the compiled optimizer, in the model's
    strategy scope, so that its slots are created before the first (replica-context) step.

    It overrides a private Keras method, so only on the Keras versions of `VERIFIED_KERAS`; on any other version it
    warns and Keras' own build runs (which fails under MultiWorkerMirroredStrategy, and under MirroredStrategy
    where replica batches differ in shape, as long as keras#20585 stands)."""

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        if not keras_verified():
            low, high = (".".join(map(str, v)) for v in VERIFIED_KERAS)
            warnings.warn(f"sat_tf skips Keras' symbolic build under tf.distribute (keras#20585) by overriding "
                          f"Keras' private Model._maybe_symbolic_build, checked on Keras {low} to {high} only; with "
                          f"Keras {keras.version()} Keras' own build runs instead, which fails under "
                          f"MultiWorkerMirroredStrategy or where replica batches differ in shape. Install a checked "
                          f"Keras, or run tests/training/test_distributed.py with this one and widen "
                          f"sat_tf.models.distributed_fit.VERIFIED_KERAS.", stacklevel=2)
            return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)
        if self.optimizer is not None and not self.optimizer.built:
            with self.distribute_strategy.scope():
                self.optimizer.build(self.trainable_variables)
