"""`trainer.fit_epochs`: every epoch left in one `model.fit`, epoch e reading exactly the batches of `epoch_data(e)`.

A model whose train step reports the ids of its batch shows what each step read. Keras 3 keeps one data iterator
across the epochs of a `fit` given `steps_per_epoch` (keras/src/trainers/epoch_iterator.py), so an epoch that read
too few or too many batches would shift every later epoch; `fit_epochs` cuts or pads each epoch to `steps`.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from sat_tf.training.trainer import fit_epochs

STEPS = 3


class _Reporter(keras.Model):
    """Trains nothing; its logs say which batch a step read: `first` id and `size` (0: an empty batch)."""

    def train_step(self, data):
        ids = data["id"]  # (B,)
        return {"first": tf.reduce_sum(ids[:1]), "size": tf.shape(ids)[0]}


class _Record(keras.callbacks.Callback):
    def __init__(self, stop_after_epoch: int | None = None):
        super().__init__()
        self.steps: dict[int, list[tuple[int, int]]] = {}
        self.epoch = None
        self.stop_after_epoch = stop_after_epoch

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        self.steps[epoch] = []

    def on_train_batch_end(self, batch, logs=None):
        self.steps[self.epoch].append((int(np.asarray(logs["first"])), int(np.asarray(logs["size"]))))

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.stop_after_epoch:
            self.model.stop_training = True


def _epoch_data(epoch: int, input_context=None) -> tf.data.Dataset:
    """Epoch e: batches of 2 ids, e * 100, e * 100 + 2, ...; epoch 1 has one batch fewer than STEPS, the others
    one more (so an epoch is padded, or cut)."""
    batches = STEPS - 1 if epoch == 1 else STEPS + 1
    ids = np.arange(2 * batches, dtype="int32") + 100 * epoch
    return tf.data.Dataset.from_tensor_slices({"id": ids}).batch(2)


def _model() -> keras.Model:
    model = _Reporter()
    model.compile(optimizer="sgd")
    return model


def test_one_fit_reads_each_epochs_own_batches_cut_or_padded_to_the_steps(monkeypatch):
    model = _model()
    calls = []
    fit = model.fit
    monkeypatch.setattr(model, "fit", lambda *args, **kwargs: calls.append(kwargs) or fit(*args, **kwargs))
    record = _Record()
    history = fit_epochs(model, _epoch_data, tf.distribute.get_strategy(), 1, 4, [record], verbose=0, steps=STEPS)
    assert len(calls) == 1 and calls[0]["epochs"] == 4 and calls[0]["initial_epoch"] == 1
    assert calls[0]["steps_per_epoch"] == STEPS
    assert record.steps == {
        1: [(100, 2), (102, 2), (0, 0)],  # two batches, then an empty one
        2: [(200, 2), (202, 2), (204, 2)],  # epoch 2 from its start: the 4th batch is left out
        3: [(300, 2), (302, 2), (304, 2)],
    }
    assert history.epoch == [1, 2, 3]


def test_a_callback_stops_the_one_fit_and_no_epoch_left_runs_nothing():
    model = _model()
    record = _Record(stop_after_epoch=2)
    fit_epochs(model, _epoch_data, tf.distribute.get_strategy(), 0, 5, [record], verbose=0, steps=STEPS)
    assert sorted(record.steps) == [0, 1, 2]
    assert record.steps[2][0] == (200, 2)
    assert fit_epochs(model, _epoch_data, tf.distribute.get_strategy(), 5, 5, [record], verbose=0,
                      steps=STEPS) is None
