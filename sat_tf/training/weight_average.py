"""Exponential moving average of the weights (Polyak averaging; Polyak & Juditsky 1992), used to score and keep
the model while training goes on with the raw weights.

With `TrainConfig.weight_average_decay = d > 0` the optimizer keeps, after every step, avg <- d * avg + (1 - d) * w
(Keras' `use_ema`: the average starts at the weights of the first step and lives in the optimizer's variables, so
epoch checkpoints carry it and a resumed run continues it exactly). The dev scores of each epoch, the `best/`
checkpoint and everything read from it (evaluate, caption, export) use the averaged weights; the epoch
checkpoints, from which training resumes, hold the raw ones.
"""

from __future__ import annotations

import contextlib

import tensorflow as tf

from sat_tf.config import TrainConfig


def optimizer_options(train_config: TrainConfig) -> dict:
    """Keyword arguments of the Keras optimizer that keep the weight average of `train_config`."""
    decay = train_config.weight_average_decay
    return {"use_ema": True, "ema_momentum": decay} if decay > 0 else {}


@contextlib.contextmanager
def averaged_weights(model, optimizer=None):
    """Within the block the model's trainable weights are their moving averages (the raw weights are kept aside
    and come back, bit for bit, on exit). Without a weight average it changes nothing. Yields whether the weights
    were swapped.

    Public Keras API only: `optimizer.finalize_variable_values` writes the averages into the weights (on every
    replica under a strategy); the raw values are copied before and assigned back after.
    """
    optimizer = optimizer if optimizer is not None else getattr(model, "optimizer", None)
    if optimizer is None or not getattr(optimizer, "use_ema", False):
        yield False
        return
    weights = model.trainable_variables
    raw = [tf.identity(w.value) for w in weights]
    optimizer.finalize_variable_values(weights)
    try:
        yield True
    finally:
        for weight, value in zip(weights, raw):
            weight.assign(value)
