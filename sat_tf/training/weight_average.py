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


def _pairs(optimizer) -> list:
    """(weight, its average) for every averaged trainable weight of `optimizer`."""
    try:
        weights, averages = optimizer._trainable_variables, optimizer._model_variables_moving_average
    except AttributeError as e:  # the private names of keras.src.optimizers.base_optimizer (Keras 3.x)
        raise RuntimeError(f"this Keras version ({type(optimizer).__module__}) keeps its weight average elsewhere: "
                           f"{e}") from e
    return [(w, a) for w, a in zip(weights, averages) if a is not None]


def _swap(pairs) -> None:
    for weight, average in pairs:
        raw = tf.identity(weight.value)
        weight.assign(average.value)
        average.assign(raw)


@contextlib.contextmanager
def averaged_weights(model, optimizer=None):
    """Within the block the model's trainable weights are their moving averages (the raw weights wait in the
    averages' place and come back, bit for bit, on exit). Without a weight average it changes nothing.
    Yields whether the weights were swapped."""
    optimizer = optimizer if optimizer is not None else getattr(model, "optimizer", None)
    if optimizer is None or not getattr(optimizer, "use_ema", False):
        yield False
        return
    pairs = _pairs(optimizer)
    _swap(pairs)
    try:
        yield True
    finally:
        _swap(pairs)
